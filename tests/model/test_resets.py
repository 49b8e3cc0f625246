"""When the live state (feedback register, RC4 position) resets, and when it must not."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyhandoff import CryptError
from keyhandoff.model import wincrypt as w
from tests.strategies import (
    BLOCK,
    chaining_modes,
    import_plain,
    key_for,
    native_block_algs,
    new_target,
    pkcs5,
    rc4_keystream,
    ref_crypt,
    usable_modes,
)

AES = w.CALG_AES_128
K16 = bytes(range(16))
P = bytes(range(100, 148))  # three AES blocks


def _aes(mode: int = w.CRYPT_MODE_CBC, iv: bytes = bytes(16)):
    target = new_target()
    prov = target.acquire()
    key = import_plain(target, prov, AES, K16)
    target.set_key_param(key, w.KP_MODE, mode)
    target.set_key_param(key, w.KP_IV, iv)
    return target, prov, key


@st.composite
def block_setups(draw: st.DrawFn, modes: st.SearchStrategy[int] = usable_modes):
    alg = draw(native_block_algs)
    size = BLOCK[alg]
    return (
        alg,
        draw(key_for(alg)),
        draw(modes),
        draw(st.binary(min_size=size, max_size=size)),
        draw(st.integers(1, 3)),
    )


def _block_key(alg: int, key_bytes: bytes, mode: int, iv: bytes):
    target = new_target()
    prov = target.acquire()
    key = import_plain(target, prov, alg, key_bytes)
    target.set_key_param(key, w.KP_MODE, mode)
    target.set_key_param(key, w.KP_IV, iv)
    return target, key


@settings(max_examples=25)
@given(setup=block_setups(), tail=st.binary(max_size=20))
def test_final_encrypt_resets(setup, tail: bytes) -> None:
    """Final encrypt pads with PKCS#5 from the live register, then the register returns to the IV."""
    alg, kb, mode, iv, nblocks = setup
    size = BLOCK[alg]
    target, key = _block_key(alg, kb, mode, iv)
    first = bytes(range(nblocks * size))
    out1 = target.encrypt(key, first, False)
    exp1, register = ref_crypt(alg, kb, mode, iv, first)
    assert out1 == exp1
    assert target.inspect(key).register == register
    out2 = target.encrypt(key, tail, True)
    exp2, _ = ref_crypt(alg, kb, mode, register, pkcs5(tail, size))
    assert out2 == exp2
    assert target.inspect(key).register == iv
    again = target.encrypt(key, first, False)
    assert again == exp1


@settings(max_examples=25)
@given(setup=block_setups(), tail=st.binary(max_size=20))
def test_final_decrypt_resets(setup, tail: bytes) -> None:
    """Final decrypt strips the padding and leaves the register at the IV."""
    alg, kb, mode, iv, nblocks = setup
    size = BLOCK[alg]
    target, key = _block_key(alg, kb, mode, iv)
    plain = bytes(range(nblocks * size)) + tail
    ciphertext, _ = ref_crypt(alg, kb, mode, iv, pkcs5(plain, size))
    head, last = ciphertext[: nblocks * size], ciphertext[nblocks * size :]
    assert target.decrypt(key, head, False) == plain[: nblocks * size]
    assert target.inspect(key).register == ref_crypt(alg, kb, mode, iv, head, decrypt=True)[1]
    assert target.decrypt(key, last, True) == tail
    assert target.inspect(key).register == iv
    assert target.decrypt(key, ciphertext, True) == plain


@settings(max_examples=25)
@given(setup=block_setups(), garbage_last=st.integers(0, 255))
def test_bad_padding_final_decrypt_is_bad_data_and_resets(setup, garbage_last: int) -> None:
    """A bad PKCS#5 pad on Final decrypt is NTE_BAD_DATA and the key resets all the same."""
    alg, kb, mode, iv, nblocks = setup
    size = BLOCK[alg]
    if 1 <= garbage_last <= size:
        garbage_last = 0  # a pad value that can never be valid
    target, key = _block_key(alg, kb, mode, iv)
    first = bytes(range(nblocks * size))
    target.encrypt(key, first, False)
    register = target.inspect(key).register
    # A ciphertext block that decrypts (from the live register) to a block ending in an invalid pad byte.
    wanted = bytes(size - 1) + bytes([garbage_last])
    bad, _ = ref_crypt(alg, kb, mode, register, wanted)
    with pytest.raises(CryptError) as err:
        target.decrypt(key, bad, True)
    assert err.value.code == w.NTE_BAD_DATA
    assert target.inspect(key).register == iv
    assert target.encrypt(key, first, False) == ref_crypt(alg, kb, mode, iv, first)[0]


