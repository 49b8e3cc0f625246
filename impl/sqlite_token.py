"""The embedded hardware token: key objects in an SQLite database inside the installation directory.

Storage. ``token.sqlite3`` (mode 0600; SQLite gives its -wal and -shm files the same mode) holds one row per
object: a random positive 62-bit ``id``, the ``alg``, the material sealed with AES-256-GCM under the installation
key ``token-wrap`` (``wrapped`` = 12-byte nonce || ciphertext || tag, AAD = id and alg packed big-endian, so a row
cannot be moved to another id or relabelled) and the creation time. Material never sits in the file in clear and
is worthless without the installation secret. A random 96-bit nonce suffices here, unlike for opaque blobs
(``keyhandoff.impl.xaes``): one is drawn per hardware key made, and no token will hold 2**32 of them.

Concurrency. WAL journal, a 10 s busy timeout, every write in a ``BEGIN IMMEDIATE`` transaction: several
processes may share a token. Inside a process, one connection (``check_same_thread=False``) is guarded by one
lock: it is simple, and the cipher path rarely touches it. The lock is never held while a cipher runs.

Caching. The unwrapped material of an object (as a ready ``cryptography`` algorithm) is cached per object after
its first use, which reads the database. ``exists()`` always reads the database. A cached object deleted by
*another* connection (another process, or another Installation object) is detected at its next use, not lazily:
each cipher call reads SQLite's ``PRAGMA data_version`` (a counter in the WAL index, no table read), and only when
another connection has committed since the object was last validated does it re-read the object's row. So an
object deleted anywhere is NTE_NOT_FOUND at its next use everywhere, as the model says, at the cost of one pragma
per call. Deleting through this token drops the entry at once.

Errors. CryptError(NTE_BAD_ALGID) for an algorithm the token cannot hold, CryptError(NTE_BAD_DATA) for a key of
the wrong length or data/IV of the wrong size, CryptError(NTE_NOT_FOUND) for a missing object, CryptError(NTE_FAIL)
for a row that fails its integrity check or a database that fails (locked past the busy timeout by a stopped
process, a full disk, a file removed under it), and for a closed token: every failure reaches the CSP as a
CryptError. No message, repr or log carries key bytes.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import stat
import struct
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import BlockCipherAlgorithm, Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyhandoff.impl.token import TokenMode
from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError

if TYPE_CHECKING:
    from keyhandoff.impl.installation import Installation

__all__ = ["DB_FILE", "KEY_LENGTHS", "SqliteToken"]

DB_FILE: Final = "token.sqlite3"
WRAP_PURPOSE: Final = "token-wrap"
BUSY_TIMEOUT_S: Final = 10.0
_NONCE_SIZE: Final = 12
_ID_BITS: Final = 62
_ID_ATTEMPTS: Final = 16
_AAD: Final = struct.Struct(">QI")

# The ALG_IDs the token holds and their key lengths in bytes.
KEY_LENGTHS: Final[Mapping[int, int]] = {
    w.CALG_AES_128: 16,
    w.CALG_AES_192: 24,
    w.CALG_AES_256: 32,
    w.CALG_DES: 8,
    w.CALG_3DES_112: 16,
    w.CALG_3DES: 24,
}
_ALGORITHMS: Final = frozenset(KEY_LENGTHS)

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS objects (
    id INTEGER PRIMARY KEY,
    alg INTEGER NOT NULL,
    wrapped BLOB NOT NULL,
    created REAL NOT NULL
)
"""


def _issuable(obj: int) -> bool:
    """Whether obj could be an id this token issued (others cannot exist, and may not even fit SQLite)."""
    return isinstance(obj, int) and 0 < obj < 1 << _ID_BITS


def _algorithm(alg: int, key: bytes) -> BlockCipherAlgorithm:
    if alg in (w.CALG_AES_128, w.CALG_AES_192, w.CALG_AES_256):
        return algorithms.AES(key)
    if alg == w.CALG_DES:
        return TripleDES(key * 3)  # EDE with K1 = K2 = K3 is single DES
    if alg == w.CALG_3DES_112:
        return TripleDES(key + key[:8])  # two-key EDE: K3 = K1
    return TripleDES(key)


class _Loaded:
    """A cached object: its ALG_ID and a keyed algorithm; repr never shows the key."""

    __slots__ = ("alg", "algorithm", "block", "version")

    def __init__(self, alg: int, key: bytes, version: int) -> None:
        self.alg = alg
        self.algorithm = _algorithm(alg, key)
        self.block = self.algorithm.block_size // 8
        self.version = version  # the connection's data_version when the row was last seen

    def __repr__(self) -> str:
        return f"_Loaded(alg={w.ALG_NAMES.get(self.alg, hex(self.alg))}, key=<redacted>)"


