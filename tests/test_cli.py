"""Tools report what the user can fix as one `error:` line: OS errors and DataLoader worker errors."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from handrecon.cli import run_tool
from handrecon.data.mixing import ConcatSources
from handrecon.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def _error_line(capsys, fn, *args) -> str:
    with pytest.raises(SystemExit) as stop:
        run_tool(fn, *args)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    return err.strip()


@pytest.mark.parametrize(
    "exc, line",
    [
        (PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/data/run"), "error: Permission denied: /data/run"),
        (NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), "/data/file/x"), "error: Not a directory: /data/file/x"),
        (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/ckpt.tmp"), "error: No space left on device: /data/ckpt.tmp"),
        (FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), "/a", None, "/b"), "error: File exists: /a -> /b"),
    ],
)
def test_os_errors_are_one_line_with_the_path_and_reason(capsys, exc, line):
    def fails():
        raise exc

    assert _error_line(capsys, fails) == line


class _Broken(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        if i == 2:
            raise UserError("/data/images/0002.jpg: not a readable image (cannot identify image file)")
        return {"x": torch.zeros(1)}


def test_a_worker_error_is_its_last_line_and_names_the_sample(capsys):
    loader = torch.utils.data.DataLoader(ConcatSources({"real": _Broken()}), batch_size=1, num_workers=1)

    def consume():
        for _ in loader:
            pass

    with pytest.raises(UserError) as raw:
        consume()
    assert len(str(raw.value)) > 300 and "Traceback" in str(raw.value)  # what the worker hands back
    line = _error_line(capsys, consume)
    assert line == (
        "error: source 'real', sample 2: /data/images/0002.jpg: not a readable image (cannot identify image file) "
        "(in DataLoader worker process 0)"
    )


@pytest.mark.slow  # trains a run, then launches tools/eval.py
def test_eval_checks_out_before_predicting(tmp_path, mano_dir, procedural_root):
    """An unusable --out is found before the split is predicted, not after."""
    from handrecon.config import load_config
    from handrecon.engine import Experiment, Trainer

    cfg = load_config(Experiment, None, [f"out={tmp_path / 'run'}", f"mano_dir={mano_dir}", "model.name=dir_tiny", "train.max_steps=1",
                                         f"data.sources.real={{kind: ih26m, root: {procedural_root}, split: train}}", "data.batch_size=4",
                                         "data.num_workers=0", "train.device=cpu"])  # fmt: skip
    trainer = Trainer(cfg, progress=False)
    trainer.fit()
    trainer.close()
    (tmp_path / "taken").write_text("a file")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "tools/eval.py", "--checkpoint", cfg.out, "--dataset", "procedural", "--data-root", str(procedural_root),
         "--mano-dir", str(mano_dir), "--out", str(tmp_path / "taken")],
        cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == f"error: --out {tmp_path / 'taken'} is not writable: Not a directory\n"
    assert "predicted" not in done.stdout


def test_int_at_least_is_a_usage_error_naming_the_value(capsys):
    import argparse

    from handrecon.cli import int_at_least

    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", type=int_at_least(0))
    assert parser.parse_args(["--bootstrap", "0"]).bootstrap == 0
    for bad, said in (("-5", "must be >= 0, got -5"), ("x", "expected an integer, got 'x'")):
        with pytest.raises(SystemExit) as stop:
            parser.parse_args(["--bootstrap", bad])
        assert stop.value.code == 2 and f"argument --bootstrap: {said}" in capsys.readouterr().err


def test_truncated_checkpoint_files_are_one_line_errors(tmp_path):
    from handrecon.engine import checkpoint as ckpt

    model = torch.nn.Linear(3, 2)
    folder = ckpt.save_checkpoint(tmp_path, 1, model, {"step": 1}, "a: 1\n")
    for name in (ckpt.WEIGHTS, ckpt.TRAINER_STATE):
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"model.safetensors: not a readable safetensors file .*truncated"):
        ckpt.load_weights(model, folder)
    with pytest.raises(UserError, match=r"trainer.pt: not a readable trainer state .*truncated"):
        ckpt.load_trainer_state(folder)


def test_config_from_args_checks_the_output_folder_before_the_work(tmp_path):
    import argparse
    from dataclasses import dataclass

    from handrecon.cli import add_config_args, config_from_args

    @dataclass
    class Job:
        out: str = "runs/x"
        num: int = 1

    parser = argparse.ArgumentParser()
    add_config_args(parser)
    (tmp_path / "taken").write_text("a file")
    args = parser.parse_args(["--set", f"out={tmp_path / 'taken'}"])
    assert config_from_args(Job, args).out == str(tmp_path / "taken")  # unchecked without out_key
    with pytest.raises(UserError, match=r"^out .*taken is not writable: Not a directory$"):
        config_from_args(Job, args, out_key="out")
    fine = parser.parse_args(["--set", f"out={tmp_path / 'new' / 'run'}"])
    assert config_from_args(Job, fine, out_key="out").out == str(tmp_path / "new" / "run") and (tmp_path / "new" / "run").is_dir()
