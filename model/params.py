"""CryptSetKeyParam and CryptGetKeyParam.

Values: bytes for KP_IV, KP_SALT (the bytes pbData points to), KP_SALT_EX (the bytes of the CRYPT_INTEGER_BLOB);
int for the rest. A value of the wrong type, a KP_IV that is not exactly one block, or a KP_SALT that is not
exactly 11 bytes is ERROR_INVALID_PARAMETER (native: a NULL pbData is ERROR_INVALID_PARAMETER; the C API reads
exactly one block for KP_IV and exactly 11 bytes for KP_SALT, so our Python API asks for exactly that many).
"""

from __future__ import annotations

import attrs

from keyhandoff.model import wincrypt as w
from keyhandoff.model.algorithms import ALGORITHMS
from keyhandoff.model.crypt import reset
from keyhandoff.model.state import KeyState
from keyhandoff.model.wincrypt import ErrorCode
from keyhandoff.model.world import Ok, Refused, Step, World, live_key, refuse, with_key

__all__ = ["KP_SALT_BYTES", "MAX_SALT_BYTES", "get_key_param", "set_key_param"]

MAX_SALT_BYTES = 24  # native: KP_SALT_EX takes 0..24 bytes (rsaenh tests test_rc2 / test_rc4)
KP_SALT_BYTES = 11  # KP_SALT: "the base provider always sets eleven bytes of salt value" (MSDN, via Wine)
_RESETTING = (w.KP_IV, w.KP_SALT, w.KP_SALT_EX, w.KP_EFFECTIVE_KEYLEN)


def set_key_param(world: World, key: int, param: int, value: bytes | int) -> Step[None]:
    """CryptSetKeyParam. Codes, in order: dead key NTE_BAD_KEY; unknown or read-only parameter NTE_BAD_TYPE
    (Wine; native silent); a value of the wrong type ERROR_INVALID_PARAMETER; then per parameter:

    - KP_IV: exactly one block (RC4: empty, and it restarts the stream, as in Wine). Resets.
    - KP_SALT / KP_SALT_EX: RC2/RC4 only, else NTE_BAD_KEY (Wine; native silent). The salt keys the cipher
      (key || salt) and the key resets.
    - KP_SALT_EX: 0..24 bytes, more is NTE_BAD_DATA (native: rsaenh tests test_rc2 / test_rc4); the salt is
      reported by CryptGetKeyParam(KP_SALT).
    - KP_SALT: exactly 11 bytes, else ERROR_INVALID_PARAMETER (Wine reads 11 bytes from pbData, "MSDN: the base
      provider always sets eleven bytes of salt value"; the C API passes no length). The salt keys the cipher as
      a KP_SALT_EX salt does, yet CryptGetKeyParam(KP_SALT) then reports an empty salt (native: rsaenh tests
      test_rc2 / test_rc4, "setting the salt value will not reset the salt length in base or strong
      providers": 11 there, 0 in the Enhanced/AES provider; Wine alike). Our decision: that salt keeps keying
      the cipher across later resets (KP_IV, KP_EFFECTIVE_KEYLEN, Final), duplicates and OPAQUEKEYBLOB
      handoffs, still unreported, until another KP_SALT / KP_SALT_EX (Wine drops it at the next re-key: a
      finding).
    - KP_PADDING: only PKCS5_PADDING, else NTE_BAD_DATA (reference).
    - KP_MODE: any value is stored (reference: OFB/CTS accepted, refused at use); RC4 ignores it.
    - KP_MODE_BITS: any value is stored; CFB is 8-bit whatever it says (reference).
    - KP_PERMISSIONS: adding CRYPT_EXPORT is NTE_BAD_DATA (reference); clearing it succeeds and changes
      nothing (native: rsaenh tests test_key_permissions); other bits are stored as given.
    - KP_EFFECTIVE_KEYLEN: RC2 only, else NTE_BAD_TYPE (Wine); 1..1024, else NTE_BAD_DATA (native). Resets.
    KP_MODE, KP_MODE_BITS and KP_PERMISSIONS never reset the live state (reference).
    """
    entry = live_key(world, key)
    if isinstance(entry, Refused):
        return Step(world, entry)
    state = entry.state
    if param in (w.KP_IV, w.KP_SALT, w.KP_SALT_EX):
        if not isinstance(value, bytes):
            return refuse(world, ErrorCode.ERROR_INVALID_PARAMETER, "this parameter takes bytes")
        updated = _set_bytes(state, param, value)
    elif param in (w.KP_PADDING, w.KP_MODE, w.KP_MODE_BITS, w.KP_PERMISSIONS, w.KP_EFFECTIVE_KEYLEN):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFFFFFF:
            return refuse(world, ErrorCode.ERROR_INVALID_PARAMETER, "this parameter takes a DWORD")
        updated = _set_dword(state, param, value)
    else:
        return refuse(world, ErrorCode.NTE_BAD_TYPE, "unknown or read-only key parameter")
    if isinstance(updated, Refused):
        return Step(world, updated)
    entry = attrs.evolve(entry, state=updated)
    if param in _RESETTING:
        entry = reset(world, entry)
    return Step(with_key(world, key, entry), Ok(None))


