"""The world the model reasons about, and the shape of every operation's result.

A :class:`World` is one CSP installation: its provider contexts (each on the secure or the app side), its key
handles and their states, the hardware token's objects, and the opaque blobs it has issued. Every value is
immutable; an operation returns a :class:`Step` holding the new world, the outcome and the lifecycle rows fired.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Generic, TypeVar

import attrs

from keyhandoff.model.ciphers import RC4State
from keyhandoff.model.lifecycle import Transition
from keyhandoff.model.state import KeyState, Side, TokenObject
from keyhandoff.model.wincrypt import ErrorCode

__all__ = ["Issued", "KeyEntry", "Ok", "Outcome", "Provider", "Refused", "Step", "World", "empty_world"]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")


def _frozen_map(value: Mapping[Any, Any]) -> Mapping[Any, Any]:
    # A read-only view, so no caller can mutate a world it was handed.
    return value if isinstance(value, MappingProxyType) else MappingProxyType(dict(value))


def put(mapping: Mapping[K, V], key: K, value: V) -> Mapping[K, V]:
    """A copy of ``mapping`` with ``key`` set (worlds are small; copying keeps every value immutable)."""
    copy = dict(mapping)
    copy[key] = value
    return MappingProxyType(copy)


@attrs.frozen
class Provider:
    side: Side
    released: bool = False


@attrs.frozen
class KeyEntry:
    """One key handle: its context, its state, its token object (hardware keys) and the RC4 table cache.

    ``rc4`` is derived from ``state`` (key, salt and stream position) and kept only so a continuation costs
    O(len(data)); it is not part of the observable state.
    """

    provider: int
    state: KeyState
    token_object: int | None = None
    rc4: RC4State | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class Issued:
    """What an OPAQUEKEYBLOB of this installation restores: the exported key entry, snapshotted."""

    entry: KeyEntry


@attrs.frozen
class World:
    installation: bytes  # identifies the installation; its blobs are not accepted by another one
    providers: Mapping[int, Provider] = attrs.field(factory=dict, converter=_frozen_map)
    keys: Mapping[int, KeyEntry] = attrs.field(factory=dict, converter=_frozen_map)
    token: Mapping[int, TokenObject] = attrs.field(factory=dict, converter=_frozen_map)
    issued: Mapping[bytes, Issued] = attrs.field(factory=dict, converter=_frozen_map, repr=False)
    next_handle: int = 1  # handles are never reused: the counter only grows
    next_token_object: int = 1
    next_blob: int = 1


def empty_world(installation: bytes = b"\x00" * 8) -> World:
    return World(installation=installation)


def _value_repr(value: object) -> str:
    # An answer may be key bytes (a PLAINTEXTKEYBLOB, a salt): a repr says how many, never which.
    return f"<{len(value)} bytes>" if isinstance(value, bytes | bytearray) else repr(value)


@attrs.frozen
class Ok(Generic[T]):
    value: T = attrs.field(repr=_value_repr)


@attrs.frozen
class Refused:
    """A refusal: the CryptoAPI code and the rule that produced it (text for reports, never secrets)."""

    code: ErrorCode
    rule: str


Outcome = Ok[T] | Refused


@attrs.frozen
class Step(Generic[T]):
    world: World
    outcome: Ok[T] | Refused
    fired: tuple[Transition, ...] = ()


def refuse(world: World, code: ErrorCode, rule: str) -> Step[T]:
    """A refusal that leaves the world as it was."""
    return Step(world, Refused(code, rule))


def live_key(world: World, handle: int) -> KeyEntry | Refused:
    """The entry behind a usable key handle, or NTE_BAD_KEY.

    Reference: a destroyed or unknown key handle answers NTE_BAD_KEY at the CSP level; handles are never
    recycled, so a stale handle can never reach a newer key.
    """
    entry = world.keys.get(handle)
    if entry is None or not entry.state.lifecycle.alive:
        return Refused(ErrorCode.NTE_BAD_KEY, "unknown, destroyed or released key handle")
    return entry


def live_provider(world: World, handle: int) -> Provider | Refused:
    """The context behind a provider handle, or NTE_BAD_UID (CryptoAPI's code for a bad hProv)."""
    provider = world.providers.get(handle)
    if provider is None or provider.released:
        return Refused(ErrorCode.NTE_BAD_UID, "unknown or released provider handle")
    return provider


def with_key(world: World, handle: int, entry: KeyEntry) -> World:
    return attrs.evolve(world, keys=put(world.keys, handle, entry))