def test_bad_padding_with_inconsistent_pad_bytes_is_refused() -> None:
    """A last byte in 1..block whose preceding pad bytes differ is also NTE_BAD_DATA plus reset."""
    target, _, key = _aes(w.CRYPT_MODE_ECB)
    wanted = bytes(12) + b"\x03\x04\x04\x04"  # says 4 pad bytes, one of them is 3
    bad, _ = ref_crypt(AES, K16, w.CRYPT_MODE_ECB, bytes(16), wanted)
    with pytest.raises(CryptError) as err:
        target.decrypt(key, bad, True)
    assert err.value.code == w.NTE_BAD_DATA


@settings(max_examples=20)
@given(setup=block_setups(chaining_modes), new_iv_seed=st.integers(0, 255))
def test_kp_iv_resets_register_and_reads_back_as_set(setup, new_iv_seed: int) -> None:
    """KP_IV sets the register to the new IV; reading KP_IV gives the IV as set, not the live register."""
    alg, kb, mode, iv, nblocks = setup
    size = BLOCK[alg]
    target, key = _block_key(alg, kb, mode, iv)
    data = bytes(nblocks * size)
    target.encrypt(key, data, False)
    assert target.get_key_param(key, w.KP_IV) == iv
    assert target.inspect(key).register == ref_crypt(alg, kb, mode, iv, data)[1]
    new_iv = bytes((new_iv_seed + i) & 0xFF for i in range(size))
    target.set_key_param(key, w.KP_IV, new_iv)
    assert target.inspect(key).register == new_iv
    assert target.get_key_param(key, w.KP_IV) == new_iv
    assert target.encrypt(key, data, False) == ref_crypt(alg, kb, mode, new_iv, data)[0]


@pytest.mark.parametrize(
    ("param", "salt", "reported"),
    [(w.KP_SALT, bytes(range(0xA0, 0xAB)), b""), (w.KP_SALT_EX, b"\xaa\xbb\xcc", b"\xaa\xbb\xcc")],
)
def test_salt_restarts_rc4(param: int, salt: bytes, reported: bytes) -> None:
    """KP_SALT / KP_SALT_EX on RC4 restarts the keystream, now keyed with key || new salt (KP_SALT's salt reads
    back empty)."""
    target = new_target()
    prov = target.acquire()
    kb = bytes.fromhex("0102030405")
    key = import_plain(target, prov, w.CALG_RC4, kb)  # 40-bit: 11 zero salt bytes
    ks = rc4_keystream(kb + bytes(11), 40)
    assert target.encrypt(key, bytes(13), False) == ks[:13]
    assert target.inspect(key).stream_pos == 13
    target.set_key_param(key, param, salt)
    assert target.inspect(key).stream_pos == 0
    assert target.get_key_param(key, w.KP_SALT) == reported
    assert target.encrypt(key, bytes(20), False) == rc4_keystream(kb + salt, 20)


@pytest.mark.parametrize("param", [w.KP_SALT, w.KP_SALT_EX])
def test_salt_resets_rc2_register(param: int) -> None:
    """KP_SALT / KP_SALT_EX on RC2 rekeys with key || salt and resets the register to the IV."""
    target = new_target()
    prov = target.acquire()
    kb = bytes.fromhex("d5e1a7e9ac")
    key = import_plain(target, prov, w.CALG_RC2, kb)
    target.set_key_param(key, w.KP_EFFECTIVE_KEYLEN, 128)  # cryptography's RC2 has T1 = 128 only
    iv = bytes(range(8))
    target.set_key_param(key, w.KP_IV, iv)
    zero_salted = kb + bytes(11)
    out = target.encrypt(key, bytes(16), False)
    assert out == ref_crypt(w.CALG_RC2, zero_salted, w.CRYPT_MODE_CBC, iv, bytes(16))[0]
    assert target.inspect(key).register == out[-8:]
    salt = bytes(range(1, 12))
    target.set_key_param(key, param, salt)
    assert target.inspect(key).register == iv
    assert target.encrypt(key, bytes(16), False) == ref_crypt(w.CALG_RC2, kb + salt, w.CRYPT_MODE_CBC, iv, bytes(16))[0]


