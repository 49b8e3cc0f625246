"""`keyhandoff concurrent --shared`: threads on the same keys, every round's answers checked for linearizability."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from keyhandoff import linearize as linearize_module
from keyhandoff.check import run_check
from keyhandoff.cli import main
from keyhandoff.impl.csp import Csp
from keyhandoff.impl.live_key import LiveKey
from keyhandoff.linearize import linearize
from keyhandoff.lockstep import Divergence
from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError
from keyhandoff.mutants import MutantTarget
from keyhandoff.shared_keys import plan_of_trace, run_shared, shared_verdict_text
from keyhandoff.shared_round import Done, History, Plan, RoundStuck, plan_round, run_shared_round
from keyhandoff.target import Capabilities, Deviation, TargetUnavailable
from keyhandoff.targets.builtin_target import BuiltinTarget
from keyhandoff.targets.fresh import fresh_factory
from tests.stateful.planted import Deadlocks, WrongAlone, home, remove_homes


@pytest.fixture(autouse=True)
def _no_home_left() -> Iterator[None]:
    yield
    remove_homes()


class Unlocked(Csp):
    """Planted: a call finds its key but does not take the key's lock (every call then takes the full path)."""

    def _live(self, key: object, operation: str) -> contextlib.AbstractContextManager[LiveKey]:
        entry = self._handles.get(key)
        if not isinstance(entry, LiveKey) or entry.tombstone is not None:
            raise CryptError(w.NTE_BAD_KEY, operation)
        return contextlib.nullcontext(entry)


def make_unlocked() -> MutantTarget:
    return MutantTarget(home(), Unlocked, "unlocked")


@pytest.mark.parametrize("spec", ["builtin", "builtin-processes"])
def test_the_builtin_csp_is_linearizable(spec: str) -> None:
    result = run_shared(spec, fresh_factory(spec), threads=4, rounds=8, calls=6, seed=1)
    assert result.ok, shared_verdict_text(result)
    assert result.ran == 4 * 6 * 8


def test_a_key_used_without_its_lock_is_caught_only_in_company() -> None:
    """The sequential check passes the unlocked CSP (one thread: nothing to lock against); threads sharing its
    keys get answers no order of their calls gives. The round passes as one program, and fails again."""
    assert run_check("python:unlocked", make_unlocked, profile="quick", seed=1).ok
    result = run_shared("python:unlocked", make_unlocked, threads=4, rounds=25, calls=6, seed=0)
    found = result.failure
    assert found is not None, shared_verdict_text(result)
    assert result.verdict == "concurrency"
    assert "no order of the calls explains the answers" in found.failure.message
    assert "No order of the" in found.explanation
    assert 1 <= found.failed_reruns <= 5  # the reduced round was kept only where it failed again
    assert len(found.plan.threads) >= 2
    calls = sum(map(len, found.plan.threads))  # the reduced round's, on one key or two
    named = re.search(r"No order of the (\d+) calls on k\d", found.explanation)
    assert named is not None
    assert 1 <= int(named[1]) <= calls
    text = shared_verdict_text(result)
    assert "FAILED (concurrency)" in text
    assert "thread 0:" in text
    assert "after the round:" in text


def test_a_failure_alone_is_said_as_such_with_its_reproducer() -> None:
    result = run_shared("python:wrong", WrongAlone, threads=3, rounds=10, calls=6, seed=2)
    found = result.failure
    assert found is not None
    assert result.verdict == "alone"
    assert found.script.startswith('"""keyhandoff reproducer')  # the sequential one, minimised
    assert "csp.encrypt(" in found.script


def test_a_deadlock_is_a_hang_within_the_timeout() -> None:
    began = time.monotonic()
    result = run_shared("python:deadlocks", Deadlocks, threads=4, rounds=10, calls=6, seed=3, timeout=5)
    assert result.verdict == "hung", shared_verdict_text(result)
    assert result.failure is not None
    message = result.failure.failure.message
    assert "still running after 5 s" in message
    assert re.search(r"thread \d in call \d, (encrypt|decrypt) of k\d", message)  # where each stuck thread is
    assert f"round {result.failed_round} failed" in shared_verdict_text(result)
    assert time.monotonic() - began < 60


