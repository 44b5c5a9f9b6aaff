"""Timing helpers shared by the benchmarks (run as `python bench/NAME.py`, so this imports as `timing`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar


T = TypeVar("T")


def best_of(repeats: int, fn: Callable[[], T]) -> tuple[float, T]:
    """The fastest of `repeats` runs of `fn` in seconds, and the last run's result."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result
