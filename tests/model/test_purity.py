"""The model is pure: worlds are values, handles are never reused, and no secret reaches a repr or a message."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyhandoff import CryptError, model
from keyhandoff.model import KeyEntry, Lifecycle, Refused, Side, TokenObject, World
from keyhandoff.model import wincrypt as w
from tests.strategies import Walk, import_plain, new_target, operations

SEED_OPS: list[tuple[Any, ...]] = [
    ("acquire", Side.SECURE),
    ("acquire", Side.APP),
    ("gen", 0, w.CALG_AES_128, w.CRYPT_EXPORTABLE, False, bytes(range(32))),
    ("gen", 0, w.CALG_RC4, 40 << 16, False, bytes(range(32, 64))),
    ("gen", 1, w.CALG_3DES, 0, True, bytes(range(64, 96))),
    ("export", 0, w.OPAQUEKEYBLOB, 0),
    ("import_blob", 1, 0, False),
]


def deep_copy(value: Any) -> Any:
    """An independent copy of a world (copy.deepcopy cannot copy the read-only mapping views)."""
    if attrs.has(type(value)):
        fields = attrs.fields(type(value))
        return type(value)(**{f.alias: deep_copy(getattr(value, f.name)) for f in fields if f.init})
    if isinstance(value, Mapping):
        return {deep_copy(k): deep_copy(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(deep_copy(v) for v in value)
    if isinstance(value, bytes):
        return bytes(bytearray(value))
    assert value is None or isinstance(value, int | str | bool | enum.Enum), type(value)
    return value


def snapshot(value: Any) -> Any:
    """Every field, including those left out of equality (the RC4 table cache), as plain data."""
    if attrs.has(type(value)):
        return (
            type(value).__name__,
            tuple((f.name, snapshot(getattr(value, f.name))) for f in attrs.fields(type(value))),
        )
    if isinstance(value, Mapping):
        return tuple(sorted((snapshot(k), snapshot(v)) for k, v in value.items()))
    if isinstance(value, tuple):
        return tuple(snapshot(v) for v in value)
    if isinstance(value, enum.Enum):
        return (type(value).__name__, value.name)
    return value


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(operations, max_size=25), installation=st.binary(min_size=8, max_size=8))
def test_operations_never_mutate_the_world(ops: list[tuple[Any, ...]], installation: bytes) -> None:
    """Every pure operation leaves the world it was given exactly as it was (equal to a deep copy taken before)."""
    world = model.empty_world(installation)
    walk = Walk()
    for op in SEED_OPS + ops:
        copy, before = deep_copy(world), snapshot(world)
        step = walk.apply(world, op)
        assert world == copy
        assert snapshot(world) == before
        bad_pad_reset = op[0] == "decrypt" and op[3] and isinstance(step.outcome, Refused)
        if isinstance(step.outcome, Refused) and not bad_pad_reset:
            assert step.world == world, op
            assert not step.fired
        world = step.world


def test_deep_copy_really_copies() -> None:
    """The deep copy used above is equal but shares no mapping with the original (so the check can fail)."""
    target = new_target()
    prov = target.acquire()
    import_plain(target, prov, w.CALG_AES_128, bytes(16))
    copy = deep_copy(target.world)
    assert copy == target.world
    assert copy.keys is not target.world.keys
    changed = attrs.evolve(copy, next_handle=copy.next_handle + 1)
    assert changed != target.world


def test_world_mappings_are_read_only() -> None:
    """World.providers, keys, token and issued cannot be mutated, and the world's fields cannot be rebound."""
    target = new_target()
    prov = target.acquire()
    key = target.gen_key(prov, w.CALG_AES_128, hardware=True)
    target.export_key(key, w.OPAQUEKEYBLOB)
    world = target.world
    entry = world.keys[key]
    for mapping, existing in ((world.providers, prov), (world.keys, key), (world.token, 1)):
        assert existing in mapping
        with pytest.raises(TypeError):
            mapping[existing] = None  # type: ignore[index]
        with pytest.raises(TypeError):
            del mapping[existing]  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        world.issued[b"x"] = None  # type: ignore[index]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        world.keys = {}  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        entry.state.register = b""  # type: ignore[misc]
    assert target.world.keys[key] is entry


def test_world_copies_the_mappings_it_is_built_from() -> None:
    """A World built from a dict does not see later changes to that dict."""
    source: dict[int, TokenObject] = {1: TokenObject(w.CALG_AES_128, bytes(16))}
    world = World(installation=bytes(8), token=source)
    source[2] = TokenObject(w.CALG_DES, bytes(8))
    assert list(world.token) == [1]


def test_handles_are_never_reused() -> None:
    """Across many create/destroy cycles every handle is new, and every stale handle stays NTE_BAD_KEY."""
    target = new_target(seed=7)
    prov = target.acquire()
    seen: set[int] = {prov}
    stale: list[int] = []
    for i in range(150):
        key = target.gen_key(prov, w.CALG_AES_128 if i % 2 else w.CALG_RC4, w.CRYPT_EXPORTABLE)
        twin = target.duplicate_key(key)
        again = target.import_key(prov, target.export_key(key, w.OPAQUEKEYBLOB))
        for handle in (key, twin, again):
            assert handle not in seen
            seen.add(handle)
        for handle in (key, twin, again):
            target.destroy_key(handle)
        stale += [key, twin, again]
        if i % 25 == 0:
            other = target.acquire("app")
            assert other not in seen
            seen.add(other)
            target.release(other)
    for handle in stale:
        with pytest.raises(CryptError) as err:
            target.encrypt(handle, bytes(16), False)
        assert err.value.code == w.NTE_BAD_KEY


