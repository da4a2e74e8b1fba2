"""The batched label step: sources built with labels="mano" run no MANO per sample, and one forward
over the augmented, collated batch gives the labels the per-sample path gives."""
from __future__ import annotations

import pytest
import torch
from shard_utils import write_test_shards

from handrecon.data.augment import AugmentConfig, Augmenter, rng_for
from handrecon.data.labels import labels_from_mano, pending
from handrecon.data.readers import create_reader
from handrecon.data.sample import check_sample
from handrecon.data.shards import ShardSource
from handrecon.hand_model.constants import NUM_JOINTS, NUM_VERTS
from handrecon.losses import hand_targets

OUT = (96, 112)  # (H, W)
EPOCHS = 3
# strong geometry: most draws rotate, about half flip; photometric steps stay on
AUGMENT = dict(output_size=OUT, scale_range=(0.7, 1.4), rotation_prob=0.8, rotation_range_deg=(-90.0, 90.0), translation_range=0.15, flip_prob=0.5)


@pytest.fixture(scope="module")
def sources(procedural_root, hand_model, tmp_path_factory):
    """(full, mano) pairs of the same data: the procedural train split and shards written from it."""
    full = create_reader("ih26m", procedural_root, "train", hand_model)
    shards = write_test_shards([full[i] for i in range(len(full))], tmp_path_factory.mktemp("label_shards"), per_shard=10)
    return {
        "reader": (full, create_reader("ih26m", procedural_root, "train", hand_model, labels="mano")),
        "shards": (ShardSource(shards, hand_model), ShardSource(shards, hand_model, labels="mano")),
    }


class _CountForwards:
    """Counts MANO layer forwards (any side) while active."""

    def __init__(self, hand_model):
        self.hand_model, self.calls, self.handles = hand_model, 0, []

    def __enter__(self):
        for layer in self.hand_model.layers.values():
            self.handles.append(layer.register_forward_hook(lambda *args: setattr(self, "calls", self.calls + 1)))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def _geometry(epoch: int, index: int) -> tuple[bool, bool]:
    """(flipped, rolled) of a draw: the Augmenter's first draws, in its documented order."""
    rng = rng_for(7, epoch, index)
    flip = rng.random() < AUGMENT["flip_prob"]
    rng.uniform(*AUGMENT["scale_range"])
    return flip, rng.random() < AUGMENT["rotation_prob"]


def _augmented(source, augmenter, epoch: int) -> list[dict]:
    return [augmenter(source[i], rng_for(7, epoch, i)) for i in range(len(source))]


