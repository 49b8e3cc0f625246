"""Shared keys: several threads calling the same key handles at once (``keyhandoff concurrent --shared``).

`keyhandoff concurrent` gives each thread keys of its own, so it cannot see a CSP that forgets to lock a key: a
TLS session's keys may well be used by two threads (a send and a receive, a renegotiation exporting the key
while records are still encrypted). Here the threads of a round (:mod:`keyhandoff.shared_round`) share one or
two keys, and the round's answers must be linearizable (:mod:`keyhandoff.linearize`). A round that is not is made
again one call at a time, in a few orders, as a lockstep program and with its probes: if that fails too, it is
no concurrency failure (reported with the sequential reproducer where the lockstep program fails); if not, a
concurrency failure, cut down to the calls it needs, with how often it fails again.
"""

from __future__ import annotations

import io
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import attrs

from keyhandoff.concurrent import RERUNS, RoundProgress
from keyhandoff.linearize import Linearization, explain, linearize
from keyhandoff.lockstep import Divergence, TargetHung
from keyhandoff.machine import probed_capabilities
from keyhandoff.model import wincrypt as w
from keyhandoff.shared_round import History, Plan, plan_round, run_shared_round
from keyhandoff.target import InstallationMaker, RunStopped, Target, TargetUnavailable
from keyhandoff.traces import Failure, Step, minimize, replay, reproducer, save_trace

__all__ = [
    "MAX_CALLS",
    "SharedFailure",
    "SharedResult",
    "plan_of_trace",
    "render_shared",
    "replay_round",
    "run_shared",
    "save_shared_trace",
    "shared_verdict_text",
]


MAX_CALLS = 256  # calls a round may make, all threads together

_Ended = tuple[History, Linearization] | BaseException  # how one run of a round ended


@attrs.define
class SharedFailure:
    """The first round no order explains (or that fails alone, or hangs), and what was learnt about it."""

    plan: Plan
    failure: Failure  # where: for a round in company, the call after the longest prefix that fits
    kind: str  # "alone", "concurrency", "hung", "undecided"
    explanation: str = ""  # the history and the search's verdict, in lines
    failed_reruns: int = 0
    script: str = ""  # the sequential reproducer, when the round fails alone in lockstep
    # The round as one program (its setup, then its calls one at a time) in the order that failed, when it failed
    # one call at a time; empty: thread after thread. A trace's steps: ``keyhandoff replay --alone`` runs it.
    program: list[Step] = attrs.field(factory=list)


@attrs.define
class SharedResult:
    spec: str
    seed: int
    threads: int
    rounds: int
    calls: int  # per thread
    ran: int = 0  # calls run, all threads and rounds together (a failing round's not counted)
    failed_round: int = 0  # the failing round's number, from 1 (0: none failed)
    seconds: float = 0.0
    failure: SharedFailure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def verdict(self) -> str:
        return "passed" if self.failure is None else self.failure.kind

    def to_json(self) -> dict[str, object]:
        """The JSON report of ``keyhandoff concurrent --shared --report``."""
        found = self.failure
        return {
            "target": self.spec,
            "mode": "shared",
            "seed": self.seed,
            "threads": self.threads,
            "rounds": self.rounds,
            "calls": self.calls,
            "ran": self.ran,
            "seconds": round(self.seconds, 2),
            "passed": self.ok,
            "verdict": self.verdict,
            "failed_round": self.failed_round or None,
            "failure": None
            if found is None
            else {
                **attrs.asdict(found.failure),
                "explanation": found.explanation,
                "failed_reruns": found.failed_reruns if found.kind == "concurrency" else None,
                "reruns": RERUNS,
                "reproducer": found.script or None,
                "setup": list(found.plan.setup),
                "threads": [list(calls) for calls in found.plan.threads],
            },
        }


