"""Mixing real and synthetic sources with exact per-batch quotas.

Two pieces that work together:

* :class:`ConcatSources` puts named datasets end to end (global index = offset of the source +
  local index) and tags every sample with the name of its mixing role (``sample["source"]``).
* :class:`MixedBatchSampler` is a main-process batch sampler over that concatenation: every batch
  of every rank holds exactly its quota of each source, each source is read through seeded
  per-epoch permutations split disjointly across ranks, the epoch length is explicit, and a
  few numbers (:meth:`MixedBatchSampler.state_dict`) resume it mid-epoch, also on a different
  number of GPUs.

Per-sample random mixing (webdataset RandomMix, interleave-style samplers) lets the share of a
25% source in a batch of 32 swing by about +-30%; here the per-batch count is fixed and the
cumulative count tracks the target within one sample.

Example::

    data = ConcatSources({"real": ih26m_train, "synth": synth_train})
    sampler = MixedBatchSampler(data.sizes, {"real": 0.7, "synth": 0.3}, batch_size=32, seed=0,
                                rank=rank, world_size=world, epoch_source="real")
    loader = DataLoader(data, batch_sampler=sampler, num_workers=8)
    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch)            # a no-op for the epoch a checkpoint resumed into
        for i, batch in enumerate(loader):
            log(realized_ratio(batch["source"], names=sampler.sources))
            ...
            ckpt["sampler"] = sampler.state_dict(batches_consumed=i + 1)
"""
from __future__ import annotations

import bisect
import math
import numbers
import operator
from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np
from torch.utils.data import Dataset, Sampler

from ..errors import UserError

__all__ = ["ConcatSources", "Draw", "MixedBatchSampler", "QuotaSchedule", "normalize_ratios", "realized_ratio"]

STATE_VERSION = 1
# Float ratios are read as the nearest fraction with at most this denominator, so 0.3 means
# exactly 3/10 and 1/3 exactly one third (and the quota pattern has a short period).
_MAX_DENOMINATOR = 1_000_000


class Draw(NamedTuple):
    """One sampled item: a global index and its `repeat`, the pass of its source's stream in
    the epoch that drew it (0 the first time a sample is drawn in an epoch, 1 the second...)."""

    index: int
    repeat: int


# --------------------------------------------------------------------------------------------
# Pure arithmetic: shares, per-step quotas, epoch ends.


