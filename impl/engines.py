"""Live cipher engines: the running state of a session key, kept in persistent cipher contexts.

This is what sets the reference CSP apart from the model: the model computes a continuation from an abstract
state; an engine *is* the running cipher. Every call costs O(len(data)); nothing is recomputed from history.

Block ciphers (AES, DES, 3DES-112, 3DES, RC2, and hardware keys) run ECB, CBC and CFB-8 over whole blocks (the CSP
does the length rules and the padding). Encrypt and decrypt share ONE feedback register per key, as in
CryptoAPI: interleaving them mixes the chain. Each engine tracks that register (CBC: the last ciphertext block
produced or consumed; CFB-8: the last block-length ciphertext bytes; ECB leaves it alone) so it can be read
(``inspect``, OPAQUEKEYBLOB export) and restored (import, duplicate) at any point.

Engines are cheap to create: whatever costs (a ``cryptography`` context, the RC2 key expansion, the RC4 key
schedule or state) is built on first use, so importing or duplicating a key that is handed on unused costs O(1).

* ``BlockCipher`` (AES, the DES family; the C extension of :mod:`keyhandoff.impl.evp`, when it was built)
  keeps one libcrypto EVP context for the current (mode, direction), re-keyed from the register when either
  changes or on a reset; the CSP's per-call fast path reaches it from C.
* :class:`CryptographyBlockEngine` (the same ciphers without the extension, or with ``KEYHANDOFF_NATIVE_EVP=0``)
  keeps one ``cryptography`` context the same way.
* :class:`RC2Engine` runs RFC 2268 (``keyhandoff.model.rc2``) with CryptoAPI's effective key length, in mode loops
  of its own: ``cryptography``'s RC2 has neither ECB nor an effective-bits parameter.
* :class:`TokenBlockEngine` asks the hardware token to run whole blocks (ECB, or CBC with the register as IV);
  CFB-8 is built on the token's ECB. The key material never enters this process.
* :class:`RC4Engine` keeps the keystream and the stream position. The keystream is libcrypto's RC4 on a state
  this process owns (:mod:`keyhandoff.impl.rc4_state`), so the state exports with the key and a key restored
  at position p (import, duplicate) continues in O(1). Where that library is missing, a ``cryptography`` ARC4
  context, which hides its table: a restored key then replays p keystream bytes at its first call, O(p) in
  64 KiB chunks through OpenSSL. For that fallback, key lengths ``cryptography`` refuses are mapped to an
  equivalent longer key (the RC4 key schedule reads ``K[i mod n]``, so K repeated to a length that is a
  multiple of n schedules identically), or, when no such length exists (e.g. 11 or 13..15 bytes), run by a
  small pure-Python RC4.

Key bytes handed to an engine end up inside ``cryptography`` algorithm objects or the RC2 subkey schedule:
immutable copies this module cannot wipe. The CSP drops the engine when the key dies, so they become garbage;
the canonical copy (the CSP's bytearray) is what destroy overwrites.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Final, Protocol

from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4, TripleDES
from cryptography.hazmat.decrepit.ciphers.modes import CFB8
from cryptography.hazmat.primitives.ciphers import BlockCipherAlgorithm, Cipher, CipherContext, algorithms, modes

from keyhandoff.impl.evp import native_evp
from keyhandoff.impl.rc4_state import STATE_BYTES, NativeRC4, native_rc4, rc4_schedule
from keyhandoff.impl.token import Token
from keyhandoff.model import rc2
from keyhandoff.model import wincrypt as w

__all__ = [
    "CryptographyBlockEngine",
    "Engine",
    "RC2Engine",
    "RC4Engine",
    "TokenBlockEngine",
    "block_cipher_specs",
    "software_engine",
]

_FAST_FORWARD_CHUNK: Final = 64 * 1024
_ZEROS: Final = bytes(_FAST_FORWARD_CHUNK)
_ECB: Final = w.CRYPT_MODE_ECB
_CFB_CHUNK: Final = 4096  # ciphertext bytes per token call when decrypting CFB-8 on a hardware key


class Engine(Protocol):
    """A key's running cipher. ``run`` takes whole blocks (any length for RC4) and advances the shared state."""

    @property
    def register(self) -> bytes:
        """The live feedback register (block ciphers); b"" for RC4."""
        ...

    @property
    def stream_pos(self) -> int:
        """Keystream bytes used since the last reset (RC4); 0 for block ciphers."""
        ...

    @property
    def stream_state(self) -> bytes:
        """RC4's state at ``stream_pos`` (i, j and the table: 258 secret bytes) when it can be exported and is
        worth it (past position 0); b"" otherwise and for block ciphers."""
        ...

    def run(self, mode: int, data: bytes, *, decrypt: bool) -> bytes:
        """Encrypt or decrypt ``data`` in ``mode`` (a usable CRYPT_MODE_*; ignored by RC4), moving the state on."""
        ...

    def hot(self, mode: int, data: bytes, decrypt: bool, /) -> bytes:
        """``run`` for the CSP's per-call fast path, on data it has checked (non-empty whole blocks in a usable
        mode; any length for RC4): positional, and skipping run's own checks where an engine can."""
        ...

    def reset(self, iv: bytes) -> None:
        """Back to the start: register := ``iv`` (block ciphers), or the RC4 key schedule."""
        ...

    def wipe(self) -> None:
        """The key died: zero what secret state this process owns (RC4's state). ``cryptography``'s objects
        cannot be wiped from here; they go with the engine."""
        ...

    def clone(self) -> Engine:
        """An independent engine in exactly this state (CryptDuplicateKey)."""
        ...


