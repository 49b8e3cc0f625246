"""The rules of docs/model.md on the reference CSP: one representative test per rule family, codes exact.

Expected bytes come from ``cryptography`` directly or from hand-written blobs, never from the model.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import multiprocessing
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import RC2
from cryptography.hazmat.decrepit.ciphers.modes import CFB8
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from keyhandoff.impl.builtin import BuiltinCsp
from keyhandoff.impl.installation import Installation
from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError
from keyhandoff.model.state import Lifecycle, Location
from keyhandoff.targets import load
from tests.impl.conftest import HARDWARE_CALL_PATHS, assert_gone_object_is_not_found, plaintext_blob, rc4_keystream

KEY16 = bytes(range(16))
AES_IV = bytes(range(100, 116))


def code(call: Callable[..., object], *args: object, **kwargs: object) -> int:
    with pytest.raises(CryptError) as caught:
        call(*args, **kwargs)
    return caught.value.code


def aes(mode: modes.Mode, data: bytes, *, decrypt: bool = False, key: bytes = KEY16) -> bytes:
    cipher = Cipher(algorithms.AES(key), mode)
    ctx = cipher.decryptor() if decrypt else cipher.encryptor()
    return ctx.update(data) + ctx.finalize()


def imp(csp: BuiltinCsp, prov: int, alg: int, key: bytes, flags: int = w.CRYPT_EXPORTABLE, **kw: bool) -> int:
    return csp.import_key(prov, plaintext_blob(alg, key), flags=flags, **kw)


@pytest.fixture
def prov(csp: BuiltinCsp) -> int:
    return csp.acquire("secure")


@pytest.fixture
def app(csp: BuiltinCsp) -> int:
    return csp.acquire("app")


# --- contexts and handles ----------------------------------------------------------------------------------


def test_contexts_and_stale_handles(csp: BuiltinCsp) -> None:
    """Unknown side ERROR_INVALID_PARAMETER; released context NTE_BAD_UID; its keys and unknown keys NTE_BAD_KEY."""
    assert code(csp.acquire, "elsewhere") == w.ERROR_INVALID_PARAMETER
    prov = csp.acquire("secure")
    key = csp.gen_key(prov, w.CALG_AES_128)
    assert code(csp.encrypt, prov, b"", False) == w.NTE_BAD_KEY  # a provider handle is not a key
    assert code(csp.gen_key, key, w.CALG_AES_128) == w.NTE_BAD_UID  # a key handle is not a provider
    csp.release(prov)
    assert code(csp.release, prov) == w.NTE_BAD_UID
    assert code(csp.gen_key, prov, w.CALG_AES_128) == w.NTE_BAD_UID
    assert code(csp.import_key, prov, plaintext_blob(w.CALG_AES_128, KEY16)) == w.NTE_BAD_UID
    assert csp.inspect(key).lifecycle is Lifecycle.DESTROYED
    assert code(csp.destroy_key, key) == w.NTE_BAD_KEY
    assert code(csp.duplicate_key, key) == w.NTE_BAD_KEY
    assert code(csp.get_key_param, key, w.KP_IV) == w.NTE_BAD_KEY
    assert code(csp.inspect, 12345) == w.NTE_BAD_KEY
    assert code(csp.encrypt, 0, b"", False) == w.NTE_BAD_KEY


# --- CryptGenKey -------------------------------------------------------------------------------------------


def test_gen_key_refusals_in_order(csp: BuiltinCsp, prov: int) -> None:
    """NTE_BAD_ALGID, then unknown low flag NTE_BAD_FLAGS, then length (DES family NTE_BAD_FLAGS, others
    NTE_BAD_DATA), then a hardware algorithm the token cannot run NTE_BAD_ALGID."""
    assert code(csp.gen_key, prov, w.CALG_AES) == w.NTE_BAD_ALGID
    assert code(csp.gen_key, prov, w.CALG_AES, 0x2) == w.NTE_BAD_ALGID
    assert code(csp.gen_key, prov, w.CALG_AES_128, 0x2) == w.NTE_BAD_FLAGS
    assert code(csp.gen_key, prov, w.CALG_AES_128, 0x2 | (192 << 16)) == w.NTE_BAD_FLAGS
    assert code(csp.gen_key, prov, w.CALG_DES, 40 << 16) == w.NTE_BAD_FLAGS
    assert code(csp.gen_key, prov, w.CALG_3DES, 112 << 16) == w.NTE_BAD_FLAGS
    assert code(csp.gen_key, prov, w.CALG_AES_128, 192 << 16) == w.NTE_BAD_DATA
    assert code(csp.gen_key, prov, w.CALG_RC2, 44 << 16) == w.NTE_BAD_DATA
    assert code(csp.gen_key, prov, w.CALG_RC4, 136 << 16) == w.NTE_BAD_DATA
    assert code(csp.gen_key, prov, w.CALG_RC4, 136 << 16, hardware=True) == w.NTE_BAD_DATA
    assert code(csp.gen_key, prov, w.CALG_RC4, hardware=True) == w.NTE_BAD_ALGID
    assert code(csp.gen_key, prov, w.CALG_RC2, hardware=True) == w.NTE_BAD_ALGID


@pytest.mark.parametrize(
    ("alg", "flags", "key_bits", "salt"),
    [
        (w.CALG_DES, 0, 64, b""),
        (w.CALG_DES, 56 << 16, 64, b""),
        (w.CALG_3DES_112, 112 << 16, 128, b""),
        (w.CALG_3DES, 0, 192, b""),
        (w.CALG_AES_256, 0, 256, b""),
        (w.CALG_RC4, 0, 128, b""),
        (w.CALG_RC4, 40 << 16, 40, bytes(11)),
        (w.CALG_RC4, (40 << 16) | w.CRYPT_NO_SALT, 40, b""),
        (w.CALG_RC2, (40 << 16) | w.CRYPT_CREATE_SALT, 40, b""),
        (w.CALG_RC2, 56 << 16, 56, b""),
    ],
)
def test_gen_key_defaults(csp: BuiltinCsp, prov: int, alg: int, flags: int, key_bits: int, salt: bytes) -> None:
    """A generated key: its KP_KEYLEN, the 40-bit salt rule, defaults (mode, bits, padding, IV, permissions)."""
    key = csp.gen_key(prov, alg, flags)
    state = csp.inspect(key)
    assert state.lifecycle is Lifecycle.CREATED
    assert csp.get_key_param(key, w.KP_KEYLEN) == key_bits == len(state.key) * 8
    assert csp.get_key_param(key, w.KP_SALT) == salt
    assert csp.get_key_param(key, w.KP_EFFECTIVE_KEYLEN) == key_bits
    assert csp.get_key_param(key, w.KP_PERMISSIONS) == 0x3B
    assert csp.get_key_param(key, w.KP_MODE_BITS) == 8
    assert csp.get_key_param(key, w.KP_PADDING) == w.PKCS5_PADDING
    assert csp.get_key_param(key, w.KP_ALGID) == alg
    block = 0 if alg == w.CALG_RC4 else 16 if alg == w.CALG_AES_256 else 8
    assert csp.get_key_param(key, w.KP_BLOCKLEN) == block * 8
    assert csp.get_key_param(key, w.KP_IV) == bytes(block) == state.register
    assert csp.get_key_param(key, w.KP_MODE) == (0 if alg == w.CALG_RC4 else w.CRYPT_MODE_CBC)
    assert csp.get_key_param(csp.gen_key(prov, alg, flags | w.CRYPT_EXPORTABLE), w.KP_PERMISSIONS) == 0x3F


def test_gen_key_material_is_random(csp: BuiltinCsp, prov: int) -> None:
    """Two generated keys differ (os.urandom)."""
    first, second = (csp.inspect(csp.gen_key(prov, w.CALG_AES_256)).key for _ in range(2))
    assert first != second


# --- CryptImportKey ----------------------------------------------------------------------------------------


def test_import_header_checks_in_order(csp: BuiltinCsp, prov: int) -> None:
    """Short NTE_BAD_DATA; bVersion NTE_BAD_VER; reserved NTE_BAD_DATA; type NTE_BAD_TYPE; hPubKey
    ERROR_INVALID_PARAMETER; algorithm NTE_BAD_ALGID; each before the next."""
    good = plaintext_blob(w.CALG_AES_128, KEY16)
    assert code(csp.import_key, prov, good[:7]) == w.NTE_BAD_DATA
    assert code(csp.import_key, prov, b"") == w.NTE_BAD_DATA
    bad_version = good[:1] + b"\x03" + good[2:]
    assert code(csp.import_key, prov, bad_version) == w.NTE_BAD_VER
    assert code(csp.import_key, prov, b"\x01\x03" + good[2:]) == w.NTE_BAD_VER  # version before type
    bad_reserved = good[:2] + b"\x01\x00" + good[4:]
    assert code(csp.import_key, prov, bad_reserved) == w.NTE_BAD_DATA
    for blob_type in (w.SIMPLEBLOB, w.PUBLICKEYBLOB, w.KEYSTATEBLOB, 0xFF):
        assert code(csp.import_key, prov, bytes([blob_type]) + good[1:], pub_key=7) == w.NTE_BAD_TYPE
    assert code(csp.import_key, prov, good, pub_key=7) == w.ERROR_INVALID_PARAMETER
    aes = plaintext_blob(w.CALG_AES, KEY16)
    assert code(csp.import_key, prov, aes, pub_key=7) == w.ERROR_INVALID_PARAMETER
    assert code(csp.import_key, prov, aes) == w.NTE_BAD_ALGID
    assert code(csp.import_key, prov, aes, flags=0x8) == w.NTE_BAD_FLAGS  # flags come before the algorithm
    assert code(csp.import_key, prov, "not bytes") == w.ERROR_INVALID_PARAMETER


def test_import_plaintext_rules(csp: BuiltinCsp, prov: int) -> None:
    """Flags NTE_BAD_FLAGS; body shorter, longer or missing NTE_BAD_DATA; DES only at full size; hardware RC2
    NTE_BAD_ALGID."""
    assert code(imp, csp, prov, w.CALG_AES_128, KEY16, flags=0x2) == w.NTE_BAD_FLAGS
    assert code(imp, csp, prov, w.CALG_AES_128, KEY16, flags=w.CRYPT_DESTROYKEY) == w.NTE_BAD_FLAGS
    blob = plaintext_blob(w.CALG_AES_128, KEY16)
    assert code(csp.import_key, prov, blob[:11]) == w.NTE_BAD_DATA
    assert code(csp.import_key, prov, blob[:-1]) == w.NTE_BAD_DATA
    assert code(csp.import_key, prov, blob + b"\x00") == w.NTE_BAD_DATA
    assert code(csp.import_key, prov, plaintext_blob(w.CALG_AES_128, KEY16, length=15)) == w.NTE_BAD_DATA
    assert code(imp, csp, prov, w.CALG_AES_128, KEY16[:15]) == w.NTE_BAD_DATA
    assert code(imp, csp, prov, w.CALG_DES, KEY16[:7]) == w.NTE_BAD_DATA
    assert code(imp, csp, prov, w.CALG_3DES, KEY16) == w.NTE_BAD_DATA
    assert code(imp, csp, prov, w.CALG_RC2, bytes(4)) == w.NTE_BAD_DATA
    assert code(imp, csp, prov, w.CALG_RC4, bytes(17)) == w.NTE_BAD_DATA
    assert code(imp, csp, prov, w.CALG_AES_128, bytes(17), flags=w.CRYPT_IPSEC_HMAC_KEY) == w.NTE_BAD_DATA
    assert code(imp, csp, prov, w.CALG_RC2, KEY16, hardware=True) == w.NTE_BAD_ALGID
    assert code(imp, csp, prov, w.CALG_RC2, bytes(3), hardware=True) == w.NTE_BAD_DATA  # length first


def test_plaintext_import_gives_a_fresh_state(csp: BuiltinCsp, prov: int) -> None:
    """A PLAINTEXTKEYBLOB round trip loses the running state: defaults, IMPORTED, EXPORT only if exportable."""
    key = imp(csp, prov, w.CALG_RC2, KEY16[:5])
    csp.set_key_param(key, w.KP_MODE, w.CRYPT_MODE_CFB)
    csp.set_key_param(key, w.KP_SALT, b"salty-salt!")
    csp.set_key_param(key, w.KP_EFFECTIVE_KEYLEN, 128)
    csp.set_key_param(key, w.KP_IV, bytes(range(8)))
    csp.encrypt(key, bytes(16), False)
    blob = csp.export_key(key, w.PLAINTEXTKEYBLOB)
    assert blob == plaintext_blob(w.CALG_RC2, KEY16[:5])
    fresh = csp.import_key(prov, blob)
    state = csp.inspect(fresh)
    assert state.lifecycle is Lifecycle.IMPORTED
    assert (state.mode, state.iv, state.register, state.salt) == (w.CRYPT_MODE_CBC, bytes(8), bytes(8), bytes(11))
    assert (state.effective_keylen, state.permissions, state.key) == (40, 0x3B, KEY16[:5])
    assert code(csp.export_key, fresh, w.PLAINTEXTKEYBLOB) == w.NTE_BAD_KEY_STATE
    no_salt = imp(csp, prov, w.CALG_RC4, KEY16[:5], flags=w.CRYPT_NO_SALT)
    assert csp.get_key_param(no_salt, w.KP_SALT) == b""


def test_ipsec_hmac_keys(csp: BuiltinCsp, prov: int) -> None:
    """CRYPT_IPSEC_HMAC_KEY lifts RC2/RC4 lengths; a length the cipher does not take (1-4 or more than 16
    bytes) serves HMAC only (RFC 2202)."""
    key80 = b"\xaa" * 80
    mac = imp(csp, prov, w.CALG_RC2, key80, flags=w.CRYPT_IPSEC_HMAC_KEY)
    message = b"Test Using Larger Than Block-Size Key - Hash Key First"
    assert csp.hmac(mac, w.CALG_SHA1, message).hex() == "aa4ae5e15272d00e95705637ce8a3b55ed402112"
    assert csp.hmac(mac, w.CALG_MD5, message) == hmac.new(key80, message, hashlib.md5).digest()
    assert csp.inspect(mac).hmac_only
    assert code(csp.encrypt, mac, bytes(8), False) == w.NTE_BAD_KEY
    assert code(csp.decrypt, mac, bytes(8), True) == w.NTE_BAD_KEY
    jefe = imp(csp, prov, w.CALG_RC4, b"Jefe", flags=w.CRYPT_IPSEC_HMAC_KEY)
    digest = csp.hmac(jefe, w.CALG_SHA1, b"what do ya want for nothing?")
    assert digest.hex() == "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
    assert csp.inspect(jefe).hmac_only  # 4 bytes is shorter than any RC4 cipher key: a MAC key only
    assert code(csp.encrypt, jefe, b"abc", False) == w.NTE_BAD_KEY
    moved = csp.import_key(prov, csp.export_key(mac, w.OPAQUEKEYBLOB))
    assert csp.hmac(moved, w.CALG_SHA1, message) == csp.hmac(mac, w.CALG_SHA1, message)
    assert code(imp, csp, prov, w.CALG_RC2, b"", flags=w.CRYPT_IPSEC_HMAC_KEY) == w.NTE_BAD_DATA
    assert code(imp, csp, prov, w.CALG_RC2, bytes(65537), flags=w.CRYPT_IPSEC_HMAC_KEY) == w.NTE_BAD_DATA


def test_hmac_rules(csp: BuiltinCsp, prov: int) -> None:
    """Unknown hash NTE_BAD_ALGID; hardware NTE_BAD_KEY_STATE; the key bytes (not the salt) key it; the cipher
    state is untouched."""
    key = imp(csp, prov, w.CALG_RC4, KEY16[:5])
    assert code(csp.hmac, key, w.CALG_MAC, b"x") == w.NTE_BAD_ALGID
    assert code(csp.hmac, key, w.CALG_SHA1 + 0x100000000, b"x") == w.NTE_BAD_ALGID
    csp.encrypt(key, b"abc", False)
    before = csp.inspect(key)
    assert csp.hmac(key, w.CALG_SHA_256, b"x") == hmac.new(KEY16[:5], b"x", hashlib.sha256).digest()
    assert csp.inspect(key) == before
    hard = csp.gen_key(prov, w.CALG_AES_128, hardware=True)
    assert code(csp.hmac, hard, w.CALG_MAC, b"x") == w.NTE_BAD_ALGID  # the hash first
    assert code(csp.hmac, hard, w.CALG_SHA1, b"x") == w.NTE_BAD_KEY_STATE


# --- CryptExportKey ----------------------------------------------------------------------------------------


def test_export_checks_in_order(csp: BuiltinCsp, prov: int) -> None:
    """Flags NTE_BAD_FLAGS; type NTE_BAD_TYPE; hExpKey ERROR_INVALID_PARAMETER; plaintext of a non-exportable
    key NTE_BAD_KEY_STATE (opaque needs no CRYPT_EXPORT); a refused export leaves the lifecycle alone."""
    key = imp(csp, prov, w.CALG_AES_128, KEY16, flags=0)
    assert code(csp.export_key, key, w.SIMPLEBLOB, exp_key=5, flags=0x1) == w.NTE_BAD_FLAGS
    assert code(csp.export_key, key, w.SIMPLEBLOB, exp_key=5) == w.NTE_BAD_TYPE
    assert code(csp.export_key, key, w.KEYSTATEBLOB) == w.NTE_BAD_TYPE
    assert code(csp.export_key, key, w.PLAINTEXTKEYBLOB, exp_key=5) == w.ERROR_INVALID_PARAMETER
    assert code(csp.export_key, key, w.OPAQUEKEYBLOB, exp_key=5) == w.ERROR_INVALID_PARAMETER
    assert code(csp.export_key, key, w.PLAINTEXTKEYBLOB) == w.NTE_BAD_KEY_STATE
    assert csp.inspect(key).lifecycle is Lifecycle.IMPORTED
    assert csp.export_key(key, w.OPAQUEKEYBLOB)[:8] == bytes([9, 2, 0, 0]) + w.CALG_AES_128.to_bytes(4, "little")
    assert csp.inspect(key).lifecycle is Lifecycle.EXPORTED


def test_export_never_disturbs_and_destroykey_ends(csp: BuiltinCsp, prov: int) -> None:
    """Export leaves the state as it was (lifecycle EXPORTED); CRYPT_DESTROYKEY ends the key after exporting."""
    key = csp.gen_key(prov, w.CALG_AES_192, w.CRYPT_EXPORTABLE)
    csp.encrypt(key, bytes(32), False)
    before = csp.inspect(key)
    csp.export_key(key, w.PLAINTEXTKEYBLOB)
    csp.export_key(key, w.OPAQUEKEYBLOB)
    assert csp.inspect(key) == attrs.evolve(before, lifecycle=Lifecycle.EXPORTED)
    blob = csp.export_key(key, w.OPAQUEKEYBLOB, flags=w.CRYPT_DESTROYKEY)
    assert csp.inspect(key).lifecycle is Lifecycle.DESTROYED
    assert code(csp.encrypt, key, b"", False) == w.NTE_BAD_KEY
    assert csp.inspect(csp.import_key(prov, blob)) == attrs.evolve(before, lifecycle=Lifecycle.IMPORTED)


# --- CryptSetKeyParam / CryptGetKeyParam -------------------------------------------------------------------


def test_set_key_param_refusals(csp: BuiltinCsp, prov: int) -> None:
    """Read-only or unknown NTE_BAD_TYPE; wrong type ERROR_INVALID_PARAMETER; then each parameter's rule."""
    key = imp(csp, prov, w.CALG_AES_128, KEY16)
    rc2 = imp(csp, prov, w.CALG_RC2, KEY16)
    for param in (w.KP_KEYLEN, w.KP_ALGID, w.KP_BLOCKLEN, 99):
        assert code(csp.set_key_param, key, param, b"x") == w.NTE_BAD_TYPE
    assert code(csp.set_key_param, key, w.KP_IV, 5) == w.ERROR_INVALID_PARAMETER
    assert code(csp.set_key_param, key, w.KP_MODE, b"\x01") == w.ERROR_INVALID_PARAMETER
    assert code(csp.set_key_param, key, w.KP_EFFECTIVE_KEYLEN, b"\x01") == w.ERROR_INVALID_PARAMETER
    assert code(csp.set_key_param, key, w.KP_MODE, -1) == w.ERROR_INVALID_PARAMETER
    assert code(csp.set_key_param, key, w.KP_IV, bytes(8)) == w.ERROR_INVALID_PARAMETER
    assert code(csp.set_key_param, key, w.KP_SALT, b"") == w.NTE_BAD_KEY
    assert code(csp.set_key_param, key, w.KP_SALT_EX, b"") == w.NTE_BAD_KEY
    for size in (0, 10, 12, 25):  # KP_SALT takes exactly 11 bytes
        assert code(csp.set_key_param, rc2, w.KP_SALT, bytes(size)) == w.ERROR_INVALID_PARAMETER
    assert code(csp.set_key_param, key, w.KP_SALT, bytes(10)) == w.NTE_BAD_KEY  # the algorithm first
    assert code(csp.set_key_param, rc2, w.KP_SALT_EX, bytes(25)) == w.NTE_BAD_DATA
    assert code(csp.set_key_param, key, w.KP_PADDING, w.ZERO_PADDING) == w.NTE_BAD_DATA
    assert code(csp.set_key_param, key, w.KP_EFFECTIVE_KEYLEN, 128) == w.NTE_BAD_TYPE
    assert code(csp.set_key_param, rc2, w.KP_EFFECTIVE_KEYLEN, 0) == w.NTE_BAD_DATA
    assert code(csp.set_key_param, rc2, w.KP_EFFECTIVE_KEYLEN, 1025) == w.NTE_BAD_DATA
    csp.set_key_param(rc2, w.KP_SALT_EX, bytes(24))
    csp.set_key_param(rc2, w.KP_EFFECTIVE_KEYLEN, 1024)
    assert csp.get_key_param(rc2, w.KP_SALT) == bytes(24)
    assert code(csp.get_key_param, key, 99) == w.NTE_BAD_TYPE
    assert code(csp.get_key_param, key, w.KP_SALT_EX) == w.NTE_BAD_TYPE
    assert csp.get_key_param(key, w.KP_SALT) == b""  # a block-cipher key has an empty salt (native)


