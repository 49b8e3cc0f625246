"""Hardware-pinned keys: the token object outlives every handle, and its material never leaves."""

from __future__ import annotations

import pytest

from keyhandoff.model import Lifecycle, Location
from keyhandoff.model import wincrypt as w
from tests.strategies import (
    BLOCK,
    KEY_BYTES,
    NATIVE_BLOCK_ALGS,
    assert_refused,
    new_target,
    plaintext_blob,
    ref_crypt,
)

P = bytes(range(64))


def _hw(alg: int = w.CALG_AES_128, flags: int = 0):
    target = new_target()
    secure = target.acquire("secure")
    app = target.acquire("app")
    key = target.gen_key(secure, alg, flags, hardware=True)
    return target, secure, app, key


@pytest.mark.parametrize("alg", NATIVE_BLOCK_ALGS)
def test_hardware_gen(alg: int) -> None:
    """AES, DES and 3DES keys can be generated in the token: one token object, no material in the state."""
    target, _, _, key = _hw(alg)
    state = target.inspect(key)
    assert state.location is Location.HARDWARE
    assert state.key == b""
    assert list(target.token_objects().values()) == [alg]
    assert target.get_key_param(key, w.KP_KEYLEN) == KEY_BYTES[alg] * 8
    size = BLOCK[alg]
    twin = target.duplicate_key(key)
    ciphertext = target.encrypt(key, P[: 2 * size], True)
    assert len(ciphertext) == 3 * size
    assert target.decrypt(twin, ciphertext, True) == P[: 2 * size]


@pytest.mark.parametrize("alg", [w.CALG_RC2, w.CALG_RC4])
def test_rc2_rc4_hardware_is_bad_algid(alg: int) -> None:
    """The token holds no RC2/RC4 keys: gen and PLAINTEXTKEYBLOB import with hardware=True are NTE_BAD_ALGID."""
    target = new_target()
    prov = target.acquire()
    assert_refused(target, w.NTE_BAD_ALGID, target.gen_key, prov, alg, hardware=True)
    blob = plaintext_blob(alg, bytes(range(16)))
    assert_refused(target, w.NTE_BAD_ALGID, target.import_key, prov, blob, hardware=True)
    assert target.token_objects() == {}


@pytest.mark.parametrize("alg", NATIVE_BLOCK_ALGS)
def test_hardware_import_of_known_key_encrypts_like_software(alg: int) -> None:
    """A known key imported into the token encrypts exactly as the cipher says, with b"" in its state."""
    target = new_target()
    prov = target.acquire()
    kb = bytes(range(7, 7 + KEY_BYTES[alg]))
    key = target.import_key(prov, plaintext_blob(alg, kb), hardware=True)
    assert target.inspect(key).key == b""
    assert list(target.token_objects().values()) == [alg]
    size = BLOCK[alg]
    assert (
        target.encrypt(key, P[: 2 * size], False) == ref_crypt(alg, kb, w.CRYPT_MODE_CBC, bytes(size), P[: 2 * size])[0]
    )


def test_destroy_leaves_token_object_and_kills_handle() -> None:
    """CryptDestroyKey of a hardware key releases the handle only; the token object stays."""
    target, _, _, key = _hw()
    objects = dict(target.token_objects())
    target.destroy_key(key)
    assert dict(target.token_objects()) == objects
    assert target.inspect(key).lifecycle is Lifecycle.HARDWARE_PINNED
    assert target.inspect(key).key == b""
    assert_refused(target, w.NTE_BAD_KEY, target.encrypt, key, P[:16], False)
    assert_refused(target, w.NTE_BAD_KEY, target.destroy_key, key)


def test_export_with_destroykey_leaves_token_object() -> None:
    """OPAQUEKEYBLOB export with CRYPT_DESTROYKEY: the handle dies, the token object stays, the blob imports."""
    target, _, app, key = _hw()
    twin = target.duplicate_key(key)
    target.encrypt(key, P[:16], False)
    objects = dict(target.token_objects())
    blob = target.export_key(key, w.OPAQUEKEYBLOB, flags=w.CRYPT_DESTROYKEY)
    assert dict(target.token_objects()) == objects
    assert target.inspect(key).lifecycle is Lifecycle.HARDWARE_PINNED
    assert_refused(target, w.NTE_BAD_KEY, target.encrypt, key, P[:16], False)
    imported = target.import_key(app, blob)
    target.encrypt(twin, P[:16], False)
    assert target.encrypt(imported, P[16:32], False) == target.encrypt(twin, P[16:32], False)


def test_release_keeps_token_object() -> None:
    """CryptReleaseContext pins its hardware keys: handles die, token objects stay."""
    target, secure, _, key = _hw()
    objects = dict(target.token_objects())
    target.release(secure)
    assert dict(target.token_objects()) == objects
    assert target.inspect(key).lifecycle is Lifecycle.HARDWARE_PINNED