def _two_encrypts() -> tuple[Plan, History, Done, Done, object, object]:
    """A round of two threads, each encrypting the same 16 bytes once with one AES-CBC key, run one thread after
    the other: thread 0's call first. (The model side and its world come back too.)"""
    encrypt = {"op": "encrypt", "key": 0, "data_hex": "00" * 16, "final": False}
    plan = Plan(
        (
            {"op": "acquire", "side": "secure"},
            {"op": "acquire", "side": "app"},
            {
                "op": "import_plaintext",
                "prov": 0,
                "alg": w.CALG_AES_128,
                "seed": 7,
                "size": 16,
                "flags": 0,
                "hardware": False,
            },
        ),
        1,
        ((encrypt,), (encrypt,)),
    )
    history, model, world = run_shared_round(
        lambda: BuiltinTarget(home(), remove_home=True), plan, 30, order=[(0, 0), (1, 0)]
    )
    first, second = history.calls[0][0], history.calls[1][0]
    return plan, history, first, second, model, world


def test_the_order_found_respects_the_calls_timing() -> None:
    """Two encrypts of the same block: the first in time answers C1, the second C2 (CBC chains them). Answers
    swapped fit only if the calls overlapped (thread 1's could then have come first); if thread 0's returned
    before thread 1's began, no order explains them."""
    _, history, first, second, model, world = _two_encrypts()
    assert first.answer != second.answer
    found = linearize(history, model, world)  # type: ignore[arg-type]
    assert found.ok
    assert [d.thread for d in found.order] == [0, 1]

    def timed(done: Done, began: int, ended: int, like: Done) -> tuple[Done]:
        return (attrs.evolve(done, began=began, ended=ended, answer=like.answer),)

    overlapping = attrs.evolve(history, calls=(timed(first, 0, 10, second), timed(second, 5, 15, first)))
    found = linearize(overlapping, model, world)  # type: ignore[arg-type]
    assert found.ok
    assert [d.thread for d in found.order] == [1, 0]

    apart = attrs.evolve(history, calls=(timed(first, 0, 10, second), timed(second, 20, 30, first)))
    found = linearize(apart, model, world)  # type: ignore[arg-type]
    assert not found.ok
    assert found.complete
    assert found.order == ()  # not even the first call fits
    assert found.misfits == (
        f"0.1 encrypt(k0, 16 bytes, final=False): model {first.answer.describe()}, target {second.answer.describe()}",
    )


def test_the_final_state_must_fit_too() -> None:
    """Each answer fits, but the key's state after the round is not the model's: no order explains it."""
    _, history, _, _, model, world = _two_encrypts()
    final = history.final[0]
    moved = (*final[:2], attrs.evolve(final[2], value=bytes(16)), *final[3:])  # the next ciphertext is another
    found = linearize(attrs.evolve(history, final=(moved,)), model, world)  # type: ignore[arg-type]
    assert not found.ok
    assert len(found.order) == 2
    assert found.misfits[0].startswith("k0 at the end: model KP_MODE CBC, KP_IV")


def test_a_search_past_its_limit_is_no_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    _, history, _, _, model, world = _two_encrypts()
    monkeypatch.setattr(linearize_module, "SEARCH_LIMIT", 1)
    found = linearize(history, model, world)  # type: ignore[arg-type]
    assert not found.ok
    assert not found.complete


def test_plans_fit_the_target_and_are_reproducible() -> None:
    import random

    target = BuiltinTarget(home(), remove_home=True)
    caps = target.capabilities()
    target.close()
    plans = [plan_round(caps, random.Random(5), 3, 8) for _ in range(2)]
    assert plans[0] == plans[1]
    many = [plan_round(caps, random.Random(seed), 3, 8) for seed in range(40)]
    calls = [call for plan in many for thread in plan.threads for call in thread]
    assert {str(c["op"]) for c in calls} == {
        "encrypt",
        "decrypt",
        "set_key_param",
        "get_key_param",
        "export_key",
        "duplicate_key",
        "destroy_key",
        "hmac",
    }
    assert all(len(plan.threads) == 3 and all(len(t) == 8 for t in plan.threads) for plan in many)
    assert any(step.get("hardware") for plan in many for step in plan.setup)
    assert all(sum(c["op"] == "destroy_key" for t in plan.threads for c in t) <= 1 for plan in many)
    no_dup = attrs.evolve(caps, duplicate=False, blob_types=frozenset({w.PLAINTEXTKEYBLOB}))
    ops = {str(c["op"]) for s in range(20) for t in plan_round(no_dup, random.Random(s), 2, 8).threads for c in t}
    assert not ops & {"duplicate_key", "export_key"}