SALT11 = bytes(range(0x51, 0x5C))


def rc2_cbc(key: bytes, iv: bytes, data: bytes) -> bytes:
    """RC2-CBC at effective length 128 (the only one cryptography's RC2 has) over a 16-byte key."""
    ctx = Cipher(RC2(key), modes.CBC(iv)).encryptor()
    return ctx.update(data) + ctx.finalize()


@pytest.mark.parametrize("alg", [w.CALG_RC2, w.CALG_RC4])
def test_kp_salt_keys_the_cipher_but_reads_back_empty(csp: BuiltinCsp, prov: int, alg: int) -> None:
    """KP_SALT (11 bytes) and KP_SALT_EX of the same bytes give the same ciphertext, key || salt; KP_SALT then
    reports an empty salt, KP_SALT_EX the salt. KP_SALT_EX after KP_SALT is reported again."""
    iv = bytes(range(8))
    keys = {}
    for param in (w.KP_SALT, w.KP_SALT_EX):
        keys[param] = imp(csp, prov, alg, KEY16[:5])  # 40 bits: a default salt of 11 zero bytes, reported
        assert csp.get_key_param(keys[param], w.KP_SALT) == bytes(11)
        if alg == w.CALG_RC2:
            csp.set_key_param(keys[param], w.KP_EFFECTIVE_KEYLEN, 128)
            csp.set_key_param(keys[param], w.KP_IV, iv)
        csp.set_key_param(keys[param], param, SALT11)
    expected = (
        rc2_cbc(KEY16[:5] + SALT11, iv, bytes(16)) if alg == w.CALG_RC2 else rc4_keystream(KEY16[:5] + SALT11, 16)
    )
    assert csp.encrypt(keys[w.KP_SALT], bytes(16), False) == expected
    assert csp.encrypt(keys[w.KP_SALT_EX], bytes(16), False) == expected
    assert csp.get_key_param(keys[w.KP_SALT], w.KP_SALT) == b""
    assert csp.get_key_param(keys[w.KP_SALT_EX], w.KP_SALT) == SALT11
    state = csp.inspect(keys[w.KP_SALT])
    assert (state.salt, state.salt_reported) == (SALT11, False)
    csp.set_key_param(keys[w.KP_SALT], w.KP_SALT_EX, SALT11)
    assert csp.get_key_param(keys[w.KP_SALT], w.KP_SALT) == SALT11
    assert csp.inspect(keys[w.KP_SALT]).salt_reported


