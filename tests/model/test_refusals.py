"""Every refusal of the model target, its exact code, and that a refusal leaves the installation untouched."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyhandoff import CryptError
from keyhandoff.model import wincrypt as w
from tests.strategies import (
    ALL_ALGS,
    BLOCK,
    KEY_BYTES,
    assert_refused,
    header,
    new_target,
    plaintext_blob,
)

AES = w.CALG_AES_128
K16 = bytes(range(16))


def _setup(alg: int = AES, flags: int = w.CRYPT_EXPORTABLE):
    target = new_target()
    prov = target.acquire()
    key = target.gen_key(prov, alg, flags)
    return target, prov, key


def _key_calls():
    return {
        "encrypt": lambda t, k: t.encrypt(k, bytes(16), False),
        "encrypt final": lambda t, k: t.encrypt(k, b"", True),
        "decrypt": lambda t, k: t.decrypt(k, bytes(16), False),
        "decrypt final empty": lambda t, k: t.decrypt(k, b"", True),
        "export opaque": lambda t, k: t.export_key(k, w.OPAQUEKEYBLOB),
        "export plaintext": lambda t, k: t.export_key(k, w.PLAINTEXTKEYBLOB),
        "destroy": lambda t, k: t.destroy_key(k),
        "duplicate": lambda t, k: t.duplicate_key(k),
        "set KP_IV": lambda t, k: t.set_key_param(k, w.KP_IV, bytes(16)),
        "set KP_MODE": lambda t, k: t.set_key_param(k, w.KP_MODE, w.CRYPT_MODE_ECB),
        "get KP_IV": lambda t, k: t.get_key_param(k, w.KP_IV),
        "hmac": lambda t, k: t.hmac(k, w.CALG_SHA1, b"x"),
    }


KEY_CALLS = _key_calls()


def _dead_handle(target, prov, key, how: str) -> int:
    if how == "destroyed":
        target.destroy_key(key)
        return key
    if how == "unknown":
        return 987654
    if how == "zero":
        return 0
    if how == "provider handle":
        return prov
    if how == "exported with CRYPT_DESTROYKEY":
        target.export_key(key, w.OPAQUEKEYBLOB, flags=w.CRYPT_DESTROYKEY)
        return key
    if how == "context released":
        target.release(prov)
        return key
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how", ["destroyed", "unknown", "zero", "provider handle", "exported with CRYPT_DESTROYKEY", "context released"]
)
@pytest.mark.parametrize("call", list(KEY_CALLS), ids=list(KEY_CALLS))
def test_dead_key_handle_is_bad_key(call: str, how: str) -> None:
    """Every key operation on a dead, unknown or non-key handle is NTE_BAD_KEY and changes nothing."""
    target, prov, key = _setup()
    handle = _dead_handle(target, prov, key, how)
    assert_refused(target, w.NTE_BAD_KEY, KEY_CALLS[call], target, handle)


def test_released_provider_is_bad_uid_and_its_keys_die() -> None:
    """After CryptReleaseContext the provider is NTE_BAD_UID everywhere and its keys are NTE_BAD_KEY."""
    target, prov, key = _setup()
    other = target.acquire("app")
    survivor = target.gen_key(other, AES)
    target.release(prov)
    assert_refused(target, w.NTE_BAD_UID, target.release, prov)
    assert_refused(target, w.NTE_BAD_UID, target.gen_key, prov, AES)
    assert_refused(target, w.NTE_BAD_UID, target.import_key, prov, plaintext_blob(AES, K16))
    assert_refused(target, w.NTE_BAD_UID, target.import_key, prov, b"")
    assert_refused(target, w.NTE_BAD_KEY, target.encrypt, key, bytes(16), False)
    assert target.inspect(key).key == b""
    assert target.encrypt(survivor, bytes(16), False)  # another context's keys live on


@pytest.mark.parametrize("prov", [0, 424242])
def test_unknown_provider_is_bad_uid(prov: int) -> None:
    """An unknown provider handle is NTE_BAD_UID for gen, import and release."""
    target = new_target()
    target.acquire()
    assert_refused(target, w.NTE_BAD_UID, target.gen_key, prov, AES)
    assert_refused(target, w.NTE_BAD_UID, target.import_key, prov, plaintext_blob(AES, K16))
    assert_refused(target, w.NTE_BAD_UID, target.release, prov)


def test_acquire_on_unknown_side_is_invalid_parameter() -> None:
    """acquire() with a side other than secure/app is ERROR_INVALID_PARAMETER."""
    target = new_target()
    assert_refused(target, w.ERROR_INVALID_PARAMETER, target.acquire, "elsewhere")


@pytest.mark.parametrize(
    "alg",
    [w.CALG_AES, w.CALG_RSA_KEYX, w.CALG_MAC, w.CALG_HMAC, w.CALG_SHA1, w.CALG_MD5, w.CALG_SCHANNEL_ENC_KEY, 0, 0xFFFF],
)
def test_unsupported_algorithm_is_bad_algid(alg: int) -> None:
    """CryptGenKey and PLAINTEXTKEYBLOB import of an ALG_ID that is not a session cipher: NTE_BAD_ALGID."""
    target = new_target()
    prov = target.acquire()
    assert_refused(target, w.NTE_BAD_ALGID, target.gen_key, prov, alg)
    assert_refused(target, w.NTE_BAD_ALGID, target.gen_key, prov, alg, 128 << 16)
    assert_refused(target, w.NTE_BAD_ALGID, target.import_key, prov, plaintext_blob(alg, K16))


# Accepted CryptGenKey lengths in bits, typed from the reference / rsaenh notes (0 = default).
ACCEPTED_BITS = {
    w.CALG_DES: {0: 64, 56: 64, 64: 64},
    w.CALG_3DES_112: {0: 128, 112: 128, 128: 128},
    w.CALG_3DES: {0: 192, 168: 192, 192: 192},
    w.CALG_AES_128: {0: 128, 128: 128},
    w.CALG_AES_192: {0: 192, 192: 192},
    w.CALG_AES_256: {0: 256, 256: 256},
    w.CALG_RC2: {0: 128, **{b: b for b in range(40, 129, 8)}},
    w.CALG_RC4: {0: 128, **{b: b for b in range(40, 129, 8)}},
}


@pytest.mark.parametrize("alg", ALL_ALGS)
def test_accepted_gen_lengths(alg: int) -> None:
    """Every accepted CryptGenKey length gives the stored KP_KEYLEN (DES family with parity)."""
    target = new_target()
    prov = target.acquire()
    for bits, stored in ACCEPTED_BITS[alg].items():
        key = target.gen_key(prov, alg, bits << 16)
        assert target.get_key_param(key, w.KP_KEYLEN) == stored


@settings(max_examples=60)
@given(alg=st.sampled_from(ALL_ALGS), bits=st.integers(1, 0xFFFF))
def test_bad_gen_length(alg: int, bits: int) -> None:
    """A length the algorithm lacks: NTE_BAD_FLAGS for the DES family, NTE_BAD_DATA for AES, RC2, RC4."""
    if bits in ACCEPTED_BITS[alg]:
        return
    target = new_target()
    prov = target.acquire()
    code = w.NTE_BAD_FLAGS if alg in (w.CALG_DES, w.CALG_3DES_112, w.CALG_3DES) else w.NTE_BAD_DATA
    assert_refused(target, code, target.gen_key, prov, alg, bits << 16)


@pytest.mark.parametrize(("alg", "bits"), [(w.CALG_DES, 40), (w.CALG_3DES, 128), (w.CALG_3DES_112, 192)])
def test_bad_des_family_lengths(alg: int, bits: int) -> None:
    """Concrete DES-family lengths another member has are NTE_BAD_FLAGS."""
    target = new_target()
    prov = target.acquire()
    assert_refused(target, w.NTE_BAD_FLAGS, target.gen_key, prov, alg, bits << 16)


@pytest.mark.parametrize(
    ("alg", "bits"), [(w.CALG_AES_128, 192), (w.CALG_RC2, 44), (w.CALG_RC4, 136), (w.CALG_RC4, 32)]
)
def test_bad_other_lengths(alg: int, bits: int) -> None:
    """Concrete AES / RC2 / RC4 lengths outside the range (or not a byte multiple) are NTE_BAD_DATA."""
    target = new_target()
    prov = target.acquire()
    assert_refused(target, w.NTE_BAD_DATA, target.gen_key, prov, alg, bits << 16)


@settings(max_examples=40)
@given(low=st.integers(1, 0xFFFF).filter(lambda f: f & ~(0x1 | 0x4 | 0x10)))
def test_unknown_gen_flags_are_bad_flags(low: int) -> None:
    """A CryptGenKey low flag other than EXPORTABLE, CREATE_SALT, NO_SALT: NTE_BAD_FLAGS."""
    target = new_target()
    prov = target.acquire()
    assert_refused(target, w.NTE_BAD_FLAGS, target.gen_key, prov, AES, low)


@pytest.mark.parametrize("mode", [w.CRYPT_MODE_CBC, w.CRYPT_MODE_ECB, w.CRYPT_MODE_CFB])
@pytest.mark.parametrize("alg", [AES, w.CALG_DES, w.CALG_RC2])
def test_non_block_multiple_is_bad_data(alg: int, mode: int) -> None:
    """Non-final encrypt/decrypt (and Final decrypt) of a ragged length: NTE_BAD_DATA, state untouched (CFB too)."""
    target, _, key = _setup(alg)
    target.set_key_param(key, w.KP_MODE, mode)
    size = BLOCK[alg]
    target.encrypt(key, bytes(size), False)  # a live register, so a reset would show
    for n in (1, size - 1, size + 1, 2 * size + 3):
        assert_refused(target, w.NTE_BAD_DATA, target.encrypt, key, bytes(n), False)
        assert_refused(target, w.NTE_BAD_DATA, target.decrypt, key, bytes(n), False)
        assert_refused(target, w.NTE_BAD_DATA, target.decrypt, key, bytes(n), True)


@pytest.mark.parametrize("alg", [AES, w.CALG_3DES, w.CALG_RC2, w.CALG_RC4])
def test_final_decrypt_of_nothing_is_bad_len(alg: int) -> None:
    """Final decrypt of zero bytes: NTE_BAD_LEN (RC4 too), the live state untouched."""
    target, _, key = _setup(alg)
    target.encrypt(key, bytes(max(BLOCK[alg], 3)), False)
    assert_refused(target, w.NTE_BAD_LEN, target.decrypt, key, b"", True)
    assert target.decrypt(key, b"", False) == b""


@pytest.mark.parametrize("mode", [w.CRYPT_MODE_OFB, w.CRYPT_MODE_CTS, 0, 6, 0xFFFFFFFF])
def test_unusable_mode_accepted_then_bad_algid_at_use(mode: int) -> None:
    """KP_MODE stores OFB, CTS or an unknown mode; the next encrypt/decrypt is NTE_BAD_ALGID, state untouched."""
    target, _, key = _setup()
    target.encrypt(key, bytes(16), False)
    target.set_key_param(key, w.KP_MODE, mode)
    assert target.get_key_param(key, w.KP_MODE) == mode
    assert_refused(target, w.NTE_BAD_ALGID, target.encrypt, key, bytes(16), False)
    assert_refused(target, w.NTE_BAD_ALGID, target.encrypt, key, bytes(5), True)
    assert_refused(target, w.NTE_BAD_ALGID, target.decrypt, key, bytes(16), False)
    assert_refused(target, w.NTE_BAD_ALGID, target.decrypt, key, bytes(16), True)


@pytest.mark.parametrize("padding", [0, w.RANDOM_PADDING, w.ZERO_PADDING, 99])
def test_padding_other_than_pkcs5_is_bad_data(padding: int) -> None:
    """KP_PADDING accepts only PKCS5_PADDING; anything else is NTE_BAD_DATA."""
    target, _, key = _setup()
    assert_refused(target, w.NTE_BAD_DATA, target.set_key_param, key, w.KP_PADDING, padding)
    target.set_key_param(key, w.KP_PADDING, w.PKCS5_PADDING)
    assert target.get_key_param(key, w.KP_PADDING) == w.PKCS5_PADDING


@pytest.mark.parametrize("param", [w.KP_ALGID, w.KP_BLOCKLEN, w.KP_KEYLEN, 0, 11, 18, 20, 999])
def test_unknown_or_read_only_param_set_is_bad_type(param: int) -> None:
    """CryptSetKeyParam of an unknown or read-only parameter: NTE_BAD_TYPE."""
    target, _, key = _setup()
    assert_refused(target, w.NTE_BAD_TYPE, target.set_key_param, key, param, 1)
    assert_refused(target, w.NTE_BAD_TYPE, target.set_key_param, key, param, b"\x01")


@pytest.mark.parametrize("param", [0, 11, 20, 999])
def test_unknown_param_get_is_bad_type(param: int) -> None:
    """CryptGetKeyParam of an unknown parameter: NTE_BAD_TYPE."""
    target, _, key = _setup()
    assert_refused(target, w.NTE_BAD_TYPE, target.get_key_param, key, param)


@pytest.mark.parametrize(
    ("param", "value"),
    [
        (w.KP_IV, 1),
        (w.KP_IV, "0" * 16),
        (w.KP_IV, bytes(15)),
        (w.KP_IV, bytes(17)),
        (w.KP_IV, b""),
        (w.KP_SALT, 5),
        (w.KP_SALT_EX, None),
        (w.KP_MODE, b"\x01"),
        (w.KP_MODE, True),
        (w.KP_MODE, -1),
        (w.KP_MODE, 1 << 32),
        (w.KP_MODE_BITS, 8.0),
        (w.KP_PADDING, "1"),
        (w.KP_PERMISSIONS, b"\x3b"),
        (w.KP_EFFECTIVE_KEYLEN, None),
    ],
)
def test_wrong_value_type_is_invalid_parameter(param: int, value: object) -> None:
    """A value of the wrong type (or a KP_IV that is not exactly one block): ERROR_INVALID_PARAMETER."""
    target, _, key = _setup()
    assert_refused(target, w.ERROR_INVALID_PARAMETER, target.set_key_param, key, param, value)


@pytest.mark.parametrize("param", [w.KP_SALT, w.KP_SALT_EX])
@pytest.mark.parametrize("alg", [AES, w.CALG_DES, w.CALG_3DES])
def test_salt_on_block_cipher_is_bad_key(alg: int, param: int) -> None:
    """KP_SALT / KP_SALT_EX on a key that takes no salt: NTE_BAD_KEY."""
    target, _, key = _setup(alg)
    assert_refused(target, w.NTE_BAD_KEY, target.set_key_param, key, param, b"\x01\x02")
    assert target.get_key_param(key, w.KP_SALT) == b""


@pytest.mark.parametrize("alg", [w.CALG_RC2, w.CALG_RC4])
def test_salt_ex_longer_than_24_is_bad_data(alg: int) -> None:
    """A KP_SALT_EX salt of 25 bytes or more is NTE_BAD_DATA; 24 bytes and an empty salt are accepted."""
    target, _, key = _setup(alg)
    target.encrypt(key, bytes(8), False)
    for n in (25, 64):
        assert_refused(target, w.NTE_BAD_DATA, target.set_key_param, key, w.KP_SALT_EX, bytes(n))
    target.set_key_param(key, w.KP_SALT_EX, bytes(24))
    assert target.get_key_param(key, w.KP_SALT) == bytes(24)
    target.set_key_param(key, w.KP_SALT_EX, b"")
    assert target.get_key_param(key, w.KP_SALT) == b""


@pytest.mark.parametrize("size", [0, 1, 10, 12, 24, 25])
@pytest.mark.parametrize("alg", [w.CALG_RC2, w.CALG_RC4])
def test_kp_salt_takes_exactly_11_bytes(alg: int, size: int) -> None:
    """KP_SALT of any length but 11 is ERROR_INVALID_PARAMETER (the C API reads 11 bytes), state untouched;
    11 bytes are accepted. On a block-cipher key the algorithm is checked first (NTE_BAD_KEY)."""
    target, _, key = _setup(alg)
    target.encrypt(key, bytes(8), False)
    assert_refused(target, w.ERROR_INVALID_PARAMETER, target.set_key_param, key, w.KP_SALT, bytes(size))
    target.set_key_param(key, w.KP_SALT, bytes(range(11)))
    assert target.inspect(key).salt == bytes(range(11))
    aes, _, block_key = _setup(AES)
    assert_refused(aes, w.NTE_BAD_KEY, aes.set_key_param, block_key, w.KP_SALT, bytes(size))


@pytest.mark.parametrize("value", [0, 1025, 0xFFFFFFFF])
def test_effective_keylen_out_of_range_is_bad_data(value: int) -> None:
    """KP_EFFECTIVE_KEYLEN outside 1..1024 on RC2 is NTE_BAD_DATA; 1 and 1024 are accepted."""
    target, _, key = _setup(w.CALG_RC2)
    target.encrypt(key, bytes(8), False)
    assert_refused(target, w.NTE_BAD_DATA, target.set_key_param, key, w.KP_EFFECTIVE_KEYLEN, value)
    for ok in (1, 1024):
        target.set_key_param(key, w.KP_EFFECTIVE_KEYLEN, ok)
        assert target.get_key_param(key, w.KP_EFFECTIVE_KEYLEN) == ok


@pytest.mark.parametrize("alg", [AES, w.CALG_DES, w.CALG_RC4])
def test_effective_keylen_on_non_rc2_is_bad_type(alg: int) -> None:
    """KP_EFFECTIVE_KEYLEN on a key other than RC2: NTE_BAD_TYPE (even for an in-range value)."""
    target, _, key = _setup(alg)
    assert_refused(target, w.NTE_BAD_TYPE, target.set_key_param, key, w.KP_EFFECTIVE_KEYLEN, 64)
    assert_refused(target, w.NTE_BAD_TYPE, target.set_key_param, key, w.KP_EFFECTIVE_KEYLEN, 0)


UNSUPPORTED_BLOB_TYPES = [
    w.SIMPLEBLOB,
    w.PUBLICKEYBLOB,
    w.PRIVATEKEYBLOB,
    w.PUBLICKEYBLOBEX,
    w.SYMMETRICWRAPKEYBLOB,
    w.KEYSTATEBLOB,
    0,
    0xFF,
    0x108,
]


@pytest.mark.parametrize("blob_type", UNSUPPORTED_BLOB_TYPES)
def test_export_unsupported_blob_type_is_bad_type(blob_type: int) -> None:
    """CryptExportKey of a blob type other than PLAINTEXTKEYBLOB / OPAQUEKEYBLOB: NTE_BAD_TYPE."""
    target, _, key = _setup()
    assert_refused(target, w.NTE_BAD_TYPE, target.export_key, key, blob_type)
    assert_refused(target, w.NTE_BAD_TYPE, target.export_key, key, blob_type, flags=w.CRYPT_DESTROYKEY)


@pytest.mark.parametrize("flags", [0x1, 0x2, 0x8, 0x40, 0x4 | 0x1, 0x80000000])
@pytest.mark.parametrize("blob_type", [w.OPAQUEKEYBLOB, w.PLAINTEXTKEYBLOB])
def test_export_unknown_flag_is_bad_flags(blob_type: int, flags: int) -> None:
    """CryptExportKey with a flag other than CRYPT_DESTROYKEY: NTE_BAD_FLAGS (checked before the blob type)."""
    target, _, key = _setup()
    assert_refused(target, w.NTE_BAD_FLAGS, target.export_key, key, blob_type, flags=flags)
    assert_refused(target, w.NTE_BAD_FLAGS, target.export_key, key, w.SIMPLEBLOB, flags=flags)


@pytest.mark.parametrize("blob_type", [w.OPAQUEKEYBLOB, w.PLAINTEXTKEYBLOB])
def test_export_with_exchange_key_is_invalid_parameter(blob_type: int) -> None:
    """CryptExportKey with hExpKey != 0: ERROR_INVALID_PARAMETER (after the type check, before permissions)."""
    target, prov, key = _setup(flags=0)
    other = target.gen_key(prov, AES)
    assert_refused(target, w.ERROR_INVALID_PARAMETER, target.export_key, key, blob_type, exp_key=other)
    assert_refused(target, w.ERROR_INVALID_PARAMETER, target.export_key, key, blob_type, exp_key=1)
    assert_refused(target, w.NTE_BAD_TYPE, target.export_key, key, w.SIMPLEBLOB, exp_key=other)


def test_refused_export_with_destroykey_keeps_the_key() -> None:
    """A refused export with CRYPT_DESTROYKEY does not destroy the key."""
    target, _, key = _setup(flags=0)
    assert_refused(target, w.NTE_BAD_KEY_STATE, target.export_key, key, w.PLAINTEXTKEYBLOB, flags=w.CRYPT_DESTROYKEY)
    assert target.inspect(key).lifecycle.alive
    assert target.encrypt(key, bytes(16), False)


@pytest.mark.parametrize("blob_type", UNSUPPORTED_BLOB_TYPES[:-1])
def test_import_unsupported_blob_type_is_bad_type(blob_type: int) -> None:
    """CryptImportKey of a blob type the CSP does not take: NTE_BAD_TYPE."""
    target = new_target()
    prov = target.acquire()
    blob = header(blob_type, AES) + (16).to_bytes(4, "little") + K16
    assert_refused(target, w.NTE_BAD_TYPE, target.import_key, prov, blob)


def test_import_with_pub_key_is_invalid_parameter() -> None:
    """CryptImportKey with hPubKey != 0 for PLAINTEXTKEYBLOB or OPAQUEKEYBLOB: ERROR_INVALID_PARAMETER."""
    target, prov, key = _setup()
    opaque = target.export_key(key, w.OPAQUEKEYBLOB)
    for blob in (plaintext_blob(AES, K16), opaque):
        assert_refused(target, w.ERROR_INVALID_PARAMETER, target.import_key, prov, blob, pub_key=key)
        assert_refused(target, w.ERROR_INVALID_PARAMETER, target.import_key, prov, blob, pub_key=12345)


@pytest.mark.parametrize("flags", [w.CRYPT_CREATE_SALT, w.CRYPT_USER_PROTECTED, 0x8, 0x40, 0x10000])
def test_plaintext_import_unknown_flag_is_bad_flags(flags: int) -> None:
    """PLAINTEXTKEYBLOB import accepts EXPORTABLE, IPSEC_HMAC_KEY and NO_SALT only; others NTE_BAD_FLAGS."""
    target = new_target()
    prov = target.acquire()
    assert_refused(target, w.NTE_BAD_FLAGS, target.import_key, prov, plaintext_blob(AES, K16), flags=flags)


@pytest.mark.parametrize("flags", [w.CRYPT_IPSEC_HMAC_KEY, w.CRYPT_NO_SALT, 0x2, 0x8])
def test_opaque_import_unknown_flag_is_bad_flags(flags: int) -> None:
    """OPAQUEKEYBLOB import accepts only CRYPT_EXPORTABLE; another flag or hardware=True is NTE_BAD_FLAGS."""
    target, prov, key = _setup()
    blob = target.export_key(key, w.OPAQUEKEYBLOB)
    assert_refused(target, w.NTE_BAD_FLAGS, target.import_key, prov, blob, flags=flags)
    assert_refused(target, w.NTE_BAD_FLAGS, target.import_key, prov, blob, hardware=True)


@pytest.mark.parametrize("length", range(8))
def test_import_shorter_than_header_is_bad_data(length: int) -> None:
    """A blob shorter than a BLOBHEADER (8 bytes): NTE_BAD_DATA."""
    target = new_target()
    prov = target.acquire()
    assert_refused(target, w.NTE_BAD_DATA, target.import_key, prov, plaintext_blob(AES, K16)[:length])


@pytest.mark.parametrize("version", [0, 1, 3, 0xFF])
def test_import_bad_version_is_bad_ver(version: int) -> None:
    """bVersion other than CUR_BLOB_VERSION (2): NTE_BAD_VER, for both blob types."""
    target, prov, key = _setup()
    opaque = target.export_key(key, w.OPAQUEKEYBLOB)
    for blob in (plaintext_blob(AES, K16), opaque):
        bad = blob[:1] + bytes([version]) + blob[2:]
        assert_refused(target, w.NTE_BAD_VER, target.import_key, prov, bad)


@pytest.mark.parametrize("reserved", [1, 0x100, 0xFFFF])
def test_import_nonzero_reserved_is_bad_data(reserved: int) -> None:
    """BLOBHEADER.reserved != 0: NTE_BAD_DATA."""
    target = new_target()
    prov = target.acquire()
    blob = header(w.PLAINTEXTKEYBLOB, AES, reserved=reserved) + (16).to_bytes(4, "little") + K16
    assert_refused(target, w.NTE_BAD_DATA, target.import_key, prov, blob)


def test_import_unsupported_alg_is_bad_algid_for_opaque_too() -> None:
    """An OPAQUEKEYBLOB header naming an unsupported algorithm: NTE_BAD_ALGID."""
    target, prov, key = _setup()
    blob = target.export_key(key, w.OPAQUEKEYBLOB)
    bad = blob[:4] + w.CALG_AES.to_bytes(4, "little") + blob[8:]
    assert_refused(target, w.NTE_BAD_ALGID, target.import_key, prov, bad)


@pytest.mark.parametrize("alg", ALL_ALGS)
def test_plaintext_blob_truncated_or_trailing_is_bad_data(alg: int) -> None:
    """A PLAINTEXTKEYBLOB cut before or inside its key, or with trailing bytes: NTE_BAD_DATA."""
    target = new_target()
    prov = target.acquire()
    key = bytes(range(KEY_BYTES[alg]))
    blob = plaintext_blob(alg, key)
    for cut in range(8, len(blob)):
        assert_refused(target, w.NTE_BAD_DATA, target.import_key, prov, blob[:cut])
    for trailing in (b"\x00", b"xyz"):
        assert_refused(target, w.NTE_BAD_DATA, target.import_key, prov, blob + trailing)
    assert_refused(target, w.NTE_BAD_DATA, target.import_key, prov, plaintext_blob(alg, key, length=len(key) + 1))
    assert_refused(target, w.NTE_BAD_DATA, target.import_key, prov, plaintext_blob(alg, key, length=0xFFFFFFFF))


@pytest.mark.parametrize(
    ("alg", "size"),
    [
        (w.CALG_DES, 7),
        (w.CALG_DES, 9),
        (w.CALG_3DES_112, 14),
        (w.CALG_3DES, 21),
        (w.CALG_3DES, 16),
        (w.CALG_AES_128, 15),
        (w.CALG_AES_128, 24),
        (w.CALG_AES_256, 16),
        (w.CALG_RC2, 4),
        (w.CALG_RC2, 17),
        (w.CALG_RC4, 0),
        (w.CALG_RC4, 33),
    ],
)
def test_plaintext_blob_bad_key_length_is_bad_data(alg: int, size: int) -> None:
    """A well-formed PLAINTEXTKEYBLOB whose key length the algorithm lacks: NTE_BAD_DATA."""
    target = new_target()
    prov = target.acquire()
    assert_refused(target, w.NTE_BAD_DATA, target.import_key, prov, plaintext_blob(alg, bytes(size)))


@pytest.mark.parametrize("hash_alg", [0, w.CALG_MAC, w.CALG_HMAC, w.CALG_RC2, 0x800D, 0x800E, 0x8001])
def test_hmac_with_unknown_hash_is_bad_algid(hash_alg: int) -> None:
    """HMAC with a hash other than MD5, SHA-1, SHA-256: NTE_BAD_ALGID."""
    target, _, key = _setup()
    assert_refused(target, w.NTE_BAD_ALGID, target.hmac, key, hash_alg, b"data")


def test_crypt_error_carries_code_and_operation() -> None:
    """A refusal raises CryptError whose .code is the int and whose text names the code."""
    target, _, key = _setup()
    with pytest.raises(CryptError) as err:
        target.encrypt(key, bytes(3), False)
    assert err.value.code == 0x80090005
    assert "NTE_BAD_DATA" in str(err.value)
    assert err.value.operation == "encrypt"