def normalize_ratios(names: Sequence[str], ratios: Mapping[str, float]) -> tuple[Fraction, ...]:
    """Validate `ratios` (name -> non-negative weight) and return exact shares summing to 1,
    in the order of `names`; a name missing from `ratios` gets 0."""
    unknown = [key for key in ratios if key not in names]
    if unknown:
        raise ValueError(f"ratios name unknown source(s) {unknown}; the sources are {list(names)}")
    shares = []
    for name in names:
        value = ratios.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"ratio of source '{name}' must be a number, got {value!r}")
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"ratio of source '{name}' must be finite and >= 0, got {value!r}")
        if isinstance(value, numbers.Rational):
            weight = Fraction(int(value.numerator), int(value.denominator))
        else:
            exact = Fraction(float(value))
            weight = exact.limit_denominator(_MAX_DENOMINATOR) or exact  # keep tiny ratios positive
        shares.append(weight)
    total = sum(shares)
    if total == 0:
        raise ValueError(f"all ratios are zero ({dict(ratios)}); at least one source needs a positive ratio")
    return tuple(share / total for share in shares)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class QuotaSchedule:
    """How many samples of each source one rank's batch holds at each step of an epoch.

    With target ``t_i = share_i * batch_size``, every batch holds ``floor(t_i)`` or ``ceil(t_i)``
    samples of source i and exactly ``batch_size`` in all. Step 0 is plain largest-remainder
    rounding (ties to the earlier source); later steps rotate the fractional remainders with the
    PD^2 Pfair rule (Anderson & Srinivasan), which guarantees for every source and every step s

        |cumulative(s)[i] - t_i * s| < 1

    so over any window of steps the count is within 2 of target, and within 1 from the start
    of the epoch. Sources with share 0 are never drawn. The schedule is a pure function of the
    step (results are cached, nothing else); it repeats with the period ``period``.
    """

    def __init__(self, shares: Sequence[Fraction], batch_size: int) -> None:
        targets = [Fraction(share) * batch_size for share in shares]
        self.batch_size = batch_size
        self.base = tuple(math.floor(t) for t in targets)
        remainders = [t - b for t, b in zip(targets, self.base)]
        # Remainders as integers over one common denominator, so the rule is exact.
        self.period = math.lcm(*(r.denominator for r in remainders))
        self._weights = tuple(int(r * self.period) for r in remainders)
        self._extras = sum(self._weights) // self.period  # extra samples handed out per step
        self._table: list[tuple[int, ...]] = [(0,) * len(targets)]  # cumulative extras at step s

    def _pick(self, step: int, done: tuple[int, ...]) -> list[int]:
        """Sources that get an extra sample at `step`, given the extras `done` before it (PD^2)."""
        den = self.period
        ranked = []
        for i, (a, k) in enumerate(zip(self._weights, done)):
            if a == 0:
                continue
            k += 1  # the source's next extra ("subtask")
            if (k - 1) * den // a > step:  # not released yet: taking it now would overshoot
                continue
            deadline = _ceil_div(k * den, a)
            overlap = 0 if (k * den) % a == 0 else 1  # window overlaps the next subtask's
            group = 0
            if 2 * a >= den:  # heavy source: group deadline breaks the remaining ties
                group = _ceil_div(_ceil_div(deadline * (den - a), den) * den, den - a)
            ranked.append((deadline, -overlap, -group, -a, i))
        ranked.sort()
        if len(ranked) < self._extras:  # PD^2 is optimal when the weights sum to an integer
            raise RuntimeError("quota schedule: too few eligible sources (bug)")
        return [entry[-1] for entry in ranked[: self._extras]]

    def _extras_before(self, step: int) -> tuple[int, ...]:
        cycles, step = divmod(step, self.period)
        while len(self._table) <= step:
            s = len(self._table) - 1
            row = list(self._table[s])
            for i in self._pick(s, self._table[s]):
                row[i] += 1
            self._table.append(tuple(row))
        if cycles == 0:
            return self._table[step]
        return tuple(cycles * a + e for a, e in zip(self._weights, self._table[step]))

    def cumulative(self, step: int) -> tuple[int, ...]:
        """Samples of each source in one rank's batches of steps ``0 .. step-1``."""
        return tuple(b * step + e for b, e in zip(self.base, self._extras_before(step)))

    def quota(self, step: int) -> tuple[int, ...]:
        """Samples of each source in one rank's batch at `step`."""
        before, after = self.cumulative(step), self.cumulative(step + 1)
        return tuple(a - b for a, b in zip(after, before))


def _first_step_reaching(schedule: QuotaSchedule, source: int, start: int, units: int) -> int:
    """Smallest step s >= start with cumulative(s) - cumulative(start) >= units (per rank)."""
    if units <= 0:
        return start
    target = schedule.cumulative(start)[source] + units
    lo, hi = start, start + 1
    while schedule.cumulative(hi)[source] < target:  # exponential search, then bisection
        lo, hi = hi, start + 2 * (hi - start)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if schedule.cumulative(mid)[source] >= target:
            hi = mid
        else:
            lo = mid
    return hi


def realized_ratio(batch_sources: Sequence[str], names: Sequence[str] | None = None) -> dict[str, float]:
    """Share of each source among `batch_sources` (e.g. a collated ``batch["source"]``), to log
    next to the target ratios. With `names`, every name is reported (0.0 when absent), in order."""
    counts = Counter(batch_sources)
    keys = list(names) if names is not None else list(counts)
    total = len(batch_sources)
    return {key: (counts[key] / total if total else 0.0) for key in keys}


# --------------------------------------------------------------------------------------------
# The sampler.


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