# --- block ciphers -----------------------------------------------------------------------------------------


class _BlockEngine(abc.ABC):
    """Mode dispatch and register tracking shared by every block engine; subclasses supply the cipher."""

    def __init__(self, block: int, register: bytes) -> None:
        if len(register) != block:
            raise ValueError(f"the register must be one block ({block} bytes), got {len(register)}")
        self._block = block
        self._register = bytes(register)

    @property
    def register(self) -> bytes:
        return self._register

    @property
    def stream_pos(self) -> int:
        return 0

    @property
    def stream_state(self) -> bytes:
        return b""

    def run(self, mode: int, data: bytes, *, decrypt: bool) -> bytes:
        if len(data) % self._block:
            raise ValueError("block engines take whole blocks (the CSP checks lengths first)")
        if not data:
            return b""
        if mode == w.CRYPT_MODE_ECB:
            return self._ecb(data, decrypt)  # ECB has no feedback: the register stays as it is
        if mode == w.CRYPT_MODE_CBC:
            out = self._cbc(data, decrypt)
        elif mode == w.CRYPT_MODE_CFB:
            out = self._cfb8(data, decrypt)
        else:
            raise ValueError(f"mode {mode} is not runnable (the CSP refuses it first)")
        # CBC: the last ciphertext block; CFB-8: the last block-length ciphertext bytes. Data is whole blocks,
        # so in both modes that is the last block of the ciphertext side. Updated only after the cipher
        # succeeded: an error (a deleted token object) leaves the state untouched.
        ciphertext = data if decrypt else out
        self._register = ciphertext[-self._block :]
        return out

    def hot(self, mode: int, data: bytes, decrypt: bool, /) -> bytes:
        return self.run(mode, data, decrypt=decrypt)

    def reset(self, iv: bytes) -> None:
        if len(iv) != self._block:
            raise ValueError(f"the IV must be one block ({self._block} bytes), got {len(iv)}")
        self._register = bytes(iv)
        self._invalidate()

    def wipe(self) -> None:  # noqa: B027 - nothing of a block engine's is ours to wipe (see Engine.wipe)
        """Nothing to zero: the register is ciphertext, and the cipher objects belong to ``cryptography``."""

    def _invalidate(self) -> None:  # noqa: B027 - a hook: only engines with a live context override it
        """The register was replaced from outside: drop anything that continues from the old one."""

    @abc.abstractmethod
    def _ecb(self, data: bytes, decrypt: bool) -> bytes: ...

    @abc.abstractmethod
    def _cbc(self, data: bytes, decrypt: bool) -> bytes: ...

    @abc.abstractmethod
    def _cfb8(self, data: bytes, decrypt: bool) -> bytes: ...

    @abc.abstractmethod
    def clone(self) -> Engine: ...


