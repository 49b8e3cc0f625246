"""Shared timing helper for the benchmark scripts: best-of-N per-call times, measured in the same run."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence


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


def interleaved_best(funcs: Sequence[Callable[[], object]], *, rounds: int, batch_time: float = 1e-3) -> list[float]:
    """Seconds per call of each of ``funcs``, measured in turns: every round times one batch of each (a batch
    lasts about ``batch_time``), and each keeps its best batch over ``rounds`` rounds.

    For calls of a microsecond or less on a noisy VM. best-of-5 loops one function after another leaves each
    line to whatever the machine did during its own second, and moved ratios by 30% from run to run here;
    taking turns every millisecond gives every line the same quiet moments (ratios within 5% from run to run).
    """
    numbers = []
    for func in funcs:  # calibrate: calls per batch
        number = 1
        while True:
            start = time.perf_counter()
            for _ in range(number):
                func()
            if time.perf_counter() - start >= batch_time / 2 or number > 1 << 20:
                break
            number *= 2
        numbers.append(number)
    best = [float("inf")] * len(funcs)
    for _ in range(rounds):
        for index, (func, number) in enumerate(zip(funcs, numbers, strict=True)):
            start = time.perf_counter()
            for _ in range(number):
                func()
            best[index] = min(best[index], (time.perf_counter() - start) / number)
    return best


def fmt(seconds: float) -> str:
    return f"{seconds * 1e6:10.2f} us" if seconds < 1e-2 else f"{seconds * 1e3:10.2f} ms"


def row(label: str, seconds: float, baseline: float) -> str:
    return f"{label:<52} {fmt(seconds)}   {seconds / baseline:7.2f}x"