def test_kp_salt_keeps_keying_across_resets(csp: BuiltinCsp, prov: int) -> None:
    """Our decision: the KP_SALT salt goes on keying the cipher, unreported, after KP_IV, KP_EFFECTIVE_KEYLEN and
    Final; a duplicate carries it."""
    iv = bytes(range(8))
    key = imp(csp, prov, w.CALG_RC2, KEY16[:5])
    csp.set_key_param(key, w.KP_EFFECTIVE_KEYLEN, 128)
    csp.set_key_param(key, w.KP_IV, iv)
    csp.set_key_param(key, w.KP_SALT, SALT11)
    first = rc2_cbc(KEY16[:5] + SALT11, iv, bytes(16))
    assert csp.encrypt(key, bytes(16), False) == first
    for param, value in ((w.KP_IV, iv), (w.KP_EFFECTIVE_KEYLEN, 128)):
        csp.set_key_param(key, param, value)
        assert csp.encrypt(key, bytes(16), False) == first
        assert csp.get_key_param(key, w.KP_SALT) == b""
    csp.encrypt(key, b"", True)
    assert csp.encrypt(key, bytes(16), False) == first
    twin = csp.duplicate_key(key)
    assert csp.get_key_param(twin, w.KP_SALT) == b""
    csp.set_key_param(twin, w.KP_IV, iv)
    assert csp.encrypt(twin, bytes(16), False) == first