class CryptographyBlockEngine(_BlockEngine):
    """AES and the DES family through one persistent ``cryptography`` context per (mode, direction).

    The hot path (the live context already runs this mode and direction) keeps the last ciphertext it saw as
    ``_tail`` instead of slicing the register out of it on every call: the register is its last block, taken
    when someone reads it (``register``, a context rebuild, a clone) or before the general path runs.
    """

    def __init__(
        self, algorithm: BlockCipherAlgorithm | Callable[[], BlockCipherAlgorithm], register: bytes, block: int = 0
    ) -> None:
        """``algorithm`` is the cipher object, or a function making it on first use (then ``block`` gives its
        block length in bytes)."""
        if callable(algorithm) and block <= 0:
            raise ValueError("a deferred cipher object needs its block length")
        super().__init__(block if callable(algorithm) else algorithm.block_size // 8, register)
        self._algorithm = algorithm
        self._context: CipherContext | None = None
        self._context_mode = -1  # the (mode, direction) the live context runs; meaningless while it is None
        self._context_decrypt = False
        self._tail: bytes | None = None  # the last ciphertext of the hot path; None when _register is current

    @property
    def register(self) -> bytes:
        self._settle()
        return self._register

    def _settle(self) -> None:
        """Bring ``_register`` up to date with the hot path's last ciphertext."""
        tail = self._tail
        if tail is not None:
            self._register = tail[-self._block :]
            self._tail = None

    def run(self, mode: int, data: bytes, *, decrypt: bool) -> bytes:
        # The hot path (the same result as the general one): the live context already runs this mode and
        # direction, and the data is whole, non-empty blocks.
        context = self._context
        if (
            context is not None
            and mode == self._context_mode
            and decrypt == self._context_decrypt
            and data
            and not len(data) % self._block
        ):
            out = context.update(data)
            if mode != _ECB:  # ECB has no feedback; CBC and CFB-8 end on the last ciphertext block
                self._tail = data if decrypt else out
            return out
        self._settle()  # the general path reads and writes _register itself
        return super().run(mode, data, decrypt=decrypt)

    def hot(self, mode: int, data: bytes, decrypt: bool, /) -> bytes:
        # run's hot path without its length checks (the CSP's fast path made them).
        context = self._context
        if context is not None and mode == self._context_mode and decrypt is self._context_decrypt:
            out = context.update(data)
            if mode != _ECB:
                self._tail = data if decrypt else out
            return out
        return self.run(mode, data, decrypt=decrypt)

    def _stream(self, mode: int, decrypt: bool) -> CipherContext:
        """The live context for this mode and direction, rebuilt from the register when they changed.

        The context continues exactly where the register says only while every call goes through it; a call in
        another mode or direction moved the register without it, so it is rebuilt (O(1)).
        """
        if self._context is None or self._context_mode != mode or self._context_decrypt != decrypt:
            cipher_mode: modes.Mode
            if mode == _ECB:
                cipher_mode = modes.ECB()
            elif mode == w.CRYPT_MODE_CBC:
                cipher_mode = modes.CBC(self._register)
            else:
                cipher_mode = CFB8(self._register)
            algorithm = self._algorithm
            if callable(algorithm):  # made on first use
                algorithm = self._algorithm = algorithm()
            cipher = Cipher(algorithm, cipher_mode)
            self._context = cipher.decryptor() if decrypt else cipher.encryptor()
            self._context_mode = mode
            self._context_decrypt = decrypt
        return self._context

    def _ecb(self, data: bytes, decrypt: bool) -> bytes:
        return self._stream(_ECB, decrypt).update(data)

    def _cbc(self, data: bytes, decrypt: bool) -> bytes:
        return self._stream(w.CRYPT_MODE_CBC, decrypt).update(data)

    def _cfb8(self, data: bytes, decrypt: bool) -> bytes:
        return self._stream(w.CRYPT_MODE_CFB, decrypt).update(data)

    def _invalidate(self) -> None:
        self._context = None
        self._context_mode = -1
        self._tail = None  # reset has just set the register

    def clone(self) -> Engine:
        # cryptography contexts cannot be copied; a fresh one from the register continues identically.
        return CryptographyBlockEngine(self._algorithm, self.register, self._block)


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(len(a), "little")


class RC2Engine(_BlockEngine):
    """RC2 (RFC 2268) with an explicit effective key length, in this module's own ECB/CBC/CFB-8 loops.

    ``subkeys`` is the expanded key, or a function giving it: :meth:`keyed` defers the expansion (tens of
    microseconds of pure Python) to the first block, so an import or duplicate that is never used costs nothing.
    """

    def __init__(self, subkeys: tuple[int, ...] | Callable[[], tuple[int, ...]], register: bytes) -> None:
        super().__init__(rc2.BLOCK_SIZE, register)
        self._schedule = subkeys

    @classmethod
    def keyed(cls, cipher_key: bytes, effective_bits: int, register: bytes) -> RC2Engine:
        """Expand ``cipher_key`` (key || salt) once, on first use; every block then costs one RFC 2268 block
        operation."""
        key = bytes(cipher_key)
        return cls(lambda: rc2.expand_key(key, effective_bits), register)

    @property
    def _subkeys(self) -> tuple[int, ...]:
        schedule = self._schedule
        if callable(schedule):
            schedule = self._schedule = schedule()
        return schedule

    def _blocks(self, data: bytes) -> list[bytes]:
        return [data[i : i + rc2.BLOCK_SIZE] for i in range(0, len(data), rc2.BLOCK_SIZE)]

    def _ecb(self, data: bytes, decrypt: bool) -> bytes:
        op = rc2.decrypt_block if decrypt else rc2.encrypt_block
        subkeys = self._subkeys
        return b"".join(op(subkeys, block) for block in self._blocks(data))

    def _cbc(self, data: bytes, decrypt: bool) -> bytes:
        subkeys = self._subkeys
        chain = self._register
        out = []
        for block in self._blocks(data):
            if decrypt:
                out.append(_xor(rc2.decrypt_block(subkeys, block), chain))
                chain = block
            else:
                chain = rc2.encrypt_block(subkeys, _xor(block, chain))
                out.append(chain)
        return b"".join(out)

    def _cfb8(self, data: bytes, decrypt: bool) -> bytes:
        # Per byte: encrypt the register, XOR its first byte with the data byte, shift the register left one
        # byte and append the ciphertext byte.
        subkeys = self._subkeys
        shift = bytearray(self._register)
        out = bytearray(len(data))
        for index, byte in enumerate(data):
            pad = rc2.encrypt_block(subkeys, bytes(shift))[0]
            out[index] = byte ^ pad
            del shift[0]
            shift.append(byte if decrypt else out[index])
        return bytes(out)

    def clone(self) -> Engine:
        return RC2Engine(self._schedule, self._register)  # a pending expansion is a pure function: shared


class TokenBlockEngine(_BlockEngine):
    """A hardware key: the token runs the block cipher on whole blocks; this engine keeps the register."""

    def __init__(self, token: Token, obj: int, block: int, register: bytes) -> None:
        super().__init__(block, register)
        self._token = token
        self._obj = obj

    def _ecb(self, data: bytes, decrypt: bool) -> bytes:
        return self._token.cipher(self._obj, "ecb", b"", data, decrypt=decrypt)

    def _cbc(self, data: bytes, decrypt: bool) -> bytes:
        return self._token.cipher(self._obj, "cbc", self._register, data, decrypt=decrypt)

    def _cfb8(self, data: bytes, decrypt: bool) -> bytes:
        block = self._block
        if decrypt:
            # Every register a CFB-8 decryption passes through is known from the ciphertext alone (register ||
            # ciphertext, one window per byte), so one token ECB call per chunk computes all the pads (chunks
            # bound the window buffer to block x _CFB_CHUNK bytes).
            stream = self._register + data
            out = bytearray()
            for start in range(0, len(data), _CFB_CHUNK):
                count = min(_CFB_CHUNK, len(data) - start)
                windows = b"".join(stream[i : i + block] for i in range(start, start + count))
                pads = self._token.cipher(self._obj, "ecb", b"", windows, decrypt=False)
                out += bytes(data[start + i] ^ pads[i * block] for i in range(count))
            return bytes(out)
        # Encryption feeds each ciphertext byte back before the next pad: one token call per byte.
        shift = bytearray(self._register)
        out = bytearray(len(data))
        for index, byte in enumerate(data):
            pad = self._token.cipher(self._obj, "ecb", b"", bytes(shift), decrypt=False)[0]
            out[index] = byte ^ pad
            del shift[0]
            shift.append(out[index])
        return bytes(out)

    def clone(self) -> Engine:
        return TokenBlockEngine(self._token, self._obj, self._block, self._register)


# --- RC4 ---------------------------------------------------------------------------------------------------


class _Keystream(Protocol):
    def update(self, data: bytes) -> bytes: ...


class _PythonRC4:
    """RC4 for the key lengths OpenSSL's wrapper refuses and no multiple of which it takes."""

    def __init__(self, key: bytes) -> None:
        self._table = list(rc4_schedule(key))
        self._i = 0
        self._j = 0

    def update(self, data: bytes) -> bytes:
        table, i, j = self._table, self._i, self._j
        out = bytearray(len(data))
        for index, byte in enumerate(data):
            i = (i + 1) & 0xFF
            j = (j + table[i]) & 0xFF
            table[i], table[j] = table[j], table[i]
            out[index] = byte ^ table[(table[i] + table[j]) & 0xFF]
        self._i, self._j = i, j
        return bytes(out)


_ARC4_BYTES: Final = tuple(sorted(bits // 8 for bits in ARC4.key_sizes))


def _arc4_equivalent(key: bytes) -> bytes | None:
    """A key ``cryptography``'s ARC4 accepts with the same key schedule as ``key``, or None.

    The RC4 key schedule uses ``K[i mod n]`` for i in 0..255, so K repeated r times (length r*n) gives the same
    table: K'[i mod rn] = K[(i mod rn) mod n] = K[i mod n].
    """
    for size in _ARC4_BYTES:
        if size % len(key) == 0:
            return key * (size // len(key))
    return None


class RC4Engine:
    """RC4: the keystream and its position (shared by encrypt and decrypt), built on first use.

    With libcrypto's RC4 at hand (:func:`keyhandoff.impl.rc4_state.native_rc4`) the keystream is a state this
    process owns: it exports as ``stream_state`` and a key restored with it (import, duplicate) continues in
    O(1) at any position. Otherwise the keystream is a ``cryptography`` ARC4 context, which hides its table: a key
    restored at position p replays p keystream bytes at its first call (:func:`_replay`), and exports no state.
    """

    def __init__(self, cipher_key: bytes, stream_pos: int = 0, stream_state: bytes = b"") -> None:
        """``stream_state``: the state at ``stream_pos`` as exported (b"": rebuilt from the key schedule)."""
        if not 1 <= len(cipher_key) <= 256:
            raise ValueError(f"an RC4 key is 1..256 bytes, got {len(cipher_key)}")
        if stream_pos < 0:
            raise ValueError("a stream position is not negative")
        if stream_state and len(stream_state) != STATE_BYTES:
            raise ValueError(f"an RC4 state is {STATE_BYTES} bytes")
        self._key = bytes(cipher_key)
        self._keystream: _Keystream | None = None  # at self._pos once built
        self._pos = stream_pos
        self._state = bytes(stream_state)  # only until the keystream is built; then the keystream holds it

    def _live(self) -> _Keystream:
        """The keystream at the current position, built on first use."""
        keystream = self._keystream
        if keystream is None:
            keystream = self._keystream = self._start()
            self._state = b""
        return keystream

    def _start(self) -> _Keystream:
        lib = native_rc4()
        if lib is not None and self._state:
            return NativeRC4.restored(lib, self._state)  # O(1) at any position
        keystream: _Keystream
        if lib is not None:
            keystream = NativeRC4.keyed(lib, self._key)
        else:
            equivalent = _arc4_equivalent(self._key)
            keystream = _PythonRC4(self._key) if equivalent is None else Cipher(ARC4(equivalent), None).encryptor()
        _replay(keystream, self._pos)
        return keystream

    @property
    def register(self) -> bytes:
        return b""

    @property
    def stream_pos(self) -> int:
        return self._pos

    @property
    def stream_state(self) -> bytes:
        keystream = self._keystream
        if keystream is None:
            return self._state
        return keystream.export() if self._pos and isinstance(keystream, NativeRC4) else b""

    def run(self, mode: int, data: bytes, *, decrypt: bool) -> bytes:
        if not data:
            return b""
        out = self._live().update(data)
        self._pos += len(data)
        return out

    def hot(self, mode: int, data: bytes, decrypt: bool, /) -> bytes:
        return self.run(mode, data, decrypt=decrypt)

    def reset(self, iv: bytes) -> None:
        self.wipe()
        self._pos = 0

    def wipe(self) -> None:
        keystream = self._keystream
        if isinstance(keystream, NativeRC4):
            keystream.wipe()  # in place, even if something still holds it
        self._keystream = None
        self._state = b""

    def clone(self) -> Engine:
        return RC4Engine(self._key, self._pos, self.stream_state)


def _replay(keystream: _Keystream, count: int) -> None:
    """Discard ``count`` keystream bytes: O(count), only where no exported state could be used."""
    remaining = count
    while remaining:
        step = min(remaining, _FAST_FORWARD_CHUNK)
        keystream.update(_ZEROS[:step])
        remaining -= step


# --- construction ------------------------------------------------------------------------------------------

# The block ciphers: the cipher that runs each (DES-EDE3 for the whole DES family) and the key it takes.
_BLOCK_ALGORITHMS: Final[dict[int, tuple[str, Callable[[bytes], bytes]]]] = {
    w.CALG_AES_128: ("AES", bytes),
    w.CALG_AES_192: ("AES", bytes),
    w.CALG_AES_256: ("AES", bytes),
    w.CALG_DES: ("DES-EDE3", lambda key: key * 3),  # EDE with K1 = K2 = K3 is single DES
    w.CALG_3DES_112: ("DES-EDE3", lambda key: key + key[:8]),  # two-key EDE: K3 = K1
    w.CALG_3DES: ("DES-EDE3", bytes),
}
# Each cipher in cryptography (the Python data path) and its block length in bytes.
_CRYPTOGRAPHY: Final[dict[str, tuple[Callable[[bytes], BlockCipherAlgorithm], int]]] = {
    "AES": (algorithms.AES, 16),
    "DES-EDE3": (TripleDES, 8),
}


def block_cipher_specs() -> dict[int, tuple[str, Callable[[bytes], bytes] | None]]:
    """ALG_ID -> (the cipher of its C engine, its key expansion, or None where the key is the engine's key): for
    the CSP's native import (keyhandoff.impl._evp.FastImport), which builds these engines itself."""
    return {alg: (name, None if expand is bytes else expand) for alg, (name, expand) in _BLOCK_ALGORITHMS.items()}


def software_engine(
    alg: int,
    key: bytes,
    salt: bytes,
    effective_bits: int,
    register: bytes,
    stream_pos: int = 0,
    stream_state: bytes = b"",
) -> Engine:
    """The engine of a software key in the given running state (the CSP has validated every argument).

    RC2 and RC4 are keyed with key || salt (rsaenh); RC2 with ``effective_bits`` as RFC 2268's T1. Nothing
    costly happens here: cipher objects, contexts and key schedules are made on first use.
    """
    if alg == w.CALG_RC4:
        return RC4Engine(key + salt, stream_pos, stream_state)
    if alg == w.CALG_RC2:
        return RC2Engine.keyed(key + salt, effective_bits, register)
    spec = _BLOCK_ALGORITHMS.get(alg)
    if spec is None:
        raise ValueError(f"no engine for ALG_ID 0x{alg:04X}")
    name, expand = spec
    cipher_key = expand(key)
    evp = native_evp()
    if evp is not None:
        engine: Engine = evp.BlockCipher(name, cipher_key, register)
        return engine
    factory, block = _CRYPTOGRAPHY[name]
    return CryptographyBlockEngine(lambda: factory(cipher_key), register, block)
