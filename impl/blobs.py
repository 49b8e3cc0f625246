"""Key blobs: the Microsoft PLAINTEXTKEYBLOB layout and this CSP's sealed OPAQUEKEYBLOB.

BLOBHEADER (8 bytes, little-endian, wincrypt.h): ``bType`` u8, ``bVersion`` u8 (= 2), ``reserved`` u16 (= 0),
``aiKeyAlg`` u32.

PLAINTEXTKEYBLOB = BLOBHEADER{8, 2, 0, alg} || u32 key length in bytes || key bytes. It carries the key bytes
only: importing it gives a fresh key.

OPAQUEKEYBLOB (vendor-defined; this CSP's layout) = BLOBHEADER{9, 2, 0, alg} || nonce (24 bytes) ||
XAES-256-GCM(payload) with its 16-byte tag (:mod:`keyhandoff.impl.xaes`). The key is the installation's
``key("opaque-blob-xaes")`` and the 8-byte header is the associated data, so every byte of the blob is
authenticated: a changed, truncated or extended blob, or one sealed by another installation (another secret, so
another key), fails authentication (NTE_BAD_DATA). The nonce is 192 bits, because the key lives as long as the
installation and 96-bit random nonces would be safe for only 2**32 blobs: its second half is random per blob, its
first half (the subkey's) per 2**24 blobs of one process (:meth:`Xaes256Gcm.new_nonce`). The payload (see
:class:`OpaqueState`) is the COMPLETE key state; its format version is its first byte, inside the seal, so a reader
sees it only after authentication: a version newer than this code reads is NTE_BAD_VER, an unknown older one
NTE_BAD_DATA (version 1, this format without the RC4 state, is still read). A hardware key's payload names the
token object (token serial and object id), never its material.

Nothing here raises anything but :class:`CryptError`, and no message carries key bytes.
"""

from __future__ import annotations

import struct
from typing import Final

import attrs
from cryptography.exceptions import InvalidTag

from keyhandoff.impl.rc4_state import STATE_BYTES
from keyhandoff.impl.xaes import NONCE_SIZE, Xaes256Gcm
from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError
from keyhandoff.model.state import Lifecycle, Location

__all__ = [
    "HEADER",
    "MAX_OPAQUE_BLOB",
    "MAX_PAYLOAD",
    "OPAQUE_PURPOSE",
    "PAYLOAD_VERSION",
    "BlobHeader",
    "OpaqueSealer",
    "OpaqueState",
    "decode_payload",
    "encode_payload",
    "header_fields",
    "parse_header",
    "plaintext_blob",
    "plaintext_key",
]

HEADER: Final = struct.Struct("<BBHI")  # bType, bVersion, reserved, aiKeyAlg
_U32: Final = struct.Struct("<I")
# Installation.key purpose of the sealing key. Its own name for XAES-256-GCM: the plain AES-256-GCM blobs of
# earlier versions were sealed under key("opaque-blob"), and a key serves one construction only.
OPAQUE_PURPOSE: Final = "opaque-blob-xaes"
PAYLOAD_VERSION: Final = 2  # version 1: the same without the RC4 state (flags bit 2)
_NONCE: Final = NONCE_SIZE
_TAG: Final = 16

# --- payload, version 2 -----------------------------------------------------------------------------------
# fixed part (40 bytes, little-endian):
_FIXED: Final = struct.Struct("<BBBBIIIIIIIQ")
# then  iv: u8 length + bytes (0, 8 or 16) | register: u8 length + bytes | salt: u8 length + bytes (0..24)
# then, if flags bit 2: the RC4 state (258 bytes: i, j, S[0..255])
# then  software: u32 length + key bytes (1..65536)   or   hardware: u8 length + token serial (UTF-8, 1..255)
#       followed by the u64 token object id.
_MAX_BLOCK: Final = 16
_MAX_SALT: Final = 24
_MAX_KEY: Final = 64 * 1024
_MAX_SERIAL: Final = 255
MAX_PAYLOAD: Final = (
    _FIXED.size + (1 + _MAX_BLOCK) * 2 + (1 + _MAX_SALT) + STATE_BYTES + max(4 + _MAX_KEY, 1 + _MAX_SERIAL + 8)
)  # 65,897 bytes
MAX_OPAQUE_BLOB: Final = HEADER.size + _NONCE + MAX_PAYLOAD + _TAG  # 65,945 bytes

