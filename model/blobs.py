"""CryptExportKey and CryptImportKey for PLAINTEXTKEYBLOB and OPAQUEKEYBLOB.

The model's opaque blob is ``BLOBHEADER{9, 2, 0, aiKeyAlg} || "KHM1" || installation id || serial || digest``
(the digest, of installation and serial, makes every issued blob far from every other): bytes that mean
nothing by themselves. What makes it "sealed" in the model is that import accepts only blobs this
installation issued (recorded in ``World.issued``), byte for byte: any change, truncation or another
installation's blob is not in that record. A real CSP gets the same verdicts with an AEAD.
"""

from __future__ import annotations

import hashlib
import struct

import attrs

from keyhandoff.model import wincrypt as w
from keyhandoff.model.algorithms import (
    ALGORITHMS,
    DEFAULT_PERMISSIONS,
    IPSEC_HMAC_MAX_BYTES,
    default_salt,
    fresh_state,
)
from keyhandoff.model.crypt import reset
from keyhandoff.model.keys import end_key, new_handle, new_token_object
from keyhandoff.model.lifecycle import advance
from keyhandoff.model.state import Location
from keyhandoff.model.wincrypt import ErrorCode
from keyhandoff.model.world import (
    Issued,
    KeyEntry,
    Ok,
    Refused,
    Step,
    World,
    live_key,
    live_provider,
    put,
    refuse,
    with_key,
)

__all__ = ["EXPORT_FLAGS", "OPAQUE_MARKER", "SUPPORTED_BLOBS", "blob_header", "export_key", "import_key"]

SUPPORTED_BLOBS = (w.PLAINTEXTKEYBLOB, w.OPAQUEKEYBLOB)
EXPORT_FLAGS = w.CRYPT_DESTROYKEY
PLAINTEXT_IMPORT_FLAGS = w.CRYPT_EXPORTABLE | w.CRYPT_IPSEC_HMAC_KEY | w.CRYPT_NO_SALT
OPAQUE_IMPORT_FLAGS = w.CRYPT_EXPORTABLE
OPAQUE_MARKER = b"KHM1"
_HEADER = struct.Struct("<BBHI")


def _opaque_body(installation: bytes, serial: int) -> bytes:
    """Marker, installation, serial, and a digest of both: no edit of an issued blob yields another issued blob
    (a bare serial would let one flipped bit name a neighbour)."""
    ident = installation + serial.to_bytes(8, "little")
    return OPAQUE_MARKER + ident + hashlib.sha256(b"keyhandoff model blob" + ident).digest()[:16]


def blob_header(blob_type: int, alg: int) -> bytes:
    """BLOBHEADER: bType, bVersion = CUR_BLOB_VERSION, reserved = 0, aiKeyAlg (little-endian)."""
    return _HEADER.pack(blob_type, w.CUR_BLOB_VERSION, 0, alg)


def export_key(world: World, key: int, blob_type: int, *, exp_key: int = 0, flags: int = 0) -> Step[bytes]:
    """CryptExportKey of a session key.

    Order of checks and codes:
    1. dead handle: NTE_BAD_KEY (reference);
    2. flags other than CRYPT_DESTROYKEY: NTE_BAD_FLAGS (our decision);
    3. a blob type other than PLAINTEXTKEYBLOB / OPAQUEKEYBLOB: NTE_BAD_TYPE (reference: unsupported type);
    4. hExpKey != 0: ERROR_INVALID_PARAMETER (documented "must be zero"; native advapi32 answers so for a
       handle that is not a key);
    5. PLAINTEXTKEYBLOB of a hardware key, or of a key without CRYPT_EXPORT: NTE_BAD_KEY_STATE (documented;
       the hardware rule is our decision). OPAQUEKEYBLOB needs no CRYPT_EXPORT (our decision: sealed).
    Export never disturbs the key (reference); CRYPT_DESTROYKEY then ends it as CryptDestroyKey would.
    """
    entry = live_key(world, key)
    if isinstance(entry, Refused):
        return Step(world, entry)
    if flags & ~EXPORT_FLAGS:
        return refuse(world, ErrorCode.NTE_BAD_FLAGS, "unknown CryptExportKey flag")
    if blob_type not in SUPPORTED_BLOBS:
        return refuse(world, ErrorCode.NTE_BAD_TYPE, "blob type not supported for session keys")
    if exp_key:
        return refuse(world, ErrorCode.ERROR_INVALID_PARAMETER, "hExpKey must be 0 for this blob type")
    state = entry.state
    if blob_type == w.PLAINTEXTKEYBLOB:
        if state.location is Location.HARDWARE:
            return refuse(world, ErrorCode.NTE_BAD_KEY_STATE, "hardware key material never leaves the token")
        if not state.permissions & w.CRYPT_EXPORT:
            return refuse(world, ErrorCode.NTE_BAD_KEY_STATE, "key lacks CRYPT_EXPORT")
        blob = blob_header(w.PLAINTEXTKEYBLOB, state.alg) + struct.pack("<I", len(state.key)) + state.key
    else:
        serial = world.next_blob
        blob = blob_header(w.OPAQUEKEYBLOB, state.alg) + _opaque_body(world.installation, serial)
        world = attrs.evolve(world, issued=put(world.issued, blob, Issued(entry)), next_blob=serial + 1)
    if flags & w.CRYPT_DESTROYKEY:
        world, row = end_key(world, key, entry, "export_key", "CRYPT_DESTROYKEY")
    else:
        lifecycle, row = advance(state.lifecycle, "export_key")
        world = with_key(world, key, attrs.evolve(entry, state=attrs.evolve(state, lifecycle=lifecycle)))
    return Step(world, Ok(blob), (row,))


