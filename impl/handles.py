"""A thread-safe handle table whose handles are unguessable and never reused, in memory bounded by what is live.

CryptoAPI hands out ``HCRYPTKEY`` / ``HCRYPTPROV`` values that callers keep and pass back. Wine's rsaenh gives
``index + 1`` from a LIFO free list, so a stale handle reaches whatever object was created next: a stale key
handle held by one part of a program silently drives another part's key.

Here the n-th handle a table issues is ``P(n)``, where ``P`` is a pseudorandom permutation of the 60-bit integers
under a key drawn from ``os.urandom`` for that table (a Feistel network whose round function is AES, see
:class:`HandleSequence`). Distinct counters give distinct handles, so a number is never issued twice, and the
table does not have to remember every handle it ever issued to guarantee it: a process that makes and destroys
keys for months keeps only its live objects and the last :data:`DEAD_KEPT` dead ones (their final, wiped state,
so ``inspect`` can report a key just destroyed). An older dead handle is simply unknown, which every CryptoAPI
call answers with the same code as a dead one (NTE_BAD_KEY, NTE_BAD_UID).

The two bits above those 60 name the table's *space* (0 to 3), so a program holding several tables (the two
processes of ``keyhandoff.impl.processes``) can tell which one issued a handle without remembering it. 62 bits
keep handles positive and inside a signed 64-bit integer (pickling, SQLite, C bridges all take them).
"""

from __future__ import annotations

import os
import struct
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, Final, Generic, TypeVar

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from keyhandoff.impl.evp import native_evp

__all__ = ["DEAD_KEPT", "HANDLE_BITS", "PERMUTED_BITS", "HandleSequence", "HandleTable", "handle_space"]

HANDLE_BITS: Final = 62
PERMUTED_BITS: Final = 60  # the permuted part; the two bits above it are the table's space
DEAD_KEPT: Final = 4096  # dead entries kept for inspect, per table (a few MB at most)

_HALF: Final = PERMUTED_BITS // 2
_HALF_MASK: Final = (1 << _HALF) - 1
_ROUNDS: Final = 8
_BATCH: Final = 512  # handles computed per refill: one AES call per round for the whole batch
# One 16-byte slot (one AES block) per handle; a batch of slots is one little-endian integer, so its bytes are
# the AES input and one integer XOR mixes the whole batch. Counters go in and handles come out in the low 8
# bytes of each slot; during the rounds a slot holds one 30-bit half.
_SLOTS: Final = struct.Struct("<" + "Q8x" * _BATCH)
_SLOT_BYTES: Final = _SLOTS.size
_LOW_BITS: Final = int.from_bytes(_SLOTS.pack(*[_HALF_MASK] * _BATCH), "little")  # each slot's low 30 bits

T = TypeVar("T")


class HandleSequence:
    """The permuted parts of one table's handles, in issue order: ``P(1), P(2), ...`` for a keyed pseudorandom
    permutation ``P`` of [0, 2**60).

    ``P`` is a balanced Feistel network on two 30-bit halves, 8 rounds, round function = the low 30 bits of
    AES-128 under that round's own random key applied to the right half: a permutation whatever the round
    function, pseudorandom because AES is. Handles are computed 512 at a time (one AES call per round).
    """

    def __init__(self) -> None:
        self._rekey()

    def _rekey(self) -> None:
        # One AES key per round. ECB here is a pseudorandom function on distinct blocks, not a mode of encryption.
        keys = os.urandom(16 * _ROUNDS)
        self._rounds = [
            Cipher(algorithms.AES(keys[i : i + 16]), modes.ECB()).encryptor() for i in range(0, len(keys), 16)
        ]
        self._counter = 0
        #: The next handles' permuted parts, the next one last (issue pops it); a refill replaces the list.
        self.ready: list[int] = []

    def after_fork(self) -> None:
        """A forked child gets a sequence of its own (its parent must not be able to name its next handles)."""
        self._rekey()

    def next(self) -> int:
        if not self.ready:
            start = self._counter + 1
            if start + _BATCH > 1 << PERMUTED_BITS:  # 2**60 handles: millennia at a million a second
                raise OverflowError("this handle table has issued every handle")
            self._counter += _BATCH
            self.ready = self.permute(range(start, start + _BATCH))
            self.ready.reverse()
        return self.ready.pop()

    def permute(self, counters: range) -> list[int]:
        """``P`` of exactly :data:`_BATCH` counters, in order: in C when the extension is there (the same
        network; its conversions between integers and bytes made a refill cost a quarter of a millisecond)."""
        evp = native_evp()
        if evp is not None and counters.step == 1:
            rounds = [aes.update for aes in self._rounds]
            permuted: list[int] = evp.feistel(counters.start, len(counters), rounds, _HALF)
            return permuted
        batch = int.from_bytes(_SLOTS.pack(*counters), "little")
        left, right = (batch >> _HALF) & _LOW_BITS, batch & _LOW_BITS  # the shift's spill into a slot is masked
        for aes in self._rounds:
            mixed = int.from_bytes(aes.update(right.to_bytes(_SLOT_BYTES, "little")), "little") & _LOW_BITS
            left, right = right, left ^ mixed
        return list(_SLOTS.unpack(((left << _HALF) | right).to_bytes(_SLOT_BYTES, "little")))


