"""RC4 whose state this process owns: OpenSSL's low-level RC4 through ctypes, on an ``RC4_KEY`` we allocate.

``cryptography``'s ARC4 keeps OpenSSL's state table out of reach, so a key restored at stream position p
(import, duplicate) would have to replay p keystream bytes. OpenSSL's ``RC4_set_key`` and ``RC4`` run on an
``RC4_KEY`` the caller allocates: its two indices and its 256-entry table can be read (export, duplicate) and
written (import) in O(1), and the cipher itself still runs in OpenSSL.

The library is the libcrypto that Python's own ``ssl`` module links. The ``RC4_KEY`` layout is not part of
any stable ABI, so it is taken from ``RC4_options()`` (entries are ``int`` or ``char``) and checked once,
before first use, against what this module computes itself: the table after the key schedule, the classic
known answer (key "Key", plaintext "Plaintext") and the indices after it. Anything missing or unexpected (no
libcrypto, a build without RC4, another layout) makes :func:`native_rc4` answer None, and the engine falls back
to ``cryptography``'s ARC4 and replaying. ``KEYHANDOFF_NATIVE_RC4=0`` forces the fallback.

The state is key-equivalent secret: the ``RC4_KEY`` buffer is zeroed when its object goes (and by ``wipe``),
and no repr shows it. An exported copy is immutable bytes, like the key bytes the engines hold.
"""

from __future__ import annotations

import ctypes
import functools
import os
from array import array
from typing import Final

__all__ = ["STATE_BYTES", "NativeRC4", "native_rc4", "rc4_schedule"]

STATE_BYTES: Final = 258  # i, j, then S[0..255]: the exported form of an RC4 state


def rc4_schedule(key: bytes) -> bytes:
    """The RC4 key schedule's table for ``key`` (1..256 bytes): the layout check's reference, and the start of
    the engines' pure-Python fallback RC4."""
    table = list(range(256))
    j = 0
    for i in range(256):
        j = (j + table[i] + key[i % len(key)]) & 0xFF
        table[i], table[j] = table[j], table[i]
    return bytes(table)


class _Library:
    """libcrypto's RC4 entry points and the ``RC4_KEY`` structure its build uses."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        lib.RC4_options.restype = ctypes.c_char_p
        lib.RC4_options.argtypes = []
        options = lib.RC4_options() or b""
        if b"char" in options:
            entry: type[ctypes.c_ubyte] | type[ctypes.c_uint] = ctypes.c_ubyte
            self.code = "B"  # the array typecode of one entry, to move the table in one copy
        elif b"int" in options:
            entry, self.code = ctypes.c_uint, "I"
        else:
            raise OSError("unknown RC4_KEY layout")

        class RC4Key(ctypes.Structure):
            _fields_ = (("x", entry), ("y", entry), ("data", entry * 256))

        self.key_type = RC4Key
        self.set_key = lib.RC4_set_key
        self.set_key.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p]
        self.set_key.restype = None
        self.run = lib.RC4
        self.run.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
        self.run.restype = None


def _load() -> _Library | None:
    try:
        import _ssl  # the ssl module's extension; its libcrypto is found through it by dlsym

        return _Library(ctypes.CDLL(_ssl.__file__))
    except (ImportError, OSError, AttributeError):
        return None


# Room for any RC4_KEY (258 entries of up to 8 bytes), so that even a layout the check is about to refuse
# cannot make the library write past the buffer.
_ROOM: Final = 258 * 8


class NativeRC4:
    """An RC4 state in an ``RC4_KEY`` of our own. Not thread-safe: the CSP holds the key's lock around it."""

    __slots__ = ("_addr", "_buffer", "_lib", "_state")

    def __init__(self, lib: _Library) -> None:
        self._lib = lib
        self._buffer = ctypes.create_string_buffer(_ROOM)
        self._state = lib.key_type.from_buffer(self._buffer)
        self._addr = ctypes.addressof(self._buffer)

    def __repr__(self) -> str:
        return "NativeRC4(<state redacted>)"

    def __del__(self) -> None:
        self.wipe()

    def wipe(self) -> None:
        """Zero the state in place (the indices and the table)."""
        if hasattr(self, "_addr"):  # not if __init__ failed
            ctypes.memset(self._addr, 0, _ROOM)

    @classmethod
    def keyed(cls, lib: _Library, key: bytes) -> NativeRC4:
        """The state after the key schedule of ``key`` (1..256 bytes)."""
        if not 1 <= len(key) <= 256:
            raise ValueError(f"an RC4 key is 1..256 bytes, got {len(key)}")
        state = cls(lib)
        lib.set_key(state._addr, len(key), bytes(key))
        return state

    @classmethod
    def restored(cls, lib: _Library, exported: bytes) -> NativeRC4:
        """The state :meth:`export` gave: i, j, then a permutation of 0..255."""
        if len(exported) != STATE_BYTES or len(set(exported[2:])) != 256:
            raise ValueError("an RC4 state is i, j and a permutation of 0..255")
        state = cls(lib)
        state._state.x, state._state.y = exported[0], exported[1]
        table = array(lib.code, list(exported[2:]))  # from a list: a bytes initializer would be raw memory
        ctypes.memmove(ctypes.addressof(state._state.data), table.tobytes(), ctypes.sizeof(state._state.data))
        return state

    def export(self) -> bytes:
        """i, j and the table: :data:`STATE_BYTES` bytes of secret state."""
        table = array(self._lib.code)
        table.frombytes(bytes(self._state.data))  # the entries, whatever their width
        return bytes((self._state.x, self._state.y)) + bytes(table.tolist())

    def update(self, data: bytes) -> bytes:
        """``data`` XOR the next ``len(data)`` keystream bytes."""
        out = ctypes.create_string_buffer(len(data))
        self._lib.run(self._addr, len(data), data, out)
        return out.raw


def _works(lib: _Library) -> bool:
    """The layout check: the table after the schedule, the known answer and the indices after it. A wrong
    layout reads entries that are not bytes (ValueError) or not these: False either way."""
    key = b"Key"
    table, j = list(rc4_schedule(key)), 0
    for i in range(1, 10):
        j = (j + table[i]) & 0xFF
        table[i], table[j] = table[j], table[i]
    state = NativeRC4.keyed(lib, key)
    try:
        return (
            state.export() == bytes(2) + rc4_schedule(key)
            and state.update(b"Plaintext") == bytes.fromhex("bbf316e8d940af0ad3")
            and state.export() == bytes((9, j, *table))
        )
    except ValueError:
        return False


@functools.cache
def native_rc4() -> _Library | None:
    """libcrypto's RC4 with a checked layout, or None (``KEYHANDOFF_NATIVE_RC4=0`` forces None: the fallback)."""
    if os.environ.get("KEYHANDOFF_NATIVE_RC4") == "0":
        return None
    lib = _load()
    return lib if lib is not None and _works(lib) else None
