"""Shared timing helper for the benchmark scripts: best-of-N per-call times, measured in the same run."""

from __future__ import annotations

import os
import sys
import tempfile
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


def machine_line() -> str:
    """Python, cores, and what a system call costs here: a line for each script's header.

    Whatever crosses into the kernel (a pipe round trip, SoftHSM2's file backend, which opens, locks and reads
    two files on every C_Encrypt) moves with it from one VM to the next: getppid measured 0.47 us on one of
    this project's VMs, several times a bare-metal figure. Printing it lets runs on different days be told apart.
    """
    with tempfile.NamedTemporaryFile() as probe:
        name = probe.name
        bare = per_call(os.getppid, min_time=0.05, repeat=3)
        opened = per_call(lambda: os.close(os.open(name, os.O_RDONLY)), min_time=0.05, repeat=3)
    return (
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores; a system call (getppid) {bare * 1e6:.2f} us, "
        f"open + close of a file {opened * 1e6:.2f} us"
    )


def fmt(seconds: float) -> str:
    return f"{seconds * 1e6:10.2f} us" if seconds < 1e-2 else f"{seconds * 1e3:10.2f} ms"


def row(label: str, seconds: float, baseline: float) -> str:
    return f"{label:<52} {fmt(seconds)}   {seconds / baseline:7.2f}x"
