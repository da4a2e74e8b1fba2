"""Producers for the live-source tests (importable by spawned processes)."""
from __future__ import annotations

import time

from handrecon.data.sample import empty_sample


class CountingProducer:
    """Returns a tiny sample whose id is the seed; optionally slow."""

    def __init__(self, delay: float = 0.0):
        self.delay = delay

    def __call__(self, seed: int) -> dict:
        time.sleep(self.delay)
        return empty_sample(str(seed), "generator")


def fast():
    return CountingProducer(0.0)


def slow():
    return CountingProducer(0.2)