@pytest.mark.parametrize("spec", ["builtin", "builtin-processes"])
@pytest.mark.parametrize("alg", [w.CALG_RC2, w.CALG_RC4])
def test_kp_salt_survives_the_opaque_handoff(tmp_path: Path, spec: str, alg: int) -> None:
    """Through both built-in targets: the opaque blob of a key salted by KP_SALT imports (in the app context,
    another process for builtin-processes) with the salt keying the cipher and still unreported; its
    PLAINTEXTKEYBLOB imports fresh, the default salt reported."""
    target = load(spec, home=tmp_path / "home")
    try:
        secure, app = target.acquire("secure"), target.acquire("app")
        key = target.import_key(secure, plaintext_blob(alg, KEY16[:5]), flags=w.CRYPT_EXPORTABLE)
        target.set_key_param(key, w.KP_SALT, SALT11)
        target.encrypt(key, bytes(8), False)
        twin = target.duplicate_key(key)
        before = target.inspect(key)
        blob = target.export_key(key, w.OPAQUEKEYBLOB)
        target.destroy_key(key)
        moved = target.import_key(app, blob)
        assert target.inspect(moved) == attrs.evolve(before, lifecycle=Lifecycle.IMPORTED)
        assert (before.salt, before.salt_reported) == (SALT11, False)
        assert target.get_key_param(moved, w.KP_SALT) == b""
        assert target.encrypt(moved, bytes(16), False) == target.encrypt(twin, bytes(16), False)
        fresh = target.import_key(app, target.export_key(twin, w.PLAINTEXTKEYBLOB))
        assert target.get_key_param(fresh, w.KP_SALT) == bytes(11)
        assert target.inspect(fresh).salt_reported
    finally:
        target.close()


