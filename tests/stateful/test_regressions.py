"""Durable regressions: every trace under tests/regressions/ replays with model and target in agreement."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyhandoff.targets.fresh import fresh_factory
from keyhandoff.traces import load_trace, replay

TRACES = sorted((Path(__file__).resolve().parents[1] / "regressions").glob("*.json"))


@pytest.mark.parametrize("trace", TRACES, ids=[t.stem for t in TRACES])
@pytest.mark.parametrize("spec", ["model", "builtin"])
def test_regression_trace_agrees(trace: Path, spec: str) -> None:
    """A trace that once exposed a divergence now replays without one."""
    steps, _ = load_trace(trace)
    failure, ls = replay(steps, fresh_factory(spec))
    assert failure is None, failure
    assert len(ls.trace) == len(steps)


def test_there_are_regression_traces() -> None:
    """The regression folder is not silently empty."""
    assert TRACES
