"""Live engines against independent computations: one-shot ``cryptography`` runs and a written-out RC4."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.decrepit.ciphers.modes import CFB8
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyhandoff.impl.engines import CryptographyBlockEngine, RC2Engine, RC4Engine, software_engine
from keyhandoff.model import rc2
from keyhandoff.model import wincrypt as w
from tests.impl.conftest import rc4_keystream

MODES = (w.CRYPT_MODE_ECB, w.CRYPT_MODE_CBC, w.CRYPT_MODE_CFB)


def one_shot(alg: int, key: bytes, mode: int, iv: bytes, data: bytes, decrypt: bool) -> bytes:
    algorithm = algorithms.AES(key) if len(iv) == 16 else TripleDES(key)
    cipher_mode = {w.CRYPT_MODE_ECB: modes.ECB(), w.CRYPT_MODE_CBC: modes.CBC(iv), w.CRYPT_MODE_CFB: CFB8(iv)}[mode]
    cipher = Cipher(algorithm, cipher_mode)
    ctx = cipher.decryptor() if decrypt else cipher.encryptor()
    return ctx.update(data) + ctx.finalize()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from([(w.CALG_AES_128, 16, 16), (w.CALG_3DES, 24, 8)]),
    st.sampled_from(MODES),
    st.lists(st.integers(0, 4), min_size=1, max_size=6),
    st.booleans(),
)
def test_chunks_equal_one_shot(
    data_path: str, spec: tuple[int, int, int], mode: int, blocks: list[int], decrypt: bool
) -> None:
    """Any chunking through one engine equals one ``cryptography`` pass; the register is the last ciphertext
    block (ECB: the IV)."""
    alg, key_len, block = spec
    key, iv = os.urandom(key_len), os.urandom(block)
    data = os.urandom(sum(blocks) * block)
    engine = software_engine(alg, key, b"", key_len * 8, iv)
    out, start = b"", 0
    for count in blocks:
        out += engine.run(mode, data[start : start + count * block], decrypt=decrypt)
        start += count * block
    assert out == one_shot(alg, key, mode, iv, data, decrypt)
    ciphertext = data if decrypt else out
    expected = iv if mode == w.CRYPT_MODE_ECB or not ciphertext else (iv + ciphertext)[-block:]
    assert engine.register == expected


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from([(w.CALG_AES_128, 16, 16), (w.CALG_3DES, 24, 8), (w.CALG_RC2, 16, 8), (w.CALG_RC4, 16, 1)]),
    st.lists(st.tuples(st.sampled_from(MODES), st.booleans(), st.integers(1, 3)), min_size=1, max_size=8),
)
def test_hot_is_run(data_path: str, spec: tuple[int, int, int], calls: list[tuple[int, bool, int]]) -> None:
    """The fast path's positional ``hot`` gives what ``run`` gives, call for call, mode and direction changing
    under it, and leaves the same state behind."""
    alg, key_len, block = spec
    key, iv = os.urandom(key_len), os.urandom(block if block > 1 else 0)
    fast = software_engine(alg, key, b"", key_len * 8, iv)
    full = fast.clone()
    for mode, decrypt, count in calls:
        data = os.urandom(count * max(block, 1))
        assert fast.hot(mode, data, decrypt) == full.run(mode, data, decrypt=decrypt)
    assert (fast.register, fast.stream_pos) == (full.register, full.stream_pos)


def test_cbc_direction_change_rebuilds_from_the_register() -> None:
    """Switching encrypt -> decrypt -> encrypt continues from the shared register each time."""
    key, iv = os.urandom(16), os.urandom(16)
    engine = CryptographyBlockEngine(algorithms.AES(key), iv)
    a, c, b = os.urandom(16), os.urandom(32), os.urandom(16)
    c1 = engine.run(w.CRYPT_MODE_CBC, a, decrypt=False)
    assert engine.run(w.CRYPT_MODE_CBC, c, decrypt=True) == one_shot(0, key, w.CRYPT_MODE_CBC, c1, c, True)
    assert engine.run(w.CRYPT_MODE_CBC, b, decrypt=False) == one_shot(0, key, w.CRYPT_MODE_CBC, c[-16:], b, False)
    clone = engine.clone()
    assert clone.run(w.CRYPT_MODE_CFB, b, decrypt=False) == engine.run(w.CRYPT_MODE_CFB, b, decrypt=False)


@pytest.mark.parametrize("mode", MODES)
def test_rc2_modes_written_out(mode: int) -> None:
    """RC2 ECB/CBC/CFB-8 equal the mode definitions over the RFC 2268 block primitive, across chunks."""
    key, iv, data = os.urandom(7), os.urandom(8), os.urandom(40)
    subkeys = rc2.expand_key(key, 40)
    engine = RC2Engine.keyed(key, 40, iv)
    out = engine.run(mode, data[:16], decrypt=False) + engine.run(mode, data[16:], decrypt=False)
    expected, register = bytearray(), iv
    for index in range(0, len(data), 8):
        block = data[index : index + 8]
        if mode == w.CRYPT_MODE_ECB:
            expected += rc2.encrypt_block(subkeys, block)
        elif mode == w.CRYPT_MODE_CBC:
            register = rc2.encrypt_block(subkeys, bytes(x ^ y for x, y in zip(block, register, strict=True)))
            expected += register
        else:
            for byte in block:
                out_byte = byte ^ rc2.encrypt_block(subkeys, register)[0]
                expected.append(out_byte)
                register = register[1:] + bytes([out_byte])
    assert out == bytes(expected)
    back = RC2Engine.keyed(key, 40, iv)
    assert back.run(mode, out, decrypt=True) == data


@pytest.mark.parametrize("length", [1, 3, 4, 5, 6, 7, 9, 11, 13, 16, 21, 27, 40, 256])
def test_rc4_every_key_length(length: int, rc4_backend: str) -> None:
    """RC4 for lengths cryptography takes, takes as a repetition, or not at all equals the written-out RC4."""
    key = os.urandom(length)
    engine = RC4Engine(key)
    out = engine.run(0, bytes(100), decrypt=False) + engine.run(0, bytes(50), decrypt=True)
    assert out == rc4_keystream(key, 150)
    assert engine.stream_pos == 150


def test_rc4_fast_forward_and_reset(rc4_backend: str) -> None:
    """Restoring at a position from the key alone (several fast-forward chunks) continues the keystream; reset
    restarts it."""
    key = os.urandom(16)
    position = 3 * 64 * 1024 + 17
    reference = RC4Engine(key)
    reference.run(0, bytes(position), decrypt=False)
    restored = RC4Engine(key, position)
    assert restored.stream_pos == position
    assert restored.run(0, bytes(32), decrypt=False) == reference.run(0, bytes(32), decrypt=False)
    assert restored.clone().run(0, bytes(8), decrypt=False) == restored.run(0, bytes(8), decrypt=False)
    restored.reset(b"")
    assert restored.stream_pos == 0
    assert restored.run(0, bytes(16), decrypt=False) == rc4_keystream(key, 16)


def test_engines_refuse_what_the_csp_must_check_first(data_path: str) -> None:
    """Ragged input, unknown modes, bad registers and unknown algorithms are programming errors (ValueError)."""
    engine = software_engine(w.CALG_AES_128, bytes(16), b"", 128, bytes(16))
    with pytest.raises(ValueError, match="whole blocks"):
        engine.run(w.CRYPT_MODE_CBC, bytes(3), decrypt=False)
    with pytest.raises(ValueError, match="not runnable"):
        engine.run(w.CRYPT_MODE_OFB, bytes(16), decrypt=False)
    with pytest.raises(ValueError, match="one block"):
        engine.reset(bytes(8))
    with pytest.raises(ValueError, match="no engine"):
        software_engine(w.CALG_MAC, bytes(16), b"", 128, bytes(16))
