"""The algorithms a session key may have: block length, key lengths, salt and hardware rules.

Sources: the reference facts (block and default key lengths, Enhanced provider), Wine's rsaenh tests (native
behaviour) for the length ranges, and "our decision" where marked.
"""

from __future__ import annotations

import attrs

from keyhandoff.model import wincrypt as w
from keyhandoff.model.state import KeyState, Lifecycle, Location
from keyhandoff.model.wincrypt import ErrorCode

__all__ = [
    "ALGORITHMS",
    "DEFAULT_PERMISSIONS",
    "HMAC_ALGORITHMS",
    "IPSEC_HMAC_MAX_BYTES",
    "Algorithm",
    "fresh_state",
]

# Reference: default permissions ENCRYPT|DECRYPT|READ|WRITE|MAC, plus EXPORT when CRYPT_EXPORTABLE is given.
DEFAULT_PERMISSIONS = w.CRYPT_ENCRYPT | w.CRYPT_DECRYPT | w.CRYPT_READ | w.CRYPT_WRITE | w.CRYPT_MAC

# Reference: HMAC over MD5, SHA-1, SHA-256 (name for hashlib).
HMAC_ALGORITHMS = {w.CALG_MD5: "md5", w.CALG_SHA1: "sha1", w.CALG_SHA_256: "sha256"}

# CRYPT_IPSEC_HMAC_KEY lifts the RC2/RC4 length limit (native: a 2048-byte key imports, advapi32 tests
# test_rc2_keylen). Our decision: a bound of 64 KiB so a blob cannot ask for unbounded memory.
IPSEC_HMAC_MAX_BYTES = 65536


@attrs.frozen
class Algorithm:
    alg: int
    name: str
    block_len: int  # bytes; 0 for a stream cipher
    key_bytes: tuple[int, ...]  # accepted key lengths in bytes
    default_bytes: int
    salted: bool  # RC2/RC4: the cipher is keyed with key || salt
    hardware: bool  # our decision: only block ciphers of the AES/DES families may be pinned in the token
    bad_length: ErrorCode  # CryptGenKey's code for a length the algorithm does not have

    @property
    def des_family(self) -> bool:
        return self.alg in (w.CALG_DES, w.CALG_3DES_112, w.CALG_3DES)

    def bytes_for_bits(self, bits: int) -> int | None:
        """The key length in bytes a CryptGenKey length (upper 16 flag bits) asks for, or None if invalid.

        0 means the default. The DES family may be asked for with or without parity bits (56 or 64, 112 or
        128, 168 or 192) and is always stored at full size (rsaenh tests test_des; KB 331367).
        """
        if bits == 0:
            return self.default_bytes
        for nbytes in self.key_bytes:
            if bits == nbytes * 8 or (self.des_family and bits == nbytes * 7):
                return nbytes
        return None


def _block(alg: int, name: str, block: int, length: int) -> Algorithm:
    # rsaenh: a bad DES-family length on gen is NTE_BAD_FLAGS; AES NTE_BAD_DATA (Wine's new_key).
    code = ErrorCode.NTE_BAD_FLAGS if alg in (w.CALG_DES, w.CALG_3DES_112, w.CALG_3DES) else ErrorCode.NTE_BAD_DATA
    return Algorithm(alg, name, block, (length,), length, salted=False, hardware=True, bad_length=code)


_RC_BYTES = tuple(range(5, 17))

ALGORITHMS: dict[int, Algorithm] = {
    a.alg: a
    for a in (
        _block(w.CALG_AES_128, "AES-128", 16, 16),
        _block(w.CALG_AES_192, "AES-192", 16, 24),
        _block(w.CALG_AES_256, "AES-256", 16, 32),
        _block(w.CALG_DES, "DES", 8, 8),
        _block(w.CALG_3DES_112, "3DES-112", 8, 16),
        _block(w.CALG_3DES, "3DES", 8, 24),
        # RC2 and RC4: 40 to 128 bits in the Enhanced provider, 128 by default.
        Algorithm(
            w.CALG_RC2,
            "RC2",
            8,
            _RC_BYTES,
            16,
            salted=True,
            hardware=False,
            bad_length=ErrorCode.NTE_BAD_DATA,
        ),
        Algorithm(
            w.CALG_RC4,
            "RC4",
            0,
            _RC_BYTES,
            16,
            salted=True,
            hardware=False,
            bad_length=ErrorCode.NTE_BAD_DATA,
        ),
    )
}


def default_salt(algorithm: Algorithm, nbytes: int, flags: int) -> bytes:
    """The salt a new key gets (native, rsaenh tests test_RC4_salt and test_rc2, Enhanced provider).

    A 40-bit RC2/RC4 key gets 11 zero bytes unless CRYPT_NO_SALT; in the Enhanced provider
    CRYPT_CREATE_SALT yields *no* salt at all; every other key has none.
    """
    if algorithm.salted and nbytes == 5 and not flags & (w.CRYPT_NO_SALT | w.CRYPT_CREATE_SALT):
        return bytes(11)
    return b""


def fresh_state(
    algorithm: Algorithm,
    key: bytes,
    salt: bytes,
    *,
    permissions: int,
    lifecycle: Lifecycle,
    location: Location,
    key_bits: int | None = None,
    hmac_only: bool = False,
) -> KeyState:
    """A key as creation leaves it: CBC (none for RC4), zero IV, register = IV, PKCS5, mode bits 8.

    Reference: "Key creation (gen, derive, every import of a material-carrying blob)" resets the live state.
    """
    zero_iv = bytes(algorithm.block_len)
    bits = key_bits if key_bits is not None else len(key) * 8  # KP_KEYLEN counts parity bits (KB 331367)
    return KeyState(
        lifecycle=lifecycle,
        location=location,
        alg=algorithm.alg,
        key=key if location is Location.SOFTWARE else b"",
        salt=salt,
        key_bits=bits,
        # rsaenh: RC2's effective key length starts equal to the key length (KAT: 40-bit key, T1 = 40).
        effective_keylen=bits,
        mode=w.CRYPT_MODE_CBC if algorithm.block_len else 0,
        mode_bits=8,  # reference: default 8 (Wine stores 0: a finding)
        padding=w.PKCS5_PADDING,
        iv=zero_iv,
        register=zero_iv,
        stream_pos=0,
        permissions=permissions,
        hmac_only=hmac_only,
    )
