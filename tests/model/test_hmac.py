"""HMAC with session keys: RFC 2202 (MD5, SHA-1) and RFC 4231 (SHA-256) vectors, IPSEC long keys, no side effects."""

from __future__ import annotations

import hmac as std_hmac

import pytest

from keyhandoff.model import wincrypt as w
from tests.strategies import (
    assert_refused,
    import_plain,
    new_target,
    plaintext_blob,
    ref_crypt,
)

HASH_1_DATA = b"Test Using Larger Than Block-Size Key - Hash Key First"
LONG_DATA_2202 = b"Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data"
LONG_DATA_4231 = (
    b"This is a test using a larger than block-size key and a larger than block-size data. "
    b"The key needs to be hashed before being used by the HMAC algorithm."
)
KEY_25 = bytes(range(1, 26))

# RFC 2202 section 2 (HMAC-MD5), test cases 1-7: (key, data, digest). Digests typed in from the RFC.
RFC2202_MD5 = [
    (b"\x0b" * 16, b"Hi There", "9294727a3638bb1c13f48ef8158bfc9d"),
    (b"Jefe", b"what do ya want for nothing?", "750c783e6ab0b503eaa86e310a5db738"),
    (b"\xaa" * 16, b"\xdd" * 50, "56be34521d144c88dbb8c733f0e8b3f6"),
    (KEY_25, b"\xcd" * 50, "697eaf0aca3a3aea3a75164746ffaa79"),
    (b"\x0c" * 16, b"Test With Truncation", "56461ef2342edc00f9bab995690efd4c"),
    (b"\xaa" * 80, HASH_1_DATA, "6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd"),
    (b"\xaa" * 80, LONG_DATA_2202, "6f630fad67cda0ee1fb1f562db3aa53e"),
]

