"""An installation of the reference CSP: a private directory, its secret, the keys derived from it, its token.

The directory is chosen in this order: the ``home`` argument, the ``KEYHANDOFF_HOME`` environment variable, then
``platformdirs.user_data_dir("keyhandoff")``. It is created with mode 0700 when missing (an existing directory is
left as it is).

The *installation secret* is the file ``secret``: 32 random bytes, mode 0600. Several processes may open a fresh
directory at once; exactly one secret wins and every process reads that one, never a partial file: the creator
writes and fsyncs a private temporary file (O_CREAT|O_EXCL, 0600) and publishes it with ``os.link``, which fails
if ``secret`` already exists (then the loser reads the winner's file). A secret that is group/world accessible,
not a regular file or not exactly 32 bytes is refused with :class:`InstallationError`: it may have leaked or been
tampered with, and silently replacing it would orphan every blob and token object sealed under it.

Everything else is derived from the secret with HKDF-SHA256: the public installation ``id`` (16 bytes, info
``keyhandoff/installation-id``) and one 32-byte key per purpose (info ``keyhandoff/<purpose>``). The secret and the
derived keys live only in this object's memory; ``repr`` shows the path alone, and pickling carries the path alone
(a child process re-reads the secret from the directory).

``durable=False`` makes a scratch installation, for a directory thrown away after use (each test case of a
conformance run gets one): nothing is fsynced, neither the secret nor the token's commits. It is as safe as a
durable one against a process that crashes or is killed; only a crash of the whole system may lose or corrupt
it, which cannot matter to a directory no one will open again.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import stat
import threading
import weakref
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keyhandoff.impl.sqlite_token import DB_FILE, SqliteToken
from keyhandoff.impl.token import Token

__all__ = [
    "ENV_HOME",
    "ENV_TOKEN_KIND",
    "SECRET_FILE",
    "SECRET_SIZE",
    "TOKEN_KINDS",
    "Installation",
    "InstallationError",
]

ENV_HOME: Final = "KEYHANDOFF_HOME"
ENV_TOKEN_KIND: Final = "KEYHANDOFF_TOKEN"
TOKEN_KINDS: Final = ("sqlite", "pkcs11")
SECRET_FILE: Final = "secret"
SECRET_SIZE: Final = 32
ID_SIZE: Final = 16
KEY_SIZE: Final = 32
_INFO_PREFIX: Final = b"keyhandoff/"
_ID_PURPOSE: Final = "installation-id"
_POSIX: Final = os.name == "posix"


class InstallationError(Exception):
    """The installation directory or its secret cannot be used safely (never carries secret bytes)."""


def _hkdf(secret: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(secret)


def _resolve_home(home: str | os.PathLike[str] | None) -> Path:
    if home is not None:
        chosen = os.fspath(home)
    elif os.environ.get(ENV_HOME):
        chosen = os.environ[ENV_HOME]
    else:
        import platformdirs  # only here: every process of a check run is given its home (30 ms of start-up)

        chosen = platformdirs.user_data_dir("keyhandoff")
    return Path(chosen).expanduser().absolute()


def _ensure_dir(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file where a parent directory should be, a read-only place, no permission
        raise InstallationError(f"cannot create the installation directory {path}: {exc.strerror or exc}") from None
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not path.is_dir():
            raise InstallationError(f"{path} exists and is not a directory") from None
        return
    except OSError as exc:
        raise InstallationError(f"cannot create the installation directory {path}: {exc.strerror or exc}") from None
    # mkdir's mode is filtered by the umask; make it exactly 0700 (the umask can only have removed bits).
    os.chmod(path, 0o700)


def _fsync_dir(path: Path) -> None:
    if not _POSIX:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_secret(file: Path) -> bytes:
    """The secret, or InstallationError if the file is unsafe or malformed. FileNotFoundError if absent."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(file, flags)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise InstallationError(f"cannot open the installation secret {file}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InstallationError(f"the installation secret {file} is not a regular file")
        if _POSIX and info.st_mode & 0o077:
            raise InstallationError(
                f"the installation secret {file} has mode {stat.S_IMODE(info.st_mode):04o}: it must be accessible "
                "by its owner only (0600); refusing to use a secret that may have leaked"
            )
        data = b""
        while len(data) <= SECRET_SIZE:
            chunk = os.read(fd, SECRET_SIZE + 1 - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if len(data) != SECRET_SIZE:
        raise InstallationError(f"the installation secret {file} is not {SECRET_SIZE} bytes long")
    return data


def _create_secret(directory: Path, file: Path, durable: bool) -> None:
    """Publish a fresh secret unless another process already has; never leaves a partial ``secret`` (durable:
    on disk before it is published)."""
    temp = directory / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(8)}.tmp"
    fd = os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0), 0o600)
    try:
        try:
            _write_all(fd, secrets.token_bytes(SECRET_SIZE))
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temp, file)  # atomic and exclusive: fails if a concurrent creator won
        except FileExistsError:
            return
        if durable:
            _fsync_dir(directory)
    finally:
        temp.unlink(missing_ok=True)


def _load_or_create_secret(directory: Path, durable: bool) -> bytes:
    file = directory / SECRET_FILE
    try:
        return _read_secret(file)
    except FileNotFoundError:
        pass
    _create_secret(directory, file, durable)
    return _read_secret(file)