def test_a_target_declaring_deviations_is_refused() -> None:
    class Deviating(BuiltinTarget):
        def capabilities(self) -> Capabilities:
            dev = Deviation(
                id="x", operation="encrypt", model_code=None, target_code=w.NTE_BAD_DATA, description="planted"
            )
            return attrs.evolve(super().capabilities(), deviations=(dev,))

    with pytest.raises(TargetUnavailable, match="declares deviations"):
        run_shared("python:deviating", lambda: Deviating(home(), remove_home=True), rounds=1, seed=1)


def test_the_command_saves_a_failing_round_and_replay_runs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = "python:tests.stateful.test_shared_keys:make_unlocked"
    trace, report = tmp_path / "shared.json", tmp_path / "report.json"
    args = ["concurrent", "--shared", "--target", spec, "--rounds", "25", "--seed", "0", "--trace", str(trace)]
    assert main([*args, "--report", str(report)]) == 1
    out = capsys.readouterr().out
    assert "FAILED (concurrency)" in out
    assert f"trace saved: {trace} (keyhandoff replay {trace} re-runs the round" in out
    verdict = json.loads(report.read_text())
    assert (verdict["mode"], verdict["verdict"], verdict["passed"]) == ("shared", "concurrency", False)
    saved = json.loads(trace.read_text())
    plan = plan_of_trace(saved)
    assert saved["kind"] == "shared"
    assert saved["steps"] == plan.sequential()
    assert [list(t) for t in plan.threads] == verdict["failure"]["threads"]
    status = main(["replay", str(trace)])
    out = capsys.readouterr().out
    assert out.count("run ") == 5
    assert status == (1 if "no order of the calls" in out else 0)
    assert main(["replay", str(trace), "--alone"]) == 0  # as one program, it passes
    assert "model and target agree" in capsys.readouterr().out


def test_the_command_passes_the_builtin_csp(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["concurrent", "--shared", "--target", "builtin", "--rounds", "3", "--seed", "4"]) == 0
    out = capsys.readouterr().out
    assert "4 threads x 6 calls on shared keys x 3 rounds, seed 4: 72 calls" in out
    assert "PASSED" in out


def test_a_failing_round_is_cut_down_to_the_calls_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reducer drops every thread and call whose absence leaves the round failing as often: here a round
    "fails" exactly when thread 0 still has its third call and another thread its first."""
    from keyhandoff import shared_keys
    from keyhandoff.linearize import Linearization

    def call(n: int) -> dict[str, object]:
        return {"op": "get_key_param", "key": 0, "param": w.KP_IV, "n": n}

    needed = (call(2), call(10))
    runs: list[Plan] = []

    def attempt(factory: object, plan: Plan, timeout: float) -> object:
        runs.append(plan)
        calls = [c for thread in plan.threads for c in thread]
        has_both = needed[0] in plan.threads[0] and needed[1] in calls and needed[1] not in plan.threads[0]
        return RuntimeError("planted failure") if has_both else (None, Linearization((), True))

    monkeypatch.setattr(shared_keys, "_attempt", attempt)
    plan = Plan((), 1, tuple(tuple(call(10 * t + i) for i in range(4)) for t in range(3)))
    reduced, rate, last = shared_keys._reduced(lambda: None, plan, 1.0, RuntimeError("first"))  # type: ignore[arg-type,return-value]
    assert reduced.threads == ((needed[0],), (needed[1],))
    assert rate == 5
    assert isinstance(last, RuntimeError)
    assert len(runs) <= 5 * (3 + 12 + 1)  # one pass: the whole round, then each thread and each call once


def _round_of(*threads: tuple[dict[str, object], ...], mode: int | None = None) -> Plan:
    """A round on one AES-128 key on the secure side (``mode``: set in the setup)."""
    setup: list[dict[str, object]] = [
        {"op": "acquire", "side": "secure"},
        {"op": "acquire", "side": "app"},
        {"op": "import_plaintext", "prov": 0, "alg": w.CALG_AES_128, "seed": 3, "size": 16, "flags": 0},
    ]
    if mode is not None:
        setup.append({"op": "set_key_param", "key": 0, "param": w.KP_MODE, "value": mode})
    return Plan(tuple(setup), 1, threads)


_DUPLICATE = {"op": "duplicate_key", "key": 0}
_EXPORT = {"op": "export_key", "key": 0, "blob_type": w.OPAQUEKEYBLOB, "flags": 0}
_ENCRYPT = {"op": "encrypt", "key": 0, "data_hex": "11" * 32, "final": False}


class SameDuplicate(BuiltinTarget):
    """Planted: every duplicate of a key gets the first one's handle (a handle counter read twice)."""

    def __init__(self) -> None:
        super().__init__(home(), remove_home=True)
        self.first: dict[int, int] = {}

    def duplicate_key(self, key: int) -> int:
        made = super().duplicate_key(key)
        return self.first.setdefault(key, made)