@pytest.mark.parametrize("alg", NATIVE_BLOCK_ALGS)
def test_opaque_handoff_of_hardware_key_continues_the_stream(alg: int) -> None:
    """The opaque blob of a hardware key imports after the handle is destroyed and continues its chain."""
    target, _, app, key = _hw(alg)
    size = BLOCK[alg]
    fresh = target.duplicate_key(key)  # still at the IV
    target.set_key_param(key, w.KP_MODE, w.CRYPT_MODE_CFB)
    target.set_key_param(fresh, w.KP_MODE, w.CRYPT_MODE_CFB)
    target.encrypt(key, P[:size], False)
    before = target.duplicate_key(key)  # taken before export: same register, same token object
    blob = target.export_key(key, w.OPAQUEKEYBLOB)
    target.destroy_key(key)
    imported = target.import_key(app, blob)
    state = target.inspect(imported)
    assert state.location is Location.HARDWARE
    assert state.key == b""
    assert state.mode == w.CRYPT_MODE_CFB
    assert state.register == target.inspect(before).register
    cont = target.encrypt(imported, P[size : 3 * size], False)
    assert cont == target.encrypt(before, P[size : 3 * size], False)
    assert cont != target.encrypt(fresh, P[size : 3 * size], False)  # the chain, not a restart


def test_plaintext_export_of_hardware_key_is_bad_key_state() -> None:
    """PLAINTEXTKEYBLOB export of a hardware key, exportable or not: NTE_BAD_KEY_STATE."""
    target, _, _, key = _hw(flags=w.CRYPT_EXPORTABLE)
    assert target.get_key_param(key, w.KP_PERMISSIONS) & w.CRYPT_EXPORT
    assert_refused(target, w.NTE_BAD_KEY_STATE, target.export_key, key, w.PLAINTEXTKEYBLOB)
    assert_refused(target, w.NTE_BAD_KEY_STATE, target.export_key, key, w.PLAINTEXTKEYBLOB, flags=w.CRYPT_DESTROYKEY)
    imported = target.import_key(target.acquire("app"), target.export_key(key, w.OPAQUEKEYBLOB))
    assert_refused(target, w.NTE_BAD_KEY_STATE, target.export_key, imported, w.PLAINTEXTKEYBLOB)


def test_deleted_token_object_blob_is_not_found() -> None:
    """After delete_token_object, importing the key's opaque blob is NTE_NOT_FOUND."""
    target, _, app, key = _hw()
    blob = target.export_key(key, w.OPAQUEKEYBLOB, flags=w.CRYPT_DESTROYKEY)
    (obj,) = target.token_objects()
    target.delete_token_object(obj)
    assert target.token_objects() == {}
    assert_refused(target, w.NTE_NOT_FOUND, target.import_key, app, blob)


def test_deleting_an_unknown_token_object_is_not_found() -> None:
    """delete_token_object of an object that does not exist (or no longer does): NTE_NOT_FOUND."""
    target, _, _, _ = _hw()
    (obj,) = target.token_objects()
    assert_refused(target, w.NTE_NOT_FOUND, target.delete_token_object, obj + 100)
    target.delete_token_object(obj)
    assert_refused(target, w.NTE_NOT_FOUND, target.delete_token_object, obj)


def test_live_handle_on_deleted_token_object_is_refused_not_a_crash() -> None:
    """A live handle whose token object was deleted is refused with NTE_NOT_FOUND at use, never a crash."""
    target, _, _, key = _hw()
    (obj,) = target.token_objects()
    target.delete_token_object(obj)
    assert_refused(target, w.NTE_NOT_FOUND, target.encrypt, key, P[:16], False)
    assert_refused(target, w.NTE_NOT_FOUND, target.decrypt, key, P[:16], True)
    target.destroy_key(key)  # the handle itself can still be released


def test_inspect_hides_hardware_material_everywhere() -> None:
    """inspect() shows key == b"" for generated, duplicated, imported and destroyed hardware keys."""
    target, _, app, key = _hw()
    twin = target.duplicate_key(key)
    imported = target.import_key(app, target.export_key(key, w.OPAQUEKEYBLOB))
    target.destroy_key(key)
    for handle in (key, twin, imported):
        assert target.inspect(handle).key == b""
        assert target.inspect(handle).location is Location.HARDWARE


def test_hmac_on_hardware_key_is_bad_key_state() -> None:
    """HMAC with a hardware key is NTE_BAD_KEY_STATE (the token runs the block cipher only)."""
    target, _, _, key = _hw()
    assert_refused(target, w.NTE_BAD_KEY_STATE, target.hmac, key, w.CALG_SHA1, b"data")


def test_capabilities_list_hardware_algorithms() -> None:
    """The model target advertises exactly the AES and DES families for hardware."""
    caps = new_target().capabilities()
    assert caps.hardware
    assert caps.hardware_algorithms == frozenset(NATIVE_BLOCK_ALGS)
