"""Steps per second of the lockstep machine, against targets and against a hollow machine, in the same run.

Run: python bench/bench_machine.py [examples] [--targets model,builtin,builtin-processes,capi] [--seeds 1,2,3]
(figures recorded in docs/benchmarks.md; capi is included where Wine is installed)

The hollow machine has the same rules and strategies, but its model and target answer every call at once
(no crypto, no state): what is left is Hypothesis's generation and the harness's bookkeeping. Goal: against
``builtin`` at least half the hollow machine's rate.

Two rates, both per second: rules (Hypothesis's steps: one rule run, its draws and its checks) and calls (the
lockstep's steps: one call on model and target, what ``keyhandoff check`` counts as steps). A rule makes one
call or several, and the hollow machine's rules make fewer (everything succeeds at once, so a rule's later
calls, made on an error or a state, differ): the same rule mix gives it fewer calls per rule, which flatters
the others' rate in calls. The rate in rules compares like with like. Each seed runs its own programs; the
figures are totals over the seeds (all rules over all seconds).
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from hypothesis.stateful import RuleBasedStateMachine

from keyhandoff.check import run_check
from keyhandoff.model import wincrypt as w
from keyhandoff.model.state import KeyState, Lifecycle, Location
from keyhandoff.target import Capabilities, Target
from keyhandoff.targets.fresh import fresh_factory
from keyhandoff.targets.model_target import ModelTarget

_RULES = 50  # per test case

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

    def inspect_many(self, keys: Sequence[int]) -> list[KeyState]:
        # As the built-in targets offer it: the harness then reads every state in one call for all of them.
        return [_STATE] * len(keys)

    def token_objects(self) -> Mapping[int, int]:
        return {}

    def capabilities(self) -> Capabilities:
        return ModelTarget.capabilities(self)


class Counted(NamedTuple):
    """What one run or several made and took."""

    rules: int
    calls: int
    seconds: float

    @classmethod
    def total(cls, runs: list[Counted]) -> Counted:
        return cls(sum(r.rules for r in runs), sum(r.calls for r in runs), sum(r.seconds for r in runs))

    def line(self, label: str, base: Counted) -> str:
        rules, calls = self.rules / self.seconds, self.calls / self.seconds
        ratio_rules, ratio_calls = rules * base.seconds / base.rules, calls * base.seconds / base.calls
        totals = f"({self.rules} rules, {self.calls} calls, {self.seconds:.1f} s)"
        return f"{label:<34} {rules:7.0f} {calls:7.0f}  {totals:<42} {ratio_rules:5.2f}x   {ratio_calls:5.2f}x"


def counting_rules() -> Callable[[], int]:
    """Counts rule runs from here on. Hypothesis checks a machine's invariants once before its first rule and once
    after each (hypothesis/stateful.py, run_state_machine); the machines started are subtracted at reading."""
    counts = {"checks": 0, "machines": 0}
    check, init = RuleBasedStateMachine.check_invariants, RuleBasedStateMachine.__init__

    def counted_check(self: RuleBasedStateMachine, *args: Any) -> None:
        counts["checks"] += 1
        check(self, *args)

    def counted_init(self: RuleBasedStateMachine) -> None:
        counts["machines"] += 1
        init(self)

    RuleBasedStateMachine.check_invariants = counted_check  # type: ignore[method-assign,assignment]
    RuleBasedStateMachine.__init__ = counted_init  # type: ignore[method-assign]
    return lambda: counts["checks"] - counts["machines"]


def rate(spec: str, factory: Callable[[], Target], examples: int, seed: int, rules_run: Callable[[], int]) -> Counted:
    before = rules_run()
    start = time.perf_counter()
    result = run_check(spec, factory, examples=examples, steps=_RULES, seed=seed, shrink=False)
    seconds = time.perf_counter() - start
    if not result.ok:
        raise SystemExit(f"{spec}: the run failed, so its rate means nothing: {result.failure}")
    rules = rules_run() - before
    if not 0 < rules <= examples * _RULES * 2:  # test cases the engine replays are counted too, never more than that
        raise SystemExit(f"{spec}: counted {rules} rules in {examples} test cases of {_RULES}: the count is off")
    return Counted(rules, result.coverage.steps, seconds)


def main() -> None:
    import keyhandoff.lockstep as lockstep_module

    parser = argparse.ArgumentParser()
    parser.add_argument("examples", nargs="?", type=int, default=100)
    parser.add_argument(
        "--targets",
        default="model,builtin,builtin-processes" + (",capi" if shutil.which("wine") else ""),
        help="comma-separated target specs (default: the built-in ones, and capi where Wine is installed)",
    )
    parser.add_argument("--seeds", default="1", help="comma-separated seeds; each runs its own programs")
    args = parser.parse_args()
    examples, seeds = args.examples, [int(seed) for seed in args.seeds.split(",")]
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores; {examples} test cases x {_RULES} rules, "
        f"seed{'s' if len(seeds) > 1 else ''} {args.seeds}; rates per second, ratios to the hollow machine's"
    )
    print(f"{'':<34} {'rules':>7} {'calls':>7}  {'(totals)':<42}   rules     calls")
    rules_run = counting_rules()
    real_model = lockstep_module.ModelTarget  # type: ignore[attr-defined]
    lockstep_module.ModelTarget = Hollow  # type: ignore[attr-defined,assignment]  # the hollow machine's model answers at once too
    try:
        runs = [rate("hollow", Hollow, examples, seed, rules_run) for seed in seeds]
    finally:
        lockstep_module.ModelTarget = real_model  # type: ignore[attr-defined]
    hollow = Counted.total(runs)
    print(hollow.line("hollow machine (baseline)", hollow))
    for spec in args.targets.split(","):
        factory = ModelTarget if spec == "model" else fresh_factory(spec)
        count = examples if spec in ("model", "builtin") else examples // 2
        runs = [rate(spec, factory, count, seed, rules_run) for seed in seeds]
        print(Counted.total(runs).line("machine against " + spec, hollow))


if __name__ == "__main__":
    main()
