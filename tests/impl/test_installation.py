"""The installation directory, its secret and the keys derived from it (keyhandoff.impl.installation)."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import re
import stat
from pathlib import Path
from typing import Any

import platformdirs
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

import keyhandoff.impl.installation as installation_module
from keyhandoff.impl.builtin import BuiltinCsp
from keyhandoff.impl.installation import ENV_HOME, Installation, InstallationError
from keyhandoff.impl.sqlite_token import SqliteToken
from keyhandoff.model.errors import CryptError

POSIX = os.name == "posix"
posix_only = pytest.mark.skipif(not POSIX, reason="file modes are POSIX")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@posix_only
def test_fresh_home_is_0700_and_secret_0600(tmp_path: Path) -> None:
    """A new home is created 0700 with a 32-byte secret of mode 0600."""
    home = tmp_path / "nested" / "home"
    inst = Installation(home)
    assert inst.path == home
    assert _mode(home) == 0o700
    secret = home / "secret"
    assert _mode(secret) == 0o600
    assert len(secret.read_bytes()) == 32
    assert sorted(p.name for p in home.iterdir()) == ["secret"]  # no temporary file left behind


def test_id_and_keys_are_hkdf_of_the_secret(tmp_path: Path) -> None:
    """id is HKDF(info=keyhandoff/installation-id)[:16]; key(p) is HKDF(info=keyhandoff/p), 32 bytes."""
    inst = Installation(tmp_path)
    secret = (tmp_path / "secret").read_bytes()

    def hkdf(info: bytes, length: int) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(secret)

    assert inst.id == hkdf(b"keyhandoff/installation-id", 16)
    assert inst.key("token-wrap") == hkdf(b"keyhandoff/token-wrap", 32)
    assert inst.key("blob-seal") != inst.key("token-wrap")
    assert inst.key("blob-seal") is inst.key("blob-seal")  # cached


def test_two_objects_on_one_directory_agree(tmp_path: Path) -> None:
    """Two Installation objects on one directory share id and every derived key."""
    first, second = Installation(tmp_path), Installation(str(tmp_path))
    assert first.id == second.id
    assert first.key("blob-seal") == second.key("blob-seal")


def test_different_directories_differ(tmp_path: Path) -> None:
    """Two directories get independent secrets: ids and keys differ."""
    first, second = Installation(tmp_path / "a"), Installation(tmp_path / "b")
    assert first.id != second.id
    assert first.key("blob-seal") != second.key("blob-seal")


def test_keyhandoff_home_is_respected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an argument, KEYHANDOFF_HOME names the directory."""
    monkeypatch.setenv(ENV_HOME, str(tmp_path / "env-home"))
    inst = Installation()
    assert inst.path == tmp_path / "env-home"
    assert (tmp_path / "env-home" / "secret").is_file()


def test_argument_beats_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit home wins over KEYHANDOFF_HOME."""
    monkeypatch.setenv(ENV_HOME, str(tmp_path / "env-home"))
    assert Installation(tmp_path / "arg").path == tmp_path / "arg"
    assert not (tmp_path / "env-home").exists()


def test_platformdirs_is_the_last_resort(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With neither argument nor KEYHANDOFF_HOME, the home is platformdirs' user data dir for keyhandoff."""
    monkeypatch.delenv(ENV_HOME, raising=False)
    asked: list[str] = []

    def user_data_dir(appname: str) -> str:
        asked.append(appname)
        return str(tmp_path / "data-dir")

    monkeypatch.setattr(platformdirs, "user_data_dir", user_data_dir)  # imported where it is needed
    assert Installation().path == tmp_path / "data-dir"
    assert asked == ["keyhandoff"]


@posix_only
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_loose_secret_is_refused(tmp_path: Path, mode: int) -> None:
    """A secret with any group or world permission is refused, and left untouched."""
    Installation(tmp_path)
    secret = tmp_path / "secret"
    before = secret.read_bytes()
    secret.chmod(mode)
    with pytest.raises(InstallationError, match="0600") as info:
        Installation(tmp_path)
    assert before.hex() not in str(info.value)
    assert secret.read_bytes() == before


@pytest.mark.parametrize("size", [0, 31, 33])
def test_secret_of_wrong_length_is_refused(tmp_path: Path, size: int) -> None:
    """A secret that is not exactly 32 bytes is refused."""
    fd = os.open(tmp_path / "secret", os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, b"\x01" * size)
    os.close(fd)
    with pytest.raises(InstallationError, match="32 bytes"):
        Installation(tmp_path)


@posix_only
def test_symlinked_secret_is_refused(tmp_path: Path) -> None:
    """The secret must be a file of its own, not a symlink to one."""
    Installation(tmp_path / "real")
    (tmp_path / "home").mkdir(mode=0o700)
    (tmp_path / "home" / "secret").symlink_to(tmp_path / "real" / "secret")
    with pytest.raises(InstallationError):
        Installation(tmp_path / "home")


