"""Released checkpoints of the original code: InterWild's snapshot_N.pth ({'network': 'module.'-prefixed
state, 'epoch', 'optimizer'}) in `interwild`, DIR's checkpoint ({'net', 'optimizer', 'schedule', 'epoch'}) in `dir`."""
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


def _round_trip(name, write, path, label, ignored, hand_model, capsys):
    """A seeded `name` saved by `write` in the original's format loads back equal, with its key report."""
    torch.manual_seed(0)
    source = create_model(name, hand_model)
    write(source, path)
    model = create_model(name, hand_model, checkpoint=path)
    assert f"{label}: {len(source.state_dict())} matched, 0 missing, 0 unexpected, 0 mismatched, {ignored} ignored" in capsys.readouterr().out
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    return source, path


def test_snapshot_loads_with_a_key_report_and_other_files_are_refused(hand_model, tmp_path, capsys):
    source, path = _round_trip("interwild_tiny", _snapshot, tmp_path / "snapshot_4.pth", "InterWild snapshot keys", 1, hand_model, capsys)
    with pytest.raises(UserError, match=r"snapshot_4\.pth: not a DIR checkpoint .*; it looks like an InterWild snapshot"):
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


def _dir_checkpoint(model, path, extra=None):
    """As DIR's train.py saves it: the plain state dict (its MANO layer buffers, bone-projection
    grids and segmentation class weights in) under 'net'."""
    net = dict(model.state_dict())
    net.update({
        "init_regressor.mano_layer_left.th_shapedirs": torch.zeros(778, 3, 10), "decoder.projecter_4.img_gird": torch.zeros(16, 2),
        "decoder.projecter_3.regressor.mano_layer_right.th_faces": torch.zeros(1538, 3), "seg_loss.weight": torch.tensor([0.1, 0.45, 0.45]),
    })  # fmt: skip
    net.update(extra or {})
    torch.save({"net": net, "optimizer": {}, "schedule": {"last_epoch": 3}, "epoch": 3}, path)
    return path


def test_dir_checkpoint_loads_with_a_key_report_and_other_files_are_refused(hand_model, tmp_path, capsys):
    _, path = _round_trip("dir_tiny", _dir_checkpoint, tmp_path / "DIR.pth", "DIR checkpoint keys", 4, hand_model, capsys)
    with pytest.raises(UserError, match=r"DIR\.pth: not an InterWild snapshot .*; it looks like a DIR checkpoint"):
        create_model("interwild_tiny", hand_model, checkpoint=path)
    wide = _dir_checkpoint(create_model("dir_tiny", hand_model, joint_dim=4), tmp_path / "wide.pth")
    with pytest.raises(UserError, match=r"wide\.pth: not the architecture of this DIRNet \(\d+ mismatched: \['decoder\.projecter_3"):
        create_model("dir_tiny", hand_model, checkpoint=wide)


@pytest.mark.slow
def test_convert_checkpoint_tells_a_dir_checkpoint_by_its_format(hand_model, tmp_path):
    torch.manual_seed(0)
    source = create_model("dir", hand_model)
    path = _dir_checkpoint(source, tmp_path / "DIR.pth")
    out = tmp_path / "converted"
    run = subprocess.run([sys.executable, "tools/convert_checkpoint.py", str(path), "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert f"{len(source.state_dict())} matched, 0 missing, 0 unexpected, 0 mismatched, 4 ignored" in run.stdout
    assert "name: dir" in (out / "config.yaml").read_text()
    converted = create_model("dir", hand_model, checkpoint=out)
    assert torch.equal(converted.decoder.projecter_3.interaction.STEblocks[2].attn.qkv.weight, source.decoder.projecter_3.interaction.STEblocks[2].attn.qkv.weight)
