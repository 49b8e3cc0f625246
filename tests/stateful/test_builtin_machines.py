"""The lockstep machine against our own CSP: the regression suite of the reference CSP."""

from __future__ import annotations

import pytest

from keyhandoff.check import run_check
from keyhandoff.impl import engines
from keyhandoff.targets.fresh import fresh_factory


def test_builtin_agrees_with_the_model_with_full_coverage() -> None:
    """The one-process reference CSP agrees with the model on every step; every lifecycle row and every error
    outcome fires."""
    result = run_check("builtin", fresh_factory("builtin"), profile="default", seed=101, require_coverage=True)
    assert result.ok, result.script or (result.missing_transitions, result.missing_outcomes)


def test_builtin_processes_agrees_with_the_model() -> None:
    """With the app side in a child process, the reference CSP still agrees with the model on every step."""
    result = run_check("builtin-processes", fresh_factory("builtin-processes"), profile="quick", examples=40, seed=102)
    assert result.ok, result.script
    assert result.capabilities.separate_processes


def test_builtin_without_the_rc4_library_agrees_with_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The RC4 fallback (cryptography's ARC4, no exported state, replay on restore) agrees too: it is what runs
    where libcrypto's RC4 cannot be used."""
    monkeypatch.setattr(engines, "native_rc4", lambda: None)
    replayed: list[int] = []
    replay = engines._replay

    def counted(keystream: object, count: int) -> None:
        replayed.append(count)
        replay(keystream, count)  # type: ignore[arg-type]

    monkeypatch.setattr(engines, "_replay", counted)
    # Runs from seed 105 on, until one restores an RC4 key past position 0 (the fallback's replay). Whether a seed
    # does changes with every change of the machine's draws (103, then 105, then neither after 2026-11-29's), so
    # the test takes up to six seeds, each of which must agree, and fails if none of them replays.
    for seed in range(105, 111):
        result = run_check("builtin", fresh_factory("builtin"), profile="quick", examples=40, seed=seed)
        assert result.ok, result.script
        if any(replayed):
            break
    assert any(replayed), "six runs restored no RC4 key past position 0: the fallback went unexercised"