def test_a_handle_issued_twice_is_caught_though_both_keys_answer_alike() -> None:
    """In ECB two duplicates in the same state answer every probe alike: the handles themselves are compared."""
    plan = _round_of((_DUPLICATE,), (_DUPLICATE,), mode=w.CRYPT_MODE_ECB)
    with pytest.raises(Divergence, match=r"duplicate_key\(k0\): model a new handle, target the handle of 0.1"):
        run_shared_round(SameDuplicate, plan, 30, order=[(0, 0), (1, 0)])


def test_the_probe_reads_the_register_of_a_key_in_ecb() -> None:
    """An ECB encrypt shows no register; the probe then switches the key to CBC and encrypts again, so a register
    the calls left wrong shows (here: the last probe answer edited, as a CSP that lost the register would give)."""
    plan = _round_of((_ENCRYPT,), (_ENCRYPT,), mode=w.CRYPT_MODE_ECB)
    history, model, world = run_shared_round(
        lambda: BuiltinTarget(home(), remove_home=True), plan, 30, order=[(0, 0), (1, 0)]
    )
    final = history.final[0]
    assert len(final) == 5  # mode, IV, an encrypt, the switch to CBC, an encrypt in CBC
    assert linearize(history, model, world).ok
    edited = (*final[:4], attrs.evolve(final[4], value=bytes(16)))
    found = linearize(attrs.evolve(history, final=(edited,)), model, world)
    assert not found.ok
    assert "set to CBC ok, then encrypts <16 bytes" in found.misfits[0]


class IvReadReversed(BuiltinTarget):
    """Planted, sequential: once KP_IV is set, it reads back reversed (in a round, often only a probe reads it)."""

    def __init__(self) -> None:
        super().__init__(home(), remove_home=True)
        self.set_iv: set[int] = set()

    def set_key_param(self, key: int, param: int, value: bytes | int) -> None:
        super().set_key_param(key, param, value)
        if param == w.KP_IV:
            self.set_iv.add(key)

    def get_key_param(self, key: int, param: int) -> bytes | int:
        value = super().get_key_param(key, param)
        return value[::-1] if param == w.KP_IV and key in self.set_iv and isinstance(value, bytes) else value


def test_a_sequential_defect_only_the_probes_see_is_said_alone() -> None:
    """No call of the round reads KP_IV after it is set: the round as a lockstep program passes, and only the
    final probe sees the defect. Made one call at a time with its probes, the round still fails: alone."""
    from keyhandoff import shared_keys

    set_iv = {"op": "set_key_param", "key": 0, "param": w.KP_IV, "value_hex": bytes(range(16)).hex()}
    found = shared_keys._round("python:iv-reversed", IvReadReversed, _round_of((set_iv,), (_ENCRYPT,)), 30)
    assert found is not None
    assert (found.kind, found.script) == ("alone", "")  # no lockstep reproducer: the lockstep program passes
    assert found.failure.message == "made one call at a time, the round fits no order"
    assert "k0 at the end: model KP_MODE CBC, KP_IV <16 bytes" in found.explanation
    result = run_shared("python:iv-reversed", IvReadReversed, threads=3, rounds=25, calls=4, seed=1)
    assert result.verdict == "alone", shared_verdict_text(result)