def test_permissions(csp: BuiltinCsp, prov: int) -> None:
    """Adding CRYPT_EXPORT NTE_BAD_DATA; clearing it succeeds and changes nothing; other bits stored; no bit is
    checked by encrypt, decrypt or HMAC; the opaque import keeps the blob's permissions whatever the flags."""
    locked = imp(csp, prov, w.CALG_AES_128, KEY16, flags=0)
    assert code(csp.set_key_param, locked, w.KP_PERMISSIONS, 0x3F) == w.NTE_BAD_DATA
    open_key = imp(csp, prov, w.CALG_AES_128, KEY16)
    csp.set_key_param(open_key, w.KP_PERMISSIONS, 0)
    assert csp.get_key_param(open_key, w.KP_PERMISSIONS) == w.CRYPT_EXPORT
    csp.set_key_param(locked, w.KP_PERMISSIONS, 0x100)
    assert csp.get_key_param(locked, w.KP_PERMISSIONS) == 0x100
    assert csp.encrypt(locked, bytes(16), False) == aes(modes.CBC(bytes(16)), bytes(16))
    assert len(csp.hmac(locked, w.CALG_SHA1, b"")) == 20
    moved = csp.import_key(prov, csp.export_key(locked, w.OPAQUEKEYBLOB), flags=w.CRYPT_EXPORTABLE)
    assert csp.get_key_param(moved, w.KP_PERMISSIONS) == 0x100
    assert code(csp.export_key, moved, w.PLAINTEXTKEYBLOB) == w.NTE_BAD_KEY_STATE


# --- encrypt / decrypt -------------------------------------------------------------------------------------


def test_length_rules_leave_the_state_untouched(csp: BuiltinCsp, prov: int) -> None:
    """Non-final ragged NTE_BAD_DATA; Final decrypt of nothing NTE_BAD_LEN (RC4 too); Final decrypt ragged
    NTE_BAD_DATA; none moves the register."""
    key = imp(csp, prov, w.CALG_AES_128, KEY16)
    csp.encrypt(key, bytes(16), False)
    before = csp.inspect(key)
    assert code(csp.encrypt, key, bytes(15), False) == w.NTE_BAD_DATA
    assert code(csp.decrypt, key, bytes(17), False) == w.NTE_BAD_DATA
    assert code(csp.decrypt, key, b"", True) == w.NTE_BAD_LEN
    assert code(csp.decrypt, key, bytes(20), True) == w.NTE_BAD_DATA
    csp.set_key_param(key, w.KP_MODE, w.CRYPT_MODE_CFB)
    assert code(csp.encrypt, key, bytes(3), False) == w.NTE_BAD_DATA  # CFB too: the block length rules
    csp.set_key_param(key, w.KP_MODE, w.CRYPT_MODE_OFB)
    assert code(csp.encrypt, key, bytes(16), False) == w.NTE_BAD_ALGID
    assert code(csp.decrypt, key, bytes(16), True) == w.NTE_BAD_ALGID
    assert code(csp.encrypt, key, bytes(3), False) == w.NTE_BAD_DATA  # length before mode
    csp.set_key_param(key, w.KP_MODE, w.CRYPT_MODE_CBC)
    assert csp.inspect(key) == before
    rc4 = imp(csp, prov, w.CALG_RC4, KEY16)
    assert code(csp.decrypt, rc4, b"", True) == w.NTE_BAD_LEN
    assert csp.decrypt(rc4, b"", False) == b""
    assert len(csp.encrypt(rc4, bytes(3), False)) == 3  # no padding, no length rule