def test_pure_handles_are_never_reused() -> None:
    """The pure functions hand out strictly increasing handles, even after destroy and release."""
    world = model.empty_world()
    handles = []
    step: Any = model.acquire(world, Side.SECURE)
    world, prov = step.world, step.outcome.value
    handles.append(prov)
    for _ in range(50):
        step = model.gen_key(world, prov, w.CALG_DES, 0, hardware=False, entropy=bytes(32))
        world, key = step.world, step.outcome.value
        handles.append(key)
        world = model.destroy_key(world, key).world
    assert handles == sorted(set(handles))


@pytest.mark.parametrize("how", ["destroy", "release", "export CRYPT_DESTROYKEY"])
def test_destroyed_state_is_wiped(how: str) -> None:
    """A destroyed key's KeyState keeps key == b"" and salt == b"" (40-bit RC4, whose salt is 11 bytes)."""
    target = new_target()
    prov = target.acquire()
    key = import_plain(target, prov, w.CALG_RC4, b"SECRT")
    assert target.inspect(key).salt == bytes(11)
    if how == "destroy":
        target.destroy_key(key)
    elif how == "release":
        target.release(prov)
    else:
        target.export_key(key, w.OPAQUEKEYBLOB, flags=w.CRYPT_DESTROYKEY)
    state = target.inspect(key)
    assert state.lifecycle is Lifecycle.DESTROYED
    assert state.key == b""
    assert state.salt == b""
    assert target.world.keys[key].rc4 is None


def _secret_forms(secret: bytes) -> list[str]:
    return [secret.hex(), secret.hex().upper(), repr(secret)[2:-1], secret.decode("latin-1")]


def test_no_key_bytes_in_reprs_or_messages() -> None:
    """repr() of KeyState, TokenObject, KeyEntry, World, the target and the Steps that answer key bytes, and
    every CryptError text, hide the keys."""
    target = new_target()
    prov = target.acquire()
    secrets = {
        w.CALG_AES_128: b"SECRET-AES-KEY!!",
        w.CALG_3DES: b"SECRET-3DES-KEY-24BYTES!",
        w.CALG_RC4: b"RC4-SECRET-KEY!!",
        w.CALG_RC2: b"RC2SECRET",
    }
    handles = [import_plain(target, prov, alg, kb) for alg, kb in secrets.items()]
    target.set_key_param(handles[3], w.KP_SALT_EX, b"SALT-IS-SECRET-TOO")
    target.set_key_param(handles[2], w.KP_SALT, b"SALT-SECRET")  # unreported, yet secret all the same
    hw = target.import_key(prov, b"\x08\x02\x00\x00\x0e\x66\x00\x00\x10\x00\x00\x00HARDWARE-SECRET!", hardware=True)
    target.encrypt(handles[2], bytes(10), False)  # builds an RC4 table cache
    texts = [repr(target.world), repr(target), str(target.world)]
    for handle in [*handles, hw]:
        entry = target.world.keys[handle]
        texts += [repr(entry), repr(entry.state), str(entry.state)]
    texts += [repr(token) for token in target.world.token.values()]
    for handle in handles:  # the steps that answer key bytes or a salt (their Ok's repr showed them)
        texts.append(repr(model.export_key(target.world, handle, w.PLAINTEXTKEYBLOB)))
        texts.append(repr(model.get_key_param(target.world, handle, w.KP_SALT)))
    for handle in handles:
        for call in (
            lambda h: target.encrypt(h, bytes(3), False),
            lambda h: target.set_key_param(h, w.KP_PADDING, 9),
            lambda h: target.export_key(h, w.SIMPLEBLOB),
            lambda h: target.hmac(h, 0, b""),
        ):
            try:
                call(handle)
            except CryptError as err:
                texts += [str(err), repr(err), str(err.args)]
    rc4_table = target.world.keys[handles[2]].rc4
    assert rc4_table is not None
    leaks = [*secrets.values(), b"SALT-IS-SECRET-TOO", b"SALT-SECRET", b"HARDWARE-SECRET!", rc4_table.table[:16]]
    for text in texts:
        for secret in leaks:
            for form in _secret_forms(secret):
                assert form not in text


def test_key_entry_repr_names_lengths_only() -> None:
    """KeyState's repr shows the key and salt as lengths."""
    target = new_target()
    prov = target.acquire()
    key = import_plain(target, prov, w.CALG_RC4, b"ABCDE")
    text = repr(target.inspect(key))
    assert "key=<5 bytes>" in text
    assert "salt=<11 bytes>" in text
    assert isinstance(target.world.keys[key], KeyEntry)


def test_the_package_exports_what_it_lists_lazily() -> None:
    """keyhandoff.model imports its names on first use: each name of __all__ has a home module and resolves to
    that module's object, and the package lists every name it can import."""
    import importlib
    import subprocess
    import sys

    homes = model._HOMES  # type: ignore[attr-defined]  # white box: the lazy table
    assert sorted(homes) == sorted(model.__all__)
    for name in model.__all__:
        home = importlib.import_module(f"keyhandoff.model.{homes[name]}")
        assert getattr(model, name) is getattr(home, name)
    # The vocabulary alone does not load the rules (a fresh interpreter: this one has them all loaded).
    code = (
        "import sys, keyhandoff.model.errors, keyhandoff.model.wincrypt, keyhandoff.model.state; "
        "print(sorted(m for m in sys.modules if m.startswith('keyhandoff.model.')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for rules in ("blobs", "crypt", "keys", "params", "world"):
        assert f"keyhandoff.model.{rules}'" not in loaded
