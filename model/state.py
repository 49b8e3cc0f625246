"""State records: the shapes a key's state and a token object take (vocabulary, shared with ``impl.inspect``).

Only data lives here: no rule of the model. A target with white-box access returns a :class:`KeyState` from
``inspect(key)`` and the harness compares it field by field with the model's.
"""

from __future__ import annotations

import enum

import attrs

__all__ = ["KeyState", "Lifecycle", "Location", "Side", "TokenObject"]


class Lifecycle(enum.Enum):
    """Where a key handle is in the handoff (see docs/model.md for the transition table)."""

    CREATED = "created"  # made by CryptGenKey or CryptDuplicateKey in this context
    EXPORTED = "exported"  # exported at least once and still alive
    DESTROYED = "destroyed"  # handle released, software material wiped
    HARDWARE_PINNED = "hardware-pinned"  # handle released, the token object stays in the device
    IMPORTED = "imported"  # made by CryptImportKey

    @property
    def alive(self) -> bool:
        return self not in (Lifecycle.DESTROYED, Lifecycle.HARDWARE_PINNED)


class Location(enum.Enum):
    SOFTWARE = "software"
    HARDWARE = "hardware"


class Side(enum.Enum):
    """The two processes of the Schannel handoff."""

    SECURE = "secure"
    APP = "app"


def _redacted(value: bytes) -> str:
    return f"<{len(value)} bytes>"


@attrs.frozen
class KeyState:
    """Everything a session key carries, and so everything an OPAQUEKEYBLOB must restore.

    ``key`` and ``salt`` are secret: the repr shows their lengths only. ``key`` is empty for a hardware key
    (its material lives in the token object) and for a destroyed one (wiped). ``register`` is the live feedback
    register of a block cipher (CBC: last ciphertext block; CFB-8: last block-length ciphertext bytes), distinct
    from ``iv`` (the value last set with KP_IV). ``stream_pos`` is the RC4 keystream position.
    """

    lifecycle: Lifecycle
    location: Location
    alg: int
    key: bytes = attrs.field(repr=_redacted)
    salt: bytes = attrs.field(repr=_redacted)
    key_bits: int  # KP_KEYLEN as reported
    effective_keylen: int  # KP_EFFECTIVE_KEYLEN (RC2: the RFC 2268 T1; others: KP_KEYLEN)
    mode: int  # CRYPT_MODE_*; 0 for RC4
    mode_bits: int
    padding: int
    iv: bytes
    register: bytes
    stream_pos: int
    permissions: int
    hmac_only: bool = False  # imported with CRYPT_IPSEC_HMAC_KEY and longer than a cipher key may be
    # Whether CryptGetKeyParam(KP_SALT) reports ``salt``: False after KP_SALT, whose salt keys the cipher but reads
    # back empty (Enhanced/AES provider); True for a default salt and after KP_SALT_EX.
    salt_reported: bool = True


@attrs.frozen
class TokenObject:
    """A key object inside the hardware token: it never leaves the device and destroy never deletes it."""

    alg: int
    key: bytes = attrs.field(repr=_redacted)
