"""OPAQUEKEYBLOB integrity: tampering, truncation, extension and foreign blobs are refused with the header's code."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyhandoff import CryptError
from keyhandoff.model import wincrypt as w
from tests.strategies import ALL_ALGS, BLOCK, assert_refused, import_plain, new_target, plaintext_blob

SUPPORTED = frozenset(ALL_ALGS)


def _exported(alg: int = w.CALG_AES_128):
    target = new_target()
    secure = target.acquire("secure")
    app = target.acquire("app")
    key = target.gen_key(secure, alg)
    target.encrypt(key, bytes(BLOCK[alg] or 5), False)
    return target, app, key, target.export_key(key, w.OPAQUEKEYBLOB)


def expected_code(original: bytes, changed: bytes) -> int:
    """The code the header rules give for a one-byte change of an opaque blob."""
    blob_type, version, reserved, alg = struct.unpack_from("<BBHI", changed)
    if version != 2:
        return w.NTE_BAD_VER
    if reserved != 0:
        return w.NTE_BAD_DATA
    if blob_type == w.PLAINTEXTKEYBLOB:
        # Parsed as plaintext: the length field is the opaque body's first word, which never matches.
        assert struct.unpack_from("<I", changed, 8)[0] != len(changed) - 12
        return w.NTE_BAD_ALGID if alg not in SUPPORTED else w.NTE_BAD_DATA
    if blob_type != w.OPAQUEKEYBLOB:
        return w.NTE_BAD_TYPE
    if alg not in SUPPORTED:
        return w.NTE_BAD_ALGID
    return w.NTE_BAD_DATA


def test_opaque_blob_header() -> None:
    """An opaque blob starts with BLOBHEADER{OPAQUEKEYBLOB, 2, 0, aiKeyAlg}."""
    _, _, _, blob = _exported(w.CALG_3DES)
    assert blob[:8] == struct.pack("<BBHI", w.OPAQUEKEYBLOB, 2, 0, w.CALG_3DES)
    assert len(blob) > 8


@settings(max_examples=120)
@given(data=st.data(), alg=st.sampled_from([w.CALG_AES_128, w.CALG_RC4]))
def test_single_byte_change_is_refused(data: st.DataObject, alg: int) -> None:
    """Any single-byte change of an opaque blob is refused with the code its header field dictates."""
    target, app, _, blob = _exported(alg)
    where = data.draw(st.integers(0, len(blob) - 1), label="offset")
    value = data.draw(st.integers(0, 255).filter(lambda v: v != blob[where]), label="value")
    changed = blob[:where] + bytes([value]) + blob[where + 1 :]
    assert_refused(target, expected_code(blob, changed), target.import_key, app, changed)


@pytest.mark.parametrize(
    ("offset", "value", "code"),
    [
        (0, w.PLAINTEXTKEYBLOB, w.NTE_BAD_DATA),
        (0, w.SIMPLEBLOB, w.NTE_BAD_TYPE),
        (1, 3, w.NTE_BAD_VER),
        (2, 1, w.NTE_BAD_DATA),
        (3, 1, w.NTE_BAD_DATA),
        (4, 0x0F, w.NTE_BAD_DATA),  # CALG_AES_128 -> CALG_AES_192: supported, still not this blob
        (4, 0x11, w.NTE_BAD_ALGID),  # -> CALG_AES
        (7, 1, w.NTE_BAD_ALGID),
        (8, 0, w.NTE_BAD_DATA),
        (-1, 0xEE, w.NTE_BAD_DATA),
    ],
)
def test_single_byte_change_concrete(offset: int, value: int, code: int) -> None:
    """Concrete header and body edits of an AES-128 opaque blob give the header rules' codes."""
    target, app, _, blob = _exported()
    offset %= len(blob)
    if blob[offset] == value:
        value ^= 0x80
    changed = blob[:offset] + bytes([value]) + blob[offset + 1 :]
    assert_refused(target, code, target.import_key, app, changed)


def test_every_truncation_is_bad_data() -> None:
    """Every proper prefix of an opaque blob is NTE_BAD_DATA."""
    target, app, _, blob = _exported()
    for n in range(len(blob)):
        assert_refused(target, w.NTE_BAD_DATA, target.import_key, app, blob[:n])


