"""Unit tests for the pure-Python RC2 of the model (RFC 2268, explicit effective key length)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyhandoff.model import rc2

# RFC 2268 section 5: (key, effective key length in bits, plaintext, ciphertext), all hex.
RFC2268_VECTORS = [
    ("0000000000000000", 63, "0000000000000000", "ebb773f993278eff"),
    ("ffffffffffffffff", 64, "ffffffffffffffff", "278b27e42e2f0d49"),
    ("3000000000000000", 64, "1000000000000001", "30649edf9be7d2c2"),
    ("88", 64, "0000000000000000", "61a8a244adacccf0"),
    ("88bca90e90875a", 64, "0000000000000000", "6ccf4308974c267f"),
    ("88bca90e90875a7f0f79c384627bafb2", 64, "0000000000000000", "1a807d272bbe5db1"),
    ("88bca90e90875a7f0f79c384627bafb2", 128, "0000000000000000", "2269552ab0f85ca6"),
    (
        "88bca90e90875a7f0f79c384627bafb216f80a6f85920584c42fceb0be255daf1e",
        129,
        "0000000000000000",
        "5b78d3a43dfff1f1",
    ),
]


def _pkcs5(data: bytes) -> bytes:
    n = rc2.BLOCK_SIZE - len(data) % rc2.BLOCK_SIZE
    return data + bytes([n]) * n


def _ecb_encrypt(key: bytes, bits: int, data: bytes) -> bytes:
    k = rc2.expand_key(key, bits)
    return b"".join(rc2.encrypt_block(k, data[i : i + 8]) for i in range(0, len(data), 8))


def _cbc_encrypt(key: bytes, bits: int, iv: bytes, data: bytes) -> bytes:
    k = rc2.expand_key(key, bits)
    out, prev = [], iv
    for i in range(0, len(data), 8):
        prev = rc2.encrypt_block(k, bytes(a ^ b for a, b in zip(data[i : i + 8], prev, strict=True)))
        out.append(prev)
    return b"".join(out)


@pytest.mark.parametrize(("key", "bits", "plain", "cipher"), RFC2268_VECTORS)
def test_rfc2268_vector_encrypts(key, bits, plain, cipher):
    """Each RFC 2268 section 5 vector encrypts to its published ciphertext."""
    k = rc2.expand_key(bytes.fromhex(key), bits)
    assert rc2.encrypt_block(k, bytes.fromhex(plain)).hex() == cipher


@pytest.mark.parametrize(("key", "bits", "plain", "cipher"), RFC2268_VECTORS)
def test_rfc2268_vector_decrypts(key, bits, plain, cipher):
    """Each RFC 2268 section 5 ciphertext decrypts back to its published plaintext."""
    k = rc2.expand_key(bytes.fromhex(key), bits)
    assert rc2.decrypt_block(k, bytes.fromhex(cipher)).hex() == plain


def test_cryptoapi_ecb_salted_40_bit_key():
    """A 40-bit CryptoAPI key keyed as key||zero-salt (16 bytes, 40 effective bits) matches Windows in ECB."""
    key = bytes.fromhex("d5e1a7e9ac") + bytes(11)
    plain = bytes(range(23))
    expected = "c09ae42f0a476711f2b25d5f08ff49a4453a6814ca18e5f4"
    assert _ecb_encrypt(key, 40, _pkcs5(plain)).hex() == expected


@pytest.mark.parametrize(
    ("bits", "expected"),
    [(128, "8281f7ffddd7888c2a2ac0ce4c89b666"), (40, "23c87013422ea8985cdf7a9beadb961b")],
)
def test_cryptoapi_cbc_unsalted_56_bit_key(bits, expected):
    """A 7-byte unsalted CryptoAPI key matches Windows in CBC with a zero IV at 128 and 40 effective bits."""
    key = bytes.fromhex("d5e1a7e9ac38c1")
    plain = bytes(range(13))
    assert _cbc_encrypt(key, bits, bytes(8), _pkcs5(plain)).hex() == expected


def test_effective_bits_change_the_subkeys():
    """The same key bytes at a different effective key length give different subkeys."""
    key = bytes.fromhex("d5e1a7e9ac38c1")
    assert rc2.expand_key(key, 40) != rc2.expand_key(key, 128)


def test_expand_key_returns_64_sixteen_bit_words():
    """Key expansion yields exactly 64 subkeys, each in 0..0xFFFF."""
    k = rc2.expand_key(b"\x01" * 16, 128)
    assert len(k) == 64
    assert all(0 <= w <= 0xFFFF for w in k)


@given(
    key=st.binary(min_size=1, max_size=128),
    bits=st.integers(min_value=1, max_value=1024),
    block=st.binary(min_size=8, max_size=8),
)
def test_decrypt_inverts_encrypt(key, bits, block):
    """Decrypting an encrypted block returns the original block for any valid key and effective length."""
    k = rc2.expand_key(key, bits)
    assert rc2.decrypt_block(k, rc2.encrypt_block(k, block)) == block


@given(
    key=st.binary(min_size=16, max_size=16),
    iv=st.binary(min_size=8, max_size=8),
    data=st.integers(min_value=1, max_value=4).flatmap(lambda n: st.binary(min_size=8 * n, max_size=8 * n)),
)
def test_matches_cryptography_at_128_bits(key, iv, data):
    """For 16-byte keys at 128 effective bits the output equals cryptography's RC2 (in CBC, its only mode)."""
    try:
        from cryptography.hazmat.decrepit.ciphers.algorithms import RC2
    except ImportError:
        pytest.skip("cryptography's decrepit RC2 is not available")
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    # cryptography 48 / OpenSSL refuse RC2 in ECB mode; CBC exercises the same block function.
    encryptor = Cipher(RC2(key), modes.CBC(iv)).encryptor()
    assert _cbc_encrypt(key, 128, iv, data) == encryptor.update(data) + encryptor.finalize()