_LOCATIONS: Final = {Location.SOFTWARE: 0, Location.HARDWARE: 1}
_LIFECYCLES: Final = {Lifecycle.CREATED: 1, Lifecycle.EXPORTED: 2, Lifecycle.IMPORTED: 3}
_HMAC_ONLY: Final = 0x01
_SALT_UNREPORTED: Final = 0x02  # set by KP_SALT: CryptGetKeyParam(KP_SALT) reports no salt (clear in older blobs)
_STREAM_STATE: Final = 0x04  # version 2: the RC4 state follows the salt
_FLAGS: Final = {1: _HMAC_ONLY | _SALT_UNREPORTED, 2: _HMAC_ONLY | _SALT_UNREPORTED | _STREAM_STATE}  # by version


@attrs.frozen
class BlobHeader:
    blob_type: int
    version: int
    reserved: int
    alg: int


def parse_header(blob: bytes, operation: str = "import_key") -> BlobHeader:
    """The BLOBHEADER, checked in the spec's order: too short NTE_BAD_DATA, bVersion != 2 NTE_BAD_VER,
    reserved != 0 NTE_BAD_DATA. (The type, hPubKey and algorithm checks follow in the CSP.)"""
    blob_type, alg = header_fields(blob, operation)
    return BlobHeader(blob_type, w.CUR_BLOB_VERSION, 0, alg)


def header_fields(blob: bytes, operation: str = "import_key") -> tuple[int, int]:
    """:func:`parse_header`'s checks, answering ``(bType, aiKeyAlg)`` as a plain tuple (the CSP's import path)."""
    if len(blob) < HEADER.size:
        raise CryptError(w.NTE_BAD_DATA, operation)
    blob_type, version, reserved, alg = HEADER.unpack_from(blob)
    if version != w.CUR_BLOB_VERSION:
        raise CryptError(w.NTE_BAD_VER, operation)
    if reserved != 0:
        raise CryptError(w.NTE_BAD_DATA, operation)
    return blob_type, alg


def plaintext_blob(alg: int, key: bytes) -> bytes:
    """PLAINTEXTKEYBLOB: BLOBHEADER{8, 2, 0, alg} || u32 length || key."""
    return HEADER.pack(w.PLAINTEXTKEYBLOB, w.CUR_BLOB_VERSION, 0, alg) + _U32.pack(len(key)) + bytes(key)


def plaintext_key(blob: bytes, operation: str = "import_key") -> bytes:
    """The key bytes of a PLAINTEXTKEYBLOB: a body shorter than the length field or than the key it announces is
    NTE_BAD_DATA, and so is a longer one (our decision: trailing bytes are refused)."""
    if len(blob) < HEADER.size + _U32.size:
        raise CryptError(w.NTE_BAD_DATA, operation)
    (length,) = _U32.unpack_from(blob, HEADER.size)
    body = blob[HEADER.size + _U32.size :]
    if len(body) != length:
        raise CryptError(w.NTE_BAD_DATA, operation)
    return body