# RFC 2202 section 3 (HMAC-SHA-1), test cases 1-7.
RFC2202_SHA1 = [
    (b"\x0b" * 20, b"Hi There", "b617318655057264e28bc0b6fb378c8ef146be00"),
    (b"Jefe", b"what do ya want for nothing?", "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
    (b"\xaa" * 20, b"\xdd" * 50, "125d7342b9ac11cd91a39af48aa17b4f63f175d3"),
    (KEY_25, b"\xcd" * 50, "4c9007f4026250c6bc8414f9bf50c86c2d7235da"),
    (b"\x0c" * 20, b"Test With Truncation", "4c1a03424b55e07fe7f27be1d58bb9324a9a5a04"),
    (b"\xaa" * 80, HASH_1_DATA, "aa4ae5e15272d00e95705637ce8a3b55ed402112"),
    (b"\xaa" * 80, LONG_DATA_2202, "e8e99d0f45237d786d6bbaa7965c7808bbff1a91"),
]

# RFC 4231 section 4 (HMAC-SHA-256), test cases 1-4, 6, 7 (case 5 is a truncated output).
RFC4231_SHA256 = [
    (b"\x0b" * 20, b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (
        b"Jefe",
        b"what do ya want for nothing?",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    ),
    (b"\xaa" * 20, b"\xdd" * 50, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (KEY_25, b"\xcd" * 50, "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
    (b"\xaa" * 131, HASH_1_DATA, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    (b"\xaa" * 131, LONG_DATA_4231, "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
]

CASES = (
    [(w.CALG_MD5, f"rfc2202-md5-{i}", *c) for i, c in enumerate(RFC2202_MD5, 1)]
    + [(w.CALG_SHA1, f"rfc2202-sha1-{i}", *c) for i, c in enumerate(RFC2202_SHA1, 1)]
    + [(w.CALG_SHA_256, f"rfc4231-sha256-{i}", *c) for i, c in zip((1, 2, 3, 4, 6, 7), RFC4231_SHA256, strict=True)]
)


def _hmac_key(target, prov: int, key: bytes) -> int:
    """A PLAINTEXTKEYBLOB CALG_RC2 key; CRYPT_IPSEC_HMAC_KEY when outside RC2's 5..16 bytes."""
    flags = w.CRYPT_IPSEC_HMAC_KEY if not 5 <= len(key) <= 16 else 0
    return target.import_key(prov, plaintext_blob(w.CALG_RC2, key), flags=flags)


@pytest.mark.parametrize(("hash_alg", "name", "key", "data", "digest"), CASES, ids=[c[1] for c in CASES])
def test_rfc_vectors(hash_alg: int, name: str, key: bytes, data: bytes, digest: str) -> None:
    """HMAC over an imported RC2 key gives the RFC digest."""
    target = new_target()
    prov = target.acquire()
    handle = _hmac_key(target, prov, key)
    assert target.hmac(handle, hash_alg, data).hex() == digest


def test_rfc_vectors_cover_every_case() -> None:
    """The typed tables hold RFC 2202 cases 1-7 twice and RFC 4231 cases 1-4, 6, 7."""
    assert len(RFC2202_MD5) == len(RFC2202_SHA1) == 7
    assert len(RFC4231_SHA256) == 6


def test_hmac_key_is_the_key_bytes_without_salt() -> None:
    """An RC2 key's HMAC uses its key bytes only, never key || salt."""
    target = new_target()
    prov = target.acquire()
    key = import_plain(target, prov, w.CALG_RC2, b"Jefe!")
    assert target.get_key_param(key, w.KP_SALT) == bytes(11)
    target.set_key_param(key, w.KP_SALT, b"\x01" * 11)  # a zero salt would vanish in HMAC's zero padding
    digest = target.hmac(key, w.CALG_SHA1, b"data")
    assert digest == std_hmac.new(b"Jefe!", b"data", "sha1").digest()
    assert digest != std_hmac.new(b"Jefe!" + b"\x01" * 11, b"data", "sha1").digest()


@pytest.mark.parametrize("size", [1, 4, 17, 80, 2048])
@pytest.mark.parametrize("alg", [w.CALG_RC2, w.CALG_RC4])
def test_ipsec_long_key_refuses_encrypt_and_decrypt(alg: int, size: int) -> None:
    """A CRYPT_IPSEC_HMAC_KEY key outside the cipher's lengths serves HMAC only: encrypt/decrypt NTE_BAD_KEY."""
    target = new_target()
    prov = target.acquire()
    key = target.import_key(prov, plaintext_blob(alg, b"\x5a" * size), flags=w.CRYPT_IPSEC_HMAC_KEY)
    assert target.inspect(key).hmac_only
    assert_refused(target, w.NTE_BAD_KEY, target.encrypt, key, bytes(8), False)
    assert_refused(target, w.NTE_BAD_KEY, target.encrypt, key, b"", True)
    assert_refused(target, w.NTE_BAD_KEY, target.decrypt, key, bytes(8), False)
    assert_refused(target, w.NTE_BAD_KEY, target.decrypt, key, bytes(8), True)
    assert len(target.hmac(key, w.CALG_SHA_256, b"x")) == 32


@pytest.mark.parametrize("size", [17, 80])
def test_long_rc2_key_without_ipsec_flag_is_bad_data(size: int) -> None:
    """Without CRYPT_IPSEC_HMAC_KEY an RC2 key longer than 16 bytes is NTE_BAD_DATA."""
    target = new_target()
    prov = target.acquire()
    assert_refused(target, w.NTE_BAD_DATA, target.import_key, prov, plaintext_blob(w.CALG_RC2, bytes(size)))


@pytest.mark.parametrize("alg", [w.CALG_AES_128, w.CALG_DES])
def test_ipsec_flag_does_not_lift_block_cipher_lengths(alg: int) -> None:
    """CRYPT_IPSEC_HMAC_KEY lifts the length limit for RC2/RC4 only."""
    target = new_target()
    prov = target.acquire()
    blob = plaintext_blob(alg, bytes(20))
    assert_refused(target, w.NTE_BAD_DATA, target.import_key, prov, blob, flags=w.CRYPT_IPSEC_HMAC_KEY)


def test_ipsec_key_of_normal_length_is_a_cipher_key() -> None:
    """With CRYPT_IPSEC_HMAC_KEY a 16-byte RC2 key is still an ordinary cipher key."""
    target = new_target()
    prov = target.acquire()
    kb = bytes(range(16))
    key = target.import_key(prov, plaintext_blob(w.CALG_RC2, kb), flags=w.CRYPT_IPSEC_HMAC_KEY)
    assert not target.inspect(key).hmac_only
    assert target.encrypt(key, bytes(8), False) == ref_crypt(w.CALG_RC2, kb, w.CRYPT_MODE_CBC, bytes(8), bytes(8))[0]


@pytest.mark.parametrize("hash_alg", [w.CALG_MD5, w.CALG_SHA1, w.CALG_SHA_256])
def test_hmac_does_not_change_cipher_state(hash_alg: int) -> None:
    """HMAC leaves the key's register and stream untouched: the CBC chain continues across it."""
    target = new_target()
    prov = target.acquire()
    kb = bytes(range(16))
    key = import_plain(target, prov, w.CALG_AES_128, kb)
    p = bytes(range(32))
    c1 = target.encrypt(key, p[:16], False)
    before = target.world
    target.hmac(key, hash_alg, b"some data")
    assert target.world == before
    c2 = target.encrypt(key, p[16:], False)
    assert c1 + c2 == ref_crypt(w.CALG_AES_128, kb, w.CRYPT_MODE_CBC, bytes(16), p)[0]


def test_hmac_does_not_move_rc4_stream() -> None:
    """HMAC on an RC4 key leaves its keystream position alone."""
    target = new_target()
    prov = target.acquire()
    key = import_plain(target, prov, w.CALG_RC4, bytes(range(16)))
    target.encrypt(key, bytes(5), False)
    target.hmac(key, w.CALG_SHA1, b"abc")
    assert target.inspect(key).stream_pos == 5


def test_hmac_survives_opaque_handoff() -> None:
    """An IPSEC HMAC key handed off as OPAQUEKEYBLOB gives the same digests on the other side."""
    target = new_target()
    secure = target.acquire("secure")
    app = target.acquire("app")
    key, data, digest = RFC2202_SHA1[5]
    handle = _hmac_key(target, secure, key)
    blob = target.export_key(handle, w.OPAQUEKEYBLOB, flags=w.CRYPT_DESTROYKEY)
    imported = target.import_key(app, blob)
    assert target.hmac(imported, w.CALG_SHA1, data).hex() == digest
    assert target.inspect(imported).hmac_only