def _set_bytes(state: KeyState, param: int, value: bytes) -> KeyState | Refused:
    algorithm = ALGORITHMS[state.alg]
    if param == w.KP_IV:
        if len(value) != algorithm.block_len:
            return Refused(ErrorCode.ERROR_INVALID_PARAMETER, "KP_IV must be exactly one block")
        return attrs.evolve(state, iv=value)
    if not algorithm.salted:
        return Refused(ErrorCode.NTE_BAD_KEY, "only RC2 and RC4 keys take a salt")
    if param == w.KP_SALT:
        if len(value) != KP_SALT_BYTES:
            return Refused(ErrorCode.ERROR_INVALID_PARAMETER, "KP_SALT must be exactly 11 bytes")
        return attrs.evolve(state, salt=value, salt_reported=False)
    if len(value) > MAX_SALT_BYTES:
        return Refused(ErrorCode.NTE_BAD_DATA, "salt longer than 24 bytes")
    return attrs.evolve(state, salt=value, salt_reported=True)


def _set_dword(state: KeyState, param: int, value: int) -> KeyState | Refused:
    if param == w.KP_PADDING:
        if value != w.PKCS5_PADDING:
            return Refused(ErrorCode.NTE_BAD_DATA, "only PKCS5_PADDING is supported")
        return attrs.evolve(state, padding=value)
    if param == w.KP_MODE:
        return attrs.evolve(state, mode=value)
    if param == w.KP_MODE_BITS:
        return attrs.evolve(state, mode_bits=value)
    if param == w.KP_PERMISSIONS:
        if value & w.CRYPT_EXPORT and not state.permissions & w.CRYPT_EXPORT:
            return Refused(ErrorCode.NTE_BAD_DATA, "CRYPT_EXPORT cannot be added")
        return attrs.evolve(state, permissions=value | (state.permissions & w.CRYPT_EXPORT))
    if state.alg != w.CALG_RC2:
        return Refused(ErrorCode.NTE_BAD_TYPE, "KP_EFFECTIVE_KEYLEN applies to RC2 only")
    if not 1 <= value <= 1024:
        return Refused(ErrorCode.NTE_BAD_DATA, "effective key length outside 1..1024")
    return attrs.evolve(state, effective_keylen=value)


def get_key_param(world: World, key: int, param: int) -> Step[bytes | int]:
    """CryptGetKeyParam. Dead key NTE_BAD_KEY; unknown parameter NTE_BAD_TYPE (Wine).

    KP_IV is the IV as last set, not the live register (reference). KP_SALT is empty for a key without salt,
    block ciphers included (native: test_aes; Wine answers NTE_BAD_KEY: a finding), and for a salt set with
    KP_SALT (native, Enhanced/AES provider: see set_key_param); a default salt (11 zero bytes of a 40-bit RC2/RC4
    key) and a KP_SALT_EX salt are reported. KP_BLOCKLEN and KP_KEYLEN are in bits (RC4 block length 0);
    KP_KEYLEN counts DES parity bits (KB 331367). KP_EFFECTIVE_KEYLEN of a key other than RC2 is its key length
    (Wine).
    """
    entry = live_key(world, key)
    if isinstance(entry, Refused):
        return Step(world, entry)
    value = observe(entry.state, param)
    if value is None:
        return refuse(world, ErrorCode.NTE_BAD_TYPE, "unknown key parameter")
    return Step(world, Ok(value))


def observe(state: KeyState, param: int) -> bytes | int | None:
    """The value CryptGetKeyParam reports for ``param``, or None when there is no such parameter."""
    values: dict[int, bytes | int] = {
        w.KP_IV: state.iv,
        w.KP_SALT: state.salt if state.salt_reported else b"",
        w.KP_PADDING: state.padding,
        w.KP_MODE: state.mode,
        w.KP_MODE_BITS: state.mode_bits,
        w.KP_PERMISSIONS: state.permissions,
        w.KP_ALGID: state.alg,
        w.KP_BLOCKLEN: ALGORITHMS[state.alg].block_len * 8,
        w.KP_KEYLEN: state.key_bits,
        w.KP_EFFECTIVE_KEYLEN: state.effective_keylen if state.alg == w.CALG_RC2 else state.key_bits,
    }
    return values.get(param)