@attrs.frozen
class OpaqueState:
    """Everything an OPAQUEKEYBLOB restores (the payload, decoded). ``key`` is secret: repr shows its length.

    Payload version 2, field by field (little-endian; ``decode_payload`` refuses anything else, including
    trailing bytes). Version 1, still read, is the same without flags bit 2 and its field:

    ====== ======= ==================================================================
    offset size    field
    ====== ======= ==================================================================
    0      1       payload format version (2)
    1      1       location: 0 software, 1 hardware
    2      1       lifecycle at export: 1 CREATED, 2 EXPORTED, 3 IMPORTED (informative: an import is IMPORTED)
    3      1       flags: bit 0 hmac-only (CRYPT_IPSEC_HMAC_KEY key longer than a cipher key); bit 1 salt not
                   reported (set by KP_SALT: it keys the cipher, KP_SALT reads back empty); bit 2 the RC4
                   state follows the salt; others 0
    4      4       ALG_ID (equals the header's aiKeyAlg)
    8      4       KP_KEYLEN in bits
    12     4       KP_EFFECTIVE_KEYLEN
    16     4       KP_MODE
    20     4       KP_MODE_BITS
    24     4       KP_PADDING
    28     4       KP_PERMISSIONS
    32     8       RC4 stream position (u64)
    40     1+n     IV as last set (n = 0, 8 or 16)
    ..     1+n     live feedback register (n = 0, 8 or 16)
    ..     1+n     salt (n = 0..24)
    ..     258     if flags bit 2: the RC4 state at the stream position (i, j, S[0..255]; secret)
    ..     4+n     software: key bytes (n = 1..65536)
    ..     1+n+8   hardware: token serial (UTF-8, n = 1..255), then the u64 token object id
    ====== ======= ==================================================================

    Size bound: :data:`MAX_PAYLOAD` = 65,897 bytes, so a blob is at most :data:`MAX_OPAQUE_BLOB` = 65,945 bytes.
    """

    location: Location
    origin: Lifecycle
    alg: int
    key_bits: int
    effective_keylen: int
    mode: int
    mode_bits: int
    padding: int
    permissions: int
    stream_pos: int
    iv: bytes
    register: bytes
    salt: bytes = attrs.field(repr=lambda v: f"<{len(v)} bytes>")
    key: bytes = attrs.field(repr=lambda v: f"<{len(v)} bytes>")  # software; b"" for hardware
    stream_state: bytes = attrs.field(default=b"", repr=lambda v: f"<{len(v)} bytes>")  # RC4 past position 0
    token_serial: str = ""  # hardware
    token_object: int = 0  # hardware
    hmac_only: bool = False
    salt_reported: bool = True  # flags bit 1 clear


def _short(value: bytes, limit: int) -> bytes:
    if len(value) > limit:
        raise ValueError("a payload field is longer than its bound")
    return bytes([len(value)]) + value


def encode_payload(state: OpaqueState) -> bytes:
    """The version-1 payload bytes of ``state`` (see :class:`OpaqueState`)."""
    parts = [
        _FIXED.pack(
            PAYLOAD_VERSION,
            _LOCATIONS[state.location],
            _LIFECYCLES[state.origin],
            (_HMAC_ONLY if state.hmac_only else 0)
            | (0 if state.salt_reported else _SALT_UNREPORTED)
            | (_STREAM_STATE if state.stream_state else 0),
            state.alg,
            state.key_bits,
            state.effective_keylen,
            state.mode,
            state.mode_bits,
            state.padding,
            state.permissions,
            state.stream_pos,
        ),
        _short(state.iv, _MAX_BLOCK),
        _short(state.register, _MAX_BLOCK),
        _short(state.salt, _MAX_SALT),
    ]
    if state.stream_state:
        if len(state.stream_state) != STATE_BYTES:
            raise ValueError(f"an RC4 state is {STATE_BYTES} bytes")
        parts.append(state.stream_state)
    if state.location is Location.SOFTWARE:
        if not 1 <= len(state.key) <= _MAX_KEY:
            raise ValueError("a software key's payload carries 1..65536 key bytes")
        parts += [_U32.pack(len(state.key)), state.key]
    else:
        serial = state.token_serial.encode()
        if not serial:
            raise ValueError("a hardware key's payload names its token")
        parts += [_short(serial, _MAX_SERIAL), struct.pack("<Q", state.token_object)]
    payload = b"".join(parts)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("payload over its bound")
    return payload


_LOCATION_OF: Final = {code: value for value, code in _LOCATIONS.items()}
_LIFECYCLE_OF: Final = {code: value for value, code in _LIFECYCLES.items()}
_U64: Final = struct.Struct("<Q")