class Installation:
    """One installation directory: its secret (never exposed), public id, derived keys and token.

    ``token`` chooses the token: ``"sqlite"`` (the embedded token in the directory) or ``"pkcs11"`` (a PKCS#11
    token configured by the ``KEYHANDOFF_PKCS11_*`` environment variables, see ``keyhandoff.impl.pkcs11_token``);
    None means ``KEYHANDOFF_TOKEN`` if set, else ``"sqlite"``. ``durable=False``: a scratch installation (see the
    module's docstring).
    """

    __slots__ = (
        "__weakref__",
        "_durable",
        "_id",
        "_keys",
        "_lock",
        "_path",
        "_secret",
        "_token",
        "_token_kind",
        "_token_lock",
    )

    def __init__(
        self, home: str | os.PathLike[str] | None = None, *, token: str | None = None, durable: bool = True
    ) -> None:
        kind = token if token is not None else (os.environ.get(ENV_TOKEN_KIND) or "sqlite")
        if kind not in TOKEN_KINDS:
            known = ", ".join(TOKEN_KINDS)
            if token is None:  # the environment's: a configuration that cannot work, said in one line by the commands
                raise InstallationError(f"{ENV_TOKEN_KIND}={kind!r} names no token kind; known: {known}")
            raise ValueError(f"unknown token kind {kind!r}; known: {', '.join(TOKEN_KINDS)}")
        self._token_kind: str = kind
        self._durable = bool(durable)
        self._path = _resolve_home(home)
        _ensure_dir(self._path)
        self._secret = _load_or_create_secret(self._path, self._durable)
        self._id = _hkdf(self._secret, _INFO_PREFIX + _ID_PURPOSE.encode(), ID_SIZE)
        self._keys: dict[str, bytes] = {}
        self._lock = threading.Lock()  # guards the key cache
        self._token_lock = threading.Lock()  # guards opening and closing the token
        self._token: Token | None = None
        _LIVE.add(self)

    @property
    def path(self) -> Path:
        """The installation directory."""
        return self._path

    @property
    def id(self) -> bytes:
        """16 public bytes identifying the installation (every process on the directory agrees)."""
        return self._id

    def key(self, purpose: str) -> bytes:
        """A 32-byte key for one purpose: HKDF-SHA256 of the secret, info ``keyhandoff/<purpose>`` (cached).

        The purpose ``installation-id`` is reserved: HKDF outputs with one info share a prefix, so that key would
        begin with the public id.
        """
        if not isinstance(purpose, str) or not purpose:
            raise ValueError("a key purpose is a non-empty string")
        if purpose == _ID_PURPOSE:
            raise ValueError(f"the key purpose {_ID_PURPOSE!r} is reserved for the public installation id")
        with self._lock:
            derived = self._keys.get(purpose)
            if derived is None:
                derived = _hkdf(self._secret, _INFO_PREFIX + purpose.encode(), KEY_SIZE)
                self._keys[purpose] = derived
            return derived

    @property
    def durable(self) -> bool:
        """False for a scratch installation: nothing fsynced (see the module's docstring)."""
        return self._durable

    @property
    def token_kind(self) -> str:
        """``"sqlite"`` or ``"pkcs11"``."""
        return self._token_kind

    @property
    def token(self) -> Token:
        """This installation's token, opened on first use (one per Installation object until close). A PKCS#11
        token shows this installation only its own objects (namespace: the installation id)."""
        with self._token_lock:
            if self._token is None:
                if self._token_kind == "pkcs11":
                    # Imported here: python-pkcs11 is an optional dependency (the ``pkcs11`` extra).
                    from keyhandoff.impl.pkcs11_token import Pkcs11Token

                    self._token = Pkcs11Token.from_environment(self._id.hex())
                else:
                    try:
                        self._token = SqliteToken(self)  # calls key(), which takes self._lock
                    except (sqlite3.Error, OSError) as exc:  # not a database, a directory, no space: say which file
                        path = self._path / DB_FILE
                        raise InstallationError(f"the token database {path} cannot be used: {exc}") from exc
            return self._token

    def close(self) -> None:
        """Close the token if it was opened (a later ``token`` access opens a new one)."""
        with self._token_lock:
            token, self._token = self._token, None
        if token is not None:
            token.close()

    def __enter__(self) -> Installation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        token = f", token={self._token_kind!r}" if self._token_kind != "sqlite" else ""
        return f"Installation({str(self._path)!r}{token}{'' if self._durable else ', durable=False'})"

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Only the path and the token kind cross a process boundary; the child reads the secret from the directory
        # itself and the PKCS#11 configuration from its (inherited) environment.
        return (_reopen, (str(self._path), self._token_kind, self._durable))

    def _after_fork_in_child(self) -> None:
        # A lock held by another thread of the parent at fork time would never be released in the child.
        self._lock = threading.Lock()
        self._token_lock = threading.Lock()


def _reopen(path: str, token: str, durable: bool = True) -> Installation:
    return Installation(path, token=token, durable=durable)


_LIVE: weakref.WeakSet[Installation] = weakref.WeakSet()


def _reinit_after_fork() -> None:
    for installation in list(_LIVE):
        installation._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)