def test_home_that_is_a_file_is_refused(tmp_path: Path) -> None:
    """A home path naming a regular file is refused clearly."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(InstallationError, match="not a directory"):
        Installation(tmp_path / "file")


@pytest.mark.parametrize("damage", ["not a database", "a directory"])
def test_token_database_that_cannot_be_used_is_refused(tmp_path: Path, damage: str) -> None:
    """A token database that is not one (overwritten) or is a directory is an InstallationError naming the file,
    raised as the CSP opens (it used to escape as sqlite3.DatabaseError or IsADirectoryError); the file is left
    as it was."""
    BuiltinCsp(tmp_path).close()
    database = tmp_path / "token.sqlite3"
    for leftover in tmp_path.glob("token.sqlite3*"):
        leftover.unlink()
    if damage == "a directory":
        database.mkdir()
    else:
        database.write_bytes(b"not a database " * 100)
    with pytest.raises(InstallationError, match=f"the token database {re.escape(str(database))} cannot be used"):
        BuiltinCsp(tmp_path)
    assert database.is_dir() if damage == "a directory" else database.read_bytes() == b"not a database " * 100


def test_home_that_cannot_be_made_is_refused(tmp_path: Path) -> None:
    """A home whose directory cannot be created (here: under a regular file) is an InstallationError saying
    so, not a bare OSError; missing parents are created."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(InstallationError, match=r"cannot create the installation directory .*file/home"):
        Installation(tmp_path / "file" / "home")
    deep = Installation(tmp_path / "a" / "b" / "home")
    try:
        assert (tmp_path / "a" / "b" / "home").is_dir()
    finally:
        deep.close()


def test_reserved_and_empty_purposes_are_rejected(tmp_path: Path) -> None:
    """key('installation-id') would start with the public id; an empty purpose means nothing."""
    inst = Installation(tmp_path)
    with pytest.raises(ValueError, match="reserved"):
        inst.key("installation-id")
    with pytest.raises(ValueError, match="non-empty"):
        inst.key("")


def test_repr_and_pickle_carry_the_path_only(tmp_path: Path) -> None:
    """repr shows the path and nothing secret; a pickle holds the path and re-reads the secret."""
    inst = Installation(tmp_path)
    secret = (tmp_path / "secret").read_bytes()
    assert repr(inst) == f"Installation({str(tmp_path)!r})"
    data = pickle.dumps(inst)
    for needle in (secret, inst.key("token-wrap"), inst.id):
        assert needle not in data
        assert needle.hex() not in repr(inst)
    clone = pickle.loads(data)
    assert clone.id == inst.id
    assert clone.path == inst.path


def test_token_is_lazy_single_and_reopened_after_close(tmp_path: Path) -> None:
    """token opens on first access, is one object until close(), and close() is idempotent."""
    inst = Installation(tmp_path)
    assert not (tmp_path / "token.sqlite3").exists()
    token = inst.token
    assert inst.token is token
    assert token.serial == "sqlite:" + inst.id.hex()
    inst.close()
    inst.close()
    with pytest.raises(CryptError, match="closed"):
        token.objects()
    with inst as again:
        assert again.token is not token
        assert dict(again.token.objects()) == {}


def _open_and_report(home: str, barrier: Any, results: Any) -> None:
    barrier.wait()
    inst = Installation(home)
    results.put((inst.id, inst.key("blob-seal")))


def test_concurrent_creation_from_several_processes(tmp_path: Path) -> None:
    """Four spawned processes opening one fresh home at the same moment all end up with the same secret."""
    ctx = multiprocessing.get_context("spawn")
    count = 4
    barrier = ctx.Barrier(count)
    results = ctx.Queue()
    home = str(tmp_path / "home")
    procs = [ctx.Process(target=_open_and_report, args=(home, barrier, results)) for _ in range(count)]
    for proc in procs:
        proc.start()
    seen = [results.get(timeout=60) for _ in range(count)]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    inst = Installation(home)
    assert set(seen) == {(inst.id, inst.key("blob-seal"))}
    assert sorted(p.name for p in Path(home).iterdir()) == ["secret"]


def _synchronous(inst: Installation) -> int:
    token = inst.token
    assert isinstance(token, SqliteToken)
    with token._lock:  # white box: the connection's own setting, as SQLite reports it
        return int(token._db("test").execute("PRAGMA synchronous").fetchone()[0])


@pytest.mark.parametrize("durable", [True, False])
def test_only_a_durable_installation_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool) -> None:
    """A durable installation (the default) fsyncs its new secret (and, on POSIX, the directory that publishes
    it) and commits its token with synchronous FULL (2). A scratch one (``durable=False``, what a conformance run
    makes per test case) fsyncs nothing and commits with OFF (0); its secret is as private, and a pickle (a child
    process) keeps its durability."""
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(installation_module.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    inst = Installation(tmp_path / "home", durable=durable)
    assert inst.durable is durable
    assert len(synced) == (2 if POSIX else 1) * durable
    assert _synchronous(inst) == (2 if durable else 0)
    if POSIX:
        assert _mode(tmp_path / "home" / "secret") == 0o600
    clone = pickle.loads(pickle.dumps(inst))
    assert clone.durable is durable
    assert _synchronous(clone) == _synchronous(inst)
    assert ("durable=False" in repr(inst)) is not durable
    clone.close()
    inst.close()
