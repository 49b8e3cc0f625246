"""Ciphertext as a function of the abstract key state: one-shot primitive calls, no replay of history.

A CBC continuation is CBC under IV = the live register; a CFB-8 continuation is CFB-8 under IV = the register;
RC4 output is the keystream from the current state table. Each call costs O(len(data)).
Block ciphers other than RC2 go through ``cryptography``; RC2 with its effective key length through
:mod:`keyhandoff.model.rc2` (``cryptography`` only offers 128-bit-effective RC2).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.decrepit.ciphers.modes import CFB8
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from keyhandoff.model import rc2
from keyhandoff.model import wincrypt as w

__all__ = ["RC4State", "block_cipher", "rc4_apply", "rc4_schedule"]


@attrs.frozen
class RC4State:
    """The RC4 state table and indices: the stream position made O(1) to resume (secret: no repr)."""

    table: bytes = attrs.field(repr=False)
    i: int = attrs.field(repr=False)
    j: int = attrs.field(repr=False)


def rc4_schedule(cipher_key: bytes) -> RC4State:
    """RC4 key schedule (KSA): the state at stream position 0."""
    s = list(range(256))
    j = 0
    n = len(cipher_key)
    for i in range(256):
        j = (j + s[i] + cipher_key[i % n]) & 0xFF
        s[i], s[j] = s[j], s[i]
    return RC4State(bytes(s), 0, 0)


def rc4_apply(state: RC4State, data: bytes) -> tuple[bytes, RC4State]:
    """XOR ``data`` with the keystream from ``state`` (PRGA); returns the output and the advanced state."""
    s = bytearray(state.table)
    i, j = state.i, state.j
    out = bytearray(len(data))
    for n, byte in enumerate(data):
        i = (i + 1) & 0xFF
        si = s[i]
        j = (j + si) & 0xFF
        sj = s[j]
        s[i], s[j] = sj, si
        out[n] = byte ^ s[(si + sj) & 0xFF]
    return bytes(out), RC4State(bytes(s), i, j)


def _native(alg: int, cipher_key: bytes) -> algorithms.AES | TripleDES:
    if alg in (w.CALG_AES_128, w.CALG_AES_192, w.CALG_AES_256):
        return algorithms.AES(cipher_key)
    if alg == w.CALG_DES:
        return TripleDES(cipher_key * 3)  # EDE with K1=K2=K3 is single DES
    if alg == w.CALG_3DES_112:
        return TripleDES(cipher_key + cipher_key[:8])  # two-key 3DES: K3 = K1
    return TripleDES(cipher_key)


def block_cipher(
    alg: int,
    cipher_key: bytes,
    effective_bits: int,
    mode: int,
    register: bytes,
    data: bytes,
    *,
    decrypt: bool,
) -> tuple[bytes, bytes]:
    """Run ``data`` (a whole number of blocks) through the cipher in ``mode`` from ``register``.

    Returns the output and the new register. ECB leaves the register as it is. Callers check lengths and modes
    first: this function is only ever called with a supported mode.
    """
    if not data:
        return b"", register
    if alg == w.CALG_RC2:
        return _rc2_mode(rc2.expand_key(cipher_key, effective_bits), mode, register, data, decrypt=decrypt)
    primitive = _native(alg, cipher_key)
    mode_obj: modes.Mode
    if mode == w.CRYPT_MODE_ECB:
        mode_obj = modes.ECB()
    elif mode == w.CRYPT_MODE_CBC:
        mode_obj = modes.CBC(register)
    elif mode == w.CRYPT_MODE_CFB:
        mode_obj = CFB8(register)
    else:
        raise ValueError(f"unsupported mode {mode}")
    ctx = Cipher(primitive, mode_obj)
    out = (ctx.decryptor() if decrypt else ctx.encryptor()).update(data)
    ciphertext = data if decrypt else out
    return out, _next_register(mode, register, ciphertext)


def _next_register(mode: int, register: bytes, ciphertext: bytes) -> bytes:
    """CBC: the last ciphertext block; CFB-8: the last block-length ciphertext bytes; ECB: unchanged."""
    if mode == w.CRYPT_MODE_ECB:
        return register
    size = len(register)
    if len(ciphertext) >= size:
        return ciphertext[-size:]
    return (register + ciphertext)[-size:]


def _rc2_mode(
    subkeys: tuple[int, ...], mode: int, register: bytes, data: bytes, *, decrypt: bool
) -> tuple[bytes, bytes]:
    enc: Callable[[tuple[int, ...], bytes], bytes] = rc2.encrypt_block
    size = rc2.BLOCK_SIZE
    out = bytearray()
    if mode == w.CRYPT_MODE_CFB:
        reg = register
        for byte in data:
            pad = enc(subkeys, reg)[0]
            out_byte = byte ^ pad
            out.append(out_byte)
            reg = reg[1:] + bytes([byte if decrypt else out_byte])
        return bytes(out), reg
    reg = register
    for off in range(0, len(data), size):
        block = data[off : off + size]
        if mode == w.CRYPT_MODE_ECB:
            out += rc2.decrypt_block(subkeys, block) if decrypt else enc(subkeys, block)
        elif decrypt:
            out += bytes(a ^ b for a, b in zip(rc2.decrypt_block(subkeys, block), reg, strict=True))
            reg = block
        else:
            reg = enc(subkeys, bytes(a ^ b for a, b in zip(block, reg, strict=True)))
            out += reg
    return bytes(out), reg