class MixedBatchSampler(Sampler[list[int]]):
    """Batches with an exact quota of each source, disjoint across ranks, resumable mid-epoch.

    Indices are global over the concatenation of the sources in the order of `sizes` (as
    :class:`ConcatSources` lays them out): global index = offset of the source + local index.

    **Composition.** Every batch holds exactly the per-step quota of each source given by
    :class:`QuotaSchedule`: ``floor`` or ``ceil`` of ``ratio * batch_size``, summing to
    `batch_size`, with the cumulative per-rank count within 1 sample of
    ``ratio * batch_size * steps`` from the start of each epoch (the rotation restarts every
    epoch, so over E epochs the drift is below E samples per source and rank). All ranks use the
    same quotas at a step. Within a batch, samples are grouped by source in the order of `sizes`.

    **Streams.** In epoch e, source i is read through its stream: the concatenation of
    permutations of its local indices seeded by ``(seed, e, i, pass)``, pass = 0, 1, ...; a
    source that an epoch reads more than once is re-permuted at each pass, never truncated.
    Step s reads the block ``[c, c + q * world_size)`` of the stream, where c is the number of
    positions read by the steps before (the consumed count) and q the per-rank quota; rank r
    takes ``[c + r * q, c + (r + 1) * q)``. So within a pass no sample repeats across ranks or
    steps. With ``draws=True`` each item is a :class:`Draw` that also says which pass drew it,
    so per-draw randomness (augmentation) can tell a sample's repeats within an epoch apart.

    **Epoch length** (exactly one policy). ``steps_per_epoch=N``: N global steps.
    ``epoch_source=name``: the epoch ends at the first step at which that source's stream has
    been read through one full pass (consumed >= its size) - every sample of it is drawn at
    least once per epoch, and the last step may spill fewer than ``q * world_size`` samples into
    its next pass (a ceil policy, nothing is dropped). For a fresh epoch that is
    ``ceil(size / (ratio * batch_size * world_size))`` steps when ``ratio * batch_size`` is an
    integer and at most ``ceil(ceil(size / world_size) / (ratio * batch_size))`` otherwise.

    **Epochs.** :meth:`set_epoch` with a new epoch starts it at step 0. With the current epoch it
    keeps the position, so a position restored by :meth:`load_state_dict` survives the training
    loop's ``set_epoch`` call; if that epoch is already finished (a state saved after its last
    batch), the next iterator yields nothing and the loop moves on to ``set_epoch(epoch + 1)``.
    An iterator started on a finished epoch without that call starts the next epoch, so a loop
    that never calls :meth:`set_epoch` still gets fresh permutations. An iterator yields from the
    current position to the end of the epoch and advances the position as it yields; ``len()``
    is the number of steps of the epoch an iterator would serve (steps already done included).

    **Resume.** :meth:`state_dict` holds plain numbers: seed, epoch, step (global steps done in
    the epoch), consumed stream positions per source (global, over all ranks), the source sizes,
    and world size / batch size at save. It is the same on every rank.

    Guaranteed, when loaded into a sampler with the same sizes, ratios, batch size, epoch policy
    and world size: the remaining batches of the epoch, and all later epochs, are exactly those
    an uninterrupted run yields (given the same numpy version, which draws the permutations).

    Guaranteed under a different world size (or batch size, or ratios): each source's stream of
    the saved epoch continues from its consumed position, so across the save/resume boundary
    no stream position is repeated or skipped; for the `epoch_source` that means each sample of
    the epoch's pass is drawn exactly once (up to the usual spill of the last step). The step
    counter continues, the per-batch composition follows the schedule for the new settings, and
    later epochs equal those of an uninterrupted run with the new settings.

    Not guaranteed after such a switch: the remaining batches match any uninterrupted run; which
    rank sees which sample; the remaining step count of the epoch - with `epoch_source` it is
    recomputed from the samples left in its pass (so it generally matches neither world size's
    epoch length), with `steps_per_epoch` it stays N and the epoch reads a different number of
    samples; the usual tightness of the realised ratio over the switched epoch: each source's
    total over all ranks stays within ``|world_size_after - world_size_before| +
    world_size_after`` samples of its share of the epoch's samples (instead of ``world_size``).
    Per batch the counts stay exact.

    **DataLoader.** Use ``DataLoader(dataset, batch_sampler=sampler, num_workers=k)``; the sampler
    runs in the main process. torchdata's ``StatefulDataLoader`` calls :meth:`state_dict` /
    :meth:`load_state_dict` itself and accounts for prefetching. A plain DataLoader with workers
    asks for indices ahead of the training loop, so save ``state_dict(batches_consumed=i + 1)``
    (batches the loop has consumed from the current iterator), or batches in flight are skipped.

    Args:
        sizes: source name -> number of samples, in the order of the concatenation.
        ratios: source name -> non-negative weight, normalised here; a missing source gets 0 and
            is never drawn. Floats are read as the nearest fraction with denominator <= 10^6.
        batch_size: samples per batch on each rank.
        seed: non-negative seed of the permutations.
        rank, world_size: this process among the data-parallel ranks.
        epoch_source: name of the source one pass over which makes an epoch, or
        steps_per_epoch: a fixed number of global steps per epoch (give exactly one of the two).
        draws: yield :class:`Draw` items (index, repeat) instead of bare global indices.

    Raises:
        ValueError: naming the offending source or value.
    """

    def __init__(
        self,
        sizes: Mapping[str, int],
        ratios: Mapping[str, float],
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        *,
        epoch_source: str | None = None,
        steps_per_epoch: int | None = None,
        draws: bool = False,
    ) -> None:
        super().__init__()
        self.draws = bool(draws)
        if not sizes:
            raise ValueError("sizes is empty; the sampler needs at least one source")
        for name, size in sizes.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"source names must be non-empty strings, got {name!r}")
            _check_int(f"size of source '{name}'", size, 0)
        self._names = tuple(sizes)
        self._sizes = tuple(int(sizes[name]) for name in self._names)
        self._offsets = tuple(int(v) for v in np.cumsum((0,) + self._sizes[:-1]))
        self._shares = normalize_ratios(self._names, ratios)
        for name, size, share in zip(self._names, self._sizes, self._shares):
            if share > 0 and size == 0:
                raise ValueError(f"source '{name}' has ratio {ratios[name]} but no samples")
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.seed = _check_int("seed", seed, 0)
        self.world_size = _check_int("world_size", world_size, 1)
        self.rank = _check_int("rank", rank, 0)
        if self.rank >= self.world_size:
            raise ValueError(f"rank must be < world_size, got rank {rank} with world_size {world_size}")
        if (epoch_source is None) == (steps_per_epoch is None):
            raise ValueError(
                "give exactly one epoch length policy: epoch_source=<source name> or steps_per_epoch=<int>, "
                f"got epoch_source={epoch_source!r}, steps_per_epoch={steps_per_epoch!r}"
            )
        self._epoch_source: int | None = None
        self._steps_per_epoch: int | None = None
        if epoch_source is not None:
            if epoch_source not in self._names:
                raise ValueError(f"epoch_source '{epoch_source}' is not a source; the sources are {list(self._names)}")
            self._epoch_source = self._names.index(epoch_source)
            if self._shares[self._epoch_source] == 0:
                raise ValueError(f"epoch_source '{epoch_source}' has ratio 0, so an epoch over it would never end")
        else:
            self._steps_per_epoch = _check_int("steps_per_epoch", steps_per_epoch, 1)
        self._schedule = QuotaSchedule(self._shares, self.batch_size)
        self._perms: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()  # cache only
        self._iter_start: int | None = None
        self._start_epoch(0)

    # -- public properties -------------------------------------------------------------------

    @property
    def sources(self) -> tuple[str, ...]:
        return self._names

    @property
    def sizes(self) -> dict[str, int]:
        return dict(zip(self._names, self._sizes))

    @property
    def ratios(self) -> dict[str, float]:
        """The normalised target share of each source."""
        return {name: float(share) for name, share in zip(self._names, self._shares)}

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def step(self) -> int:
        """Global steps of the current epoch handed out so far."""
        return self._step

    # -- position arithmetic -----------------------------------------------------------------

    def _start_epoch(self, epoch: int) -> None:
        self._set_position(epoch, 0, (0,) * len(self._names))

    def _set_position(self, epoch: int, step: int, consumed: Sequence[int]) -> None:
        # The anchor is where the current world size took over this epoch (its start, or a
        # loaded state); every later position is a function of the step from there.
        self._epoch, self._step = epoch, step
        self._anchor_step, self._anchor_consumed = step, tuple(consumed)
        self._anchor_cum = self._schedule.cumulative(step)
        self._end: int | None = None
        self._iter_start = None
        self._hold = False  # set_epoch() named this epoch: do not roll over to the next one
        self._perms.clear()

    def _consumed_at(self, step: int) -> tuple[int, ...]:
        cum = self._schedule.cumulative(step)
        return tuple(c + self.world_size * (q - a) for c, q, a in zip(self._anchor_consumed, cum, self._anchor_cum))

    def _epoch_end(self) -> int:
        if self._end is None:
            if self._steps_per_epoch is not None:
                self._end = max(self._steps_per_epoch, self._anchor_step)
            else:
                e = self._epoch_source
                left = self._sizes[e] - self._anchor_consumed[e]
                units = _ceil_div(left, self.world_size) if left > 0 else 0
                self._end = _first_step_reaching(self._schedule, e, self._anchor_step, units)
        return self._end

    def _fresh_epoch_length(self) -> int:
        if self._steps_per_epoch is not None:
            return self._steps_per_epoch
        e = self._epoch_source
        return _first_step_reaching(self._schedule, e, 0, _ceil_div(self._sizes[e], self.world_size))

    # -- streams -----------------------------------------------------------------------------

    def _permutation(self, source: int, pass_: int) -> np.ndarray:
        key = (self._epoch, source, pass_)
        perm = self._perms.get(key)
        if perm is None:
            rng = np.random.default_rng([self.seed, self._epoch, source, pass_])
            perm = rng.permutation(self._sizes[source])
            self._perms[key] = perm
            while len(self._perms) > 2 * len(self._names):  # enough for a step to span a pass boundary
                self._perms.popitem(last=False)
        else:
            self._perms.move_to_end(key)
        return perm

    def stream(self, source: str, start: int, stop: int) -> list[int]:
        """Local indices at positions ``[start, stop)`` of `source`'s stream in the current epoch."""
        i = self._names.index(source)
        return self._stream(i, start, stop).tolist()

    def _stream(self, source: int, start: int, stop: int) -> np.ndarray:
        size = self._sizes[source]
        parts = []
        while start < stop:
            pass_, pos = divmod(start, size)
            take = min(stop - start, size - pos)
            parts.append(self._permutation(source, pass_)[pos : pos + take])
            start += take
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def _batch(self, step: int) -> list[int] | list[Draw]:
        batch: list = []
        quotas = self._schedule.quota(step)
        for i, (q, c) in enumerate(zip(quotas, self._consumed_at(step))):
            if q:
                start = c + self.rank * q
                indices = (self._stream(i, start, start + q) + self._offsets[i]).tolist()
                if self.draws:
                    passes = (np.arange(start, start + q) // self._sizes[i]).tolist()
                    indices = [Draw(index, repeat) for index, repeat in zip(indices, passes)]
                batch.extend(indices)
        return batch

    # -- Sampler API ---------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` at step 0, unless it is the current epoch (then keep the position and
        let the next iterator serve the rest of this epoch, possibly nothing)."""
        epoch = _check_int("epoch", epoch, 0)
        if epoch != self._epoch:
            self._start_epoch(epoch)
        self._hold = True

    def _rolls_over(self) -> bool:
        return self._step >= self._epoch_end() and not self._hold

    def __len__(self) -> int:
        return self._fresh_epoch_length() if self._rolls_over() else self._epoch_end()

    def __iter__(self) -> Iterator[list[int] | list[Draw]]:
        if self._rolls_over():
            self._start_epoch(self._epoch + 1)
        self._hold = False
        self._iter_start = self._step
        end = self._epoch_end()
        while self._step < end:
            batch = self._batch(self._step)
            self._step += 1  # before yielding: state_dict() must count a batch once handed out
            yield batch

    # -- resume --------------------------------------------------------------------------------

    def state_dict(self, batches_consumed: int | None = None) -> dict[str, Any]:
        """The position as plain Python numbers (same on every rank).

        Args:
            batches_consumed: batches the training loop has consumed from the current iterator;
                by default all batches handed out. Pass it with a plain DataLoader that has
                workers, which requests indices ahead of the loop.
        """
        step = self._step
        if batches_consumed is not None:
            if self._iter_start is None:
                raise ValueError("batches_consumed given, but no iterator has started in this epoch")
            handed = self._step - self._iter_start
            if isinstance(batches_consumed, bool) or not isinstance(batches_consumed, int) or not 0 <= batches_consumed <= handed:
                raise ValueError(f"batches_consumed must be an int in [0, {handed}] (batches handed out), got {batches_consumed!r}")
            step = self._iter_start + batches_consumed
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "epoch": self._epoch,
            "step": step,
            "consumed": dict(zip(self._names, self._consumed_at(step))),
            "sizes": self.sizes,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from `state` (see the class docstring for what a change of world size keeps)."""
        missing = [key for key in ("version", "seed", "epoch", "step", "consumed", "sizes") if key not in state]
        if missing:
            raise ValueError(f"sampler state lacks {missing}; is it a MixedBatchSampler state_dict()?")
        if state["version"] != STATE_VERSION:
            raise ValueError(f"sampler state version {state['version']!r} is not supported (expected {STATE_VERSION})")
        if state["seed"] != self.seed:
            raise ValueError(f"sampler state was saved with seed {state['seed']!r}, this sampler has seed {self.seed}")
        for key in ("consumed", "sizes"):
            names = list(state[key]) if isinstance(state[key], Mapping) else None
            if names is None or sorted(names) != sorted(self._names):
                raise ValueError(f"sampler state '{key}' names sources {names}, this sampler has {list(self._names)}")
        for name, size in zip(self._names, self._sizes):
            if state["sizes"][name] != size:
                raise ValueError(
                    f"source '{name}' has {size} samples but the state was saved with {state['sizes'][name]}; "
                    f"its stream cannot continue - start a new epoch with set_epoch({state['epoch']!r} + 1) instead"
                )
        epoch = _check_int("state epoch", state["epoch"], 0)
        step = _check_int("state step", state["step"], 0)
        consumed = [_check_int(f"state consumed of '{name}'", state["consumed"][name], 0) for name in self._names]
        self._set_position(epoch, step, consumed)


