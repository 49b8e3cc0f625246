"""RC4 with a state of our own (keyhandoff.impl.rc4_state) and the engines and blobs built on it: the same
keystream as a written-out RC4, a state that exports and restores to the same continuation, restores that never
replay, and a fallback that stays correct without the library."""

from __future__ import annotations

import ctypes
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyhandoff.impl import engines, rc4_state
from keyhandoff.impl.engines import RC4Engine
from keyhandoff.impl.rc4_state import STATE_BYTES, NativeRC4, native_rc4, rc4_schedule
from tests.impl.conftest import rc4_keystream


@pytest.fixture
def lib() -> rc4_state._Library:
    found = native_rc4()
    if found is None:
        pytest.skip("libcrypto's RC4 is not usable here")
    return found


@pytest.fixture
def no_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any replay of keystream bytes fails the test: a restore with a state must be O(1)."""

    def refuse(keystream: object, count: int) -> None:
        if count:
            raise AssertionError(f"replayed {count} keystream bytes")

    monkeypatch.setattr(engines, "_replay", refuse)


def rc4_state_after(key: bytes, count: int) -> bytes:
    """i, j and the table after ``count`` keystream bytes, written out."""
    table, i, j = list(rc4_schedule(key)), 0, 0
    for _ in range(count):
        i = (i + 1) & 0xFF
        j = (j + table[i]) & 0xFF
        table[i], table[j] = table[j], table[i]
    return bytes((i, j, *table))


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=1, max_size=256), st.lists(st.integers(0, 300), max_size=5))
def test_native_keystream_and_state_are_rc4(key: bytes, chunks: list[int]) -> None:
    """Any key length, any chunking: the keystream and the exported state of a written-out RC4."""
    lib = native_rc4()
    if lib is None:
        pytest.skip("libcrypto's RC4 is not usable here")
    state = NativeRC4.keyed(lib, key)
    out = b"".join(state.update(bytes(n)) for n in chunks)
    assert out == rc4_keystream(key, sum(chunks))
    assert state.export() == rc4_state_after(key, sum(chunks))


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=1, max_size=40), st.integers(0, 2000), st.integers(1, 300))
def test_exported_state_restores_the_continuation(key: bytes, position: int, more: int) -> None:
    lib = native_rc4()
    if lib is None:
        pytest.skip("libcrypto's RC4 is not usable here")
    original = NativeRC4.keyed(lib, key)
    original.update(bytes(position))
    restored = NativeRC4.restored(lib, original.export())
    assert restored.export() == original.export()
    assert restored.update(bytes(more)) == original.update(bytes(more))


def test_restore_refuses_what_is_not_a_state(lib: rc4_state._Library) -> None:
    good = NativeRC4.keyed(lib, b"k").export()
    for bad in (b"", good[:-1], good + b"\x00", good[:2] + bytes(256), good[:2] + good[3:4] + good[3:]):
        with pytest.raises(ValueError, match="permutation"):
            NativeRC4.restored(lib, bad)


def test_wipe_zeroes_the_state_in_place_and_no_repr_shows_it(lib: rc4_state._Library) -> None:
    """White box: the RC4_KEY buffer itself reads as zeros after wipe (and when the object goes)."""
    state = NativeRC4.keyed(lib, bytes(range(16)))
    state.update(bytes(100))
    exported = state.export()
    assert exported.hex() not in repr(state)
    assert "state redacted" in repr(state)
    address, size = state._addr, rc4_state._ROOM
    assert ctypes.string_at(address, size) != bytes(size)
    state.wipe()
    assert ctypes.string_at(address, size) == bytes(size)
    assert state.export() == bytes(STATE_BYTES)


def test_the_layout_check_can_refuse(lib: rc4_state._Library) -> None:
    """Structures of a wrong width fail the check (entries read as other values, or as values that are not
    bytes), so native_rc4 would answer None; the buffer has room for any layout, so the check itself cannot
    make the library write past it."""
    assert rc4_state._works(lib)
    right = ctypes.sizeof(lib.key_type().data) // 256
    for entry, code in ((ctypes.c_ubyte, "B"), (ctypes.c_uint, "I"), (ctypes.c_ulonglong, "Q")):
        if ctypes.sizeof(entry) == right:
            continue

        class Wrong(ctypes.Structure):
            _fields_ = (("x", entry), ("y", entry), ("data", entry * 256))

        wrong = rc4_state._Library.__new__(rc4_state._Library)
        wrong.__dict__.update(lib.__dict__)
        wrong.key_type, wrong.code = Wrong, code
        assert not rc4_state._works(wrong), code


def test_the_environment_forces_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYHANDOFF_NATIVE_RC4", "0")
    native_rc4.cache_clear()
    try:
        assert native_rc4() is None
    finally:
        monkeypatch.delenv("KEYHANDOFF_NATIVE_RC4")
        native_rc4.cache_clear()


# --- the engine ---------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_replay")
@pytest.mark.parametrize("position", [1, 255, 256, 70_000])
def test_engine_restores_with_its_state_without_replaying(lib: rc4_state._Library, position: int) -> None:
    """A clone, and an engine made from (key, position, exported state), continue exactly; neither replays."""
    key = os.urandom(16)
    original = RC4Engine(key)
    with pytest.MonkeyPatch.context() as allowed:  # reaching the position is the test's own business
        allowed.setattr(engines, "_replay", lambda keystream, count: None)
        original.run(0, bytes(position), decrypt=False)
    state = original.stream_state
    assert state == rc4_state_after(key, position)
    restored = RC4Engine(key, position, state)
    assert restored.stream_state == state  # not yet started: it exports what it was given
    clone = original.clone()
    expected = rc4_keystream(key, position + 64)[position:]
    assert restored.run(0, bytes(64), decrypt=False) == expected
    assert clone.run(0, bytes(64), decrypt=True) == expected
    assert original.run(0, bytes(64), decrypt=False) == expected
    assert restored.stream_pos == clone.stream_pos == position + 64


def test_engine_exports_no_state_at_position_zero_or_without_the_library(rc4_backend: str) -> None:
    """Position 0 needs none (the key schedule is the state); the fallback has none to give."""
    engine = RC4Engine(b"key bytes")
    assert engine.stream_state == b""
    engine.run(0, bytes(10), decrypt=False)
    assert (len(engine.stream_state) == STATE_BYTES) == (rc4_backend == "native")
    engine.reset(b"")
    assert engine.stream_state == b""


def test_a_state_from_the_library_is_ignored_by_the_fallback(
    lib: rc4_state._Library, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blob sealed where the library was, imported where it is not: the state is unused, the key replays from
    its schedule, and the continuation is the same."""
    key = os.urandom(7)
    state = rc4_state_after(key, 1000)
    monkeypatch.setattr(engines, "native_rc4", lambda: None)
    engine = RC4Engine(key, 1000, state)
    assert engine.run(0, bytes(32), decrypt=False) == rc4_keystream(key, 1032)[1000:]
    assert engine.stream_state == b""