def test_padding_and_final(csp: BuiltinCsp, prov: int) -> None:
    """Final encrypt pads a whole block when aligned (CFB too); a bad pad is NTE_BAD_DATA and resets the key."""
    key = imp(csp, prov, w.CALG_AES_128, KEY16)
    out = csp.encrypt(key, bytes(16), True)
    assert out == aes(modes.CBC(bytes(16)), bytes(16) + bytes([16]) * 16)
    assert csp.encrypt(key, b"", True) == aes(modes.CBC(bytes(16)), bytes([16]) * 16)
    assert csp.decrypt(key, out, True) == bytes(16)
    csp.set_key_param(key, w.KP_MODE, w.CRYPT_MODE_CFB)
    cfb = csp.encrypt(key, b"abc", True)
    assert cfb == aes(CFB8(bytes(16)), b"abc" + bytes([13]) * 13)
    csp.set_key_param(key, w.KP_MODE, w.CRYPT_MODE_CBC)
    csp.encrypt(key, bytes(32), False)
    bad = aes(modes.CBC(bytes(16)), bytes(15) + b"\x11")
    assert code(csp.decrypt, key, bad, True) == w.NTE_BAD_DATA
    assert csp.inspect(key).register == bytes(16)  # reset
    zero = aes(modes.CBC(bytes(16)), bytes(16))
    assert code(csp.decrypt, key, zero, True) == w.NTE_BAD_DATA


def test_resets(csp: BuiltinCsp, prov: int) -> None:
    """Final, KP_IV, KP_SALT and KP_EFFECTIVE_KEYLEN reset; KP_MODE, KP_MODE_BITS, KP_PERMISSIONS and export do
    not; RC4's Final restarts the stream."""
    key = imp(csp, prov, w.CALG_AES_128, KEY16)
    csp.set_key_param(key, w.KP_IV, AES_IV)
    first = csp.encrypt(key, bytes(16), False)
    for param, value in ((w.KP_MODE, w.CRYPT_MODE_CBC), (w.KP_MODE_BITS, 64), (w.KP_PERMISSIONS, 0x3F)):
        csp.set_key_param(key, param, value)
        assert csp.inspect(key).register == first
    csp.export_key(key, w.OPAQUEKEYBLOB)
    assert csp.inspect(key).register == first
    assert csp.get_key_param(key, w.KP_IV) == AES_IV  # the IV as set, not the register
    csp.set_key_param(key, w.KP_IV, AES_IV)
    assert csp.encrypt(key, bytes(16), False) == first
    csp.encrypt(key, bytes(16), True)
    assert csp.encrypt(key, bytes(16), False) == first
    rc4 = imp(csp, prov, w.CALG_RC4, KEY16)
    stream = csp.encrypt(rc4, bytes(10), False)
    assert csp.inspect(rc4).stream_pos == 10
    csp.encrypt(rc4, bytes(5), True)
    assert csp.inspect(rc4).stream_pos == 0
    assert csp.encrypt(rc4, bytes(10), False) == stream
    csp.set_key_param(rc4, w.KP_IV, b"")
    assert csp.encrypt(rc4, bytes(10), False) == stream
    csp.set_key_param(rc4, w.KP_SALT_EX, b"\x01")
    assert csp.encrypt(rc4, bytes(10), False) == rc4_keystream(KEY16 + b"\x01", 10)
    csp.set_key_param(rc4, w.KP_SALT, bytes(range(11)))
    assert csp.encrypt(rc4, bytes(10), False) == rc4_keystream(KEY16 + bytes(range(11)), 10)
    assert code(csp.set_key_param, rc4, w.KP_IV, bytes(8)) == w.ERROR_INVALID_PARAMETER
    before = csp.inspect(rc4)
    csp.set_key_param(rc4, w.KP_MODE, w.CRYPT_MODE_ECB)  # stored (Wine), ignored by the stream, no reset
    assert csp.get_key_param(rc4, w.KP_MODE) == w.CRYPT_MODE_ECB
    assert csp.inspect(rc4).stream_pos == before.stream_pos
    rc2 = imp(csp, prov, w.CALG_RC2, KEY16)
    one = csp.encrypt(rc2, bytes(8), False)
    csp.encrypt(rc2, bytes(8), False)
    csp.set_key_param(rc2, w.KP_EFFECTIVE_KEYLEN, 128)
    assert csp.encrypt(rc2, bytes(8), False) == one  # same effective length, reset to the IV


def test_shared_register_interleaving(csp: BuiltinCsp, prov: int) -> None:
    """Encrypt and decrypt share one register: CBC continues from the last block produced or consumed, CFB-8
    from the last ciphertext bytes, whichever direction moved it."""
    p1, p2, c_other = b"A" * 16, b"B" * 16, bytes(range(16, 32))
    key = imp(csp, prov, w.CALG_AES_128, KEY16)
    c1 = csp.encrypt(key, p1, False)
    d = csp.decrypt(key, c_other, False)
    assert d == aes(modes.CBC(c1), c_other, decrypt=True)
    assert csp.encrypt(key, p2, False) == aes(modes.CBC(c_other), p2)
    cfb = imp(csp, prov, w.CALG_AES_128, KEY16)
    csp.set_key_param(cfb, w.KP_MODE, w.CRYPT_MODE_CFB)
    c1 = csp.encrypt(cfb, p1, False)
    assert csp.decrypt(cfb, c_other, False) == aes(CFB8(c1), c_other, decrypt=True)
    csp.set_key_param(cfb, w.KP_MODE, w.CRYPT_MODE_ECB)  # ECB leaves the register alone
    assert csp.encrypt(cfb, p2, False) == aes(modes.ECB(), p2)
    csp.set_key_param(cfb, w.KP_MODE, w.CRYPT_MODE_CBC)  # a mode change keeps the register
    assert csp.encrypt(cfb, p2, False) == aes(modes.CBC(c_other), p2)