def run_shared(
    spec: str,
    factory: Callable[[], Target],
    *,
    threads: int = 4,
    rounds: int = 25,
    calls: int = 6,
    seed: int | None = None,
    timeout: float = 120.0,
    progress: TextIO | None = None,
) -> SharedResult:
    """``rounds`` rounds of ``threads`` threads making ``calls`` calls each on one or two shared keys; each round's
    answers must be linearizable. On a failure: whether the round fails alone too, and how often it fails again."""
    if threads < 2 or rounds < 1 or calls < 1:
        raise ValueError("threads is at least 2, rounds and calls at least 1")
    if threads * calls > MAX_CALLS:  # the search's cost grows with the calls' interleavings, and it recurses
        raise ValueError(f"a round makes at most {MAX_CALLS} calls (threads x calls)")
    opened = InstallationMaker(factory)
    try:
        return _run(spec, opened, threads, rounds, calls, seed, timeout, progress)
    except RunStopped as stop:
        raise TargetUnavailable(f"{spec}: the run stopped: {stop}") from stop.__cause__


def _run(
    spec: str,
    factory: Callable[[], Target],
    threads: int,
    rounds: int,
    calls: int,
    seed: int | None,
    timeout: float,
    progress: TextIO | None,
) -> SharedResult:
    caps = probed_capabilities(factory)
    if not caps.concurrent:
        raise TargetUnavailable(
            f"{spec} does not declare concurrent use (Capabilities(concurrent=True)): its calls may not come "
            "from several threads at once"
        )
    if caps.deviations:  # the calls' answers are compared exactly: a declared deviation would read as a race
        raise TargetUnavailable(
            f"{spec} declares deviations from the model, which --shared cannot honour: it compares every answer of "
            "a round exactly, as the model gives it in some order"
        )
    seed = seed if seed is not None else random.randrange(1 << 32)
    rng = random.Random(seed)
    result = SharedResult(spec, seed, threads, rounds, calls)
    began = time.perf_counter()
    said = RoundProgress(progress, rounds)
    for number in range(rounds):
        plan = plan_round(caps, rng, threads, calls)
        said.starting(number)
        result.failure = _round(spec, factory, plan, timeout)
        if result.failure is not None:
            result.failed_round = number + 1
            break
        result.ran += threads * calls
    said.ended()
    result.seconds = time.perf_counter() - began
    return result


def _attempt(
    factory: Callable[[], Target], plan: Plan, timeout: float, order: Sequence[tuple[int, int]] | None = None
) -> tuple[History, Linearization] | BaseException:
    """One run of ``plan`` (``order``: one call at a time, in that order): its history and the search's verdict,
    or what stopped it (a hang, a crash, a divergence in the setup)."""
    try:
        history, model, world = run_shared_round(factory, plan, timeout, order=order)
    except (Divergence, TargetHung) as exc:  # TargetHung: a call's timeout, or RoundStuck
        return exc
    return history, linearize(history, model, world)


def _failed(ended: tuple[History, Linearization] | BaseException) -> bool:
    return isinstance(ended, BaseException) or not ended[1].ok


def _round(spec: str, factory: Callable[[], Target], plan: Plan, timeout: float) -> SharedFailure | None:
    """One round's verdict: None when its answers are linearizable."""
    ended = _attempt(factory, plan, timeout)
    if isinstance(ended, TargetHung):  # not re-run: each run could hang as long again, and leave threads stuck
        return SharedFailure(plan, Failure(0, "round", str(ended), "hung"), "hung")
    if not _failed(ended):
        return None
    if _undecided(ended):
        return _no_verdict(plan, ended)
    alone = _alone(spec, factory, plan, ended, timeout)
    if alone is not None:
        return alone
    plan, rate, last = _reduced(factory, plan, timeout, ended)
    # The smaller round, and its own failing run's orders, may fail one call at a time where the whole did not.
    alone = _alone(spec, factory, plan, last, timeout)
    if alone is not None:
        return alone
    if _undecided(last):  # a re-run whose search gave up: no verdict on that run either
        return _no_verdict(plan, last)
    if isinstance(last, tuple):
        history, found = last
        after = found.misfits[0].split(":")[0] if found.misfits else "the end"
        message = f"no order of the calls explains the answers (the longest that fits stops before {after})"
        failure, explanation = Failure(len(found.order), "round", message, ""), explain(history, found)
    else:  # a crash or a hang of a call, only in company
        failure, explanation = Failure(0, "round", str(last), "crashed in company"), ""
    return SharedFailure(plan, failure, "concurrency", explanation, failed_reruns=rate)


