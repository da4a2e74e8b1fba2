"""The experiment data section: sources from config, exact ratios per batch through a DataLoader."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from shard_utils import write_test_shards

from handrecon.config import ConfigError, load_config
from handrecon.data.labels import labels_from_mano
from handrecon.data.loader import DataConfig, SourceConfig, build_mixed_loader
from handrecon.data.procedural import ProceduralConfig, generate
from handrecon.data.readers import create_reader


@dataclass
class Experiment:
    data: DataConfig = field(default_factory=DataConfig)


@pytest.fixture(scope="module")
def roots(tmp_path_factory, hand_model):
    real = tmp_path_factory.mktemp("real")
    generate(hand_model, ProceduralConfig(image_size=(48, 48), batch_size=24, split_fractions=(1.0, 0.0, 0.0)), real, num=24, seed=1, progress=False)
    synth_src = tmp_path_factory.mktemp("synth_src")
    generate(hand_model, ProceduralConfig(image_size=(48, 48), batch_size=12, split_fractions=(1.0, 0.0, 0.0)), synth_src, num=12, seed=2, progress=False)
    reader = create_reader("ih26m", synth_src, "train", hand_model)
    shards = write_test_shards([reader[i] for i in range(len(reader))], tmp_path_factory.mktemp("shards"), per_shard=5)
    return real, shards


def test_yaml_and_set_build_a_loader_with_exact_ratios(roots, hand_model, tmp_path):
    real, shards = roots
    yaml = tmp_path / "exp.yaml"
    yaml.write_text(
        f"data:\n  sources:\n    real: {{kind: ih26m, root: '{real}', split: train}}\n    synth: {{kind: shards, root: '{shards}'}}\n"
        "  ratios: {real: 0.5, synth: 0.5}\n  batch_size: 8\n  num_workers: 0\n"
    )
    cfg = load_config(Experiment, yaml, ["data.ratios.synth=0.25", "data.ratios.real=0.75"])
    loader, sampler, sources = build_mixed_loader(cfg.data, hand_model)
    assert sources.sizes == {"real": 24, "synth": 12}
    counts = [Counter(batch["source"]) for batch in loader]
    assert len(counts) == len(sampler) == 4  # one pass over 24 real samples, 6 per batch
    assert all(c == {"real": 6, "synth": 2} for c in counts)
    batch = next(iter(loader))
    assert tuple(batch["verts"].shape) == (8, 1556, 3) and tuple(batch["image"].shape) == (8, 48, 48, 3)


def _half_and_half(real, shards) -> DataConfig:
    sources = {"real": SourceConfig(root=str(real)), "synth": SourceConfig(kind="shards", root=str(shards))}
    return DataConfig(sources=sources, ratios={"real": 0.5, "synth": 0.5}, batch_size=8, num_workers=0)


def test_transform_runs_per_draw_and_counts_repeats(roots, hand_model):
    real, shards = roots
    cfg = _half_and_half(real, shards)

    def crop(sample, index, repeat):
        return {**sample, "image": sample["image"][:16, :16], "index": index, "repeat": repeat}

    loader, _, sources = build_mixed_loader(cfg, hand_model, transform=crop)
    draws: dict[tuple[str, int], list[int]] = {}
    for batch in loader:  # one epoch: 24 real samples once, 12 synthetic ones twice
        assert tuple(batch["image"].shape) == (8, 16, 16, 3)
        for source, index, repeat in zip(batch["source"], batch["index"].tolist(), batch["repeat"].tolist()):
            assert sources.locate(index)[0] == source
            draws.setdefault((source, index), []).append(repeat)
    assert sorted(draws) == [("real", i) for i in range(24)] + [("synth", 24 + i) for i in range(12)]
    assert all(sorted(r) == ([0] if source == "real" else [0, 1]) for (source, _), r in draws.items())


def test_mano_labels_loader_gives_the_full_batches_after_the_label_step(roots, hand_model):
    real, shards = roots
    cfg = _half_and_half(real, shards)
    full, _, _ = build_mixed_loader(cfg, hand_model)
    mano, _, _ = build_mixed_loader(cfg, hand_model, labels="mano")
    for want, batch in zip(full, mano):
        assert batch["mesh_pending"].any() and not batch["verts"][batch["mesh_pending"].repeat_interleave(778, 1)].any()
        got = labels_from_mano(batch, hand_model)
        for key, value in want.items():
            if key in ("verts", "joints3d", "joints2d", "boxes", "mano_transl"):
                torch.testing.assert_close(got[key], value, atol=1e-4, rtol=0, msg=key)
            elif torch.is_tensor(value):
                assert torch.equal(got[key], value), key
            else:
                assert got[key] == value, key


def test_collated_batches_equal_default_collate_in_and_out_of_workers(roots, hand_model):
    """collate_samples stacks every numeric array field into one buffer (one shared block from a
    worker) and gives default_collate's batch: same keys in order, dtypes, shapes and values, a
    plain dict."""
    from handrecon.data.collate import collate_samples

    reader = create_reader("ih26m", roots[0], "train", hand_model, labels="mano")
    samples = [dict(reader[i], index=i, extra={"n": np.full(3, i)}, scale=np.array(0.5 * i)) for i in range(6)]
    want = torch.utils.data.default_collate(samples)

    def same(got):
        assert type(got) is dict and list(got) == list(want)
        assert torch.equal(got.pop("extra")["n"], want["extra"]["n"])  # nested fields: default collate
        for key, value in got.items():
            if torch.is_tensor(value):
                assert value.dtype == want[key].dtype and torch.equal(value, want[key]), key
            else:
                assert value == want[key], key
        return got

    same(collate_samples(samples))
    loader = torch.utils.data.DataLoader(samples, batch_size=6, num_workers=1, collate_fn=collate_samples)
    got = same(next(iter(loader)))  # through a worker: pickled as a few buffers, unpickled as views
    assert len({got[k].untyped_storage().data_ptr() for k in ("image", "verts", "joints_valid", "image_size", "scale")}) == 1  # one block


def test_bad_data_sections_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"data.ratios must be a share for each source in data.sources \['real'\], got"):
        load_config(Experiment, None, ["data.ratios.synth=0.3"])
    with pytest.raises(ConfigError, match="set one of data.epoch_source and data.steps_per_epoch, not both"):
        load_config(Experiment, None, ["data.epoch_source=real", "data.steps_per_epoch=10"])
    old = tmp_path / "old.yaml"
    old.write_text("data:\n  real: {kind: ih26m, root: /data, split: train}\n  ratios: {real: 1.0}\n")
    with pytest.raises(ConfigError) as caught:  # the fixed-slot form of earlier versions: one line with the new form
        load_config(Experiment, old)
    assert str(caught.value) == (
        f"{old}:2: 'data.real': sources are named entries now: write data.sources: {{real: {{kind: ..., root: ..., split: ...}}}} "
        "(--set data.sources.real.root=...)"
    )


def test_four_named_sources_keep_exact_quotas_and_one_can_be_dropped(roots, hand_model):
    real, shards = roots
    sets = [
        "data.sources={ih26m: {kind: ih26m, root: %s, split: train}, reih: {kind: ih26m, root: %s, split: train}, "
        "coco: {kind: ih26m, root: %s, split: train}, synth: {kind: shards, root: %s}}" % (real, real, real, shards),
        "data.ratios={ih26m: 0.4, reih: 0.2, coco: 0.2, synth: 0.2}", "data.batch_size=10", "data.num_workers=0",
    ]  # fmt: skip
    cfg = load_config(Experiment, None, sets)
    assert cfg.data.epoch_source is None and cfg.data.epoch_source_name() == "ih26m"  # null: the first source with a share
    loader, sampler, sources = build_mixed_loader(cfg.data, hand_model)
    assert list(sources.sizes) == ["ih26m", "reih", "coco", "synth"]
    counts = [Counter(batch["source"]) for batch in loader]
    assert len(counts) == len(sampler) == 6  # 24 ih26m samples, 4 per batch
    assert all(c == {"ih26m": 4, "reih": 2, "coco": 2, "synth": 2} for c in counts)
    dropped = load_config(Experiment, None, [*sets, "data.sources.coco=null", "data.ratios={ih26m: 0.6, reih: 0.2, synth: 0.2}"])
    assert list(dropped.data.sources) == ["ih26m", "reih", "synth"]
    changed = load_config(Experiment, None, [*sets, "data.sources.synth.split=val"])  # one key of one source; the rest stay
    assert changed.data.sources["synth"].split == "val" and changed.data.sources["synth"].root == str(shards)