def test_duplicate_is_an_independent_copy(csp: BuiltinCsp, prov: int) -> None:
    """CryptDuplicateKey copies the whole state (register, stream position) into an independent CREATED key."""
    for alg, data in ((w.CALG_AES_128, bytes(32)), (w.CALG_RC4, bytes(7)), (w.CALG_RC2, bytes(16))):
        key = imp(csp, prov, alg, KEY16)
        csp.encrypt(key, data, False)
        twin = csp.duplicate_key(key)
        assert csp.inspect(twin) == attrs.evolve(csp.inspect(key), lifecycle=Lifecycle.CREATED)
        ahead = csp.encrypt(key, data, False)
        assert csp.encrypt(twin, data, False) == ahead
        csp.destroy_key(key)
        triplet = csp.duplicate_key(twin)
        assert csp.encrypt(twin, data, False) == csp.encrypt(triplet, data, False)


# --- the handoff -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", [w.CALG_AES_128, w.CALG_DES, w.CALG_3DES_112, w.CALG_3DES, w.CALG_RC2, w.CALG_RC4])
def test_opaque_import_gives_exactly_the_exported_state(csp: BuiltinCsp, prov: int, app: int, alg: int) -> None:
    """inspect() after the opaque handoff equals inspect() at export, lifecycle aside, and the stream continues."""
    key = csp.gen_key(prov, alg, w.CRYPT_EXPORTABLE | ((40 << 16) if alg in (w.CALG_RC2, w.CALG_RC4) else 0))
    if alg == w.CALG_RC2:
        csp.set_key_param(key, w.KP_EFFECTIVE_KEYLEN, 77)
        csp.set_key_param(key, w.KP_SALT_EX, b"pepper")
    if alg != w.CALG_RC4:
        block = 16 if alg == w.CALG_AES_128 else 8
        csp.set_key_param(key, w.KP_IV, bytes(range(block)))
        csp.set_key_param(key, w.KP_MODE, w.CRYPT_MODE_CFB)
    csp.set_key_param(key, w.KP_MODE_BITS, 33)
    csp.set_key_param(key, w.KP_PERMISSIONS, 0x1FF)
    csp.encrypt(key, bytes(48), False)
    csp.decrypt(key, bytes(range(48)), False)
    before = csp.inspect(key)
    blob = csp.export_key(key, w.OPAQUEKEYBLOB)
    twin = csp.duplicate_key(key)
    csp.destroy_key(key)
    moved = csp.import_key(app, blob)
    assert csp.inspect(moved) == attrs.evolve(before, lifecycle=Lifecycle.IMPORTED)
    assert csp.encrypt(moved, bytes(48), False) == csp.encrypt(twin, bytes(48), False)
    again = csp.import_key(app, blob)  # the same blob imports again, to the same state
    assert csp.inspect(again) == attrs.evolve(before, lifecycle=Lifecycle.IMPORTED)


def test_lifecycle_values(csp: BuiltinCsp, prov: int, app: int) -> None:
    """CREATED, EXPORTED, IMPORTED while alive; DESTROYED or HARDWARE_PINNED at the end, with key and salt empty."""
    key = csp.gen_key(prov, w.CALG_RC4, 40 << 16)
    assert csp.inspect(key).lifecycle is Lifecycle.CREATED
    blob = csp.export_key(key, w.OPAQUEKEYBLOB)
    assert csp.inspect(key).lifecycle is Lifecycle.EXPORTED
    csp.encrypt(key, bytes(9), False)
    final = csp.inspect(key)
    csp.destroy_key(key)
    dead = csp.inspect(key)
    assert dead == attrs.evolve(final, lifecycle=Lifecycle.DESTROYED, key=b"", salt=b"")
    moved = csp.import_key(app, blob)
    assert csp.inspect(moved).lifecycle is Lifecycle.IMPORTED
    csp.export_key(moved, w.OPAQUEKEYBLOB)
    assert csp.inspect(moved).lifecycle is Lifecycle.EXPORTED
    assert csp.inspect(csp.duplicate_key(moved)).lifecycle is Lifecycle.CREATED
    csp.release(app)
    assert csp.inspect(moved).lifecycle is Lifecycle.DESTROYED


# --- hardware keys -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [w.CRYPT_MODE_CBC, w.CRYPT_MODE_ECB, w.CRYPT_MODE_CFB])
@pytest.mark.parametrize("alg", [w.CALG_AES_256, w.CALG_DES, w.CALG_3DES_112])
def test_hardware_key_runs_like_software(csp: BuiltinCsp, prov: int, alg: int, mode: int) -> None:
    """A key pinned in the token gives the bytes the same key gives in software, in every mode and direction."""
    material = bytes(range(1, 33))[: {w.CALG_AES_256: 32, w.CALG_DES: 8, w.CALG_3DES_112: 16}[alg]]
    hard = imp(csp, prov, alg, material, hardware=True)
    soft = imp(csp, prov, alg, material)
    state = csp.inspect(hard)
    assert (state.location, state.key, state.key_bits) == (Location.HARDWARE, b"", len(material) * 8)
    for key in (hard, soft):
        csp.set_key_param(key, w.KP_MODE, mode)
    data = bytes(range(64))
    for decrypt, final in ((False, False), (True, False), (False, True), (True, False), (False, False)):
        call = csp.decrypt if decrypt else csp.encrypt
        piece = data if not decrypt else csp.encrypt(csp.duplicate_key(soft), data, False)
        assert call(hard, piece, final) == call(soft, piece, final)
        assert csp.inspect(hard).register == csp.inspect(soft).register


