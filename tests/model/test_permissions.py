"""Key permissions: defaults, CRYPT_EXPORT, and what each blob type demands of them."""

from __future__ import annotations

import struct

import pytest

from keyhandoff.model import wincrypt as w
from tests.strategies import (
    ALL_ALGS,
    DEFAULT_PERMISSIONS,
    PERM_EXPORT,
    assert_refused,
    import_plain,
    new_target,
    plaintext_blob,
    ref_crypt,
)

AES = w.CALG_AES_128
K16 = bytes(range(16))


@pytest.mark.parametrize("alg", ALL_ALGS)
def test_default_permissions(alg: int) -> None:
    """A generated key has ENCRYPT|DECRYPT|READ|WRITE|MAC = 0x3B; CRYPT_EXPORTABLE adds CRYPT_EXPORT."""
    target = new_target()
    prov = target.acquire()
    plain = target.gen_key(prov, alg)
    exportable = target.gen_key(prov, alg, w.CRYPT_EXPORTABLE)
    assert target.get_key_param(plain, w.KP_PERMISSIONS) == DEFAULT_PERMISSIONS == 0x3B
    assert target.get_key_param(exportable, w.KP_PERMISSIONS) == DEFAULT_PERMISSIONS | PERM_EXPORT == 0x3F
    assert target.inspect(plain).permissions == 0x3B


@pytest.mark.parametrize("flags", [0, w.CRYPT_EXPORTABLE])
def test_plaintext_import_permissions(flags: int) -> None:
    """A PLAINTEXTKEYBLOB import gets 0x3B, plus CRYPT_EXPORT only with CRYPT_EXPORTABLE."""
    target = new_target()
    prov = target.acquire()
    key = import_plain(target, prov, AES, K16, flags=flags)
    assert target.get_key_param(key, w.KP_PERMISSIONS) == 0x3B | (PERM_EXPORT if flags else 0)


def test_plaintext_export_without_export_permission_is_bad_key_state() -> None:
    """PLAINTEXTKEYBLOB export of a key without CRYPT_EXPORT: NTE_BAD_KEY_STATE."""
    target = new_target()
    prov = target.acquire()
    key = target.gen_key(prov, AES)
    assert_refused(target, w.NTE_BAD_KEY_STATE, target.export_key, key, w.PLAINTEXTKEYBLOB)


def test_plaintext_export_with_export_permission_carries_the_key() -> None:
    """An exportable key exports as BLOBHEADER + u32 length + exactly its key bytes."""
    target = new_target()
    prov = target.acquire()
    key = import_plain(target, prov, AES, K16)
    blob = target.export_key(key, w.PLAINTEXTKEYBLOB)
    assert blob[:8] == struct.pack("<BBHI", w.PLAINTEXTKEYBLOB, 2, 0, AES)
    assert blob[8:12] == struct.pack("<I", 16)
    assert blob[12:] == K16
    assert blob == plaintext_blob(AES, K16)


def test_adding_export_through_kp_permissions_is_bad_data() -> None:
    """KP_PERMISSIONS cannot add CRYPT_EXPORT: NTE_BAD_DATA, and the key still cannot be exported."""
    target = new_target()
    prov = target.acquire()
    key = target.gen_key(prov, AES)
    assert_refused(target, w.NTE_BAD_DATA, target.set_key_param, key, w.KP_PERMISSIONS, 0x3F)
    assert_refused(target, w.NTE_BAD_DATA, target.set_key_param, key, w.KP_PERMISSIONS, PERM_EXPORT)
    assert_refused(target, w.NTE_BAD_KEY_STATE, target.export_key, key, w.PLAINTEXTKEYBLOB)


def test_clearing_export_succeeds_with_no_effect() -> None:
    """Clearing CRYPT_EXPORT through KP_PERMISSIONS succeeds but the key keeps CRYPT_EXPORT."""
    target = new_target()
    prov = target.acquire()
    key = import_plain(target, prov, AES, K16)
    target.set_key_param(key, w.KP_PERMISSIONS, 0x3B)
    assert target.get_key_param(key, w.KP_PERMISSIONS) == 0x3F
    assert target.export_key(key, w.PLAINTEXTKEYBLOB) == plaintext_blob(AES, K16)


def test_other_permission_bits_are_stored_as_given() -> None:
    """KP_PERMISSIONS stores the other bits as given (no encrypt/decrypt check follows from them)."""
    target = new_target()
    prov = target.acquire()
    key = import_plain(target, prov, AES, K16, flags=0)
    target.set_key_param(key, w.KP_PERMISSIONS, w.CRYPT_READ)
    assert target.get_key_param(key, w.KP_PERMISSIONS) == w.CRYPT_READ
    # rsaenh never consults CRYPT_ENCRYPT / CRYPT_DECRYPT; the model follows it.
    assert target.encrypt(key, bytes(16), False) == ref_crypt(AES, K16, w.CRYPT_MODE_CBC, bytes(16), bytes(16))[0]


@pytest.mark.parametrize("import_flags", [0, w.CRYPT_EXPORTABLE])
def test_opaque_export_of_non_exportable_key_keeps_exact_permissions(import_flags: int) -> None:
    """OPAQUEKEYBLOB export needs no CRYPT_EXPORT; the import has exactly the blob's permissions."""
    target = new_target()
    secure = target.acquire("secure")
    app = target.acquire("app")
    key = target.gen_key(secure, AES)
    target.set_key_param(key, w.KP_PERMISSIONS, w.CRYPT_ENCRYPT | w.CRYPT_MAC)
    blob = target.export_key(key, w.OPAQUEKEYBLOB)
    imported = target.import_key(app, blob, flags=import_flags)
    assert target.get_key_param(imported, w.KP_PERMISSIONS) == w.CRYPT_ENCRYPT | w.CRYPT_MAC
    assert_refused(target, w.NTE_BAD_KEY_STATE, target.export_key, imported, w.PLAINTEXTKEYBLOB)


def test_opaque_import_keeps_export_permission_of_an_exportable_key() -> None:
    """An exportable key handed off as OPAQUEKEYBLOB stays exportable on the other side."""
    target = new_target()
    secure = target.acquire("secure")
    app = target.acquire("app")
    key = import_plain(target, secure, AES, K16)
    imported = target.import_key(app, target.export_key(key, w.OPAQUEKEYBLOB))
    assert target.get_key_param(imported, w.KP_PERMISSIONS) == 0x3F
    assert target.export_key(imported, w.PLAINTEXTKEYBLOB) == plaintext_blob(AES, K16)


def test_plaintext_import_without_exportable_cannot_be_reexported() -> None:
    """A key imported from PLAINTEXTKEYBLOB without CRYPT_EXPORTABLE cannot leave again as plaintext."""
    target = new_target()
    prov = target.acquire()
    key = import_plain(target, prov, AES, K16, flags=0)
    assert_refused(target, w.NTE_BAD_KEY_STATE, target.export_key, key, w.PLAINTEXTKEYBLOB)
    twin = target.duplicate_key(key)
    assert_refused(target, w.NTE_BAD_KEY_STATE, target.export_key, twin, w.PLAINTEXTKEYBLOB)
    # The opaque route is still open, and the key it gives back is just as non-exportable.
    again = target.import_key(prov, target.export_key(key, w.OPAQUEKEYBLOB))
    assert_refused(target, w.NTE_BAD_KEY_STATE, target.export_key, again, w.PLAINTEXTKEYBLOB)