class ImportHangs(BuiltinTarget):
    """Planted: importing an opaque blob never returns (only the probes after a round import one)."""

    def __init__(self) -> None:
        super().__init__(home(), remove_home=True)
        self.never = threading.Event()

    def import_key(self, prov: int, blob: bytes, **kwargs: object) -> int:
        if blob[:1] == bytes([w.OPAQUEKEYBLOB]):
            self.never.wait()
        return super().import_key(prov, blob, **kwargs)  # type: ignore[arg-type]


def test_probes_that_hang_are_a_hang_within_the_timeout() -> None:
    began = time.monotonic()
    with pytest.raises(RoundStuck, match="the round's probes: the target gave no answer"):
        run_shared_round(ImportHangs, _round_of((_EXPORT,), (_ENCRYPT,)), 2)
    assert time.monotonic() - began < 10


def test_a_round_of_too_many_calls_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 256 calls"):
        run_shared("builtin", fresh_factory("builtin"), threads=8, calls=40, seed=1)


def test_no_verdict_is_status_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(linearize_module, "SEARCH_LIMIT", 1)
    assert main(["concurrent", "--shared", "--target", "builtin", "--rounds", "1", "--seed", "4"]) == 2
    out = capsys.readouterr().out
    assert "NO VERDICT" in out
    assert "trace saved: keyhandoff-shared-4.json" in out  # the round, for replay


class IvIsRegister(BuiltinTarget):
    """Planted, sequential (a vendor's): KP_IV answers the feedback register instead of the IV."""

    def __init__(self) -> None:
        super().__init__(home(), remove_home=True)

    def get_key_param(self, key: int, param: int) -> bytes | int:
        value = super().get_key_param(key, param)
        return self.csp.inspect(key).register if param == w.KP_IV else value


@pytest.mark.parametrize("seed", [1, 3])
def test_a_sequential_defect_is_never_called_a_race(seed: int) -> None:
    """A vendor's run called this one a concurrency failure: only the whole round was made one call at a time,
    and only thread after thread. The cut-down round is tried too, in the order its calls began and ended."""
    result = run_shared("python:iv-register", IvIsRegister, threads=4, rounds=25, calls=6, seed=seed)
    assert result.verdict == "alone", shared_verdict_text(result)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t["threads"][0][0].pop("key"), "thread 0's call 1: key is the index of a shared key"),
        (lambda t: t["threads"][1][0].update(key=5), "thread 1's call 1: key is the index of a shared key"),
        (lambda t: t["threads"][0][0].update(op="release"), "op 'release' is none of encrypt"),
        (lambda t: t["threads"][0].clear(), "each thread makes a call at least"),
        (lambda t: t.update(register_mode=99), "register_mode is 0 or CRYPT_MODE_CBC"),
        (lambda t: t["threads"][0][0].update(final="no"), "encrypt's final is bool, not 'no'"),
        (lambda t: t["threads"][0][0].update(data_hex="xyz"), "encrypt's data_hex is hex text"),
    ],
)
def test_a_hand_edited_trace_is_refused_by_field(edit: Any, message: str) -> None:
    plan = _round_of((dict(_ENCRYPT),), (dict(_ENCRYPT),))
    trace: dict[str, Any] = {
        "setup": list(plan.setup),
        "keys": 1,
        "threads": [list(t) for t in plan.threads],
        "register_mode": w.CRYPT_MODE_CBC,
    }
    assert plan_of_trace(trace) == plan
    edit(trace)
    with pytest.raises(ValueError, match=re.escape(message)):
        plan_of_trace(trace)


def test_progress_off_a_terminal_is_a_line_per_tenth_of_the_rounds() -> None:
    import io

    out = io.StringIO()
    assert run_shared("builtin", fresh_factory("builtin"), threads=2, rounds=20, calls=2, seed=1, progress=out).ok
    assert out.getvalue().splitlines() == [f"round {n}/20" for n in range(2, 21, 2)]