def test_hardware_keys_survive_destroy_and_continue(csp: BuiltinCsp, prov: int, app: int) -> None:
    """Destroy, CRYPT_DESTROYKEY and release keep the token object; the opaque blob holds a reference and the
    imported key continues; deleting the object makes use and import NTE_NOT_FOUND."""
    key = csp.gen_key(prov, w.CALG_AES_128, hardware=True)
    objects = dict(csp.token_objects())
    assert list(objects.values()) == [w.CALG_AES_128]
    twin = csp.duplicate_key(key)
    csp.encrypt(key, bytes(32), False)
    before = csp.inspect(key)
    blob = csp.export_key(key, w.OPAQUEKEYBLOB)
    assert code(csp.export_key, key, w.PLAINTEXTKEYBLOB) == w.NTE_BAD_KEY_STATE
    expected = csp.encrypt(csp.duplicate_key(key), bytes(16), False)
    csp.destroy_key(key)
    assert csp.inspect(key).lifecycle is Lifecycle.HARDWARE_PINNED
    assert csp.token_objects() == objects
    assert code(csp.import_key, app, blob, hardware=True) == w.NTE_BAD_FLAGS
    moved = csp.import_key(app, blob)
    assert csp.inspect(moved) == attrs.evolve(before, lifecycle=Lifecycle.IMPORTED)
    assert csp.encrypt(moved, bytes(16), False) == expected
    csp.export_key(moved, w.OPAQUEKEYBLOB, flags=w.CRYPT_DESTROYKEY)
    assert csp.inspect(moved).lifecycle is Lifecycle.HARDWARE_PINNED
    csp.release(prov)
    assert csp.inspect(twin).lifecycle is Lifecycle.HARDWARE_PINNED
    assert csp.token_objects() == objects
    survivor = csp.import_key(app, blob)
    register = csp.inspect(survivor).register
    (obj,) = objects
    csp.delete_token_object(obj)
    assert code(csp.delete_token_object, obj) == w.NTE_NOT_FOUND
    assert code(csp.encrypt, survivor, bytes(16), False) == w.NTE_NOT_FOUND
    assert code(csp.encrypt, survivor, b"", False) == w.NTE_NOT_FOUND
    assert code(csp.decrypt, survivor, bytes(16), True) == w.NTE_NOT_FOUND
    assert csp.inspect(survivor).register == register  # untouched by the refusals
    assert code(csp.import_key, app, blob) == w.NTE_NOT_FOUND
    assert code(csp.gen_key, app, w.CALG_RC4, hardware=True) == w.NTE_BAD_ALGID


def _delete_in_another_process(home: str, obj: int) -> None:
    with Installation(home) as installation:
        installation.token.delete(obj)


@pytest.mark.parametrize("where", ["here", "another process"])
def test_gone_token_object_on_every_path(csp: BuiltinCsp, home: Path, prov: int, where: str) -> None:
    """A hardware key whose token object was deleted (by this CSP, or by another process while this one holds the
    object's material cached): every encrypt/decrypt path is NTE_NOT_FOUND, state untouched, whether the call
    reaches the token (the SQLite token's cipher answers it) or not (the CSP asks Token.exists)."""
    key = csp.gen_key(prov, w.CALG_AES_128, hardware=True)
    csp.encrypt(key, bytes(32), False)  # the token now holds the object's material cached
    (obj,) = csp.token_objects()
    if where == "here":
        csp.delete_token_object(obj)
    else:
        child = multiprocessing.get_context("spawn").Process(target=_delete_in_another_process, args=(str(home), obj))
        child.start()
        child.join(timeout=60)
        assert child.exitcode == 0
    assert_gone_object_is_not_found(csp, key)


def test_token_exists_is_asked_only_when_the_token_is_not_called(
    csp: BuiltinCsp, prov: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a live hardware key, a call that reaches the token costs no exists() round trip; empty non-Final data
    and the refusals ask it (NTE_NOT_FOUND must rank before their own codes)."""
    key = csp.gen_key(prov, w.CALG_AES_128, hardware=True)
    token = csp.csp.token
    asked: list[int] = []
    real = token.exists
    monkeypatch.setattr(token, "exists", lambda obj: asked.append(obj) or real(obj))
    for mode, operation, data, final in HARDWARE_CALL_PATHS:
        csp.set_key_param(key, w.KP_MODE, mode)
        called = bool(data or final) and not (len(data) % 16 and (operation == "decrypt" or not final))
        called = called and mode != w.CRYPT_MODE_OFB and not (operation == "decrypt" and final and not data)
        asked.clear()
        with contextlib.suppress(CryptError):
            getattr(csp, operation)(key, data, final)
        assert len(asked) == (0 if called else 1), (mode, operation, data, final)


def test_hardware_cfb8_decrypt_spans_token_chunks(csp: BuiltinCsp, prov: int) -> None:
    """A long CFB-8 decryption on a hardware key (several batched token calls) equals the software key's."""
    hard = imp(csp, prov, w.CALG_AES_128, KEY16, hardware=True)
    soft = imp(csp, prov, w.CALG_AES_128, KEY16)
    for key in (hard, soft):
        csp.set_key_param(key, w.KP_MODE, w.CRYPT_MODE_CFB)
    data = bytes(range(256)) * 33  # 8448 bytes: more than two 4096-byte batches
    assert csp.decrypt(hard, data, False) == csp.decrypt(soft, data, False) == aes(CFB8(bytes(16)), data, decrypt=True)
    assert csp.inspect(hard).register == csp.inspect(soft).register == data[-16:]


def test_rc4_mode_survives_opaque_round_trip(csp: BuiltinCsp, prov: int) -> None:
    """An RC4 key with KP_MODE set (stored, ignored) exports and imports as an OPAQUEKEYBLOB (regression:
    the post-authentication consistency check refused a nonzero RC4 mode; found by keyhandoff check)."""
    rc4 = imp(csp, prov, w.CALG_RC4, KEY16)
    csp.set_key_param(rc4, w.KP_MODE, w.CRYPT_MODE_CFB)
    moved = csp.import_key(prov, csp.export_key(rc4, w.OPAQUEKEYBLOB))
    assert csp.get_key_param(moved, w.KP_MODE) == w.CRYPT_MODE_CFB