def handle_space(handle: object) -> int | None:
    """The space of the table that could have issued ``handle`` (None for a value no table issues)."""
    if type(handle) is not int or not 0 < handle < 1 << HANDLE_BITS:
        return None
    return handle >> PERMUTED_BITS


_TABLES: weakref.WeakSet[HandleTable[Any]] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for table in list(_TABLES):
        table.sequence.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class HandleTable(Generic[T]):
    """Maps handles to objects: :meth:`issue` gives the next handle of the table's sequence (in its ``space``),
    :meth:`retire` moves a dead object to the bounded store of recent dead entries.

    Writes (issue, retire, replace) take the table's lock; reads do not. A read is one or two ``dict`` lookups,
    each atomic (the GIL; per-object locks in free-threaded builds), and an entry is only ever added, moved or
    replaced as a whole record, so a reader sees the old record, the new one or nothing, never a torn one.
    """

    def __init__(self, space: int = 0) -> None:
        if not 0 <= space < 1 << (HANDLE_BITS - PERMUTED_BITS):
            raise ValueError("a handle space is 0..3")
        self._lock = threading.Lock()
        self._space = space << PERMUTED_BITS
        self.sequence = HandleSequence()
        self.issued = 0  #: how many handles this table has issued (``len``)
        self._live: dict[int, T] = {}
        self._dead: OrderedDict[int, T] = OrderedDict()  # the last DEAD_KEPT retired entries, oldest first
        _TABLES.add(self)
        #: Lock-free lookup of a live entry for a handle whose type is exactly ``int`` (callers check
        #: ``type(h) is int``: the dict would also match ``True`` or ``1.0``). The CSP's per-call fast paths use
        #: it, and fall back to :meth:`get` (which also finds recent dead entries) when it finds nothing.
        self.lookup: Callable[[int], T | None] = self._live.get

    @property
    def live_entries(self) -> dict[int, T]:
        """The live entries' dict itself, for a reader in C (the CSP's native fast paths), which reads it as
        ``lookup`` does. Written only under the table's lock (by :meth:`issue`, or :meth:`native_issue`'s user)."""
        return self._live

    def native_issue(self) -> tuple[threading.Lock, dict[int, T], OrderedDict[int, T], HandleSequence, int]:
        """What a writer in C needs to issue a handle exactly as :meth:`issue` does (the CSP's native import):
        the table's lock, the live and recent dead entries, the sequence and the space bits. With the lock free
        and without releasing the GIL or running Python code (so atomically: ``lock_free`` in impl/_evp.h), it
        takes the last of ``sequence.ready`` if that handle is usable (not 0, not live, not recently dead),
        stores the value under it, and counts it (``issued``); in every other case it calls :meth:`issue`, which
        refills the sequence and skips what must be skipped. ``issued`` and ``sequence.ready`` stay plain
        attributes: the writer in C checks that they are."""
        return self._lock, self._live, self._dead, self.sequence, self._space

    def issue(self, value: T) -> int:
        """Store ``value`` under the next handle of the sequence, and return it."""
        with self._lock:
            while True:
                handle = self._space | self.sequence.next()
                # 0 is the CryptoAPI "no handle"; only a forked child's new sequence can meet a handle it
                # inherited. Either is skipped.
                if handle and handle not in self._live and handle not in self._dead:
                    self._live[handle] = value
                    self.issued += 1
                    return handle

    def retire(self, handle: int) -> None:
        """The object behind ``handle`` is dead: keep it (for inspect) among the last DEAD_KEPT dead entries.
        Retiring a handle that is not live does nothing."""
        with self._lock:
            value = self._live.pop(handle, None)
            if value is None:
                return
            self._dead[handle] = value
            if len(self._dead) > DEAD_KEPT:
                self._dead.popitem(last=False)

    def get(self, handle: object) -> T | None:
        """The object (live or recently dead) stored for ``handle``; None for any other value."""
        if not isinstance(handle, int) or isinstance(handle, bool):
            return None
        found = self._live.get(handle)  # lock-free: see the class docstring
        return found if found is not None else self._dead.get(handle)

    def replace(self, handle: int, value: T) -> None:
        """Make ``value`` the live object of a handle this table still holds (live or recently dead). Only the
        fault catalog uses it, to plant a handle-recycling CSP."""
        with self._lock:
            if handle not in self._live and handle not in self._dead:
                raise KeyError("replace: this table holds no entry for that handle")
            self._dead.pop(handle, None)
            self._live[handle] = value

    def __contains__(self, handle: object) -> bool:
        return self.get(handle) is not None

    def __len__(self) -> int:
        """How many handles this table has issued."""
        return self.issued

    def live_count(self) -> int:
        return len(self._live)

    def dead_count(self) -> int:
        return len(self._dead)

    def __iter__(self) -> Iterator[int]:
        """A snapshot of the live handles."""
        with self._lock:
            return iter(list(self._live))
