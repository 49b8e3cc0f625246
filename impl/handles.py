"""A thread-safe handle table whose handles are unguessable and never reused.

CryptoAPI hands out ``HCRYPTKEY`` / ``HCRYPTPROV`` values that callers keep and pass back. Wine's rsaenh gives
``index + 1`` from a LIFO free list, so a stale handle reaches whatever object was created next: a stale key
handle held by one part of a program silently drives another part's key. Here a handle is a random nonzero 62-bit
integer drawn from the OS's CSPRNG (``os.urandom``, read 4 KiB at a time: one system call per 512 handles
instead of one per handle), and the table remembers every handle it ever issued: a destroyed object's entry stays as a
tombstone (its final, wiped state, so ``inspect`` can still report it) and its number is never drawn again.
62 bits keep handles positive and inside a signed 64-bit integer (pickling, SQLite, C bridges all take them).
"""

from __future__ import annotations

import os
import struct
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Final, Generic, TypeVar

__all__ = ["HANDLE_BITS", "HandleTable"]

HANDLE_BITS: Final = 62
_DRAW: Final = struct.Struct("<Q")
_POOL_BYTES: Final = 4096

T = TypeVar("T")


_TABLES: weakref.WeakSet[HandleTable[object]] = weakref.WeakSet()


def _forget_pools() -> None:
    """A forked child must not draw the handles its parent is about to draw."""
    for table in list(_TABLES):
        table._pool, table._at = b"", 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools)


class HandleTable(Generic[T]):
    """Maps handles to objects; :meth:`issue` draws a fresh handle, nothing ever removes one.

    The object stored for a handle may be replaced (a live record by its tombstone) but the handle stays taken
    for the table's life, so a lookup of a stale handle finds its tombstone, never a newer object.

    Writes (issue, replace) take the table's lock; reads do not. A read is one ``dict`` lookup, which is atomic
    (the GIL; per-object locks in free-threaded builds), and an entry is only ever added or replaced by another
    whole record, so a reader sees either the old record or the new one, never a torn one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[int, T] = {}
        self._pool = b""  # random bytes not yet drawn (under the lock); handles are 8 of them, shifted
        self._at = 0
        _TABLES.add(self)  # type: ignore[arg-type]  # the pool, not T, is what fork hygiene touches
        #: Lock-free lookup for a handle whose type is exactly ``int`` (callers check ``type(h) is int``: the dict
        #: would also match ``True`` or ``1.0``). The CSP's per-call fast paths use it; everyone else :meth:`get`.
        self.lookup: Callable[[int], T | None] = self._entries.get

    def issue(self, value: T) -> int:
        """Store ``value`` under a handle drawn at random among those never issued, and return it."""
        with self._lock:
            while True:
                handle = self._draw()
                # 0 is the CryptoAPI "no handle"; a collision with any earlier handle (live or dead) redraws.
                if handle != 0 and handle not in self._entries:
                    self._entries[handle] = value
                    return handle

    def _draw(self) -> int:
        """A uniformly random HANDLE_BITS-bit number (the lock is held)."""
        if self._at + _DRAW.size > len(self._pool):
            self._pool, self._at = os.urandom(_POOL_BYTES), 0
        (word,) = _DRAW.unpack_from(self._pool, self._at)
        self._at += _DRAW.size
        return int(word) >> (64 - HANDLE_BITS)

    def get(self, handle: object) -> T | None:
        """The object (or tombstone) stored for ``handle``; None for a value this table never issued."""
        if not isinstance(handle, int) or isinstance(handle, bool):
            return None
        return self._entries.get(handle)  # lock-free: see the class docstring

    def replace(self, handle: int, value: T) -> None:
        """Put a tombstone (or any new record) in place of an issued handle's object; the handle stays taken."""
        with self._lock:
            if handle not in self._entries:
                raise KeyError("replace: this table never issued that handle")
            self._entries[handle] = value

    def __contains__(self, handle: object) -> bool:
        return self.get(handle) is not None

    def __len__(self) -> int:
        """How many handles were ever issued (tombstones included)."""
        return len(self._entries)

    def __iter__(self) -> Iterator[int]:
        """A snapshot of every issued handle."""
        with self._lock:
            return iter(list(self._entries))
