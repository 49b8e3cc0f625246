"""Contexts and key handles: acquire, release, gen_key, duplicate_key, destroy_key, token administration.

The key-material randomness is an argument (``entropy``): the model never draws random bytes itself.
"""

from __future__ import annotations

import attrs

from keyhandoff.model import wincrypt as w
from keyhandoff.model.algorithms import ALGORITHMS, DEFAULT_PERMISSIONS, default_salt, fresh_state
from keyhandoff.model.lifecycle import Transition, advance, location_condition
from keyhandoff.model.state import KeyState, Lifecycle, Location, Side, TokenObject
from keyhandoff.model.wincrypt import ErrorCode
from keyhandoff.model.world import (
    KeyEntry,
    Ok,
    Provider,
    Refused,
    Step,
    World,
    live_key,
    live_provider,
    put,
    refuse,
    with_key,
)

__all__ = [
    "GEN_FLAGS",
    "acquire",
    "delete_token_object",
    "destroy_key",
    "duplicate_key",
    "gen_key",
    "new_handle",
    "release",
    "wiped",
]

# CryptGenKey flags the model accepts in the low 16 bits (reference); anything else is NTE_BAD_FLAGS.
GEN_FLAGS = w.CRYPT_EXPORTABLE | w.CRYPT_CREATE_SALT | w.CRYPT_NO_SALT


def new_handle(world: World) -> tuple[World, int]:
    """A fresh handle: the counter only grows, so handles are never reused (unlike Wine's free list)."""
    return attrs.evolve(world, next_handle=world.next_handle + 1), world.next_handle


def new_token_object(world: World, alg: int, key: bytes) -> tuple[World, int]:
    """The token holds ``key`` as a new object (gen_key or import with hardware=True); its ids only grow too."""
    obj = world.next_token_object
    return attrs.evolve(world, token=put(world.token, obj, TokenObject(alg, key)), next_token_object=obj + 1), obj


def acquire(world: World, side: Side) -> Step[int]:
    """CryptAcquireContext: a new context on the given side of the handoff."""
    world, handle = new_handle(world)
    return Step(attrs.evolve(world, providers=put(world.providers, handle, Provider(side))), Ok(handle))


def wiped(state: KeyState, lifecycle: Lifecycle) -> KeyState:
    """A state whose software material is gone (reference: destroy releases the key; we overwrite it)."""
    return attrs.evolve(state, lifecycle=lifecycle, key=b"", salt=b"")


def _end(world: World, handle: int, entry: KeyEntry, operation: str, extra: str = "") -> tuple[World, Transition]:
    """Move a live key to DESTROYED or HARDWARE_PINNED; a hardware key's token object is never touched."""
    condition = (extra + ", " if extra else "") + location_condition(entry.state.location)
    target, row = advance(entry.state.lifecycle, operation, condition)
    return with_key(world, handle, attrs.evolve(entry, state=wiped(entry.state, target), rc4=None)), row


def release(world: World, prov: int) -> Step[None]:
    """CryptReleaseContext. Our decision: the context's live keys go with it (software material wiped,
    hardware objects kept); the provider handle answers NTE_BAD_UID afterwards."""
    provider = live_provider(world, prov)
    if isinstance(provider, Refused):
        return Step(world, provider)
    fired: list[Transition] = []
    for handle, entry in world.keys.items():
        if entry.provider == prov and entry.state.lifecycle.alive:
            world, row = _end(world, handle, entry, "release")
            fired.append(row)
    world = attrs.evolve(world, providers=put(world.providers, prov, attrs.evolve(provider, released=True)))
    return Step(world, Ok(None), tuple(fired))