def test_effective_keylen_resets_rc2_register() -> None:
    """KP_EFFECTIVE_KEYLEN resets the RC2 register to the IV (even when the value is unchanged)."""
    target = new_target()
    prov = target.acquire()
    kb = bytes(range(16))
    key = import_plain(target, prov, w.CALG_RC2, kb)
    assert target.get_key_param(key, w.KP_EFFECTIVE_KEYLEN) == 128
    data = bytes(range(24))
    first = target.encrypt(key, data, False)
    assert first == ref_crypt(w.CALG_RC2, kb, w.CRYPT_MODE_CBC, bytes(8), data)[0]
    assert target.inspect(key).register == first[-8:]
    target.set_key_param(key, w.KP_EFFECTIVE_KEYLEN, 128)
    assert target.inspect(key).register == bytes(8)
    assert target.encrypt(key, data, False) == first


def _no_reset_actions():
    return [
        ("KP_MODE_BITS", lambda t, k: t.set_key_param(k, w.KP_MODE_BITS, 64)),
        ("KP_PERMISSIONS", lambda t, k: t.set_key_param(k, w.KP_PERMISSIONS, 0x3F)),
        ("KP_PERMISSIONS clear export", lambda t, k: t.set_key_param(k, w.KP_PERMISSIONS, 0x3B)),
        ("KP_PADDING", lambda t, k: t.set_key_param(k, w.KP_PADDING, w.PKCS5_PADDING)),
        ("export plaintext", lambda t, k: t.export_key(k, w.PLAINTEXTKEYBLOB)),
        ("export opaque", lambda t, k: t.export_key(k, w.OPAQUEKEYBLOB)),
        ("get params", lambda t, k: [t.get_key_param(k, p) for p in (w.KP_IV, w.KP_MODE, w.KP_KEYLEN)]),
        ("hmac", lambda t, k: t.hmac(k, w.CALG_SHA1, b"abc")),
        ("duplicate", lambda t, k: t.duplicate_key(k)),
    ]


@pytest.mark.parametrize(("name", "action"), _no_reset_actions(), ids=[n for n, _ in _no_reset_actions()])
@pytest.mark.parametrize("mode", [w.CRYPT_MODE_CBC, w.CRYPT_MODE_CFB])
def test_no_reset(name: str, action, mode: int) -> None:
    """These calls leave the live register alone: the next block continues the chain."""
    iv = bytes(range(16))
    target, _, key = _aes(mode, iv)
    c1 = target.encrypt(key, P[:16], False)
    exp1, register = ref_crypt(AES, K16, mode, iv, P[:16])
    assert c1 == exp1
    action(target, key)
    assert target.inspect(key).register == register
    assert target.encrypt(key, P[16:32], False) == ref_crypt(AES, K16, mode, register, P[16:32])[0]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (w.CRYPT_MODE_CBC, w.CRYPT_MODE_CFB),
        (w.CRYPT_MODE_CFB, w.CRYPT_MODE_CBC),
        (w.CRYPT_MODE_CBC, w.CRYPT_MODE_ECB),
        (w.CRYPT_MODE_CFB, w.CRYPT_MODE_ECB),
    ],
)
def test_kp_mode_does_not_reset(first: int, second: int) -> None:
    """Switching KP_MODE keeps the register: the new mode continues from the old chain."""
    iv = bytes(range(16))
    target, _, key = _aes(first, iv)
    c1 = target.encrypt(key, P[:16], False)
    exp1, register = ref_crypt(AES, K16, first, iv, P[:16])
    assert c1 == exp1
    target.set_key_param(key, w.KP_MODE, second)
    assert target.inspect(key).register == register
    c2 = target.encrypt(key, P[16:32], False)
    exp2, register2 = ref_crypt(AES, K16, second, register, P[16:32])
    assert c2 == exp2
    target.set_key_param(key, w.KP_MODE, first)
    assert target.encrypt(key, P[32:48], False) == ref_crypt(AES, K16, first, register2, P[32:48])[0]