def _undecided(ended: _Ended) -> bool:
    return isinstance(ended, tuple) and not ended[1].complete


def _no_verdict(plan: Plan, ended: _Ended) -> SharedFailure:
    assert isinstance(ended, tuple)
    failure = Failure(len(ended[1].order), "round", "the search gave up", "undecided")
    return SharedFailure(plan, failure, "undecided", explain(*ended))


def _orders(plan: Plan, ended: _Ended) -> list[list[tuple[int, int]]]:
    """The orders in which the round is made one call at a time to see whether it needs company to fail: thread
    after thread; from its failing run, the calls in the order they began and in the order they ended; and the
    order the search got furthest with (the rest after it, thread after thread). Each keeps a thread's calls in
    their order."""
    orders = [plan.thread_order()]
    if isinstance(ended, tuple):
        history, found = ended
        made = [d for calls in history.calls for d in calls]
        orders.append([(d.thread, d.index) for d in sorted(made, key=lambda d: d.began)])
        orders.append([(d.thread, d.index) for d in sorted(made, key=lambda d: d.ended)])
        chosen: list[tuple[int, int]] = []
        for done in found.order:  # each call, after its thread's earlier calls (on the other key, say)
            chosen += [(done.thread, i) for i in range(done.index + 1) if (done.thread, i) not in chosen]
        orders.append(chosen + [at for at in plan.thread_order() if at not in chosen])
    distinct: list[list[tuple[int, int]]] = []
    for order in orders:
        if len(order) == len(plan.thread_order()) and order not in distinct:  # (a crashed run made fewer calls)
            distinct.append(order)
    return distinct


def _alone(spec: str, factory: Callable[[], Target], plan: Plan, ended: _Ended, timeout: float) -> SharedFailure | None:
    """Whether the round fails with its calls made one at a time, in one of :func:`_orders`: first as a lockstep
    program (a failure there comes minimised, with its reproducer), then with its probes (which a lockstep
    program does not make: the keys an export or a duplicate made, and each key's state at the end). None when
    it fails in no such order: then it needs company to fail."""
    orders = _orders(plan, ended)
    for order in orders:
        program = plan.sequential(order)
        failure, _ = replay(program, factory)
        if failure is not None:
            steps, failure = minimize(program, factory, failure)
            script = reproducer(steps, spec, factory, failure)
            explanation = explain(*ended) if isinstance(ended, tuple) else ""
            return SharedFailure(plan, failure, "alone", explanation, script=script, program=program)
    for order in orders:
        one_at_a_time = _attempt(factory, plan, timeout, order)
        if isinstance(one_at_a_time, TargetHung):
            return SharedFailure(
                plan, Failure(0, "round", str(one_at_a_time), "hung"), "hung", program=plan.sequential(order)
            )
        if _failed(one_at_a_time) and not _undecided(one_at_a_time):
            if isinstance(one_at_a_time, tuple):
                message, explanation = "made one call at a time, the round fits no order", explain(*one_at_a_time)
            else:
                message, explanation = str(one_at_a_time), ""
            failure = Failure(0, "round", message, "alone")
            return SharedFailure(plan, failure, "alone", explanation, program=plan.sequential(order))
    return None


def _reruns(factory: Callable[[], Target], plan: Plan, timeout: float) -> tuple[int, _Ended | None]:
    """How many of RERUNS runs of ``plan`` fail (a hang ends the count), and the last failure."""
    failed, last = 0, None
    for _ in range(RERUNS):
        again = _attempt(factory, plan, timeout)
        if _failed(again):
            failed, last = failed + 1, again
        if isinstance(again, TargetHung):
            break
    return failed, last