def gen_key(world: World, prov: int, alg: int, flags: int, *, hardware: bool, entropy: bytes) -> Step[int]:
    """CryptGenKey. ``entropy`` supplies the key bytes (32 bytes always suffice).

    Rules: unknown provider NTE_BAD_UID; unsupported ALG_ID NTE_BAD_ALGID (CALG_AES included: native,
    rsaenh tests init_aes_environment); low flags other than EXPORTABLE, CREATE_SALT, NO_SALT NTE_BAD_FLAGS
    (our decision; Wine ignores them); a key length the algorithm does not have NTE_BAD_FLAGS for the DES
    family, NTE_BAD_DATA otherwise (Wine's new_key); a hardware key of an algorithm the token cannot run
    NTE_BAD_ALGID (our decision). CRYPT_EXPORTABLE adds CRYPT_EXPORT to the default permissions (reference).
    """
    provider = live_provider(world, prov)
    if isinstance(provider, Refused):
        return Step(world, provider)
    algorithm = ALGORITHMS.get(alg)
    if algorithm is None:
        return refuse(world, ErrorCode.NTE_BAD_ALGID, "algorithm not supported for session keys")
    if flags & 0xFFFF & ~GEN_FLAGS:
        return refuse(world, ErrorCode.NTE_BAD_FLAGS, "unknown CryptGenKey flag")
    nbytes = algorithm.bytes_for_bits(flags >> 16)
    if nbytes is None:
        return refuse(world, algorithm.bad_length, "key length (upper 16 flag bits) not valid for algorithm")
    if hardware and not algorithm.hardware:
        return refuse(world, ErrorCode.NTE_BAD_ALGID, "the token cannot hold keys of this algorithm")
    if len(entropy) < nbytes:
        raise ValueError("gen_key needs at least key-length bytes of entropy")
    key = entropy[:nbytes]  # no DES parity fix-up: rsaenh neither sets nor checks parity
    salt = default_salt(algorithm, nbytes, flags)
    permissions = DEFAULT_PERMISSIONS | (w.CRYPT_EXPORT if flags & w.CRYPT_EXPORTABLE else 0)
    location = Location.HARDWARE if hardware else Location.SOFTWARE
    lifecycle, row = advance(None, "gen_key", location_condition(location))
    state = fresh_state(algorithm, key, salt, permissions=permissions, lifecycle=lifecycle, location=location)
    token_object = None
    if hardware:
        world, token_object = new_token_object(world, alg, key)
    world, handle = new_handle(world)
    world = with_key(world, handle, KeyEntry(prov, state, token_object))
    return Step(world, Ok(handle), (row,))


def duplicate_key(world: World, key: int) -> Step[int]:
    """CryptDuplicateKey: an independent copy of the entire state, live register included (reference).

    A duplicate of a hardware key is a second handle on the same token object.
    """
    entry = live_key(world, key)
    if isinstance(entry, Refused):
        return Step(world, entry)
    lifecycle, row = advance(None, "duplicate_key")
    world, handle = new_handle(world)
    copy = attrs.evolve(entry, state=attrs.evolve(entry.state, lifecycle=lifecycle))
    return Step(with_key(world, handle, copy), Ok(handle), (row,))


def destroy_key(world: World, key: int) -> Step[None]:
    """CryptDestroyKey. Software: the material is wiped. Hardware: only the handle goes (seed: "the CSP must
    recognize this and must not attempt to destroy the key")."""
    entry = live_key(world, key)
    if isinstance(entry, Refused):
        return Step(world, entry)
    world, row = _end(world, key, entry, "destroy_key")
    return Step(world, Ok(None), (row,))


def end_key(world: World, key: int, entry: KeyEntry, operation: str, extra: str) -> tuple[World, Transition]:
    """Used by export with CRYPT_DESTROYKEY: the same end of life as destroy_key."""
    return _end(world, key, entry, operation, extra)


def delete_token_object(world: World, obj: int) -> Step[None]:
    """Token administration (not CryptoAPI): delete a token object. Unknown object: NTE_NOT_FOUND."""
    if obj not in world.token:
        return refuse(world, ErrorCode.NTE_NOT_FOUND, "no such token object")
    token = dict(world.token)
    del token[obj]
    return Step(attrs.evolve(world, token=token), Ok(None))
