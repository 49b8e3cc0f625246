"""Steps per second of the lockstep machine, against targets and against a hollow machine, in the same run.

Run: python bench/bench_machine.py [examples] [--targets model,builtin,builtin-processes,capi]
(figures recorded in docs/benchmarks.md; capi is included where Wine is installed)

The hollow machine has the same rules and strategies, but its model and target answer every call at once
(no crypto, no state): what is left is Hypothesis's generation and the harness's bookkeeping. Goal: against
``builtin`` at least half the hollow machine's rate.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping

from keyhandoff.check import run_check
from keyhandoff.model import wincrypt as w
from keyhandoff.model.state import KeyState, Lifecycle, Location
from keyhandoff.target import Capabilities, Target
from keyhandoff.targets.fresh import fresh_factory
from keyhandoff.targets.model_target import ModelTarget

_STATE = KeyState(
    Lifecycle.CREATED, Location.SOFTWARE, w.CALG_AES_128, b"", b"", 128, 128, 1, 8, 1, bytes(16), bytes(16), 0, 0x3B
)


class Hollow(ModelTarget):
    """Answers every call at once with a plausible value; holds no state."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self._next = itertools.count(1)

    def acquire(self, side: str = "secure") -> int:
        return next(self._next)

    def release(self, prov: int) -> None:
        return None

    def gen_key(self, prov: int, alg: int, flags: int = 0, *, hardware: bool = False) -> int:
        return next(self._next)

    def import_key(self, prov: int, blob: bytes, *, pub_key: int = 0, flags: int = 0, hardware: bool = False) -> int:
        return next(self._next)

    def export_key(self, key: int, blob_type: int, *, exp_key: int = 0, flags: int = 0) -> bytes:
        return b"\x09\x02\x00\x00\x0e\x66\x00\x00" + bytes(24)

    def destroy_key(self, key: int) -> None:
        return None

    def duplicate_key(self, key: int) -> int:
        return next(self._next)

    def set_key_param(self, key: int, param: int, value: bytes | int) -> None:
        return None

    def get_key_param(self, key: int, param: int) -> bytes | int:
        return 1

    def encrypt(self, key: int, data: bytes, final: bool) -> bytes:
        return data

    def decrypt(self, key: int, data: bytes, final: bool) -> bytes:
        return data

    def hmac(self, key: int, hash_alg: int, data: bytes) -> bytes:
        return bytes(20)

    def inspect(self, key: int) -> KeyState:
        return _STATE

    def token_objects(self) -> Mapping[int, int]:
        return {}

    def capabilities(self) -> Capabilities:
        return ModelTarget.capabilities(self)


def rate(spec: str, factory: Callable[[], Target], examples: int) -> tuple[float, int, float]:
    start = time.perf_counter()
    result = run_check(spec, factory, examples=examples, steps=50, seed=1, shrink=False)
    seconds = time.perf_counter() - start
    if not result.ok:
        raise SystemExit(f"{spec}: the run failed, so its rate means nothing: {result.failure}")
    return result.coverage.steps / seconds, result.coverage.steps, seconds


def main() -> None:
    import keyhandoff.lockstep as lockstep_module

    parser = argparse.ArgumentParser()
    parser.add_argument("examples", nargs="?", type=int, default=100)
    parser.add_argument(
        "--targets",
        default="model,builtin,builtin-processes" + (",capi" if shutil.which("wine") else ""),
        help="comma-separated target specs (default: the built-in ones, and capi where Wine is installed)",
    )
    args = parser.parse_args()
    examples = args.examples
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; {examples} test cases x 50 rules, seed 1")
    real_model = lockstep_module.ModelTarget
    lockstep_module.ModelTarget = Hollow  # type: ignore[misc]  # the hollow machine's model answers at once too
    try:
        hollow, steps, secs = rate("hollow", Hollow, examples)
    finally:
        lockstep_module.ModelTarget = real_model  # type: ignore[misc]
    print(f"{'hollow machine (baseline)':<34} {hollow:9.0f} steps/s  ({steps} steps, {secs:.1f} s)   1.00x")
    for spec in args.targets.split(","):
        factory = ModelTarget if spec == "model" else fresh_factory(spec)
        value, steps, secs = rate(spec, factory, examples if spec in ("model", "builtin") else examples // 2)
        print(
            f"{'machine against ' + spec:<34} {value:9.0f} steps/s  ({steps} steps, {secs:.1f} s)   "
            f"{value / hollow:.2f}x"
        )


if __name__ == "__main__":
    main()