def decode_payload(payload: bytes, operation: str = "import_key") -> OpaqueState:
    """Parse an authenticated payload; NTE_BAD_VER for a newer format, NTE_BAD_DATA for anything malformed
    (short, over a field's bound, unknown codes or flags, trailing bytes)."""
    size = len(payload)
    if not size:
        raise CryptError(w.NTE_BAD_DATA, operation)
    version = payload[0]
    known_flags = _FLAGS.get(version)
    if known_flags is None:
        raise CryptError(w.NTE_BAD_VER if version > PAYLOAD_VERSION else w.NTE_BAD_DATA, operation)
    if size < _FIXED.size:
        raise CryptError(w.NTE_BAD_DATA, operation)
    (_, location_code, origin_code, flags, alg, key_bits, effective, mode, mode_bits, padding, permissions, pos) = (
        _FIXED.unpack_from(payload)
    )
    location = _LOCATION_OF.get(location_code)
    origin = _LIFECYCLE_OF.get(origin_code)
    if location is None or origin is None or flags & ~known_flags:
        raise CryptError(w.NTE_BAD_DATA, operation)
    # The u8-length fields, then the tail. A field running past the end makes the next read fail (IndexError,
    # struct.error) and the tail must end exactly at the end: every malformation is NTE_BAD_DATA.
    try:
        at = _FIXED.size
        iv_len = payload[at]
        iv = payload[at + 1 : at + 1 + iv_len]
        at += 1 + iv_len
        register_len = payload[at]
        register = payload[at + 1 : at + 1 + register_len]
        at += 1 + register_len
        salt_len = payload[at]
        salt = payload[at + 1 : at + 1 + salt_len]
        at += 1 + salt_len
        if iv_len > _MAX_BLOCK or register_len > _MAX_BLOCK or salt_len > _MAX_SALT:
            raise CryptError(w.NTE_BAD_DATA, operation)
        stream_state = b""
        if flags & _STREAM_STATE:
            stream_state = payload[at : at + STATE_BYTES]
            at += STATE_BYTES
        key, serial, obj = b"", "", 0
        if location is Location.SOFTWARE:
            (length,) = _U32.unpack_from(payload, at)
            at += _U32.size
            if not 1 <= length <= _MAX_KEY or at + length != size:
                raise CryptError(w.NTE_BAD_DATA, operation)
            key = payload[at:]
        else:
            length = payload[at]
            if not length or at + 1 + length + _U64.size != size:
                raise CryptError(w.NTE_BAD_DATA, operation)
            serial = payload[at + 1 : at + 1 + length].decode()
            (obj,) = _U64.unpack_from(payload, at + 1 + length)
    except (IndexError, struct.error, UnicodeDecodeError):
        raise CryptError(w.NTE_BAD_DATA, operation) from None
    return OpaqueState(
        location=location,
        origin=origin,
        alg=alg,
        key_bits=key_bits,
        effective_keylen=effective,
        mode=mode,
        mode_bits=mode_bits,
        padding=padding,
        permissions=permissions,
        stream_pos=pos,
        iv=iv,
        register=register,
        salt=salt,
        key=key,
        stream_state=stream_state,
        token_serial=serial,
        token_object=obj,
        hmac_only=bool(flags & _HMAC_ONLY),
        salt_reported=not flags & _SALT_UNREPORTED,
    )


class OpaqueSealer:
    """Seals and opens OPAQUEKEYBLOBs with one installation's key (XAES-256-GCM, header as associated data)."""

    def __init__(self, key: bytes) -> None:
        self._aead = Xaes256Gcm(key)

    def __repr__(self) -> str:
        return "OpaqueSealer(<key redacted>)"

    def seal(self, state: OpaqueState) -> bytes:
        """The OPAQUEKEYBLOB of ``state``."""
        return self.seal_payload(state.alg, encode_payload(state))

    def seal_payload(self, alg: int, payload: bytes) -> bytes:
        """Seal raw payload bytes under a header for ``alg`` (tests build foreign versions with this)."""
        header = HEADER.pack(w.OPAQUEKEYBLOB, w.CUR_BLOB_VERSION, 0, alg)
        nonce = self._aead.new_nonce()
        return header + nonce + self._aead.encrypt(nonce, payload, header)

    def open(self, blob: bytes, operation: str = "import_key") -> OpaqueState:
        """The state sealed in ``blob`` (whose header the CSP has checked). Any blob this installation did not
        seal, byte for byte, is NTE_BAD_DATA; a payload format newer than this code NTE_BAD_VER."""
        if not HEADER.size + _NONCE + _TAG < len(blob) <= MAX_OPAQUE_BLOB:
            raise CryptError(w.NTE_BAD_DATA, operation)
        header = blob[: HEADER.size]
        nonce = blob[HEADER.size : HEADER.size + _NONCE]
        try:
            payload = self._aead.decrypt(nonce, blob[HEADER.size + _NONCE :], header)
        except InvalidTag:
            raise CryptError(w.NTE_BAD_DATA, operation) from None
        state = decode_payload(payload, operation)
        if state.alg != HEADER.unpack_from(header)[3]:
            raise CryptError(w.NTE_BAD_DATA, operation)
        return state