def _smaller(plan: Plan, thread: int, call: int | None) -> Plan | None:
    """``plan`` without one thread (``call`` None) or one call of it; None where that would leave fewer than two
    threads, or a thread with no call."""
    threads = list(plan.threads)
    if call is None:
        if len(threads) <= 2:
            return None
        del threads[thread]
    else:
        if len(threads[thread]) <= 1:
            return None
        threads[thread] = threads[thread][:call] + threads[thread][call + 1 :]
    return attrs.evolve(plan, threads=tuple(threads))


def _reduced(factory: Callable[[], Target], plan: Plan, timeout: float, first: _Ended) -> tuple[Plan, int, _Ended]:
    """A smaller round that still fails often: one pass dropping each thread, then each call (last first); a drop is
    kept where the smaller round fails in at least half as many of RERUNS re-runs as the whole round did (and in
    one at least: a race fails some runs only, and fewer calls give it fewer chances). The plan, its failing
    re-runs, and its last failure (``first`` if no re-run failed)."""
    rate, seen = _reruns(factory, plan, timeout)
    last = seen if seen is not None else first
    enough = max(1, (rate + 1) // 2)
    for thread in reversed(range(len(plan.threads))):
        for call in [None, *reversed(range(len(plan.threads[thread])))]:
            trial = _smaller(plan, thread, call)
            if trial is None:
                continue
            trial_rate, trial_last = _reruns(factory, trial, timeout)
            if trial_last is not None and trial_rate >= enough:
                plan, rate, last = trial, trial_rate, trial_last
                if call is None:  # the thread is gone: none of its calls to try
                    break
    return plan, rate, last


def replay_round(factory: Callable[[], Target], plan: Plan, timeout: float) -> str:
    """One run of a saved round: "" when its answers fit an order of its calls, else what failed, in a line."""
    ended = _attempt(factory, plan, timeout)
    if isinstance(ended, TargetHung):
        return f"hung: {ended}"
    if isinstance(ended, BaseException):
        return f"failed: {ended}"
    found = ended[1]
    if found.ok:
        return ""
    if not found.complete:
        return "no verdict: the search gave up"
    after = found.misfits[0] if found.misfits else "the end"
    return (
        f"no order of the calls explains the answers; the longest that fits ({len(found.order)} calls) stops at {after}"
    )


def save_shared_trace(path: Path, found: SharedFailure, *, spec: str, seed: int) -> None:
    """The failing round as a trace: ``setup`` and ``threads`` (``keyhandoff replay`` re-runs the round), and as
    ``steps`` the round as one sequential program (``keyhandoff replay --alone``)."""
    extra = {
        "kind": "shared",
        "keys": found.plan.keys,
        "setup": list(found.plan.setup),
        "threads": [list(c) for c in found.plan.threads],
        "register_mode": found.plan.register_mode,
    }
    save_trace(path, found.program or found.plan.sequential(), spec=spec, failure=found.failure, seed=seed, **extra)


def plan_of_trace(meta: dict[str, object]) -> Plan:
    """The round a shared trace holds (ValueError if it holds none)."""
    setup, keys, threads = meta.get("setup"), meta.get("keys"), meta.get("threads")
    mode = meta.get("register_mode", w.CRYPT_MODE_CBC)
    if not (
        type(mode) is int
        and isinstance(setup, list)
        and type(keys) is int
        and isinstance(threads, list)
        and len(threads) >= 2
        and all(isinstance(calls, list) and all(isinstance(c, dict) for c in calls) for calls in threads)
    ):
        raise ValueError("a shared trace holds 'setup', 'keys' and 'threads' (two or more lists of calls)")
    if mode not in (0, w.CRYPT_MODE_CBC):
        raise ValueError(f"a shared trace's register_mode is 0 or CRYPT_MODE_CBC ({w.CRYPT_MODE_CBC}), not {mode}")
    if keys < 1 or any(not calls for calls in threads):
        raise ValueError("a shared trace names one key at least, and each thread makes a call at least")
    for number, calls in enumerate(threads):
        for index, call in enumerate(calls):
            problem = _call_problem(call, keys)
            if problem:
                raise ValueError(f"thread {number}'s call {index + 1}: {problem}")
    return Plan(tuple(setup), keys, tuple(tuple(calls) for calls in threads), mode)


# The fields each call of a shared round has, and the type of each (bytes are hex text).
_CALL_FIELDS: dict[str, dict[str, type]] = {
    "encrypt": {"data_hex": bytes, "final": bool},
    "decrypt": {"data_hex": bytes, "final": bool},
    "set_key_param": {"param": int},
    "get_key_param": {"param": int},
    "export_key": {"blob_type": int, "flags": int},
    "duplicate_key": {},
    "destroy_key": {},
    "hmac": {"hash_alg": int, "data_hex": bytes},
}


def _call_problem(call: dict[str, object], keys: int) -> str:
    """What is wrong with a call of a hand-edited trace ("" if nothing): its op, its key, a field by name."""
    op, key = call.get("op"), call.get("key")
    if op not in _CALL_FIELDS:
        return f"op {op!r} is none of {', '.join(_CALL_FIELDS)}"
    if type(key) is not int or not 0 <= key < keys:
        return f"key is the index of a shared key (0 to {keys - 1}), not {key!r}"
    fields = dict(_CALL_FIELDS[str(op)])
    if op == "set_key_param":
        fields.update({"value_hex": bytes} if "value_hex" in call else {"value": int})
    for name, kind in fields.items():
        value = call.get(name)
        if kind is bytes:
            ok = isinstance(value, str) and len(value) % 2 == 0 and all(c in "0123456789abcdefABCDEF" for c in value)
        else:
            ok = type(value) is kind
        if not ok:
            return f"{op}'s {name} is {'hex text' if kind is bytes else kind.__name__}, not {value!r}"
    return ""


def shared_verdict_text(result: SharedResult) -> str:
    out = io.StringIO()
    render_shared(result, out)
    return out.getvalue()


def render_shared(result: SharedResult, out: TextIO) -> None:
    head = (
        f"keyhandoff concurrent --shared: {result.spec}, {result.threads} threads x {result.calls} calls on shared "
        f"keys x {result.rounds} rounds, seed {result.seed}: {result.ran} calls in {result.seconds:.1f} s"
    )
    found = result.failure
    if found is None:
        out.write(f"{head}\nPASSED: every round's answers fit an order of its calls (linearizable)\n")
        return
    head += f"; round {result.failed_round} failed"
    failure = found.failure
    if found.kind == "alone" and found.script:
        out.write(
            f"{head}\nFAILED: the round fails as one program too, at step {failure.index + 1} ({failure.op}): "
            f"{failure.message}\nSo this is no concurrency failure; its minimal reproducer (run `keyhandoff "
            f"check` for the full sequential verdict):\n\n{found.script}\n"
        )
        return
    if found.kind == "alone":  # in its probes: a state the lockstep program never reads
        out.write(
            f"{head}\nFAILED: {failure.message}, so this is no concurrency failure: a state the calls leave is "
            "wrong, which only the probes after the round read (a key an export or a duplicate made, or a key's "
            f"state at the end).\n{found.explanation}\n"
        )
        return
    if found.kind == "hung":
        out.write(f"{head}\nFAILED (hung): {failure.message}\n")
        return
    if found.kind == "undecided":
        out.write(f"{head}\nNO VERDICT: {found.explanation}\n")
        return
    out.write(
        f"{head}\nFAILED (concurrency): {failure.message}. As one program the round passes; at once it failed "
        f"again in {found.failed_reruns} of {RERUNS} re-runs: a call that is not atomic (a key used without its "
        f"lock, a blob taken mid-update).\n{found.explanation}\n"
    )
