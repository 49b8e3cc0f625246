"""CryptEncrypt, CryptDecrypt and HMAC on a session key, from its abstract state.

Rules (reference, "Modes and lengths" and "When the live state resets"):
- Encrypt and decrypt share one register / stream position per handle.
- A non-final call on a block cipher whose length is not a block multiple: NTE_BAD_DATA, state untouched
  (CFB too: the check uses the cipher's block length).
- Final encrypt appends PKCS#5 padding, a whole block when aligned (CFB too); Final resets register := IV.
- Final decrypt of zero bytes: NTE_BAD_LEN (RC4 too). A bad pad: NTE_BAD_DATA *and* the key resets.
- No permission bit is checked by encrypt, decrypt or HMAC (rsaenh never consults them; native silent).
- OFB, CTS or an unknown mode: NTE_BAD_ALGID at use, after the length check (Wine's block_encrypt checks the
  length first; the order of the other checks: dead key, HMAC-only key, gone token object, Final decrypt of
  nothing, length, mode).
- RC4: no padding, no length rule; Final only resets to the key schedule.
- A hardware key whose token object was deleted: NTE_NOT_FOUND at use (as on importing its blob).
"""

from __future__ import annotations

import hashlib
import hmac as _hmac

import attrs

from keyhandoff.model import wincrypt as w
from keyhandoff.model.algorithms import ALGORITHMS, HMAC_ALGORITHMS
from keyhandoff.model.ciphers import RC4State, block_cipher, rc4_apply, rc4_schedule
from keyhandoff.model.state import KeyState, Location
from keyhandoff.model.wincrypt import ErrorCode
from keyhandoff.model.world import KeyEntry, Ok, Refused, Step, World, live_key, refuse, with_key

__all__ = ["USABLE_MODES", "cipher_key", "decrypt", "encrypt", "hmac", "rc4_state", "reset"]

USABLE_MODES = (w.CRYPT_MODE_ECB, w.CRYPT_MODE_CBC, w.CRYPT_MODE_CFB)


def key_material(world: World, entry: KeyEntry) -> bytes:
    """The key bytes: in the state for a software key, in the token object for a hardware key."""
    if entry.state.location is Location.HARDWARE and entry.token_object is not None:
        obj = world.token.get(entry.token_object)
        return obj.key if obj is not None else b""
    return entry.state.key


def cipher_key(world: World, entry: KeyEntry) -> bytes:
    """What keys the cipher: key || salt (reference: RC2/RC4 are keyed with key || salt)."""
    return key_material(world, entry) + entry.state.salt


def rc4_state(world: World, entry: KeyEntry) -> RC4State:
    """The RC4 table at the entry's stream position (cached; rebuilt by skipping only if no cache exists)."""
    if entry.rc4 is not None:
        return entry.rc4
    state = rc4_schedule(cipher_key(world, entry))
    if entry.state.stream_pos:
        _, state = rc4_apply(state, bytes(entry.state.stream_pos))
    return state


def reset(world: World, entry: KeyEntry) -> KeyEntry:
    """register := IV; RC4 restarts from its key schedule."""
    state = attrs.evolve(entry.state, register=entry.state.iv, stream_pos=0)
    rc4 = rc4_schedule(cipher_key(world, entry)) if entry.state.alg == w.CALG_RC4 else None
    return attrs.evolve(entry, state=state, rc4=rc4)


def _usable(world: World, key: int) -> KeyEntry | Refused:
    entry = live_key(world, key)
    if isinstance(entry, Refused):
        return entry
    if entry.state.hmac_only:
        # Our decision: a CRYPT_IPSEC_HMAC_KEY key longer than the cipher allows is a MAC key only.
        return Refused(ErrorCode.NTE_BAD_KEY, "key imported for HMAC only")
    if entry.state.location is Location.HARDWARE and entry.token_object not in world.token:
        # Same rule and code as importing a blob whose token object is gone (blobs._import_opaque).
        return Refused(ErrorCode.NTE_NOT_FOUND, "the key's token object no longer exists")
    return entry