@settings(max_examples=40)
@given(extra=st.binary(min_size=1, max_size=64))
def test_appended_bytes_are_bad_data(extra: bytes) -> None:
    """An opaque blob with bytes appended is NTE_BAD_DATA."""
    target, app, _, blob = _exported()
    assert_refused(target, w.NTE_BAD_DATA, target.import_key, app, blob + extra)


@pytest.mark.parametrize("alg", ALL_ALGS)
def test_blob_from_another_installation_is_bad_data(alg: int) -> None:
    """Another installation's opaque blob (even with the same serial) is NTE_BAD_DATA."""
    source, _, _, blob = _exported(alg)
    other, app, _, own = _exported(alg)
    assert blob != own
    assert_refused(other, w.NTE_BAD_DATA, other.import_key, app, blob)
    assert_refused(source, w.NTE_BAD_DATA, source.import_key, source.acquire("app"), own)


def test_blob_from_differently_seeded_installation_is_bad_data() -> None:
    """Two seeded installations with different seeds do not accept each other's blobs."""
    a, b = new_target(seed=1), new_target(seed=2)
    blob_a = a.export_key(a.gen_key(a.acquire(), w.CALG_AES_128), w.OPAQUEKEYBLOB)
    b.export_key(b.gen_key(b.acquire(), w.CALG_AES_128), w.OPAQUEKEYBLOB)
    assert_refused(b, w.NTE_BAD_DATA, b.import_key, b.acquire("app"), blob_a)


@settings(max_examples=150)
@given(
    blob=st.one_of(
        st.binary(max_size=64),
        st.tuples(
            st.sampled_from([w.OPAQUEKEYBLOB, w.PLAINTEXTKEYBLOB, w.SIMPLEBLOB, 0]),
            st.sampled_from([2, 2, 2, 1]),
            st.sampled_from([*ALL_ALGS, w.CALG_AES, 0]),
            st.binary(max_size=48),
        ).map(lambda t: struct.pack("<BBHI", t[0], t[1], 0, t[2]) + t[3]),
    ),
    flags=st.sampled_from([0, w.CRYPT_EXPORTABLE, w.CRYPT_IPSEC_HMAC_KEY, w.CRYPT_NO_SALT, 0xFFFF]),
    hardware=st.booleans(),
)
def test_random_bytes_never_crash(blob: bytes, flags: int, hardware: bool) -> None:
    """Importing arbitrary bytes either succeeds or raises CryptError, never anything else."""
    target = new_target()
    prov = target.acquire()
    refused: int | None = None
    try:
        key = target.import_key(prov, blob, flags=flags, hardware=hardware)
    except CryptError as err:
        refused = err.code
    if refused is not None:
        assert refused in {int(c) for c in w.ErrorCode}
        return
    # Only a well-formed PLAINTEXTKEYBLOB can succeed, and its key is usable or HMAC-only.
    assert blob[0] == w.PLAINTEXTKEYBLOB
    assert target.inspect(key).lifecycle.alive


def test_importing_one_blob_twice_gives_two_independent_keys() -> None:
    """One opaque blob imported twice gives two handles with equal starting states that then diverge freely."""
    target, app, _, blob = _exported()
    first = target.import_key(app, blob)
    second = target.import_key(app, blob)
    assert first != second
    assert target.inspect(first) == target.inspect(second)
    c_first = target.encrypt(first, bytes(32), False)
    assert target.inspect(first).register != target.inspect(second).register
    assert target.encrypt(second, bytes(32), False) == c_first
    target.destroy_key(first)
    assert target.encrypt(second, bytes(16), False)


def test_blob_survives_the_exporting_handle() -> None:
    """An opaque blob still imports after its key was destroyed and its context released."""
    target, app, key, blob = _exported()
    secure = target.world.keys[key].provider
    target.destroy_key(key)
    target.release(secure)
    imported = target.import_key(app, blob)
    assert target.inspect(imported).lifecycle.alive


def test_plaintext_blob_imports_repeatedly() -> None:
    """A well-formed PLAINTEXTKEYBLOB imports any number of times."""
    target = new_target()
    prov = target.acquire()
    blob = plaintext_blob(w.CALG_AES_128, bytes(16))
    assert target.import_key(prov, blob) != target.import_key(prov, blob)
    assert import_plain(target, prov, w.CALG_AES_128, bytes(16))