class SqliteToken:
    """A :class:`keyhandoff.impl.token.Token` in the installation's SQLite database."""

    def __init__(self, installation: Installation) -> None:
        self._path = Path(installation.path) / DB_FILE
        self._serial = "sqlite:" + installation.id.hex()
        # FULL: a commit is on disk when it returns. A scratch installation's token need not survive a crash of
        # the system (OFF: still safe against a crash of the process).
        self._synchronous = "FULL" if installation.durable else "OFF"
        self._wrap = AESGCM(installation.key(WRAP_PURPOSE))
        self._lock = threading.Lock()
        self._cache: dict[int, _Loaded] = {}
        self._closed = False
        self._conn = self._connect()
        self._pid = os.getpid()
        _LIVE.add(self)

    # --- connection -------------------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # Create the file ourselves so it is 0600 from its first byte (SQLite would honour only the umask).
        fd = os.open(self._path, os.O_CREAT | os.O_RDWR | getattr(os, "O_BINARY", 0), 0o600)
        try:
            if os.name == "posix" and os.fstat(fd).st_mode & 0o077:
                os.fchmod(fd, stat.S_IRUSR | stat.S_IWUSR)  # tighten a loosened file; only wrapped material inside
        finally:
            os.close(fd)
        conn = sqlite3.connect(
            self._path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False, cached_statements=32
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            self._set_wal(conn)
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            with _transaction(conn):
                conn.execute(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _set_wal(conn: sqlite3.Connection) -> None:
        # Switching to WAL needs an exclusive lock; when processes open a fresh file at once it can report
        # "locked" without waiting on the busy handler, so retry within the busy timeout.
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
                continue
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"the token database refused WAL mode (got {mode!r})")
            return

    def _db(self, operation: str) -> sqlite3.Connection:
        """The connection (call with the lock held); a forked child gets its own on first use."""
        if self._closed:
            raise CryptError(w.NTE_FAIL, f"token {operation}: the token is closed")
        if self._pid != os.getpid():
            # SQLite connections must not cross fork(): abandon the inherited one (closing it could disturb the
            # parent's locks) and open our own. Cached versions refer to the old connection: forget them.
            _ABANDONED.append(self._conn)
            self._cache.clear()
            self._conn = self._connect()
            self._pid = os.getpid()
        return self._conn

    def _data_version(self, conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA data_version").fetchone()[0])

    # --- Token protocol ---------------------------------------------------------------------------------------

    @property
    def serial(self) -> str:
        """``sqlite:`` and the installation id in hex."""
        return self._serial

    def algorithms(self) -> frozenset[int]:
        """AES-128/192/256, DES, two-key and three-key 3DES."""
        return _ALGORITHMS

    def create(self, alg: int, key: bytes) -> int:
        """Store a new object and return its random id; NTE_BAD_ALGID / NTE_BAD_DATA for what it cannot hold."""
        if alg not in KEY_LENGTHS:
            raise CryptError(w.NTE_BAD_ALGID, "token create: the token cannot hold keys of this algorithm")
        material = bytes(key)
        if len(material) != KEY_LENGTHS[alg]:
            raise CryptError(w.NTE_BAD_DATA, "token create: wrong key length for the algorithm")
        with _Guarded(self, "create") as conn:
            # Read before the insert: a commit by another connection from here on (a delete of the new object
            # included) changes it, so the cached entry is revalidated at its next use.
            loaded = _Loaded(alg, material, self._data_version(conn))
            for _ in range(_ID_ATTEMPTS):
                obj = 0
                while obj == 0:
                    obj = secrets.randbits(_ID_BITS)
                nonce = secrets.token_bytes(_NONCE_SIZE)
                wrapped = nonce + self._wrap.encrypt(nonce, material, _AAD.pack(obj, alg))
                try:
                    with _transaction(conn):
                        conn.execute(
                            "INSERT INTO objects (id, alg, wrapped, created) VALUES (?, ?, ?, ?)",
                            (obj, alg, wrapped, time.time()),
                        )
                except sqlite3.IntegrityError:
                    continue  # id collision: draw again
                self._cache[obj] = loaded
                return obj
        raise CryptError(w.NTE_FAIL, "token create: could not draw a free object id")

    def exists(self, obj: int) -> bool:
        """Whether the object is in the database now (always asks the database)."""
        if not _issuable(obj):
            return False
        with _Guarded(self, "exists") as conn:
            found = conn.execute("SELECT 1 FROM objects WHERE id = ?", (obj,)).fetchone() is not None
            if not found:
                self._cache.pop(obj, None)
            return found

    def cipher(self, obj: int, mode: TokenMode, iv: bytes, data: bytes, *, decrypt: bool) -> bytes:
        """Run the object's block cipher over whole blocks (``ecb``, or ``cbc`` from ``iv``)."""
        loaded = self._load(obj)
        if len(data) % loaded.block:
            raise CryptError(w.NTE_BAD_DATA, "token cipher: data is not a whole number of blocks")
        cipher: Cipher[modes.ECB] | Cipher[modes.CBC]
        if mode == "ecb":
            cipher = Cipher(loaded.algorithm, modes.ECB())
        elif mode == "cbc":
            if len(iv) != loaded.block:
                raise CryptError(w.NTE_BAD_DATA, "token cipher: the IV is not one block long")
            cipher = Cipher(loaded.algorithm, modes.CBC(bytes(iv)))
        else:
            raise ValueError(f"token cipher: unknown mode {mode!r} (expected 'ecb' or 'cbc')")
        if not data:
            return b""
        context = cipher.decryptor() if decrypt else cipher.encryptor()
        return context.update(bytes(data)) + context.finalize()

    def objects(self) -> Mapping[int, int]:
        """Every object's id and ALG_ID."""
        with _Guarded(self, "objects") as conn:
            rows = conn.execute("SELECT id, alg FROM objects ORDER BY id").fetchall()
        return {int(obj): int(alg) for obj, alg in rows}

    def delete(self, obj: int) -> None:
        """Remove an object (NTE_NOT_FOUND if absent) and forget its cached material."""
        if not _issuable(obj):
            raise CryptError(w.NTE_NOT_FOUND, "token delete: no such object")
        with _Guarded(self, "delete") as conn:
            self._cache.pop(obj, None)
            with _transaction(conn):
                removed = conn.execute("DELETE FROM objects WHERE id = ?", (obj,)).rowcount
        if removed == 0:
            raise CryptError(w.NTE_NOT_FOUND, "token delete: no such object")

    def close(self) -> None:
        """Close the connection and drop the cache; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._cache.clear()
            self._conn.close()

    def __enter__(self) -> SqliteToken:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"SqliteToken({self._serial!r}, {str(self._path)!r}, {state})"

    # --- internals --------------------------------------------------------------------------------------------

    def _load(self, obj: int) -> _Loaded:
        """The object's cached algorithm, (re)validated against the database when another connection wrote."""
        with _Guarded(self, "cipher") as conn:
            version = self._data_version(conn)  # read before the row: a later delete changes it again
            loaded = self._cache.get(obj)
            if loaded is not None:
                if loaded.version == version:
                    return loaded
                if conn.execute("SELECT 1 FROM objects WHERE id = ?", (obj,)).fetchone() is not None:
                    loaded.version = version
                    return loaded
                del self._cache[obj]
                raise CryptError(w.NTE_NOT_FOUND, "token: the object no longer exists")
            row = None
            if _issuable(obj):
                row = conn.execute("SELECT alg, wrapped FROM objects WHERE id = ?", (obj,)).fetchone()
            if row is None:
                raise CryptError(w.NTE_NOT_FOUND, "token: no such object")
            alg, wrapped = int(row[0]), bytes(row[1])
            if alg not in KEY_LENGTHS or len(wrapped) <= _NONCE_SIZE:
                raise CryptError(w.NTE_FAIL, "token: the object's row is malformed")
            try:
                material = self._wrap.decrypt(wrapped[:_NONCE_SIZE], wrapped[_NONCE_SIZE:], _AAD.pack(obj, alg))
            except InvalidTag:
                raise CryptError(w.NTE_FAIL, "token: the object failed its integrity check") from None
            if len(material) != KEY_LENGTHS[alg]:
                raise CryptError(w.NTE_FAIL, "token: the object's material has the wrong length")
            loaded = _Loaded(alg, material, version)
            self._cache[obj] = loaded
            return loaded

    def _after_fork_in_child(self) -> None:
        # A lock held by another thread of the parent at fork time would never be released in the child; the
        # connection itself is replaced lazily by _db().
        self._lock = threading.Lock()


class _Guarded:
    """``with _Guarded(token, operation) as conn``: the token's connection under its lock. A failure of the
    database itself (SQLite or the file system) leaves as CryptError(NTE_FAIL) named after ``operation``: to the
    CSP it is a token failure, like any other a hardware token may have."""

    __slots__ = ("_operation", "_token")

    def __init__(self, token: SqliteToken, operation: str) -> None:
        self._token = token
        self._operation = operation

    def __enter__(self) -> sqlite3.Connection:
        token = self._token
        token._lock.acquire()
        try:
            return token._db(self._operation)
        except BaseException as exc:
            token._lock.release()
            if isinstance(exc, (sqlite3.Error, OSError)):
                raise _failed(self._operation, exc) from None
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self._token._lock.release()
        if isinstance(exc, (sqlite3.Error, OSError)):
            raise _failed(self._operation, exc) from None


def _failed(operation: str, exc: BaseException) -> CryptError:
    # SQLite's messages name tables and conditions, never bound values: no key material can be in them.
    return CryptError(w.NTE_FAIL, f"token {operation}: the token database failed ({type(exc).__name__}: {exc})")


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self._conn.execute("COMMIT")
        elif self._conn.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
            self._conn.execute("ROLLBACK")


_LIVE: weakref.WeakSet[SqliteToken] = weakref.WeakSet()
_ABANDONED: list[sqlite3.Connection] = []  # inherited across fork, kept referenced so they are never finalised


def _reinit_after_fork() -> None:
    for token in list(_LIVE):
        token._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)