def _rc4(world: World, key: int, entry: KeyEntry, data: bytes, final: bool) -> Step[bytes]:
    out, table = rc4_apply(rc4_state(world, entry), data)
    advanced = attrs.evolve(entry, state=attrs.evolve(entry.state, stream_pos=entry.state.stream_pos + len(data)))
    advanced = attrs.evolve(advanced, rc4=table)
    return Step(with_key(world, key, reset(world, advanced) if final else advanced), Ok(out))


def _run(world: World, entry: KeyEntry, data: bytes, *, decrypt: bool) -> tuple[bytes, KeyState]:
    state = entry.state
    out, register = block_cipher(
        state.alg,
        cipher_key(world, entry),
        state.effective_keylen,
        state.mode,
        state.register,
        data,
        decrypt=decrypt,
    )
    return out, attrs.evolve(state, register=register)


def encrypt(world: World, key: int, data: bytes, final: bool) -> Step[bytes]:
    """CryptEncrypt(hKey, hHash=0, Final, data)."""
    entry = _usable(world, key)
    if isinstance(entry, Refused):
        return Step(world, entry)
    state = entry.state
    if state.alg == w.CALG_RC4:
        return _rc4(world, key, entry, data, final)
    size = ALGORITHMS[state.alg].block_len
    if not final and len(data) % size:
        return refuse(world, ErrorCode.NTE_BAD_DATA, "non-final length not a multiple of the block length")
    if state.mode not in USABLE_MODES:
        return refuse(world, ErrorCode.NTE_BAD_ALGID, "mode accepted by KP_MODE but not usable (OFB/CTS/unknown)")
    if final:
        pad = size - len(data) % size
        data += bytes([pad]) * pad
    out, state = _run(world, entry, data, decrypt=False)
    entry = attrs.evolve(entry, state=state)
    return Step(with_key(world, key, reset(world, entry) if final else entry), Ok(out))


def decrypt(world: World, key: int, data: bytes, final: bool) -> Step[bytes]:
    """CryptDecrypt(hKey, hHash=0, Final, data)."""
    entry = _usable(world, key)
    if isinstance(entry, Refused):
        return Step(world, entry)
    state = entry.state
    if final and not data:
        # Native, RC4 included (advapi32 tests test_incorrect_api_usage); checked before anything else.
        return refuse(world, ErrorCode.NTE_BAD_LEN, "final decrypt of zero bytes")
    if state.alg == w.CALG_RC4:
        return _rc4(world, key, entry, data, final)
    size = ALGORITHMS[state.alg].block_len
    if len(data) % size:
        return refuse(world, ErrorCode.NTE_BAD_DATA, "length not a multiple of the block length")
    if state.mode not in USABLE_MODES:
        return refuse(world, ErrorCode.NTE_BAD_ALGID, "mode accepted by KP_MODE but not usable (OFB/CTS/unknown)")
    out, state = _run(world, entry, data, decrypt=True)
    entry = attrs.evolve(entry, state=state)
    if not final:
        return Step(with_key(world, key, entry), Ok(out))
    world = with_key(world, key, reset(world, entry))
    pad = out[-1]
    if not 1 <= pad <= size or out[-pad:] != bytes([pad]) * pad:
        return refuse(world, ErrorCode.NTE_BAD_DATA, "bad PKCS#5 padding on final decrypt (the key resets)")
    return Step(world, Ok(out[:-pad]))


def hmac(world: World, key: int, hash_alg: int, data: bytes) -> Step[bytes]:
    """CALG_HMAC with HP_HMAC_INFO.HashAlgid = ``hash_alg`` over ``data``; the HMAC key is the key's bytes.

    Unknown hash: NTE_BAD_ALGID. A hardware key: NTE_BAD_KEY_STATE (our decision: the token runs the block
    cipher only). HMAC does not touch the cipher state.
    """
    entry = live_key(world, key)
    if isinstance(entry, Refused):
        return Step(world, entry)
    name = HMAC_ALGORITHMS.get(hash_alg)
    if name is None:
        return refuse(world, ErrorCode.NTE_BAD_ALGID, "HMAC hash algorithm not supported")
    if entry.state.location is Location.HARDWARE:
        return refuse(world, ErrorCode.NTE_BAD_KEY_STATE, "hardware keys are not used for HMAC")
    return Step(world, Ok(_hmac.new(entry.state.key, data, getattr(hashlib, name)).digest()))
