"""Every known-answer vector through load("builtin"): whole, split anywhere, handed off or duplicated mid-stream."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyhandoff.targets.builtin_target import BuiltinTarget
from keyhandoff.vectors import Vector, load_vectors, matches, run_stream

VECTORS = load_vectors()
DIRECTIONS = [(v, d) for v in VECTORS for d in (False, True) if not (d and v.stream)]


def _ids(pair: tuple[Vector, bool]) -> str:
    return f"{pair[0].id}-{'decrypt' if pair[1] else 'encrypt'}"


@pytest.mark.parametrize("pair", DIRECTIONS, ids=[_ids(p) for p in DIRECTIONS])
@pytest.mark.parametrize("action", [None, "handoff", "duplicate"])
def test_vector_whole_and_moved(shared_target: BuiltinTarget, pair: tuple[Vector, bool], action: str | None) -> None:
    """The vector's bytes come out whole, and with the key moved (opaque handoff or duplicate) mid-stream."""
    vector, decrypt = pair
    data = vector.api_part(vector.ciphertext if decrypt else vector.plaintext)
    unit = vector.block or 1
    cut = (len(data) // 2) // unit * unit
    cuts = [cut] if action else []
    out = run_stream(shared_target, vector, decrypt=decrypt, cuts=cuts, actions=[action] if action else [])  # type: ignore[list-item]
    assert matches(vector, out, decrypt=decrypt)


@st.composite
def _split(draw: st.DrawFn) -> tuple[Vector, bool, list[int], list[str | None]]:
    vector, decrypt = draw(st.sampled_from(DIRECTIONS))
    data = vector.api_part(vector.ciphertext if decrypt else vector.plaintext)
    unit = vector.block or 1
    # A Final decrypt of nothing is NTE_BAD_LEN: a final decrypting chunk keeps at least one unit.
    last = len(data) // unit - (1 if decrypt and vector.final else 0)
    cuts = sorted(set(draw(st.lists(st.integers(0, last), max_size=6))))
    cuts = [c * unit for c in cuts]
    actions = draw(st.lists(st.sampled_from([None, "handoff", "duplicate"]), min_size=len(cuts), max_size=len(cuts)))
    return vector, decrypt, cuts, actions


@settings(max_examples=150, deadline=None)
@given(_split())
def test_vector_random_splits(
    shared_target: BuiltinTarget, case: tuple[Vector, bool, list[int], list[str | None]]
) -> None:
    """Any chunking, with handoffs and duplicates between any chunks, gives the vector's bytes."""
    vector, decrypt, cuts, actions = case
    out = run_stream(shared_target, vector, decrypt=decrypt, cuts=cuts, actions=actions)  # type: ignore[arg-type]
    assert matches(vector, out, decrypt=decrypt)
