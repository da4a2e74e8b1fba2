"""A data source fed by a generator running live, beside the training loop.

The generator (for SesaHand, `synth.live` builds one around the pipeline) runs in its own
process and puts finished samples into a bounded queue; `LiveSource.__getitem__` only takes
samples out of the queue, so DataLoader workers never run the generator, and a slow generator
is visible instead of silently stalling. When the queue is empty:

- `policy="block"` waits for the next generation (the trainer runs at the generator's pace);
- `policy="reuse"` returns a random one of the last `buffer_size` generations this process
  has seen (training never waits once the buffer holds something); reuses are counted.

A live source is declared non-deterministic (`deterministic = False`): which generation
answers which index depends on timing. The sampler index only says "one live sample here".
"""
from __future__ import annotations

import multiprocessing as mp
import queue
import random
from collections import deque
from typing import Callable, Protocol

import torch

from ..errors import UserError

POLICIES = ("block", "reuse")


class Producer(Protocol):
    """Makes one sample (the sample layout) for a seed; built inside the generator process."""

    def __call__(self, seed: int) -> dict: ...


def _produce(factory: Callable[[], Producer], out: mp.Queue, stop, produced, base_seed: int) -> None:
    # Unread generations are disposable at shutdown; without this the child cannot exit
    # while its queue's feeder thread still holds items nobody will read.
    out.cancel_join_thread()
    producer = factory()  # heavy state (models, GPU) lives only in this process
    seed = base_seed
    while not stop.is_set():
        sample = producer(seed)
        seed += 1
        while not stop.is_set():
            try:
                out.put(sample, timeout=0.1)
                with produced.get_lock():
                    produced.value += 1
                break
            except queue.Full:
                continue


class LiveSource(torch.utils.data.Dataset):
    """Samples from a live generator process through a bounded queue.

    Args:
        factory: picklable zero-argument callable returning the Producer (called in the child).
        length: how many indices the source answers (its size for the sampler, e.g. one epoch's
            share of live samples); any index returns the next available sample.
        policy: 'block' or 'reuse' (see module doc).
        capacity: queue bound (samples waiting).
        buffer_size: generations kept per consuming process for 'reuse'.
        timeout: seconds a 'block' read waits before raising (a stuck generator is an error).
        seed: first generation seed; generation k uses seed + k.
    Call `start()` before the DataLoader starts its workers (they inherit the queue), and
    `close()` at the end (or use it as a context manager).
    """

    deterministic = False

    def __init__(
        self,
        factory: Callable[[], Producer],
        length: int,
        policy: str = "block",
        capacity: int = 64,
        buffer_size: int = 256,
        timeout: float = 600.0,
        seed: int = 0,
        source: str = "live",
    ):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        if length < 1 or capacity < 1 or buffer_size < 1:
            raise ValueError(f"length, capacity and buffer_size must be >= 1, got {length}, {capacity}, {buffer_size}")
        self.factory, self.length, self.policy = factory, length, policy
        self.capacity, self.buffer_size, self.timeout, self.seed, self.source = capacity, buffer_size, timeout, seed, source
        ctx = mp.get_context("spawn")  # a clean child: no copied CUDA state or threads
        self._queue: mp.Queue = ctx.Queue(maxsize=capacity)
        self._stop = ctx.Event()
        self._produced = ctx.Value("l", 0)
        self._taken = ctx.Value("l", 0)
        self._reused = ctx.Value("l", 0)
        self._ctx = ctx
        self._process = None
        self._buffer: deque = deque(maxlen=buffer_size)

    def start(self) -> "LiveSource":
        if self._process is None:
            self._process = self._ctx.Process(
                target=_produce, args=(self.factory, self._queue, self._stop, self._produced, self.seed), daemon=True
            )
            self._process.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._process is not None:
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.terminate()
            self._process = None

    def __enter__(self) -> "LiveSource":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.length

    def stats(self) -> dict[str, int]:
        """Counts over all consuming processes: generated, taken fresh, answered by reuse."""
        return {"produced": self._produced.value, "taken": self._taken.value, "reused": self._reused.value}

    def _take(self, block: bool) -> dict:
        sample = self._queue.get(timeout=self.timeout) if block else self._queue.get_nowait()
        with self._taken.get_lock():
            self._taken.value += 1
        self._buffer.append(sample)
        return sample

    def __getitem__(self, index: int) -> dict:
        if self._process is None and torch.utils.data.get_worker_info() is None:
            raise UserError("LiveSource.start() must be called before reading (and before DataLoader workers start)")
        try:
            if self.policy == "reuse" and self._buffer:
                try:
                    sample = self._take(block=False)
                except queue.Empty:
                    with self._reused.get_lock():
                        self._reused.value += 1
                    sample = random.choice(self._buffer)
            else:
                sample = self._take(block=True)
        except queue.Empty:
            raise UserError(f"live generator produced nothing for {self.timeout:.0f} s (is its process alive?)") from None
        return {**sample, "source": self.source}
