"""Command-line tools: --help states each one's purpose; a bad config value is one error line before anything is written."""
from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = sorted(p for p in (ROOT / "tools").rglob("*.py") if not p.name.startswith("_"))


def _purpose(tool: Path) -> str:
    purpose = ast.get_docstring(ast.parse(tool.read_text()))
    assert purpose, f"{tool} needs a module docstring with its one-line purpose"
    return " ".join(purpose.strip().splitlines()[0].split())


#: each configurable tool's schema: "module:Class", or ":Class" for one defined in the tool itself
CONFIG_SCHEMAS = {
    "train.py": "handrecon.engine.config:Experiment",
    "synth_train.py": "synth.train:GeneratorExperiment",
    "synth_pretrain_base.py": "synth.pretrain_base:BasePretrainExperiment",
    "synth_cache.py": "synth.cache:CacheJob",
    "semantics.py": ":SemanticsRun",
    "sweep.py": "handrecon.sweep:Sweep",
    "eval_generation.py": "synth.generation_eval:GenerationEval",
    "ablate_generation.py": "synth.ablation:Ablation",
    "make_procedural.py": "handrecon.data.procedural:ProceduralConfig",
    "quickstart.py": ":QuickstartConfig",
}


def _help(tool: Path, capsys, monkeypatch) -> str:
    """`python TOOL --help`, run in this process so the modules the tools share load once."""
    monkeypatch.setattr(sys, "argv", [str(tool), "--help"])
    monkeypatch.setattr(sys, "path", [str(tool.parent), *sys.path])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(tool), run_name="__main__")
    out = capsys.readouterr()
    assert done.value.code in (0, None), out.err
    return " ".join(out.out.split())


@pytest.mark.parametrize("tool", TOOLS, ids=lambda p: str(p.relative_to(ROOT)))
def test_tool_help_states_its_purpose(tool, capsys, monkeypatch):
    assert _purpose(tool) in _help(tool, capsys, monkeypatch)


def test_every_configurable_tool_has_a_schema_listed():
    configurable = {p.name for p in (ROOT / "tools").glob("*.py") if "add_config_args(" in p.read_text()}
    assert configurable == set(CONFIG_SCHEMAS)


def _schema(tool: str, monkeypatch) -> type:
    module_name, _, name = CONFIG_SCHEMAS[tool].partition(":")
    if module_name:
        module = importlib.import_module(module_name)
    else:  # the tool's own module, registered so its annotations resolve
        spec = importlib.util.spec_from_file_location(f"_tool_{tool[:-3]}", ROOT / "tools" / tool)
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, spec.name, module)
        spec.loader.exec_module(module)
    return getattr(module, name)


def _example(tool: str, capsys, monkeypatch) -> list[str]:
    text = _help(ROOT / "tools" / tool, capsys, monkeypatch)
    example = re.search(r"e\.g\. --set (.+?); values are YAML", text)
    assert example, text
    return example.group(1).split()


@pytest.mark.parametrize("tool", sorted(CONFIG_SCHEMAS))
def test_the_help_example_overrides_load(tool, capsys, monkeypatch):
    from handrecon.config import load_config

    load_config(_schema(tool, monkeypatch), None, _example(tool, capsys, monkeypatch))


def _run_in_process(tool: str, args: list[str], capsys, monkeypatch) -> str:
    monkeypatch.setattr(sys, "argv", [str(ROOT / "tools" / tool), *args])
    monkeypatch.setattr(sys, "path", [str(ROOT / "tools"), *sys.path])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(ROOT / "tools" / tool), run_name="__main__")
    out = capsys.readouterr()
    assert done.value.code in (0, None), out.err
    return out.out


@pytest.mark.parametrize("tool", sorted(CONFIG_SCHEMAS))
def test_print_config_shows_the_merged_config_with_comments(tool, capsys, monkeypatch, tmp_path):
    """--print-config prints what the tool would run with (defaults + --set), commented, and exits."""
    from handrecon.config import field_comments, load_config

    schema, example = _schema(tool, monkeypatch), _example(tool, capsys, monkeypatch)
    required = ["--out", str(tmp_path / "data")] if tool == "make_procedural.py" else []
    text = _run_in_process(tool, [*required, "--print-config", "--set", *example], capsys, monkeypatch)
    (tmp_path / "printed.yaml").write_text(text)
    assert load_config(schema, tmp_path / "printed.yaml") == load_config(schema, None, example)
    # comment-only lines (a model's resolved options) are not config keys
    commented = {line.split(":")[0].strip() for line in text.splitlines() if "  # " in line and not line.lstrip().startswith("#")}
    assert commented and commented <= {name for cls in _sections(schema) for name in field_comments(cls)}