@pytest.mark.parametrize("kind", ["reader", "shards"])
def test_batched_labels_equal_the_per_sample_labels_under_augmentation(sources, hand_model, kind):
    full_source, mano_source = sources[kind]
    augmenter = Augmenter(AugmentConfig(**AUGMENT), hand_model, seed=7)
    flips = rolls = 0
    worst = {"verts": 0.0, "joints3d": 0.0, "joints2d": 0.0, "boxes": 0.0}
    for epoch in range(EPOCHS):
        full = _augmented(full_source, augmenter, epoch)
        with _CountForwards(hand_model) as counter:  # no MANO forward per sample (reading and augmenting)
            mano = _augmented(mano_source, augmenter, epoch)
        assert counter.calls == 0
        for f, m in zip(full, mano):
            check_sample(m)
            assert (m["mesh_pending"] == m["mano_valid"]).all() and m["mano_valid"].any()
            assert (m["joints_pending"] == (m["mano_valid"] if kind == "shards" else False)).all()
            assert not m["verts"].any()
        ref = torch.utils.data.default_collate(full)
        batch = labels_from_mano(torch.utils.data.default_collate(mano), hand_model)
        assert not pending(batch)
        for key in ("image_size", "mano_valid", "mano_pose", "mano_shape", "mano_transl", "mesh_valid", "joints_valid", "joints2d_valid"):
            assert torch.equal(batch[key], ref[key]), key
        assert batch["hand_type"] == ref["hand_type"]
        if kind == "reader":  # the same crops: boxes come from the annotated joints either way
            assert all(torch.equal(batch[key], ref[key]) for key in ("image", "focal", "princpt"))
        else:  # a flipped shard sample is framed by its mirrored stored box, not by the box of its
            # mirrored MANO joints: for these labels the same box up to float rounding
            torch.testing.assert_close(batch["focal"], ref["focal"], atol=1e-3, rtol=0)
            torch.testing.assert_close(batch["princpt"], ref["princpt"], atol=1e-3, rtol=0)
            assert (batch["image"].float() - ref["image"].float()).abs().mean() < 0.05
        for key in worst:
            worst[key] = max(worst[key], float((batch[key] - ref[key]).abs().max()))
        got, want = hand_targets(batch, hand_model), hand_targets(ref, hand_model)
        for key in want:
            if want[key].dtype == torch.bool:
                assert torch.equal(got[key], want[key]), key
            else:
                torch.testing.assert_close(got[key], want[key], atol=1e-5, rtol=0, msg=key)
        for i in range(len(full)):
            flip, rotate = _geometry(epoch, i)
            flips, rolls = flips + flip, rolls + rotate
    print(f"{kind}: max |batched - per-sample| {worst}")
    assert worst["verts"] < 1e-5 and worst["joints3d"] < 1e-5, worst  # metres
    assert worst["joints2d"] < 1e-3 and worst["boxes"] < 1e-3, worst  # pixels
    assert flips > 10 and rolls > 10 and flips + rolls < 2 * EPOCHS * len(full_source)


def test_hands_without_mano_keep_their_annotated_joints(hand_model):
    """Only pending hands change: annotated joints, meshes of full samples and absent hands stay."""
    sample = {
        "mano_valid": torch.tensor([[True, False]]),
        "mesh_valid": torch.tensor([[True, True]]),
        "mesh_pending": torch.tensor([[True, False]]),
        "joints_pending": torch.tensor([[False, False]]),
        "mano_pose": torch.zeros(1, 2, 48),
        "mano_shape": torch.zeros(1, 2, 10),
        "mano_transl": torch.tensor([[[0.0, 0.0, 0.5], [0.0, 0.0, 0.0]]]),
        "verts": torch.full((1, 2 * NUM_VERTS, 3), 7.0),
        "joints3d": torch.full((1, 2 * NUM_JOINTS, 3), 3.0),
        "joints2d": torch.full((1, 2 * NUM_JOINTS, 2), 5.0),
        "joints_valid": torch.ones(1, 2 * NUM_JOINTS, dtype=torch.bool),
        "joints2d_valid": torch.ones(1, 2 * NUM_JOINTS, dtype=torch.bool),
        "boxes": torch.full((1, 2, 4), 9.0),
        "focal": torch.tensor([[500.0, 500.0]]),
        "princpt": torch.tensor([[64.0, 64.0]]),
        "image_size": torch.tensor([[128, 128]]),
    }
    out = labels_from_mano(sample, hand_model)
    mesh = hand_model.hand("right", torch.zeros(1, 10), torch.zeros(1, 3), torch.zeros(1, 45), torch.tensor([[0.0, 0.0, 0.5]]))
    torch.testing.assert_close(out["verts"][0, :NUM_VERTS], mesh.vertices[0].detach())
    assert (out["verts"][0, NUM_VERTS:] == 7.0).all()  # a mesh given with the sample (no MANO)
    for key, value in (("joints3d", 3.0), ("joints2d", 5.0), ("boxes", 9.0)):
        assert (out[key] == value).all(), key  # annotated, not MANO's
    assert not out["mesh_pending"].any() and sample["mesh_pending"].any()  # a new dict; the input is untouched
    assert labels_from_mano(out, hand_model) is out  # nothing left to do