@pytest.mark.parametrize("length", [0, 129])
def test_expand_key_rejects_bad_key_length(length):
    """Keys shorter than 1 byte or longer than 128 bytes are rejected with ValueError."""
    with pytest.raises(ValueError, match=r"1\.\.128 bytes"):
        rc2.expand_key(b"\xab" * length, 64)


@pytest.mark.parametrize("bits", [0, -1, 1025])
def test_expand_key_rejects_bad_effective_bits(bits):
    """Effective key lengths outside 1..1024 bits are rejected with ValueError."""
    with pytest.raises(ValueError, match=r"1\.\.1024 bits"):
        rc2.expand_key(b"\xab" * 8, bits)


def test_error_messages_never_contain_key_bytes():
    """Validation errors mention lengths only, never the key bytes in any spelling."""
    key = bytes.fromhex("d5e1a7e9ac38c1f2") * 17  # 136 bytes: too long
    with pytest.raises(ValueError, match="key must be") as excinfo:
        rc2.expand_key(key, 40)
    message = str(excinfo.value)
    for spelling in ("d5e1a7e9", "d5 e1", "\\xd5", "0xd5", repr(key[:4])):
        assert spelling not in message.lower()
    with pytest.raises(ValueError, match="effective key length") as excinfo:
        rc2.expand_key(key[:8], 2048)
    assert "d5e1" not in str(excinfo.value).lower()
    assert "\\xd5" not in str(excinfo.value)


@pytest.mark.parametrize("size", [0, 7, 9, 16])
@pytest.mark.parametrize("op", [rc2.encrypt_block, rc2.decrypt_block])
def test_block_ops_reject_wrong_block_size(op, size):
    """Encrypting or decrypting anything but exactly 8 bytes raises ValueError."""
    k = rc2.expand_key(b"\x00" * 8, 64)
    with pytest.raises(ValueError, match="8 bytes"):
        op(k, bytes(size))


@pytest.mark.parametrize("op", [rc2.encrypt_block, rc2.decrypt_block])
def test_block_ops_reject_wrong_subkey_count(op):
    """Block operations refuse a subkey schedule that does not hold exactly 64 words."""
    with pytest.raises(ValueError, match="64 subkeys"):
        op(tuple(range(63)), bytes(8))
