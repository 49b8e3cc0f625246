"""The step-deleting minimiser: a long failing program shrinks to the steps its failure needs, no single step of
the result can go, and runs of irrelevant steps go a run at a time."""

from __future__ import annotations

import pytest

from keyhandoff import traces
from keyhandoff.lockstep import open_lockstep
from keyhandoff.model import wincrypt as w
from keyhandoff.target import Target
from keyhandoff.targets import load
from keyhandoff.targets.model_target import ModelTarget
from keyhandoff.traces import Step, _made, _without, minimize, replay

_PADDING = 40  # irrelevant keys, each imported and used twice: 120 steps before the 3 that matter


def _long_failing_program() -> list[Step]:
    """Many steps on keys that are never destroyed, then the sequence that reveals the defect (a key imported
    and destroyed: its handle must be dead), recorded against the model."""
    ls = open_lockstep(ModelTarget)
    try:
        prov = ls.acquire("secure")
        for n in range(_PADDING):
            key = ls.import_plaintext(prov, w.CALG_RC4 if n % 2 else w.CALG_DES, n, 16 if n % 2 else 8, 0)
            assert isinstance(key, int)
            ls.encrypt(key, bytes(8), False)
            ls.encrypt(key, bytes(16), True)
        doomed = ls.import_plaintext(prov, w.CALG_AES_128, 7, 16, 0)
        assert isinstance(doomed, int)
        ls.destroy_key(doomed)
        return list(ls.trace)
    finally:
        ls.close()


def test_a_long_program_shrinks_to_what_its_failure_needs_in_few_replays(monkeypatch: pytest.MonkeyPatch) -> None:
    def factory() -> Target:
        return load("mutant:destroy-keeps-handle")  # a new installation each time

    steps = _long_failing_program()
    assert len(steps) > 3 * _PADDING
    failure, _ = replay(steps, factory)
    assert failure is not None
    assert (failure.op, failure.index) == ("destroy_key", len(steps) - 1)  # the handle is still alive

    replays = 0
    counted = traces.replay

    def counting(program: list[Step], make: object) -> object:
        nonlocal replays
        replays += 1
        return counted(program, make)  # type: ignore[arg-type]

    monkeypatch.setattr(traces, "replay", counting)
    small, again = minimize(steps, factory, failure)
    monkeypatch.undo()

    assert [step["op"] for step in small] == ["acquire", "import_plaintext", "destroy_key"]
    assert again.same_kind(failure)
    # One step at a time took a replay per step of the program, 120 and more; runs take far fewer.
    assert replays < len(steps) // 4, replays
    made = _made(small, factory)
    for index in range(len(small) - 1):  # 1-minimal: no single step can go
        candidate = _without(small, made, index, index + 1)
        if candidate is not None:
            shorter, _ = replay(candidate, factory)
            assert shorter is None or not shorter.same_kind(failure), index


def test_deleting_a_run_renumbers_later_references_and_refuses_to_orphan_them() -> None:
    steps = _long_failing_program()
    made = _made(steps, ModelTarget)
    # the first padding key's three steps (import, two encrypts): later keys move down by one
    cut = _without(steps, made, 1, 4)
    assert cut is not None
    assert len(cut) == len(steps) - 3
    assert cut[1] == steps[4]
    assert cut[2] == {**steps[5], "key": steps[5]["key"] - 1}
    assert _without(steps, made, 1, 2) is None  # its key is used by the steps after it