def test_ecb_leaves_register_alone() -> None:
    """ECB encryption does not move the register, so CBC after ECB continues from before the ECB blocks."""
    iv = bytes(range(16))
    target, _, key = _aes(w.CRYPT_MODE_CBC, iv)
    c1 = target.encrypt(key, P[:16], False)
    target.set_key_param(key, w.KP_MODE, w.CRYPT_MODE_ECB)
    target.encrypt(key, P[16:32], False)
    assert target.inspect(key).register == c1
    target.set_key_param(key, w.KP_MODE, w.CRYPT_MODE_CBC)
    assert target.encrypt(key, P[32:48], False) == ref_crypt(AES, K16, w.CRYPT_MODE_CBC, c1, P[32:48])[0]


@pytest.mark.parametrize(
    "action",
    [
        lambda t, k: t.set_key_param(k, w.KP_MODE, w.CRYPT_MODE_CBC),
        lambda t, k: t.set_key_param(k, w.KP_MODE_BITS, 8),
        lambda t, k: t.set_key_param(k, w.KP_PERMISSIONS, 0x3F),
        lambda t, k: t.export_key(k, w.PLAINTEXTKEYBLOB),
        lambda t, k: t.export_key(k, w.OPAQUEKEYBLOB),
    ],
    ids=["KP_MODE", "KP_MODE_BITS", "KP_PERMISSIONS", "export plaintext", "export opaque"],
)
def test_rc4_position_survives_non_resetting_calls(action) -> None:
    """KP_MODE, KP_MODE_BITS, KP_PERMISSIONS and export leave the RC4 stream position alone."""
    target = new_target()
    prov = target.acquire()
    kb = bytes(range(16))
    key = import_plain(target, prov, w.CALG_RC4, kb)
    ks = rc4_keystream(kb, 64)
    assert target.encrypt(key, bytes(10), False) == ks[:10]
    action(target, key)
    assert target.inspect(key).stream_pos == 10
    assert target.encrypt(key, bytes(10), False) == ks[10:20]


@settings(max_examples=30)
@given(
    setup=block_setups(chaining_modes),
    script=st.lists(st.tuples(st.booleans(), st.integers(0, 3), st.binary(min_size=32, max_size=32)), max_size=6),
)
def test_encrypt_and_decrypt_share_one_register(setup, script) -> None:
    """Interleaved encrypt and decrypt chain through one register: the last ciphertext produced or consumed."""
    alg, kb, mode, iv, _ = setup
    size = BLOCK[alg]
    target, key = _block_key(alg, kb, mode, iv)
    register = iv
    for decrypt, nblocks, material in script:
        data = (material * 4)[: nblocks * size]
        out = (target.decrypt if decrypt else target.encrypt)(key, data, False)
        expected, register = ref_crypt(alg, kb, mode, register, data, decrypt=decrypt)
        assert out == expected
        assert target.inspect(key).register == register


def test_shared_register_concrete_cbc() -> None:
    """CBC: after encrypting P1 (-> C1) and decrypting X, the next encrypt chains from X, not from C1."""
    iv = bytes(16)
    target, _, key = _aes(w.CRYPT_MODE_CBC, iv)
    c1 = target.encrypt(key, P[:16], False)
    x = bytes(range(200, 216))
    d = target.decrypt(key, x, False)
    assert d == ref_crypt(AES, K16, w.CRYPT_MODE_CBC, c1, x, decrypt=True)[0]
    assert target.inspect(key).register == x
    assert target.encrypt(key, P[16:32], False) == ref_crypt(AES, K16, w.CRYPT_MODE_CBC, x, P[16:32])[0]


