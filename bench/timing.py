"""Shared timing helper for the benchmark scripts: best-of-N per-call times, measured in the same run."""

from __future__ import annotations

import time
from collections.abc import Callable


def per_call(func: Callable[[], object], *, min_time: float = 0.2, repeat: int = 5) -> float:
    """Seconds per call: calibrate a loop count to ``min_time``, then keep the best of ``repeat`` loops."""
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            func()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time / 4 or number > 1 << 24:
            break
        number *= 4
    best = elapsed / number
    for _ in range(repeat - 1):
        start = time.perf_counter()
        for _ in range(number):
            func()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def fmt(seconds: float) -> str:
    return f"{seconds * 1e6:10.2f} us" if seconds < 1e-2 else f"{seconds * 1e3:10.2f} ms"


def row(label: str, seconds: float, baseline: float) -> str:
    return f"{label:<52} {fmt(seconds)}   {seconds / baseline:7.2f}x"
