"""RC2 block cipher (RFC 2268) with an explicit effective key length.

This is a small, pure-Python implementation of RC2 exactly as RFC 2268 describes it:

* key expansion (section 2) turns a key of 1..128 bytes into 64 16-bit subkeys ``K[0..63]``,
  bounded by an *effective key length* of ``T1`` bits (1..1024) through the ``PITABLE``
  permutation and the mask ``TM``;
* encryption (section 3) is 5 MIXING rounds, a MASHING round, 6 MIXING rounds, a MASHING
  round and 5 MIXING rounds over four little-endian 16-bit words;
* decryption (section 4) runs the inverse ("R-MIXING" / "R-MASHING") rounds in reverse order.

Why it exists: ``cryptography`` only offers RC2 with a 128-bit key whose effective key length
equals 128 bits.  CryptoAPI keys RC2 with ``key || salt`` and an independent effective key
length (``KP_EFFECTIVE_KEYLEN``), which is 40 bits by default in some cases (for instance the
Base provider), so the model needs a cipher where the two are set separately.

Only single-block operations are provided; modes and padding belong to the callers.  No key
material appears in any exception message.
"""

from typing import Final

__all__ = ["BLOCK_SIZE", "decrypt_block", "encrypt_block", "expand_key"]

BLOCK_SIZE: Final = 8

# RFC 2268 section 2: a permutation of 0..255 based on the digits of pi.
PITABLE: Final[tuple[int, ...]] = tuple(
    bytes.fromhex(
        "d978f9c419ddb5ed28e9fd794aa0d89d c67e37832b76538e624c6488448bfba2"
        "179a59f587b34f1361456d8d09817d32 bd8f40eb86b77b0bf09521225c6b4e82"
        "54d66593ce60b21c7356c014a78cf1dc 1275ca1f3bbee4d1423dd430a33cb626"
        "6fbf0eda4669075727f21d9bbc944303 f811c7f690ef3ee706c3d52fc8661ed7"
        "08e8eade8052eef784aa72ac354d6a2a 961ad2715a1549744b9fd05e0418a4ec"
        "c2e0416e0f51cbcc2491af50a1f47039 997c3a8523b8b47afc02365b25559731"
        "2d5dfa98e38a92ae05df2910676cbac9 d300e6cfe19ea82c6316013f58e289a9"
        "0d38341bab33ffb0bb480c5fb9b1cd2e c5f3db47e5a59c770aa62068fe7fc1ad"
    )
)

_MASK: Final = 0xFFFF


def expand_key(key: bytes, effective_bits: int) -> tuple[int, ...]:
    """Return the 64 16-bit subkeys K[0..63] for ``key`` at ``effective_bits`` (RFC 2268 section 2)."""
    t = len(key)
    if not 1 <= t <= 128:
        raise ValueError(f"RC2 key must be 1..128 bytes long, got {t} bytes")
    if not 1 <= effective_bits <= 1024:
        raise ValueError(f"RC2 effective key length must be 1..1024 bits, got {effective_bits}")
    pi = PITABLE
    t8 = (effective_bits + 7) // 8
    tm = 0xFF % (1 << (8 + effective_bits - 8 * t8))
    buf = bytearray(128)
    buf[:t] = key
    for i in range(t, 128):
        buf[i] = pi[(buf[i - 1] + buf[i - t]) & 0xFF]
    buf[128 - t8] = pi[buf[128 - t8] & tm]
    for i in range(127 - t8, -1, -1):
        buf[i] = pi[buf[i + 1] ^ buf[i + t8]]
    return tuple(buf[2 * i] | (buf[2 * i + 1] << 8) for i in range(64))


def _check(subkeys: tuple[int, ...], block: bytes) -> None:
    if len(subkeys) != 64:
        raise ValueError(f"RC2 needs 64 subkeys, got {len(subkeys)}")
    if len(block) != BLOCK_SIZE:
        raise ValueError(f"RC2 block must be {BLOCK_SIZE} bytes, got {len(block)}")


def encrypt_block(subkeys: tuple[int, ...], block: bytes) -> bytes:
    """Encrypt one 8-byte block with subkeys from :func:`expand_key` (RFC 2268 section 3)."""
    _check(subkeys, block)
    k = subkeys
    r0, r1, r2, r3 = (block[i] | (block[i + 1] << 8) for i in range(0, 8, 2))
    j = 0
    for mixes in (5, 6, 5):
        for _ in range(mixes):  # MIXING round: mix up R[0], R[1], R[2], R[3]
            r0 = (r0 + k[j] + (r3 & r2) + (~r3 & r1)) & _MASK
            r0 = ((r0 << 1) | (r0 >> 15)) & _MASK
            r1 = (r1 + k[j + 1] + (r0 & r3) + (~r0 & r2)) & _MASK
            r1 = ((r1 << 2) | (r1 >> 14)) & _MASK
            r2 = (r2 + k[j + 2] + (r1 & r0) + (~r1 & r3)) & _MASK
            r2 = ((r2 << 3) | (r2 >> 13)) & _MASK
            r3 = (r3 + k[j + 3] + (r2 & r1) + (~r2 & r0)) & _MASK
            r3 = ((r3 << 5) | (r3 >> 11)) & _MASK
            j += 4
        if j < 64:  # MASHING round after the 5th and the 11th mixing round
            r0 = (r0 + k[r3 & 63]) & _MASK
            r1 = (r1 + k[r0 & 63]) & _MASK
            r2 = (r2 + k[r1 & 63]) & _MASK
            r3 = (r3 + k[r2 & 63]) & _MASK
    return bytes((r0 & 0xFF, r0 >> 8, r1 & 0xFF, r1 >> 8, r2 & 0xFF, r2 >> 8, r3 & 0xFF, r3 >> 8))


def decrypt_block(subkeys: tuple[int, ...], block: bytes) -> bytes:
    """Decrypt one 8-byte block with subkeys from :func:`expand_key` (RFC 2268 section 4)."""
    _check(subkeys, block)
    k = subkeys
    r0, r1, r2, r3 = (block[i] | (block[i + 1] << 8) for i in range(0, 8, 2))
    j = 63
    for mixes in (5, 6, 5):
        for _ in range(mixes):  # R-MIXING round: r-mix up R[3], R[2], R[1], R[0]
            r3 = ((r3 >> 5) | (r3 << 11)) & _MASK
            r3 = (r3 - k[j] - (r2 & r1) - (~r2 & r0)) & _MASK
            r2 = ((r2 >> 3) | (r2 << 13)) & _MASK
            r2 = (r2 - k[j - 1] - (r1 & r0) - (~r1 & r3)) & _MASK
            r1 = ((r1 >> 2) | (r1 << 14)) & _MASK
            r1 = (r1 - k[j - 2] - (r0 & r3) - (~r0 & r2)) & _MASK
            r0 = ((r0 >> 1) | (r0 << 15)) & _MASK
            r0 = (r0 - k[j - 3] - (r3 & r2) - (~r3 & r1)) & _MASK
            j -= 4
        if j >= 0:  # R-MASHING round after the 5th and the 11th r-mixing round
            r3 = (r3 - k[r2 & 63]) & _MASK
            r2 = (r2 - k[r1 & 63]) & _MASK
            r1 = (r1 - k[r0 & 63]) & _MASK
            r0 = (r0 - k[r3 & 63]) & _MASK
    return bytes((r0 & 0xFF, r0 >> 8, r1 & 0xFF, r1 >> 8, r2 & 0xFF, r2 >> 8, r3 & 0xFF, r3 >> 8))