# --------------------------------------------------------------------------------------------
# The dataset.


class ConcatSources(Dataset):
    """Named datasets end to end; samples are tagged with their source name.

    Global index = offset of the source (sum of the sizes before it, in mapping order) + local
    index, the layout :class:`MixedBatchSampler` expects: pass it ``sizes``.
    """

    def __init__(self, sources: Mapping[str, Dataset]) -> None:
        if not sources:
            raise ValueError("ConcatSources needs at least one source")
        for name in sources:
            if not isinstance(name, str) or not name:
                raise ValueError(f"source names must be non-empty strings, got {name!r}")
        self._names = tuple(sources)
        self._datasets = tuple(sources[name] for name in self._names)
        lengths = [len(ds) for ds in self._datasets]  # type: ignore[arg-type]
        self._ends = [int(v) for v in np.cumsum(lengths)]  # exclusive end of each source

    @property
    def sizes(self) -> dict[str, int]:
        """Source name -> number of samples, in order."""
        starts = [0] + self._ends[:-1]
        return {name: end - start for name, start, end in zip(self._names, starts, self._ends)}

    @property
    def datasets(self) -> dict[str, Dataset]:
        """Source name -> its dataset, in order."""
        return dict(zip(self._names, self._datasets))

    @property
    def offsets(self) -> dict[str, int]:
        """Source name -> global index of its first sample."""
        return dict(zip(self._names, [0] + self._ends[:-1]))

    def __len__(self) -> int:
        return self._ends[-1]

    def locate(self, index: int) -> tuple[str, int]:
        """(source name, local index) of a global index; negative indices count from the end."""
        index = operator.index(index)
        total = len(self)
        if not -total <= index < total:
            raise IndexError(f"index {index} out of range for ConcatSources of length {total}")
        if index < 0:
            index += total
        i = bisect.bisect_right(self._ends, index)
        return self._names[i], index - (self._ends[i - 1] if i else 0)

    def __getitem__(self, index: int) -> dict:
        name, local = self.locate(index)
        try:
            sample = self._datasets[self._names.index(name)][local]
        except UserError as exc:  # a bad file: say which sample met it (in a worker, only the message survives)
            raise UserError(f"source '{name}', sample {local}: {exc}") from exc
        if not isinstance(sample, Mapping):
            raise TypeError(f"source '{name}' returned {type(sample).__name__} at index {local}, expected a sample dict")
        out = dict(sample)  # a copy: never retag a dict the source may cache or share
        out["source"] = name
        return out