def test_rc4_position_continues_and_restarts_on_final() -> None:
    """RC4: the keystream runs on across calls (encrypt and decrypt share it) and restarts after Final."""
    target = new_target()
    prov = target.acquire()
    kb = bytes(range(1, 17))
    key = import_plain(target, prov, w.CALG_RC4, kb)
    ks = rc4_keystream(kb, 64)
    assert target.encrypt(key, bytes(10), False) == ks[:10]
    assert target.decrypt(key, bytes(5), False) == ks[10:15]
    assert target.inspect(key).stream_pos == 15
    assert target.encrypt(key, bytes(7), True) == ks[15:22]
    assert target.inspect(key).stream_pos == 0
    assert target.encrypt(key, bytes(5), False) == ks[:5]
    assert target.decrypt(key, bytes(3), True) == ks[5:8]
    assert target.decrypt(key, bytes(4), False) == ks[:4]


def test_rc4_final_has_no_padding() -> None:
    """RC4 Final encrypt returns exactly as many bytes as it was given (no padding)."""
    target = new_target()
    prov = target.acquire()
    kb = bytes(range(16))
    key = import_plain(target, prov, w.CALG_RC4, kb)
    assert target.encrypt(key, b"abc", True) == bytes(a ^ b for a, b in zip(b"abc", rc4_keystream(kb, 3), strict=True))
    assert target.encrypt(key, b"", True) == b""


def test_kp_iv_restarts_rc4() -> None:
    """KP_IV on RC4 (an empty IV) restarts the keystream."""
    target = new_target()
    prov = target.acquire()
    kb = bytes(range(16))
    key = import_plain(target, prov, w.CALG_RC4, kb)
    ks = rc4_keystream(kb, 16)
    target.encrypt(key, bytes(9), False)
    target.set_key_param(key, w.KP_IV, b"")
    assert target.inspect(key).stream_pos == 0
    assert target.encrypt(key, bytes(16), False) == ks


@pytest.mark.parametrize("mode", [w.CRYPT_MODE_ECB, w.CRYPT_MODE_CBC, w.CRYPT_MODE_CFB])
def test_final_encrypt_of_aligned_data_adds_a_whole_block(mode: int) -> None:
    """Final encrypt of block-aligned data appends a whole block of 0x10 pad bytes (CFB too)."""
    iv = bytes(range(16))
    target, _, key = _aes(mode, iv)
    out = target.encrypt(key, P[:32], True)
    assert len(out) == 48
    assert out == ref_crypt(AES, K16, mode, iv, P[:32] + bytes([16]) * 16)[0]
    assert target.encrypt(key, b"", True) == ref_crypt(AES, K16, mode, iv, bytes([16]) * 16)[0]


def test_duplicate_is_independent() -> None:
    """A duplicate starts with the live register but then moves on its own, and so does the original."""
    iv = bytes(range(16))
    target, _, key = _aes(w.CRYPT_MODE_CBC, iv)
    c1 = target.encrypt(key, P[:16], False)
    twin = target.duplicate_key(key)
    assert target.inspect(twin).register == c1
    c2_twin = target.encrypt(twin, P[16:32], False)
    assert target.inspect(key).register == c1
    assert target.encrypt(key, P[16:32], False) == c2_twin
    target.set_key_param(twin, w.KP_IV, bytes(16))
    assert target.inspect(key).register == c2_twin
    assert target.get_key_param(key, w.KP_IV) == iv


# --- KP_SALT: 11 bytes, keys the cipher, reported empty (Enhanced/AES provider) ------------------------------

SALT11 = bytes(range(0x31, 0x3C))
RC2_KEY5 = bytes.fromhex("d5e1a7e9ac")


def _rc2_cbc_key(target, prov, iv: bytes) -> int:
    """A 40-bit RC2 key at T1 = 128 (so cryptography's RC2 is an independent reference) with the given IV."""
    key = import_plain(target, prov, w.CALG_RC2, RC2_KEY5)
    target.set_key_param(key, w.KP_EFFECTIVE_KEYLEN, 128)
    target.set_key_param(key, w.KP_IV, iv)
    return key


