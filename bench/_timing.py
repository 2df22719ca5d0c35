"""The timing loop the micro-benchmarks share (bench/expr.py, bench/inference.py)."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_us(fn: Callable[[], object], seconds: float = 1.5, repeats: int = 10) -> float:
    """Best over ``repeats`` rounds of the mean µs per call (``seconds`` in all).

    Calls go in batches of 100 between clock reads, so the clock's own cost stays out of
    short calls. The best round, not the median: on a shared machine other processes only
    ever add time.
    """
    for _ in range(200):  # warm-up: caches, lazily built paths
        fn()
    results = []
    for _ in range(repeats):
        n, start = 0, time.perf_counter()
        deadline = start + seconds / repeats
        while True:
            for _ in range(100):
                fn()
            n += 100
            now = time.perf_counter()
            if now >= deadline:
                break
        results.append((now - start) / n * 1e6)
    return min(results)
