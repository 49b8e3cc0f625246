"""The session-key algorithms of this CSP (the Enhanced RSA and AES provider's set) and their length rules.

Facts typed in from ``shared/reference/cryptoapi-semantics.md`` and the rsaenh research (not from the model):
block lengths, default key lengths, the CryptGenKey bit lengths each algorithm takes and the PLAINTEXTKEYBLOB
key lengths it takes. DES-family keys are stored with their parity bits (KB 331367: 64/128/192 bits on XP and
later), so 56 and 64 both give an 8-byte DES key.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import attrs

from keyhandoff.model import wincrypt as w

__all__ = [
    "ALGORITHMS",
    "DEFAULT_PERMISSIONS",
    "HMAC_HASHES",
    "IPSEC_MAX_KEY",
    "USABLE_MODES",
    "VARIABLE_MAX_KEY",
    "AlgInfo",
]

# ENCRYPT | DECRYPT | READ | WRITE | MAC: every new session key's permissions (CRYPT_EXPORT only if exportable).
DEFAULT_PERMISSIONS: Final = w.CRYPT_ENCRYPT | w.CRYPT_DECRYPT | w.CRYPT_READ | w.CRYPT_WRITE | w.CRYPT_MAC

# The modes CryptEncrypt / CryptDecrypt run; KP_MODE stores any value and the others fail at use.
USABLE_MODES: Final = frozenset({w.CRYPT_MODE_ECB, w.CRYPT_MODE_CBC, w.CRYPT_MODE_CFB})

# CALG_HMAC's HP_HMAC_INFO.HashAlgid -> hashlib name (docs/model.md: MD5, SHA-1 and SHA-256).
HMAC_HASHES: Final[Mapping[int, str]] = MappingProxyType(
    {w.CALG_MD5: "md5", w.CALG_SHA1: "sha1", w.CALG_SHA_256: "sha256"}
)

# CRYPT_IPSEC_HMAC_KEY lifts the RC2/RC4 key length limit "up to 64 KiB" (docs/model.md, our decisions).
IPSEC_MAX_KEY: Final = 64 * 1024
# The longest key an RC2/RC4 cipher key may be (Enhanced provider: 128 bits); longer IPSEC keys serve HMAC only.
VARIABLE_MAX_KEY: Final = 16


@attrs.frozen
class AlgInfo:
    """One algorithm: its block length, default key length and accepted key lengths."""

    alg: int
    block: int  # bytes; 0 for the stream cipher
    default_bytes: int
    gen_bits: frozenset[int]  # the CryptGenKey length fields (upper 16 flag bits) other than 0
    import_bytes: frozenset[int]  # PLAINTEXTKEYBLOB key lengths
    des_family: bool = False  # a bad generation length is NTE_BAD_FLAGS (else NTE_BAD_DATA)
    variable: bool = False  # RC2/RC4: salted, CRYPT_IPSEC_HMAC_KEY may lift the length limit

    def gen_bytes(self, bits: int) -> int | None:
        """The key length in bytes for a CryptGenKey length field, or None if the algorithm has no such length."""
        if bits == 0:
            return self.default_bytes
        if bits not in self.gen_bits:
            return None
        return (bits + 7) // 8 if not self.des_family else self.default_bytes

    @property
    def stream(self) -> bool:
        return self.block == 0


def _variable(alg: int) -> AlgInfo:
    # Enhanced provider: multiples of 8 bits from 40 to 128; 128 by default (rsaenh tests test_RC4_salt).
    bits = frozenset(range(40, 129, 8))
    return AlgInfo(
        alg=alg,
        block=8 if alg == w.CALG_RC2 else 0,
        default_bytes=16,
        gen_bits=bits,
        import_bytes=frozenset(b // 8 for b in bits),
        variable=True,
    )


def _des(alg: int, key_bytes: int, effective_bits: int) -> AlgInfo:
    # Generation takes the effective length (56/112/168) or the stored one with parity (64/128/192); a
    # PLAINTEXTKEYBLOB only the full stored size (documented; Wine also takes 7/14/21 bytes: a finding).
    return AlgInfo(
        alg=alg,
        block=8,
        default_bytes=key_bytes,
        gen_bits=frozenset({effective_bits, key_bytes * 8}),
        import_bytes=frozenset({key_bytes}),
        des_family=True,
    )


def _aes(alg: int, key_bytes: int) -> AlgInfo:
    return AlgInfo(
        alg=alg,
        block=16,
        default_bytes=key_bytes,
        gen_bits=frozenset({key_bytes * 8}),
        import_bytes=frozenset({key_bytes}),
    )


ALGORITHMS: Final[Mapping[int, AlgInfo]] = MappingProxyType(
    {
        info.alg: info
        for info in (
            _des(w.CALG_DES, 8, 56),
            _des(w.CALG_3DES_112, 16, 112),
            _des(w.CALG_3DES, 24, 168),
            _aes(w.CALG_AES_128, 16),
            _aes(w.CALG_AES_192, 24),
            _aes(w.CALG_AES_256, 32),
            _variable(w.CALG_RC2),
            _variable(w.CALG_RC4),
        )
    }
)