@pytest.mark.parametrize("alg", [w.CALG_RC2, w.CALG_RC4])
def test_kp_salt_keys_like_salt_ex_but_reads_back_empty(alg: int) -> None:
    """The same 11 bytes by KP_SALT and by KP_SALT_EX: the same ciphertext (key || salt), yet KP_SALT reports an
    empty salt after KP_SALT and the salt after KP_SALT_EX."""
    target = new_target()
    prov = target.acquire()
    iv = bytes(range(8))
    keys = {}
    for param in (w.KP_SALT, w.KP_SALT_EX):
        if alg == w.CALG_RC2:
            keys[param] = _rc2_cbc_key(target, prov, iv)
        else:
            keys[param] = import_plain(target, prov, w.CALG_RC4, RC2_KEY5)
        target.set_key_param(keys[param], param, SALT11)
    outs = {param: target.encrypt(key, bytes(16), False) for param, key in keys.items()}
    if alg == w.CALG_RC2:
        expected = ref_crypt(w.CALG_RC2, RC2_KEY5 + SALT11, w.CRYPT_MODE_CBC, iv, bytes(16))[0]
    else:
        expected = rc4_keystream(RC2_KEY5 + SALT11, 16)
    assert outs[w.KP_SALT] == outs[w.KP_SALT_EX] == expected
    assert target.get_key_param(keys[w.KP_SALT], w.KP_SALT) == b""
    assert target.get_key_param(keys[w.KP_SALT_EX], w.KP_SALT) == SALT11
    assert target.inspect(keys[w.KP_SALT]).salt == SALT11  # the state holds it: it keys the cipher
    assert not target.inspect(keys[w.KP_SALT]).salt_reported
    assert target.inspect(keys[w.KP_SALT_EX]).salt_reported


def test_default_salt_is_reported_and_salt_ex_after_kp_salt_is_reported_again() -> None:
    """A 40-bit key's default salt (11 zero bytes) is reported; KP_SALT hides the next one; KP_SALT_EX after it is
    reported again (and keys the cipher); KP_SALT after that hides it again."""
    target = new_target()
    prov = target.acquire()
    key = import_plain(target, prov, w.CALG_RC4, RC2_KEY5)
    assert target.get_key_param(key, w.KP_SALT) == bytes(11)
    target.set_key_param(key, w.KP_SALT, SALT11)
    assert target.get_key_param(key, w.KP_SALT) == b""
    target.set_key_param(key, w.KP_SALT_EX, b"\x07\x08\x09")
    assert target.get_key_param(key, w.KP_SALT) == b"\x07\x08\x09"
    assert target.encrypt(key, bytes(12), False) == rc4_keystream(RC2_KEY5 + b"\x07\x08\x09", 12)
    target.set_key_param(key, w.KP_SALT, SALT11)
    assert target.get_key_param(key, w.KP_SALT) == b""
    assert target.encrypt(key, bytes(12), False) == rc4_keystream(RC2_KEY5 + SALT11, 12)


def test_kp_salt_keeps_keying_across_resets() -> None:
    """Our decision: after KP_SALT, KP_IV, KP_EFFECTIVE_KEYLEN and Final reset the key, and it is still keyed with
    key || that salt, still unreported (Wine drops the salt at the next re-key)."""
    target = new_target()
    prov = target.acquire()
    iv = bytes(range(8))
    key = _rc2_cbc_key(target, prov, iv)
    target.set_key_param(key, w.KP_SALT, SALT11)
    first = ref_crypt(w.CALG_RC2, RC2_KEY5 + SALT11, w.CRYPT_MODE_CBC, iv, bytes(16))[0]
    assert target.encrypt(key, bytes(16), False) == first
    for param, value in ((w.KP_IV, iv), (w.KP_EFFECTIVE_KEYLEN, 128)):
        target.set_key_param(key, param, value)
        assert target.get_key_param(key, w.KP_SALT) == b""
        assert target.encrypt(key, bytes(16), False) == first
    target.encrypt(key, b"", True)  # Final: a reset
    assert target.get_key_param(key, w.KP_SALT) == b""
    assert target.encrypt(key, bytes(16), False) == first
    twin = target.duplicate_key(key)  # a duplicate carries the salt and its reporting
    assert target.inspect(twin).salt_reported is False
    assert target.get_key_param(twin, w.KP_SALT) == b""
