"""MixedBatchSampler / ConcatSources: exact quotas, seeded streams split across ranks, resume."""
from __future__ import annotations

import json
import math
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, Dataset

from handrecon.data.mixing import ConcatSources, Draw, MixedBatchSampler, QuotaSchedule, realized_ratio

# Deterministic and writes no example database into the repo.
PROPERTY = settings(max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------------------------
# Helpers computed independently of the implementation.


def shares_of(weights: dict[str, int]) -> dict[str, Fraction]:
    total = sum(weights.values())
    return {name: Fraction(w, total) for name, w in weights.items()}


def largest_remainder(shares: list[Fraction], batch_size: int) -> list[int]:
    """Plain largest-remainder rounding of share * batch_size, ties to the earlier source."""
    targets = [s * batch_size for s in shares]
    out = [math.floor(t) for t in targets]
    order = sorted(range(len(targets)), key=lambda i: (-(targets[i] - out[i]), i))
    for i in order[: batch_size - sum(out)]:
        out[i] += 1
    return out


def split(batch: list[int], sizes: dict[str, int]) -> dict[str, list[int]]:
    """Global indices of one batch -> local indices per source (asserting each is valid)."""
    out: dict[str, list[int]] = {name: [] for name in sizes}
    for index in batch:
        offset = 0
        for name, size in sizes.items():
            if offset <= index < offset + size:
                out[name].append(index - offset)
                break
            offset += size
        else:
            raise AssertionError(f"index {index} is outside every source")
    return out


def run_ranks(sizes, ratios, batch_size, seed, world_size, **policy):
    """One epoch on `world_size` simulated ranks: (samplers, per step a list of per-rank splits)."""
    samplers = [MixedBatchSampler(sizes, ratios, batch_size, seed, rank=r, world_size=world_size, **policy) for r in range(world_size)]
    steps = [[split(b, sizes) for b in batches] for batches in zip(*samplers)]
    return samplers, steps


def assert_passes(sequence: list[int], size: int) -> None:
    """`sequence` is a concatenation of permutations of range(size) (the last one possibly cut)."""
    for start in range(0, len(sequence), size):
        chunk = sequence[start : start + size]
        if len(chunk) == size:
            assert sorted(chunk) == list(range(size))
        else:
            assert len(set(chunk)) == len(chunk) and all(0 <= i < size for i in chunk)


class Toy(Dataset):
    """A source whose samples carry their own (pre-mixing) source tag; it hands out the same
    dict objects every time, as a caching reader would."""

    def __init__(self, tag: str, n: int) -> None:
        self.samples = [{"sample_id": f"{tag}-{i}", "source": tag, "x": torch.tensor([float(i)])} for i in range(n)]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        return self.samples[i]


# --------------------------------------------------------------------------------------------
# Quota schedule.


@PROPERTY
@given(
    weights=st.lists(st.integers(0, 9), min_size=1, max_size=6).filter(any),
    batch_size=st.integers(1, 64),
    steps=st.integers(1, 300),
)
@example(weights=[1, 1, 1, 55, 63], batch_size=1, steps=300)  # "largest deficit first" drifts by 1 at step 76
@example(weights=[9, 9, 9, 1, 1, 1], batch_size=13, steps=300)
def test_quota_schedule_is_exact_and_tracks_the_ratio(weights, batch_size, steps):
    shares = [Fraction(w, sum(weights)) for w in weights]
    schedule = QuotaSchedule(shares, batch_size)
    assert list(schedule.quota(0)) == largest_remainder(shares, batch_size)
    total = [0] * len(shares)
    for s in range(steps):
        quota = schedule.quota(s)
        assert sum(quota) == batch_size
        for i, (q, share) in enumerate(zip(quota, shares)):
            target = share * batch_size
            assert q in (math.floor(target), math.ceil(target))
            if share == 0:
                assert q == 0
            total[i] += q
            assert abs(total[i] - target * (s + 1)) < 1, (i, s)
    # A pure function of the step: a fresh schedule asked straight for a late step agrees.
    assert QuotaSchedule(shares, batch_size).cumulative(steps) == tuple(total)


# --------------------------------------------------------------------------------------------
# One epoch on several ranks.


@st.composite
def mixes(draw):
    n_sources = draw(st.integers(1, 3))
    names = ["real", "synth", "extra"][:n_sources]
    weights = {name: draw(st.integers(0, 4)) for name in names}
    if not any(weights.values()):
        weights[names[0]] = 1
    sizes = {name: draw(st.integers(1 if weights[name] else 0, 60)) for name in names}
    if draw(st.booleans()):
        sizes[names[-1]] = draw(st.integers(1, 3)) if weights[names[-1]] else 0  # smaller than its share
    positive = [name for name in names if weights[name]]
    if draw(st.booleans()):
        policy = {"epoch_source": draw(st.sampled_from(positive))}
    else:
        policy = {"steps_per_epoch": draw(st.integers(1, 25))}
    return sizes, weights, policy


@PROPERTY
@given(mix=mixes(), batch_size=st.integers(1, 64), world_size=st.integers(1, 4), seed=st.integers(0, 2**32))
def test_every_batch_has_the_exact_quota_and_ranks_split_the_streams(mix, batch_size, world_size, seed):
    sizes, weights, policy = mix
    shares = shares_of(weights)
    samplers, steps = run_ranks(sizes, weights, batch_size, seed, world_size, **policy)
    assert len(steps) == len(samplers[0])
    if "steps_per_epoch" in policy:
        assert len(steps) == policy["steps_per_epoch"]

    consumed = dict.fromkeys(sizes, 0)
    per_rank_total = dict.fromkeys(sizes, 0)
    seen = {name: [] for name in sizes}
    for s, ranks in enumerate(steps):
        for name in sizes:
            counts = [len(r[name]) for r in ranks]
            q = counts[0]
            assert counts == [q] * world_size  # all ranks share the step's quota
            target = shares[name] * batch_size
            assert q in (math.floor(target), math.ceil(target))
            if shares[name] == 0:
                assert q == 0
            per_rank_total[name] += q
            assert abs(per_rank_total[name] - target * (s + 1)) < 1
            # The ranks' union is the next contiguous block of the source's stream, in rank order.
            block = [i for r in ranks for i in r[name]]
            assert block == samplers[0].stream(name, consumed[name], consumed[name] + q * world_size)
            consumed[name] += q * world_size
            seen[name] += block
        assert sum(len(v) for v in ranks[0].values()) == batch_size

    for name, size in sizes.items():
        if size:
            assert_passes(seen[name], size)  # no repeat before a pass is complete, never a dropped index
    if "epoch_source" in policy:
        e = policy["epoch_source"]
        last_q = len(steps[-1][0][e])
        assert consumed[e] >= sizes[e] > consumed[e] - last_q * world_size  # ends at the first full pass
    for sampler in samplers:
        assert sampler.state_dict()["consumed"] == consumed


@PROPERTY
@given(
    mix=mixes(),
    batch_size=st.integers(1, 32),
    before=st.integers(1, 4),
    after=st.integers(1, 4),
    fraction=st.floats(0, 1),
)
def test_a_world_size_switch_continues_every_stream(mix, batch_size, before, after, fraction):
    sizes, weights, policy = mix
    samplers = [MixedBatchSampler(sizes, weights, batch_size, 7, rank=r, world_size=before, **policy) for r in range(before)]
    k = int(fraction * len(samplers[0]))
    iters = [iter(s) for s in samplers]
    first = [[split(next(it), sizes) for it in iters] for _ in range(k)]
    states = [s.state_dict() for s in samplers]
    assert all(state == states[0] for state in states)  # one state for all ranks

    resumed = [MixedBatchSampler(sizes, weights, batch_size, 7, rank=r, world_size=after, **policy) for r in range(after)]
    for s in resumed:
        s.load_state_dict(json.loads(json.dumps(states[0])))
        s.set_epoch(0)  # as a training loop does; a state saved after the last batch yields nothing more
    second = [[split(b, sizes) for b in batches] for batches in zip(*resumed)]

    for name, size in sizes.items():
        drawn = [i for step in first + second for r in step for i in r[name]]
        assert drawn == resumed[0].stream(name, 0, len(drawn))  # the stream, nothing repeated or skipped
        if size:
            assert_passes(drawn, size)
    if "epoch_source" in policy:
        e = policy["epoch_source"]
        drawn = sum(len(r[e]) for step in first + second for r in step)
        assert drawn >= sizes[e]
        if second:
            assert drawn - sizes[e] < len(second[-1][0][e]) * after
    else:
        assert k + len(second) == policy["steps_per_epoch"]


# --------------------------------------------------------------------------------------------
# Seeds, epochs, resume.

SIZES = {"real": 40, "synth": 9}
RATIOS = {"real": 0.75, "synth": 0.25}


def epoch_batches(sampler: MixedBatchSampler) -> list[list[int]]:
    return [list(b) for b in sampler]


def test_deterministic_by_seed_with_a_fresh_permutation_each_epoch():
    a = MixedBatchSampler(SIZES, RATIOS, 8, seed=3, epoch_source="real")
    b = MixedBatchSampler(SIZES, RATIOS, 8, seed=3, epoch_source="real")
    other = MixedBatchSampler(SIZES, RATIOS, 8, seed=4, epoch_source="real")
    first = epoch_batches(a)
    assert first == epoch_batches(b)
    assert first != epoch_batches(other)

    second = epoch_batches(a)  # no set_epoch: iterating a finished epoch starts the next one
    assert a.epoch == 1 and second != first
    for batches in (first, second):  # each epoch covers every real sample (6 per step: 2 spill over)
        assert set(i for bt in batches for i in bt if i < 40) == set(range(40))
    b.set_epoch(1)
    assert epoch_batches(b) == second
    b.set_epoch(0)
    assert epoch_batches(b) == first


@pytest.mark.parametrize("policy", [{"epoch_source": "real"}, {"steps_per_epoch": 11}])
@pytest.mark.parametrize("world_size", [1, 3])
@pytest.mark.parametrize("k", [0, 1, 4, "end"])
def test_mid_epoch_resume_gives_the_uninterrupted_batches(policy, world_size, k):
    rank = world_size - 1
    sizes = {"real": 100, "synth": 9}
    make = lambda: MixedBatchSampler(sizes, {"real": 2, "synth": 1}, 7, seed=5, rank=rank, world_size=world_size, **policy)  # noqa: E731
    reference = make()
    epoch0, epoch1 = epoch_batches(reference), epoch_batches(reference)
    k = len(epoch0) if k == "end" else k
    assert len(epoch0) > 4

    run = make()
    it = iter(run)
    head = [next(it) for _ in range(k)]
    state = json.loads(json.dumps(run.state_dict()))  # plain numbers only
    assert state["step"] == k
    assert len(make()) == len(epoch0)

    resumed = make()
    resumed.load_state_dict(state)
    resumed.set_epoch(0)  # the trainer's loop calls this; it must keep the restored position
    assert len(resumed) == len(epoch0)
    rest = epoch_batches(resumed)
    resumed.set_epoch(1)
    assert head + rest + epoch_batches(resumed) == epoch0 + epoch1

    unattended = make()  # a loop that never calls set_epoch goes on with the next epoch
    unattended.load_state_dict(state)
    assert epoch_batches(unattended) == (epoch0[k:] if k < len(epoch0) else epoch1)


def test_resume_from_two_ranks_to_one_covers_the_epoch_source_once():
    sizes, ratios = {"real": 96, "synth": 40}, {"real": 1, "synth": 1}  # 4 + 4 per rank and step
    two = [MixedBatchSampler(sizes, ratios, 8, seed=1, rank=r, world_size=2, epoch_source="real") for r in range(2)]
    assert len(two[0]) == 12
    iters = [iter(s) for s in two]
    before = [split(next(it), sizes) for _ in range(5) for it in iters]

    one = MixedBatchSampler(sizes, ratios, 8, seed=1, rank=0, world_size=1, epoch_source="real")
    one.load_state_dict(two[1].state_dict())
    assert len(one) == 5 + (96 - 40) // 4
    after = [split(b, sizes) for b in one]

    real = [i for b in before + after for i in b["real"]]
    assert sorted(real) == list(range(96))  # each sample of the pass exactly once
    synth = [i for b in before + after for i in b["synth"]]
    assert len(synth) == 96 and Counter(synth[:80]) == Counter(2 * list(range(40)))  # passes, no gap
    assert one.state_dict()["consumed"] == {"real": 96, "synth": 96}


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_draw_disjoint_samples_within_a_pass(world_size):
    sizes, ratios = {"real": 1000, "synth": 700}, {"real": 0.75, "synth": 0.25}
    samplers, steps = run_ranks(sizes, ratios, 8, 11, world_size, steps_per_epoch=20)
    for name in sizes:
        drawn = [i for step in steps for r in step for i in r[name]]
        assert len(drawn) == len(set(drawn)) == 20 * world_size * (6 if name == "real" else 2)
        stream = samplers[0].stream(name, 0, len(drawn))
        pos = 0
        for step in steps:  # each step's union over ranks is the next block of the stream
            block = [i for r in step for i in r[name]]
            assert block == stream[pos : pos + len(block)]
            pos += len(block)


def test_a_source_smaller_than_its_share_cycles_through_new_permutations():
    sizes = {"real": 200, "synth": 5}
    sampler = MixedBatchSampler(sizes, {"real": 1, "synth": 1}, 8, seed=2, epoch_source="real")
    synth = [i for b in sampler for i in split(b, sizes)["synth"]]
    assert len(synth) == 200  # 4 per step for 50 steps: 40 passes, none truncated
    passes = [tuple(synth[p : p + 5]) for p in range(0, 200, 5)]
    assert all(sorted(p) == list(range(5)) for p in passes)
    assert len(set(passes)) > 10  # re-permuted at each pass


@pytest.mark.parametrize("world_size", [1, 3])
def test_draws_number_each_samples_repeats_within_the_epoch(world_size):
    sizes, ratios = {"real": 60, "synth": 4}, {"real": 1, "synth": 1}
    make = lambda r, **kw: MixedBatchSampler(sizes, ratios, 6, seed=3, rank=r, world_size=world_size, epoch_source="real", **kw)  # noqa: E731
    for _ in range(2):  # two epochs: repeats restart at 0
        plain = [make(r) for r in range(world_size)]
        with_draws = [make(r, draws=True) for r in range(world_size)]
        seen = []
        for rank_plain, rank_draws in zip(zip(*plain), zip(*with_draws)):
            for p, d in zip(rank_plain, rank_draws):
                assert all(isinstance(x, Draw) for x in d) and [x.index for x in d] == p  # same batches
                seen.extend(d)
        # a sample's k-th draw in the epoch has repeat k - 1: every (index, repeat) is new
        assert len(seen) == len(set(seen))
        by_index: dict[int, list[int]] = {}
        for index, repeat in seen:
            by_index.setdefault(index, []).append(repeat)
        assert all(sorted(r) == list(range(len(r))) for r in by_index.values())
        assert max(max(r) for i, r in by_index.items() if i >= 60) >= 5  # the small source repeats


def test_state_dict_counts_only_consumed_batches_with_a_prefetching_loader():
    data = ConcatSources({"real": Toy("ih26m", 30), "synth": Toy("procedural", 12)})
    make = lambda: MixedBatchSampler(data.sizes, {"real": 2, "synth": 1}, 6, seed=0, epoch_source="real")  # noqa: E731
    reference = [b["sample_id"] for b in DataLoader(data, batch_sampler=make())]

    sampler = make()
    loader = DataLoader(data, batch_sampler=sampler, num_workers=2)
    got = []
    for i, batch in enumerate(loader):
        got.append(batch["sample_id"])
        if i == 1:
            state = sampler.state_dict(batches_consumed=i + 1)
            break
    assert sampler.step > 2  # the workers asked for more than the loop consumed
    resumed = make()
    resumed.load_state_dict(state)
    got += [b["sample_id"] for b in DataLoader(data, batch_sampler=resumed)]
    assert got == reference


# --------------------------------------------------------------------------------------------
# DataLoader and ConcatSources.


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_batches_have_exact_counts_and_role_tags(num_workers):
    data = ConcatSources({"real": Toy("ih26m", 30), "synth": Toy("procedural", 11)})
    sampler = MixedBatchSampler(data.sizes, {"real": 0.7, "synth": 0.3}, 10, seed=0, epoch_source="real")
    expected = list(MixedBatchSampler(data.sizes, {"real": 0.7, "synth": 0.3}, 10, seed=0, epoch_source="real"))
    loader = DataLoader(data, batch_sampler=sampler, num_workers=num_workers)
    assert len(loader) == 5
    batches = list(loader)
    assert len(batches) == 5
    for batch, indices in zip(batches, expected):
        assert batch["source"] == ["real"] * 7 + ["synth"] * 3
        assert realized_ratio(batch["source"]) == {"real": 0.7, "synth": 0.3}
        names = [data.locate(i) for i in indices]
        tags = {"real": "ih26m", "synth": "procedural"}
        assert batch["sample_id"] == [f"{tags[n]}-{j}" for n, j in names]


def test_concat_sources_layout_and_tags():
    real = Toy("ih26m", 3)
    data = ConcatSources({"real": real, "empty": Toy("x", 0), "synth": Toy("procedural", 4)})
    assert data.sizes == {"real": 3, "empty": 0, "synth": 4} and len(data) == 7
    assert data.offsets == {"real": 0, "empty": 3, "synth": 3}
    assert [data.locate(i) for i in (0, 2, 3, 6, -1, np.int64(4))] == [
        ("real", 0), ("real", 2), ("synth", 0), ("synth", 3), ("synth", 3), ("synth", 1)
    ]
    sample = data[1]
    assert sample["source"] == "real" and sample["sample_id"] == "ih26m-1"
    assert real[1]["source"] == "ih26m"
    for bad in (7, -8):
        with pytest.raises(IndexError, match=str(bad)):
            data[bad]
    with pytest.raises(ValueError, match="at least one"):
        ConcatSources({})


def test_realized_ratio():
    assert realized_ratio(["real", "synth", "real", "real"]) == {"real": 0.75, "synth": 0.25}
    assert realized_ratio(["real"], names=("real", "synth")) == {"real": 1.0, "synth": 0.0}
    assert realized_ratio([], names=("real",)) == {"real": 0.0}


# --------------------------------------------------------------------------------------------
# Errors.

OK = {"sizes": {"real": 10, "synth": 5}, "ratios": {"real": 1, "synth": 1}, "batch_size": 4, "seed": 0, "epoch_source": "real"}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"ratios": {"real": 1, "nope": 1}}, r"unknown source.*'nope'"),
        ({"ratios": {"real": 0, "synth": 0}}, r"all ratios are zero"),
        ({"ratios": {"real": 1, "synth": -0.5}}, r"'synth'.*-0\.5"),
        ({"ratios": {"real": 1, "synth": float("nan")}}, r"'synth'.*nan"),
        ({"ratios": {"real": 1, "synth": "1"}}, r"'synth'.*number"),
        ({"batch_size": 0}, r"batch_size.*0"),
        ({"rank": 2, "world_size": 2}, r"rank.*2.*world_size 2"),
        ({"rank": -1}, r"rank.*-1"),
        ({"world_size": 0}, r"world_size.*0"),
        ({"seed": -3}, r"seed.*-3"),
        ({"ratios": {"real": 1}, "epoch_source": "synth"}, r"epoch_source 'synth' has ratio 0"),
        ({"epoch_source": "nope"}, r"epoch_source 'nope' is not a source"),
        ({"steps_per_epoch": 5}, r"exactly one epoch length policy"),
        ({"epoch_source": None}, r"exactly one epoch length policy"),
        ({"epoch_source": None, "steps_per_epoch": 0}, r"steps_per_epoch.*0"),
        ({"sizes": {"real": 10, "synth": 0}}, r"source 'synth'.*no samples"),
        ({"sizes": {"real": 10, "synth": -1}}, r"size of source 'synth'.*-1"),
        ({"sizes": {}}, r"sizes is empty"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_the_value(change, message):
    with pytest.raises(ValueError, match=message):
        MixedBatchSampler(**{**OK, **change})


def test_invalid_states_raise_value_error():
    sampler = MixedBatchSampler(**OK)
    state = sampler.state_dict()
    with pytest.raises(ValueError, match="seed 9"):
        sampler.load_state_dict({**state, "seed": 9})
    with pytest.raises(ValueError, match=r"'synth' has 5 samples but the state was saved with 6"):
        sampler.load_state_dict({**state, "sizes": {"real": 10, "synth": 6}})
    with pytest.raises(ValueError, match=r"'consumed' names sources \['real'\]"):
        sampler.load_state_dict({**state, "consumed": {"real": 0}})
    with pytest.raises(ValueError, match=r"lacks \['step'\]"):
        sampler.load_state_dict({k: v for k, v in state.items() if k != "step"})
    with pytest.raises(ValueError, match="no iterator"):
        sampler.state_dict(batches_consumed=0)
    it = iter(sampler)
    next(it)
    with pytest.raises(ValueError, match=r"batches_consumed.*\[0, 1\].*2"):
        sampler.state_dict(batches_consumed=2)
    with pytest.raises(ValueError, match="epoch.*-1"):
        sampler.set_epoch(-1)