def _sections(schema: type) -> list[type]:
    import dataclasses
    import typing

    found, todo = [], [schema]
    while todo:
        cls = todo.pop()
        found.append(cls)
        for tp in typing.get_type_hints(cls).values():
            todo += [t for t in (tp, *typing.get_args(tp)) if dataclasses.is_dataclass(t) and t not in found]
    return found


def test_print_config_of_the_tiny_training_config(capsys, monkeypatch, tmp_path):
    from handrecon.config import load_config
    from handrecon.engine import Experiment

    monkeypatch.chdir(tmp_path)  # the config's out is relative: nothing may appear here
    text = _run_in_process("train.py", [str(ROOT / "configs" / "train_tiny.yaml"), "--print-config"], capsys, monkeypatch)
    assert list(tmp_path.iterdir()) == []
    assert "  batch_size: 16  # per rank; >= 1\n" in text and "ratios: {real: 1.0}  # batch shares in [0, 1], summing to 1, by source name" in text
    # the model's options, then every option of its architecture with the value it resolves to, as comments
    assert "  options: {}  # " in text and "  # options, resolved (InterWildConfig):\n" in text
    assert "  #   hand_size: 64  # side of the hand crops\n" in text and "  #   input_size: [128, 96]  # (H, W)" in text
    (tmp_path / "printed.yaml").write_text(text)
    assert load_config(Experiment, tmp_path / "printed.yaml") == load_config(Experiment, ROOT / "configs" / "train_tiny.yaml")


@pytest.mark.slow
def test_every_tool_help_runs_as_a_script():
    """The same in a fresh interpreter per tool: no tool depends on what an earlier import loaded."""
    for tool in TOOLS:
        out = subprocess.run([sys.executable, str(tool), "--help"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, (tool, out.stderr)
        assert _purpose(tool) in " ".join(out.stdout.split()), tool


def test_make_standin_mano_writes_both_files(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make_standin_mano.py"), "--out", str(tmp_path)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert {p.name for p in tmp_path.iterdir()} == {"MANO_RIGHT.pkl", "MANO_LEFT.pkl"}


@pytest.mark.parametrize(
    "tool, config, override, expected",
    [
        ("train.py", "train_tiny.yaml", "data.batch_size=-4", "data.batch_size must be >= 1, got -4"),
        ("train.py", "train_tiny.yaml", "val.max_samples=-1", "val.max_samples must be >= 1 or null, got -1"),
        ("train.py", "train_tiny.yaml", "optim.lr=-1e-3", "optim.lr must be > 0, got -0.001"),
        ("train.py", "train_tiny.yaml", "model.options.hand_size=0", "model.options.hand_size must be >= 1, got 0"),
        ("synth_train.py", "synth_tiny.yaml", "train.log_every=0", "train.log_every must be >= 1, got 0"),
    ],
)
@pytest.mark.slow  # each launch imports the training stack: 10-25 s on a 2-core CPU
def test_out_of_range_config_values_stop_a_tool_before_its_run_folder(tool, config, override, expected, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, str(ROOT / "tools" / tool), str(ROOT / "configs" / config), "--set", override, f"out={tmp_path / 'run'}"]
    out = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert [line for line in out.stderr.splitlines() if line.startswith("error:")] == [f"error: {expected}"]
    assert "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == []  # no run folder, nothing else either


def test_both_trainers_print_the_shared_loop_keys_with_their_own_defaults(capsys, monkeypatch):
    """The train and data sections of the two trainers are one schema (LoopConfig, DataConfig)
    with per-trainer defaults; inherited keys keep their base class's comment."""
    printed = {}
    for tool, config in (("train.py", "train_tiny.yaml"), ("synth_train.py", "synth_tiny.yaml")):
        printed[tool] = _run_in_process(tool, [str(ROOT / "configs" / config), "--print-config"], capsys, monkeypatch)
    log = "  log_every: {}  # optimizer steps between TensorBoard scalars; >= 1\n"
    assert log.format(5) in printed["train.py"] and log.format(10) in printed["synth_train.py"]
    assert "  val_every: 0  # optimizer steps between validations (and at the end); 0: once per epoch\n" in printed["train.py"]
    assert "  val_every: 100  # optimizer steps between validation grids (and at the end); 0: once per epoch\n" in printed["synth_train.py"]
    for text in printed.values():
        assert "  sources:  # name -> source\n    real:\n      kind: ih26m  # a reader name" in text and "      root: runs/procedural  # the dataset or cache folder" in text and "  epoch_source: null  #" in text
