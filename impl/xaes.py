"""XAES-256-GCM (https://c2sp.org/XAES-256-GCM): AES-256-GCM under a subkey derived from the key and the first
half of a 192-bit nonce, so that nonces can be drawn at random for about 2**80 messages (collision risk 2**-32).

Why not AES-256-GCM with random 96-bit nonces: under one key those are safe for 2**32 messages at most
(NIST SP 800-38D, section 8.3), and one repeated nonce gives away GCM's authentication key, so every blob could
then be forged. An installation's sealing key lives as long as the installation, and a server handing off two
keys per TLS handshake at a thousand handshakes a second would seal 2**32 blobs in 25 days.

The subkey is the NIST SP 800-108r1 counter KDF with CMAC-AES-256, label ``X``, the nonce's first 12 bytes as
context and a 16-bit counter: two single-block CMACs, that is ``AES-256_K(M_i xor K1)`` for
``M_i = 00 i 58 00 || N[:12]`` (i = 1, 2), where ``K1`` is CMAC's first subkey (computed once per key). The
message is then sealed by AES-256-GCM under that subkey with the nonce's last 12 bytes.

Deriving a subkey and setting up GCM under it costs about 4.5 us in Python, three times the seal itself, and a
handoff pays it twice (export, import). So :meth:`Xaes256Gcm.new_nonce` keeps the first half for 2**24 nonces
(a new one after that, and in a forked child), drawing only the second half per nonce, and both sides keep the
subkeys of recent first halves. Under one subkey GCM then sees at most 2**24 random 96-bit nonces, a collision
chance of 2**-49; first halves are random 96-bit values too, drawn once per 2**24 blobs. Every nonce is still a
valid XAES-256-GCM nonce, and :meth:`decrypt` takes any.
"""

from __future__ import annotations

import os
import threading
from typing import Final

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["KEY_SIZE", "NONCE_SIZE", "Xaes256Gcm"]

KEY_SIZE: Final = 32
NONCE_SIZE: Final = 24
_HALF: Final = NONCE_SIZE // 2
_BLOCK_BITS: Final = 128
_BLOCK_MASK: Final = (1 << _BLOCK_BITS) - 1
_CMAC_RB: Final = 0x87  # the reduction constant of GF(2^128) in CMAC's subkey doubling
# M_i's first four bytes, 00 || i || "X" || 00, placed above the nonce half's 96 bits.
_M1_PREFIX: Final = 0x00015800 << 96
_M2_PREFIX: Final = 0x00025800 << 96
_EPOCH_NONCES: Final = 1 << 24  # nonces new_nonce draws under one first half
_CACHED_SUBKEYS: Final = 64  # subkeys kept per instance (a handoff needs the sealing process's current one)


class Xaes256Gcm:
    """XAES-256-GCM under one 32-byte key: :meth:`encrypt` and :meth:`decrypt` take a 24-byte nonce, the data
    and the associated data, like ``cryptography``'s AEAD classes (a wrong tag raises ``InvalidTag``)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"an XAES-256-GCM key is {KEY_SIZE} bytes")
        # ECB here is the bare block function, applied to the two KDF input blocks.
        self._aes = Cipher(algorithms.AES256(bytes(key)), modes.ECB()).encryptor()
        self._lock = threading.Lock()  # one live context: callers on several threads take turns at it
        doubled = int.from_bytes(self._blocks(bytes(16)), "big") << 1  # L = AES_K(0^128), then L << 1
        k1 = (doubled & _BLOCK_MASK) ^ (_CMAC_RB if doubled >> _BLOCK_BITS else 0)
        self._k1_m1, self._k1_m2 = k1 ^ _M1_PREFIX, k1 ^ _M2_PREFIX
        self._subkeys: dict[bytes, AESGCM] = {}  # GCM under the subkey of a nonce's first half, by that half
        self._first_half, self._left, self._pid = b"", 0, 0  # new_nonce's current first half, its nonces left

    def __repr__(self) -> str:
        return "Xaes256Gcm(<key redacted>)"

    def _blocks(self, data: bytes) -> bytes:
        self._lock.acquire()  # not ``with``: this is on every import's path, and the statement costs 0.5 us more
        try:
            return self._aes.update(data)
        finally:
            self._lock.release()

    def new_nonce(self) -> bytes:
        """A random nonce for :meth:`encrypt`: the current first half (random, drawn anew every 2**24 nonces and
        in a forked child) and a random second half."""
        self._lock.acquire()
        try:
            if not self._left or self._pid != os.getpid():
                self._first_half, self._left, self._pid = os.urandom(_HALF), _EPOCH_NONCES, os.getpid()
            self._left -= 1
            first_half = self._first_half
        finally:
            self._lock.release()
        return first_half + os.urandom(NONCE_SIZE - _HALF)

    def _gcm(self, nonce: bytes) -> AESGCM:
        """AES-256-GCM under the subkey of ``nonce``'s first half."""
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"an XAES-256-GCM nonce is {NONCE_SIZE} bytes")
        first_half = nonce[:_HALF]
        gcm = self._subkeys.get(first_half)
        if gcm is None:
            half = int.from_bytes(first_half, "big")
            blocks = ((self._k1_m1 ^ half) << _BLOCK_BITS) | (self._k1_m2 ^ half)
            gcm = AESGCM(self._blocks(blocks.to_bytes(32, "big")))
            if len(self._subkeys) >= _CACHED_SUBKEYS:  # blobs of many first halves (other processes, forgeries)
                self._subkeys.clear()
            self._subkeys[first_half] = gcm
        return gcm

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        """The ciphertext of ``data`` followed by its 16-byte tag."""
        return self._gcm(nonce).encrypt(nonce[_HALF:], data, associated_data)

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        """The plaintext of ``data`` (ciphertext and tag); ``InvalidTag`` unless it was sealed under this key, with
        this nonce and associated data, byte for byte."""
        return self._gcm(nonce).decrypt(nonce[_HALF:], data, associated_data)
