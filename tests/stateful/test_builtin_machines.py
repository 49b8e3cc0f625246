"""The lockstep machine against our own CSP: the regression suite of the reference CSP."""

from __future__ import annotations

from keyhandoff.check import run_check
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