def import_key(
    world: World, prov: int, blob: bytes, *, pub_key: int = 0, flags: int = 0, hardware: bool = False
) -> Step[int]:
    """CryptImportKey of a session-key blob.

    Header checks (reference): shorter than a BLOBHEADER NTE_BAD_DATA; bVersion != 2 NTE_BAD_VER (documented;
    Wine says NTE_BAD_DATA: a finding); reserved != 0 NTE_BAD_DATA; a blob type this CSP does not take
    NTE_BAD_TYPE; hPubKey != 0 ERROR_INVALID_PARAMETER (documented "must be zero"); an unsupported algorithm
    NTE_BAD_ALGID.
    """
    if isinstance(provider := live_provider(world, prov), Refused):
        return Step(world, provider)
    if len(blob) < w.BLOBHEADER_SIZE:
        return refuse(world, ErrorCode.NTE_BAD_DATA, "blob shorter than a BLOBHEADER")
    blob_type, version, reserved, alg = _HEADER.unpack_from(blob)
    if version != w.CUR_BLOB_VERSION:
        return refuse(world, ErrorCode.NTE_BAD_VER, "BLOBHEADER.bVersion is not CUR_BLOB_VERSION")
    if reserved != 0:
        return refuse(world, ErrorCode.NTE_BAD_DATA, "BLOBHEADER.reserved is not 0")
    if blob_type not in SUPPORTED_BLOBS:
        return refuse(world, ErrorCode.NTE_BAD_TYPE, "blob type not supported for session keys")
    if pub_key:
        return refuse(world, ErrorCode.ERROR_INVALID_PARAMETER, "hPubKey must be 0 for this blob type")
    if blob_type == w.OPAQUEKEYBLOB:
        return _import_opaque(world, prov, blob, alg, flags, hardware)
    return _import_plaintext(world, prov, blob, alg, flags, hardware)


