"""InterWild snapshot_N.pth files ({'network': 'module.'-prefixed state, 'epoch', 'optimizer'}) in `interwild`."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from handrecon.errors import UserError
from handrecon.models import create_model


def _snapshot(model, path, extra=None):
    net = {"module." + k: v for k, v in model.state_dict().items()}
    net["module.mano_layer_right.shapedirs"] = torch.zeros(778, 3, 10)  # the original's MANO buffers: skipped
    net.update(extra or {})
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable)
    sum(p.sum() for p in trainable).backward()
    optimizer.step()
    torch.save({"network": net, "epoch": 4, "optimizer": optimizer.state_dict()}, path)
    return path


def test_snapshot_loads_with_a_key_report_and_other_files_are_refused(hand_model, tmp_path, capsys):
    torch.manual_seed(0)
    source = create_model("interwild_tiny", hand_model)
    path = _snapshot(source, tmp_path / "snapshot_4.pth")
    model = create_model("interwild_tiny", hand_model, checkpoint=path)
    assert f"{len(source.state_dict())} matched, 0 missing, 0 unexpected, 0 mismatched, 1 ignored" in capsys.readouterr().out
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    with pytest.raises(UserError, match=r"snapshot_4\.pth: not the architecture of this DIRNet \(\d+ missing: \['backbone"):
        create_model("dir_tiny", hand_model, checkpoint=path)
    odd = _snapshot(source, tmp_path / "odd.pth", {"module.hand_trans_net.extra": torch.zeros(1)})
    with pytest.raises(UserError, match=r"odd\.pth: not the architecture .*1 unexpected: \['hand_trans_net\.extra'\]"):
        create_model("interwild_tiny", hand_model, checkpoint=odd)
    torch.save({"weights": {}}, tmp_path / "other.pth")
    with pytest.raises(UserError, match=r"other\.pth: not an InterWild snapshot"):
        create_model("interwild_tiny", hand_model, checkpoint=tmp_path / "other.pth")


@pytest.mark.slow
def test_convert_checkpoint_writes_a_checkpoint_folder(hand_model, tmp_path):
    from handrecon.engine.checkpoint import checkpoint_dir

    torch.manual_seed(0)
    path = _snapshot(create_model("interwild", hand_model), tmp_path / "snapshot_6.pth")
    out = tmp_path / "converted"
    run = subprocess.run([sys.executable, "tools/convert_checkpoint.py", str(path), "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "810 matched, 0 missing, 0 unexpected" in run.stdout
    assert checkpoint_dir(out) == out and "name: interwild" in (out / "config.yaml").read_text()
