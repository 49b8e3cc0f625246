"""PLAINTEXTKEYBLOB round trips start fresh; OPAQUEKEYBLOB round trips restore the exact state; salt rules."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyhandoff.model import KeyState, Lifecycle, Location
from keyhandoff.model import wincrypt as w
from tests.strategies import (
    ALL_ALGS,
    BLOCK,
    KEY_BYTES,
    import_plain,
    new_target,
    plaintext_blob,
    rc4_keystream,
    ref_crypt,
)


@st.composite
def disturbed_keys(draw: st.DrawFn):
    """A target and a key (any algorithm) whose state has been moved away from creation in random ways."""
    alg = draw(st.sampled_from(ALL_ALGS))
    size = BLOCK[alg]
    nbytes = KEY_BYTES[alg] if alg not in (w.CALG_RC2, w.CALG_RC4) else draw(st.integers(5, 16))
    kb = draw(st.binary(min_size=nbytes, max_size=nbytes))
    target = new_target(seed=draw(st.integers(0, 2**32)))
    prov = target.acquire()
    key = import_plain(target, prov, alg, kb)
    steps = draw(
        st.lists(
            st.sampled_from(["iv", "mode", "mode_bits", "perm", "salt", "efflen", "encrypt", "decrypt", "final"]),
            max_size=6,
        )
    )
    for step in steps:
        if step == "iv" and size:
            target.set_key_param(key, w.KP_IV, draw(st.binary(min_size=size, max_size=size)))
        elif step == "mode" and size:
            target.set_key_param(key, w.KP_MODE, draw(st.sampled_from([w.CRYPT_MODE_ECB, w.CRYPT_MODE_CFB])))
        elif step == "mode_bits":
            target.set_key_param(key, w.KP_MODE_BITS, draw(st.integers(0, 128)))
        elif step == "perm":
            target.set_key_param(key, w.KP_PERMISSIONS, draw(st.sampled_from([0x1, 0x3B, 0x3F, 0x1FF])))
        elif step == "salt" and alg in (w.CALG_RC2, w.CALG_RC4):
            if draw(st.booleans()):  # KP_SALT: exactly 11 bytes, unreported; KP_SALT_EX: 0..24, reported
                target.set_key_param(key, w.KP_SALT, draw(st.binary(min_size=11, max_size=11)))
            else:
                target.set_key_param(key, w.KP_SALT_EX, draw(st.binary(max_size=24)))
        elif step == "efflen" and alg == w.CALG_RC2:
            target.set_key_param(key, w.KP_EFFECTIVE_KEYLEN, draw(st.integers(1, 1024)))
        elif step in ("encrypt", "decrypt"):
            n = draw(st.integers(1, 3)) * (size or 5)
            (target.encrypt if step == "encrypt" else target.decrypt)(key, bytes(n), False)
        elif step == "final":
            target.encrypt(key, b"abc", True)
    return target, prov, alg, kb, key


def _fresh(alg: int, kb: bytes, flags: int) -> KeyState:
    """The state a PLAINTEXTKEYBLOB import must produce, written out from the reference."""
    size = BLOCK[alg]
    salted = alg in (w.CALG_RC2, w.CALG_RC4)
    return KeyState(
        lifecycle=Lifecycle.IMPORTED,
        location=Location.SOFTWARE,
        alg=alg,
        key=kb,
        salt=bytes(11) if salted and len(kb) == 5 and not flags & w.CRYPT_NO_SALT else b"",
        key_bits=len(kb) * 8,
        effective_keylen=len(kb) * 8,
        mode=w.CRYPT_MODE_CBC if size else 0,
        mode_bits=8,
        padding=w.PKCS5_PADDING,
        iv=bytes(size),
        register=bytes(size),
        stream_pos=0,
        permissions=0x3B | (w.CRYPT_EXPORT if flags & w.CRYPT_EXPORTABLE else 0),
    )


@settings(max_examples=40)
@given(setup=disturbed_keys(), flags=st.sampled_from([0, w.CRYPT_EXPORTABLE, w.CRYPT_NO_SALT]))
def test_plaintext_round_trip_is_fresh(setup, flags: int) -> None:
    """A PLAINTEXTKEYBLOB round trip gives a fresh key: CBC/0, zero IV and register, default salt, 0x3B(+EXPORT)."""
    target, _, alg, kb, key = setup
    app = target.acquire("app")
    blob = target.export_key(key, w.PLAINTEXTKEYBLOB)
    assert blob == plaintext_blob(alg, kb)
    imported = target.import_key(app, blob, flags=flags)
    assert target.inspect(imported) == _fresh(alg, kb, flags)


@pytest.mark.parametrize("alg", [w.CALG_AES_128, w.CALG_3DES, w.CALG_DES])
def test_plaintext_round_trip_loses_the_chain(alg: int) -> None:
    """After a plaintext round trip the cipher starts again from a zero IV in CBC."""
    target = new_target()
    prov = target.acquire()
    kb = bytes(range(3, 3 + KEY_BYTES[alg]))
    size = BLOCK[alg]
    key = import_plain(target, prov, alg, kb)
    target.set_key_param(key, w.KP_MODE, w.CRYPT_MODE_ECB)
    target.set_key_param(key, w.KP_IV, bytes([9]) * size)
    target.encrypt(key, bytes(2 * size), False)
    imported = target.import_key(prov, target.export_key(key, w.PLAINTEXTKEYBLOB))
    data = bytes(range(2 * size))
    assert target.encrypt(imported, data, False) == ref_crypt(alg, kb, w.CRYPT_MODE_CBC, bytes(size), data)[0]


@settings(max_examples=40)
@given(setup=disturbed_keys(), flags=st.sampled_from([0, w.CRYPT_EXPORTABLE]))
def test_opaque_round_trip_is_exact(setup, flags: int) -> None:
    """An OPAQUEKEYBLOB round trip restores every KeyState field; only the lifecycle says IMPORTED."""
    target, _, _, _, key = setup
    app = target.acquire("app")
    before = target.inspect(key)
    witness = target.duplicate_key(key)
    blob = target.export_key(key, w.OPAQUEKEYBLOB)
    target.destroy_key(key)
    imported = target.import_key(app, blob, flags=flags)
    state = target.inspect(imported)
    assert state.lifecycle is Lifecycle.IMPORTED
    assert attrs.evolve(state, lifecycle=before.lifecycle) == before
    if state.mode in (0, w.CRYPT_MODE_ECB, w.CRYPT_MODE_CBC, w.CRYPT_MODE_CFB):
        size = BLOCK[state.alg] or 7
        assert target.encrypt(imported, bytes(size), False) == target.encrypt(witness, bytes(size), False)


@pytest.mark.parametrize("alg", [w.CALG_RC2, w.CALG_RC4])
def test_forty_bit_salt_rules_on_gen(alg: int) -> None:
    """40-bit RC2/RC4: 11 zero salt bytes; CRYPT_NO_SALT none; CRYPT_CREATE_SALT none (Enhanced); longer none."""
    target = new_target()
    prov = target.acquire()
    cases = {
        40 << 16: bytes(11),
        (40 << 16) | w.CRYPT_EXPORTABLE: bytes(11),
        (40 << 16) | w.CRYPT_NO_SALT: b"",
        (40 << 16) | w.CRYPT_CREATE_SALT: b"",
        (56 << 16) | w.CRYPT_CREATE_SALT: b"",
        (128 << 16) | w.CRYPT_CREATE_SALT: b"",
        56 << 16: b"",
        0: b"",
    }
    for flags, salt in cases.items():
        key = target.gen_key(prov, alg, flags)
        assert target.get_key_param(key, w.KP_SALT) == salt, hex(flags)


@pytest.mark.parametrize(("flags", "salt"), [(0, bytes(11)), (w.CRYPT_NO_SALT, b""), (w.CRYPT_EXPORTABLE, bytes(11))])
def test_forty_bit_rc4_import_salt_keys_the_cipher(flags: int, salt: bytes) -> None:
    """A 5-byte RC4 PLAINTEXTKEYBLOB gets 11 zero salt bytes (none with CRYPT_NO_SALT); RC4 runs on key || salt."""
    target = new_target()
    prov = target.acquire()
    kb = bytes.fromhex("0102030405")
    key = import_plain(target, prov, w.CALG_RC4, kb, flags=flags)
    assert target.get_key_param(key, w.KP_SALT) == salt
    assert target.encrypt(key, bytes(32), False) == rc4_keystream(kb + salt, 32)


def test_forty_bit_rc2_import_salt_keys_the_cipher() -> None:
    """A 5-byte RC2 PLAINTEXTKEYBLOB is keyed with key || 11 zero bytes (checked with T1 = 128)."""
    target = new_target()
    prov = target.acquire()
    kb = bytes.fromhex("d5e1a7e9ac")
    key = import_plain(target, prov, w.CALG_RC2, kb)
    assert target.get_key_param(key, w.KP_SALT) == bytes(11)
    assert target.get_key_param(key, w.KP_EFFECTIVE_KEYLEN) == 40
    target.set_key_param(key, w.KP_EFFECTIVE_KEYLEN, 128)
    data = bytes(range(16))
    assert (
        target.encrypt(key, data, False) == ref_crypt(w.CALG_RC2, kb + bytes(11), w.CRYPT_MODE_CBC, bytes(8), data)[0]
    )


@pytest.mark.parametrize("n", [6, 7, 8, 16])
def test_longer_rc_keys_get_no_salt(n: int) -> None:
    """RC2/RC4 keys longer than 40 bits import with no salt."""
    target = new_target()
    prov = target.acquire()
    for alg in (w.CALG_RC2, w.CALG_RC4):
        key = import_plain(target, prov, alg, bytes(range(n)))
        assert target.get_key_param(key, w.KP_SALT) == b""


@pytest.mark.parametrize("alg", ALL_ALGS)
def test_fresh_key_reports_its_parameters(alg: int) -> None:
    """A fresh key reports KP_ALGID, KP_BLOCKLEN and KP_KEYLEN in bits, KP_MODE, KP_MODE_BITS 8 and a zero KP_IV."""
    target = new_target()
    prov = target.acquire()
    key = import_plain(target, prov, alg, bytes(range(KEY_BYTES[alg])))
    assert target.get_key_param(key, w.KP_ALGID) == alg
    assert target.get_key_param(key, w.KP_BLOCKLEN) == BLOCK[alg] * 8
    assert target.get_key_param(key, w.KP_KEYLEN) == KEY_BYTES[alg] * 8
    assert target.get_key_param(key, w.KP_MODE) == (w.CRYPT_MODE_CBC if BLOCK[alg] else 0)
    assert target.get_key_param(key, w.KP_MODE_BITS) == 8
    assert target.get_key_param(key, w.KP_PADDING) == w.PKCS5_PADDING
    assert target.get_key_param(key, w.KP_IV) == bytes(BLOCK[alg])


@pytest.mark.parametrize("alg", [w.CALG_RC2, w.CALG_RC4])
def test_kp_salt_survives_the_opaque_handoff_unreported(alg: int) -> None:
    """A salt set by KP_SALT crosses an OPAQUEKEYBLOB handoff exactly: it still keys the cipher and still reads
    back empty; a PLAINTEXTKEYBLOB of the same key imports fresh, with its default salt reported."""
    target = new_target()
    prov = target.acquire()
    app = target.acquire("app")
    kb = bytes.fromhex("0a0b0c0d0e")
    salt = bytes(range(0x41, 0x4C))
    key = import_plain(target, prov, alg, kb)
    target.set_key_param(key, w.KP_SALT, salt)
    target.encrypt(key, bytes(8), False)
    witness = target.duplicate_key(key)
    blob = target.export_key(key, w.OPAQUEKEYBLOB)
    target.destroy_key(key)
    moved = target.import_key(app, blob)
    state = target.inspect(moved)
    assert (state.salt, state.salt_reported) == (salt, False)
    assert target.get_key_param(moved, w.KP_SALT) == b""
    assert target.encrypt(moved, bytes(16), False) == target.encrypt(witness, bytes(16), False)
    fresh = target.import_key(app, target.export_key(witness, w.PLAINTEXTKEYBLOB))
    assert target.inspect(fresh) == _fresh(alg, kb, 0)
    assert target.get_key_param(fresh, w.KP_SALT) == bytes(11)
