"""Synthetic shards: atomic tar writing, random access through the index, labels round trip."""
from __future__ import annotations

import re

import numpy as np
import pytest
import webdataset as wds
from shard_utils import write_test_shards

from handrecon.data.procedural import ProceduralConfig, generate
from handrecon.data.readers import create_reader
from handrecon.data.sample import check_sample
from handrecon.data.shards import ShardSource, build_index, write_shard
from handrecon.errors import UserError


@pytest.fixture(scope="module")
def samples(tmp_path_factory, hand_model):
    out = tmp_path_factory.mktemp("proc_for_shards")
    generate(hand_model, ProceduralConfig(image_size=(48, 64), batch_size=12), out, num=12, seed=5, progress=False)
    reader = create_reader("ih26m", out, "train", hand_model)
    return [reader[i] for i in range(len(reader))]


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory, samples):
    return write_test_shards(samples, tmp_path_factory.mktemp("shards"), per_shard=(len(samples) + 1) // 2)


def test_random_access_reproduces_the_samples(shard_dir, samples, hand_model):
    source = ShardSource(shard_dir, hand_model)
    assert len(source) == len(samples)
    by_id = {s["sample_id"]: s for s in samples}
    for i in reversed(range(len(source))):  # any order
        got = source[i]
        check_sample(got)
        ref = by_id[got["sample_id"]]
        assert got["source"] == "synth" and got["hand_type"] == ref["hand_type"]
        for key in ("mano_pose", "mano_transl", "boxes", "focal", "princpt"):
            np.testing.assert_allclose(got[key], ref[key], atol=1e-6)
        valid = ref["joints_valid"]  # the procedural labels are the MANO joints, projected
        np.testing.assert_allclose(got["joints2d"][valid], ref["joints2d"][valid], atol=1e-3)
        np.testing.assert_allclose(got["verts"], ref["verts"], atol=1e-5)
        np.testing.assert_array_equal(got["mesh_valid"], ref["mesh_valid"])
        assert np.abs(got["image"].astype(int) - ref["image"].astype(int)).mean() < 3  # one JPEG re-encode
        assert source.labels(i)["prompt"] == "two hands"


def test_joints_come_from_the_mano_labels_not_the_source_annotation(samples, hand_model, tmp_path):
    sample = next(s for s in samples if s["mano_valid"].all())
    lost = dict(sample, joints_valid=sample["joints_valid"].copy(), joints2d=sample["joints2d"].copy())
    lost["joints_valid"][[3, 25]] = False  # annotation lost a joint of each hand: 2D set to 0
    lost["joints2d"][[3, 25]] = 0.0
    got = ShardSource(write_test_shards([lost], tmp_path, per_shard=1), hand_model)[0]
    assert got["joints_valid"].all()  # the generator drew every joint of both meshes
    z = got["joints3d"][:, 2:]
    expected = got["joints3d"][:, :2] / z * got["focal"] + got["princpt"]  # pinhole projection
    np.testing.assert_allclose(got["joints2d"], expected, atol=1e-3)
    np.testing.assert_allclose(got["joints2d"][[3, 25]], sample["joints2d"][[3, 25]], atol=1e-3)  # not (0, 0)


def test_shards_are_plain_webdataset_tars(shard_dir):
    keys = [s["__key__"] for s in wds.WebDataset(str(shard_dir / "shard-{000000..000001}.tar"), shardshuffle=False)]
    assert len(keys) == len(set(keys)) > 0
    assert not list(shard_dir.glob("*.tmp"))


def test_rewriting_a_shard_gives_identical_bytes(shard_dir, tmp_path, samples):
    records = [("a", b"jpg", b"png", {"x": 1})]
    first = write_shard(tmp_path / "x.tar", records).read_bytes()
    assert write_shard(tmp_path / "x.tar", records).read_bytes() == first


def test_clear_errors(tmp_path, shard_dir, hand_model):
    with pytest.raises(UserError, match="no shard index"):
        ShardSource(tmp_path, hand_model)
    broken = tmp_path / "b"
    broken.mkdir()
    data = (shard_dir / "shard-000000.tar").read_bytes()
    (broken / "shard-000000.tar").write_bytes(data)
    build_index(broken)
    (broken / "shard-000000.tar").write_bytes(data[: len(data) // 3])
    source = ShardSource(broken, hand_model)
    with pytest.raises(UserError, match="truncated"):
        for i in range(len(source)):
            source[i]


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda data, jpg: data[:700], "not a readable tar"),  # cut inside the second header
        (lambda data, jpg: data[: jpg[0] + jpg[1] // 2], "truncated: member"),  # cut inside an image
        (lambda data, jpg: b"x" * len(data), "not a readable tar"),
    ],
)
def test_indexing_a_damaged_shard_names_it(tmp_path, shard_dir, hand_model, damage, message):
    last = [s for s in ShardSource(shard_dir, hand_model).samples if s["shard"] == "shard-000000.tar"][-1]
    shard = tmp_path / "shard-000000.tar"
    shard.write_bytes(damage((shard_dir / "shard-000000.tar").read_bytes(), last["jpg"]))
    with pytest.raises(UserError, match=f"^{re.escape(str(shard))}: {message}") as info:
        build_index(tmp_path)
    assert "\n" not in str(info.value)


def test_reading_damaged_labels_or_image_names_the_shard(tmp_path, shard_dir, hand_model):
    for file in shard_dir.iterdir():
        (tmp_path / file.name).write_bytes(file.read_bytes())
    source = ShardSource(tmp_path, hand_model)
    first, second = source.samples[:2]
    assert first["shard"] == second["shard"]
    shard = tmp_path / first["shard"]
    data = bytearray(shard.read_bytes())
    for entry, member in ((first, "json"), (second, "jpg")):
        offset, size = entry[member]
        data[offset : offset + size] = bytes(size)  # same size: the index still points at it
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError, match=f"^{re.escape(str(shard))}: damaged labels of sample '{first['key']}'"):
        source[0]
    with pytest.raises(UserError, match=f"^{re.escape(str(shard))}: damaged image of sample '{second['key']}'"):
        source[1]
