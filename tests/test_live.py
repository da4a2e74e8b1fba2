"""Live source: generator in its own process, bounded queue, block and reuse policies."""
from __future__ import annotations

import time

import pytest
import torch
from live_producers import fast, slow

from handrecon.data.live import LiveSource
from handrecon.errors import UserError


def test_block_policy_delivers_every_generation_once_in_order():
    with LiveSource(fast, length=20, policy="block", capacity=4, seed=100) as live:
        got = [live[i] for i in range(20)]
        stats = live.stats()
    assert [s["sample_id"] for s in got] == [str(s) for s in range(100, 120)]
    assert {s["source"] for s in got} == {"live"}
    assert stats["taken"] == 20 and stats["reused"] == 0
    assert stats["produced"] <= 20 + 4 + 1  # the bounded queue holds the generator back


def test_reuse_policy_never_waits_for_a_slow_generator():
    with LiveSource(slow, length=50, policy="reuse", capacity=2, buffer_size=8) as live:
        first = live[0]  # blocks once: the buffer is empty
        start = time.perf_counter()
        got = [live[i]["sample_id"] for i in range(30)]
        elapsed = time.perf_counter() - start
        stats = live.stats()
    assert elapsed < 0.2 * 30 / 3  # far faster than the generator's 0.2 s per sample
    assert stats["reused"] > 0 and set(got) <= {str(s) for s in range(0, stats["produced"] + 1)}
    assert first["sample_id"] == "0"


def test_dataloader_workers_only_read_the_queue():
    with LiveSource(fast, length=16, policy="block", capacity=8) as live:
        loader = torch.utils.data.DataLoader(live, batch_size=4, num_workers=2)
        ids = [sid for batch in loader for sid in batch["sample_id"]]
    assert len(ids) == 16 == len(set(ids))  # each generation consumed exactly once


def test_reading_before_start_is_an_error():
    live = LiveSource(fast, length=4)
    with pytest.raises(UserError, match="start"):
        live[0]
    with pytest.raises(ValueError, match="policy"):
        LiveSource(fast, length=4, policy="drop")
