"""Every row of the lifecycle table fires, and keys move exactly as the fired rows say."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyhandoff import model
from keyhandoff.model import TRANSITIONS, Lifecycle, Location, Ok, Side, Step, Transition, World
from keyhandoff.model import wincrypt as w
from tests.strategies import Walk, operations, plaintext_blob

ENTROPY = bytes(range(32))


def _ok(step: Step[Any]) -> Any:
    assert isinstance(step.outcome, Ok), step.outcome
    return step.outcome.value


def _lifecycles(world: World) -> dict[int, Lifecycle]:
    return {h: e.state.lifecycle for h, e in world.keys.items()}


def _key_in(source: Lifecycle, hardware: bool) -> tuple[World, int, int]:
    """A world holding a key in ``source`` at the wanted location, and its provider."""
    world = model.empty_world()
    step = model.acquire(world, Side.SECURE)
    world, prov = step.world, _ok(step)
    step = model.gen_key(world, prov, w.CALG_AES_128, 0, hardware=hardware, entropy=ENTROPY)
    world, key = step.world, _ok(step)
    if source is Lifecycle.EXPORTED:
        world = model.export_key(world, key, w.OPAQUEKEYBLOB).world
    elif source is Lifecycle.IMPORTED:
        step = model.export_key(world, key, w.OPAQUEKEYBLOB)
        blob = _ok(step)
        step = model.import_key(step.world, prov, blob)
        world, key = step.world, _ok(step)
    assert world.keys[key].state.lifecycle is source
    return world, prov, key


def _fire(row: Transition) -> tuple[Step[Any], World, int | None]:
    """Drive the model so that ``row`` fires; returns the step, the world before it and the key it concerns."""
    hardware = "hardware" in row.condition
    if row.source is None:
        world, prov, key = _key_in(Lifecycle.CREATED, hardware)
        if row.operation == "gen_key":
            return model.gen_key(world, prov, w.CALG_AES_256, 0, hardware=hardware, entropy=ENTROPY), world, None
        if row.operation == "duplicate_key":
            return model.duplicate_key(world, key), world, None
        if row.condition == "OPAQUEKEYBLOB":
            step = model.export_key(world, key, w.OPAQUEKEYBLOB)
            world = step.world
            return model.import_key(world, prov, _ok(step)), world, None
        return model.import_key(world, prov, plaintext_blob(w.CALG_DES, bytes(8))), world, None
    world, prov, key = _key_in(row.source, hardware)
    if row.operation == "export_key":
        flags = w.CRYPT_DESTROYKEY if "CRYPT_DESTROYKEY" in row.condition else 0
        return model.export_key(world, key, w.OPAQUEKEYBLOB, flags=flags), world, key
    if row.operation == "destroy_key":
        return model.destroy_key(world, key), world, key
    assert row.operation == "release"
    return model.release(world, prov), world, key


@pytest.mark.parametrize("row", TRANSITIONS, ids=[r.label for r in TRANSITIONS])
def test_every_transition_row_fires(row: Transition) -> None:
    """The row fires, and the key it concerns moves from the row's source to its target."""
    step, before, key = _fire(row)
    assert isinstance(step.outcome, Ok)
    assert row in step.fired
    if key is None:
        new = _ok(step)
        assert new not in before.keys
        key = new
    else:
        assert before.keys[key].state.lifecycle is row.source
    assert step.world.keys[key].state.lifecycle is row.target
    expected = Location.HARDWARE if "hardware" in row.condition else Location.SOFTWARE
    assert step.world.keys[key].state.location is expected


def test_table_has_the_expected_shape() -> None:
    """Five creation rows and seven rows from each live state, with no duplicates."""
    assert len(TRANSITIONS) == len(set(TRANSITIONS)) == 5 + 7 * 3
    assert {r.source for r in TRANSITIONS} == {None, Lifecycle.CREATED, Lifecycle.EXPORTED, Lifecycle.IMPORTED}
    assert all(r.source is None or r.source.alive for r in TRANSITIONS)


def test_release_fires_one_row_per_live_key() -> None:
    """Releasing a context ends each of its live keys through its own row; dead keys fire nothing."""
    world, prov, soft = _key_in(Lifecycle.CREATED, False)
    step = model.gen_key(world, prov, w.CALG_DES, 0, hardware=True, entropy=ENTROPY)
    world, hard = step.world, _ok(step)
    step = model.gen_key(world, prov, w.CALG_DES, 0, hardware=False, entropy=ENTROPY)
    world, dead = step.world, _ok(step)
    world = model.destroy_key(world, dead).world
    step = model.release(world, prov)
    assert sorted(r.label for r in step.fired) == sorted(
        [
            "CREATED --release [software]--> DESTROYED",
            "CREATED --release [hardware]--> HARDWARE_PINNED",
        ]
    )
    assert step.world.keys[soft].state.lifecycle is Lifecycle.DESTROYED
    assert step.world.keys[hard].state.lifecycle is Lifecycle.HARDWARE_PINNED


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(operations, min_size=5, max_size=30))
def test_random_walks_move_only_along_fired_rows(ops: list[tuple[Any, ...]]) -> None:
    """On any operation sequence, each lifecycle change is explained by a fired row and each fired row by a change."""
    world = model.empty_world()
    walk = Walk()
    seed_ops: list[tuple[Any, ...]] = [
        ("acquire", Side.SECURE),
        ("acquire", Side.APP),
        ("gen", 0, w.CALG_AES_128, 0, True, ENTROPY),
        ("gen", 1, w.CALG_RC4, 0, False, ENTROPY),
        ("export", 0, w.OPAQUEKEYBLOB, 0),
        ("import_blob", 1, 0, False),
    ]
    for op in seed_ops + ops:
        before = _lifecycles(world)
        step = walk.apply(world, op)
        after = _lifecycles(step.world)
        moves = [(before.get(h), after[h]) for h in after if before.get(h) is not after[h]]
        fired = [(r.source, r.target) for r in step.fired]
        for move in moves:
            assert move in fired, (op, move, fired)
        for source, target in fired:
            assert (source, target) in moves or any(before.get(h) is source and after[h] is target for h in after), (
                op,
                source,
                target,
            )
        assert len(step.fired) >= len(moves)
        world = step.world