def _import_plaintext(world: World, prov: int, blob: bytes, alg: int, flags: int, hardware: bool) -> Step[int]:
    """A PLAINTEXTKEYBLOB gives a fresh key: its running state is not in the blob (reference).

    Flags: CRYPT_EXPORTABLE, CRYPT_IPSEC_HMAC_KEY and CRYPT_NO_SALT (documented; Wine ignores NO_SALT: a
    finding); any other NTE_BAD_FLAGS (documented code; our decision which bits). A body shorter than the
    length field or than the key it announces NTE_BAD_DATA; a longer one too (our decision: trailing bytes are
    refused; Wine ignores them). A length the algorithm does not have NTE_BAD_DATA (documented; DES only at
    full size with parity, Wine also takes 7/14/21 bytes: a finding), unless CRYPT_IPSEC_HMAC_KEY lifts it
    for RC2/RC4 (native: test_import_hmac), up to 64 KiB; a key of a length the cipher does not take
    (1 to 4 bytes, or more than 16) then serves HMAC only (our decision). ``hardware=True`` for an algorithm
    the token cannot hold, or for an HMAC-only key, NTE_BAD_ALGID, checked last.
    Permissions: the defaults, plus CRYPT_EXPORT only if CRYPT_EXPORTABLE (reference).
    """
    if flags & ~PLAINTEXT_IMPORT_FLAGS:
        return refuse(world, ErrorCode.NTE_BAD_FLAGS, "unknown CryptImportKey flag")
    algorithm = ALGORITHMS.get(alg)
    if algorithm is None:
        return refuse(world, ErrorCode.NTE_BAD_ALGID, "algorithm not supported for session keys")
    if len(blob) < w.BLOBHEADER_SIZE + 4:
        return refuse(world, ErrorCode.NTE_BAD_DATA, "PLAINTEXTKEYBLOB truncated before its length field")
    (size,) = struct.unpack_from("<I", blob, w.BLOBHEADER_SIZE)
    key = blob[w.BLOBHEADER_SIZE + 4 :]
    if len(key) < size:
        return refuse(world, ErrorCode.NTE_BAD_DATA, "PLAINTEXTKEYBLOB body shorter than its length field")
    if len(key) > size:
        return refuse(world, ErrorCode.NTE_BAD_DATA, "PLAINTEXTKEYBLOB body longer than its length field")
    hmac_only = False
    if size not in algorithm.key_bytes:
        ipsec = flags & w.CRYPT_IPSEC_HMAC_KEY and algorithm.salted and 1 <= size <= IPSEC_HMAC_MAX_BYTES
        if not ipsec:
            return refuse(world, ErrorCode.NTE_BAD_DATA, "key length not valid for the algorithm")
        hmac_only = True
    if hardware and (not algorithm.hardware or hmac_only):
        return refuse(world, ErrorCode.NTE_BAD_ALGID, "the token cannot hold keys of this algorithm")
    location = Location.HARDWARE if hardware else Location.SOFTWARE
    permissions = DEFAULT_PERMISSIONS | (w.CRYPT_EXPORT if flags & w.CRYPT_EXPORTABLE else 0)
    salt = b"" if hmac_only else default_salt(algorithm, size, flags)
    lifecycle, row = advance(None, "import_key", "PLAINTEXTKEYBLOB")
    state = fresh_state(
        algorithm,
        key,
        salt,
        permissions=permissions,
        lifecycle=lifecycle,
        location=location,
        key_bits=size * 8 if hmac_only else None,
        hmac_only=hmac_only,
    )
    token_object = None
    if hardware:
        world, token_object = new_token_object(world, alg, key)
    world, handle = new_handle(world)
    entry = KeyEntry(prov, state, token_object)
    world = with_key(world, handle, reset(world, entry))
    return Step(world, Ok(handle), (row,))


def _import_opaque(world: World, prov: int, blob: bytes, alg: int, flags: int, hardware: bool) -> Step[int]:
    """An OPAQUEKEYBLOB this installation issued gives exactly the exported state (seed).

    Any flag but CRYPT_EXPORTABLE NTE_BAD_FLAGS, and ``hardware=True`` NTE_BAD_FLAGS (our decision: the blob
    decides placement), both checked before the algorithm; unsupported algorithm NTE_BAD_ALGID; a blob this
    installation did not issue, byte for byte, NTE_BAD_DATA; a hardware key whose token object is gone
    NTE_NOT_FOUND. CRYPT_EXPORTABLE never adds a permission (our
    decision): the imported key keeps exactly the blob's permissions.
    """
    if flags & ~OPAQUE_IMPORT_FLAGS or hardware:
        return refuse(world, ErrorCode.NTE_BAD_FLAGS, "flag not accepted for OPAQUEKEYBLOB import")
    if alg not in ALGORITHMS:
        return refuse(world, ErrorCode.NTE_BAD_ALGID, "algorithm not supported for session keys")
    issued = world.issued.get(blob)
    if issued is None:
        return refuse(world, ErrorCode.NTE_BAD_DATA, "not an OPAQUEKEYBLOB issued by this installation")
    source = issued.entry
    if source.token_object is not None and source.token_object not in world.token:
        return refuse(world, ErrorCode.NTE_NOT_FOUND, "the blob's token object no longer exists")
    lifecycle, row = advance(None, "import_key", "OPAQUEKEYBLOB")
    world, handle = new_handle(world)
    entry = attrs.evolve(source, provider=prov, state=attrs.evolve(source.state, lifecycle=lifecycle))
    return Step(with_key(world, handle, entry), Ok(handle), (row,))
