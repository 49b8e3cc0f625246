"""The embedded SQLite hardware token (keyhandoff.impl.sqlite_token) against the Token protocol."""

from __future__ import annotations

import json
import multiprocessing
import os
import secrets
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from keyhandoff.impl import sqlite_token
from keyhandoff.impl.installation import Installation
from keyhandoff.impl.sqlite_token import DB_FILE, KEY_LENGTHS, SqliteToken
from keyhandoff.impl.token import Token
from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError

AES_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
BLOCK_ALGS = sorted(KEY_LENGTHS)
ALG_PARAMS = [pytest.param(alg, id=w.ALG_NAMES[alg]) for alg in BLOCK_ALGS]


@pytest.fixture
def inst(tmp_path: Path) -> Iterator[Installation]:
    installation = Installation(tmp_path / "home")
    yield installation
    installation.close()


@pytest.fixture
def token(inst: Installation) -> SqliteToken:
    return inst.token


def _kat(vector_id: str) -> dict[str, Any]:
    data = json.loads((resources.files("keyhandoff") / "data" / "kat.json").read_text())
    (vector,) = [v for v in data["vectors"] if v["id"] == vector_id]
    return dict(vector)


def _ecb(algorithm: Any, data: bytes, *, decrypt: bool = False) -> bytes:
    cipher = Cipher(algorithm, modes.ECB())
    ctx = cipher.decryptor() if decrypt else cipher.encryptor()
    return ctx.update(data) + ctx.finalize()


def _des(key: bytes, data: bytes, *, decrypt: bool = False) -> bytes:
    """Single DES, one block at a time, from cryptography's TripleDES with K1 = K2 = K3."""
    return _ecb(TripleDES(key * 3), data, decrypt=decrypt)


def _ede_ecb(k1: bytes, k2: bytes, k3: bytes, data: bytes) -> bytes:
    """Triple DES encrypt-decrypt-encrypt composed from single DES: independent of the token's key layout."""
    return _des(k3, _des(k2, _des(k1, data), decrypt=True))


def _reference(alg: int, key: bytes) -> Any:
    if alg in (w.CALG_AES_128, w.CALG_AES_192, w.CALG_AES_256):
        return algorithms.AES(key)
    return TripleDES({w.CALG_DES: key * 3, w.CALG_3DES_112: key + key[:8], w.CALG_3DES: key}[alg])


def _reference_cipher(alg: int, key: bytes, mode: str, iv: bytes, data: bytes, *, decrypt: bool) -> bytes:
    cipher = Cipher(_reference(alg, key), modes.CBC(iv) if mode == "cbc" else modes.ECB())
    ctx = cipher.decryptor() if decrypt else cipher.encryptor()
    return ctx.update(data) + ctx.finalize()


def _block(alg: int) -> int:
    return 16 if alg in (w.CALG_AES_128, w.CALG_AES_192, w.CALG_AES_256) else 8


def _code(exc: pytest.ExceptionInfo[CryptError]) -> int:
    return exc.value.code


# --- the protocol ----------------------------------------------------------------------------------------------


def test_is_a_token(token: SqliteToken, inst: Installation) -> None:
    """SqliteToken satisfies the Token protocol; its serial names the installation; it holds AES and DES kinds."""
    as_token: Token = token
    assert as_token.serial == "sqlite:" + inst.id.hex()
    assert token.algorithms() == frozenset(
        {w.CALG_AES_128, w.CALG_AES_192, w.CALG_AES_256, w.CALG_DES, w.CALG_3DES_112, w.CALG_3DES}
    )


def test_create_exists_objects_delete(token: SqliteToken) -> None:
    """Objects get distinct positive 62-bit ids, are listed with their ALG_ID, and vanish on delete."""
    made = {token.create(alg, secrets.token_bytes(KEY_LENGTHS[alg])): alg for alg in BLOCK_ALGS}
    assert len(made) == len(BLOCK_ALGS)
    assert all(0 < obj < 2**62 for obj in made)
    assert dict(token.objects()) == made
    assert all(token.exists(obj) for obj in made)
    victim = next(iter(made))
    token.delete(victim)
    assert not token.exists(victim)
    del made[victim]
    assert dict(token.objects()) == made


def test_objects_persist_across_installations(tmp_path: Path) -> None:
    """An object created through one Installation is usable through a new one on the same directory."""
    with Installation(tmp_path) as first:
        obj = first.token.create(w.CALG_AES_128, AES_KEY)
    with Installation(tmp_path) as second:
        assert second.token.cipher(obj, "ecb", b"", bytes(16), decrypt=False) == _ecb(
            algorithms.AES(AES_KEY), bytes(16)
        )


@pytest.mark.parametrize("alg", [w.CALG_RC4, w.CALG_RC2, w.CALG_AES, w.CALG_SHA1, 0])
def test_create_refuses_other_algorithms(token: SqliteToken, alg: int) -> None:
    """An ALG_ID the token cannot hold: NTE_BAD_ALGID, nothing stored."""
    with pytest.raises(CryptError) as info:
        token.create(alg, bytes(16))
    assert _code(info) == w.NTE_BAD_ALGID
    assert dict(token.objects()) == {}


@pytest.mark.parametrize("alg", ALG_PARAMS)
def test_create_refuses_wrong_key_length(token: SqliteToken, alg: int) -> None:
    """A key one byte short or long for its algorithm: NTE_BAD_DATA, nothing stored."""
    for size in (KEY_LENGTHS[alg] - 1, KEY_LENGTHS[alg] + 1, 0):
        with pytest.raises(CryptError) as info:
            token.create(alg, bytes(size))
        assert _code(info) == w.NTE_BAD_DATA
    assert dict(token.objects()) == {}


@pytest.mark.parametrize("obj", [12345, 0, -1, 2**62, 2**64])
def test_unknown_object_is_not_found(token: SqliteToken, obj: int) -> None:
    """cipher and delete on an id the token never issued (even one SQLite cannot hold): NTE_NOT_FOUND."""
    token.create(w.CALG_AES_128, AES_KEY)
    assert not token.exists(obj)
    with pytest.raises(CryptError) as info:
        token.cipher(obj, "ecb", b"", bytes(16), decrypt=False)
    assert _code(info) == w.NTE_NOT_FOUND
    with pytest.raises(CryptError) as info:
        token.delete(obj)
    assert _code(info) == w.NTE_NOT_FOUND
    assert len(token.objects()) == 1


def test_deleted_object_is_not_found(token: SqliteToken) -> None:
    """After delete, using or deleting the object again: NTE_NOT_FOUND."""
    obj = token.create(w.CALG_AES_128, AES_KEY)
    token.cipher(obj, "ecb", b"", bytes(16), decrypt=False)
    token.delete(obj)
    for call in (lambda: token.cipher(obj, "ecb", b"", bytes(16), decrypt=False), lambda: token.delete(obj)):
        with pytest.raises(CryptError) as info:
            call()
        assert _code(info) == w.NTE_NOT_FOUND


@pytest.mark.parametrize("alg", ALG_PARAMS)
def test_ragged_data_and_bad_iv_are_bad_data(token: SqliteToken, alg: int) -> None:
    """Data that is not whole blocks, or a CBC IV that is not one block: NTE_BAD_DATA."""
    obj = token.create(alg, secrets.token_bytes(KEY_LENGTHS[alg]))
    size = _block(alg)
    for mode, iv, data in [
        ("ecb", b"", bytes(size + 1)),
        ("cbc", bytes(size), bytes(size - 1)),
        ("cbc", bytes(size - 1), bytes(size)),
        ("cbc", b"", bytes(size)),
    ]:
        with pytest.raises(CryptError) as info:
            token.cipher(obj, mode, iv, data, decrypt=False)  # type: ignore[arg-type]
        assert _code(info) == w.NTE_BAD_DATA
    assert token.cipher(obj, "cbc", bytes(size), b"", decrypt=True) == b""


def test_unknown_mode_is_a_programming_error(token: SqliteToken) -> None:
    """A mode other than 'ecb' or 'cbc' is a ValueError, not a CryptoAPI refusal."""
    obj = token.create(w.CALG_AES_128, AES_KEY)
    with pytest.raises(ValueError, match="mode"):
        token.cipher(obj, "cfb", bytes(16), bytes(16), decrypt=False)  # type: ignore[arg-type]


# --- known answers and cryptography ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vector_id", "mode"), [("sp800-38a-F.1.1-ecb-aes128", "ecb"), ("sp800-38a-F.2.1-cbc-aes128", "cbc")]
)
def test_sp800_38a_aes128(token: SqliteToken, vector_id: str, mode: str) -> None:
    """SP 800-38A F.1.1 (ECB) and F.2.1 (CBC) AES-128, both directions, from the project's kat.json."""
    vector = _kat(vector_id)
    key = bytes.fromhex(vector["key"])
    assert key == AES_KEY
    iv = bytes.fromhex(vector["iv"] or "")
    plain, cipher = bytes.fromhex(vector["plaintext"]), bytes.fromhex(vector["ciphertext"])
    obj = token.create(w.CALG_AES_128, key)
    assert token.cipher(obj, mode, iv, plain, decrypt=False) == cipher  # type: ignore[arg-type]
    assert token.cipher(obj, mode, iv, cipher, decrypt=True) == plain  # type: ignore[arg-type]


def test_des_known_answer(token: SqliteToken) -> None:
    """The classic DES vector (key 133457799BBCDFF1): single DES, independent of cryptography's composition."""
    obj = token.create(w.CALG_DES, bytes.fromhex("133457799bbcdff1"))
    plain, cipher = bytes.fromhex("0123456789abcdef"), bytes.fromhex("85e813540f0ab405")
    assert token.cipher(obj, "ecb", b"", plain, decrypt=False) == cipher
    assert token.cipher(obj, "ecb", b"", cipher, decrypt=True) == plain


def test_triple_des_keys_are_ede_of_single_des(token: SqliteToken) -> None:
    """3DES_112 is EDE(K1, K2, K1) and 3DES is EDE(K1, K2, K3), built here from single DES."""
    k1, k2, k3 = (secrets.token_bytes(8) for _ in range(3))
    data = secrets.token_bytes(24)
    two = token.create(w.CALG_3DES_112, k1 + k2)
    three = token.create(w.CALG_3DES, k1 + k2 + k3)
    single = token.create(w.CALG_DES, k1)
    assert token.cipher(two, "ecb", b"", data, decrypt=False) == _ede_ecb(k1, k2, k1, data)
    assert token.cipher(three, "ecb", b"", data, decrypt=False) == _ede_ecb(k1, k2, k3, data)
    assert token.cipher(single, "ecb", b"", data, decrypt=False) == _des(k1, data)


@pytest.mark.parametrize("alg", ALG_PARAMS)
@pytest.mark.parametrize("mode", ["ecb", "cbc"])
@pytest.mark.parametrize("decrypt", [False, True])
def test_matches_cryptography(token: SqliteToken, alg: int, mode: str, decrypt: bool) -> None:
    """Every algorithm, mode and direction equals cryptography run directly on the same key."""
    key = secrets.token_bytes(KEY_LENGTHS[alg])
    size = _block(alg)
    iv = secrets.token_bytes(size) if mode == "cbc" else b""
    data = secrets.token_bytes(size * 5)
    obj = token.create(alg, key)
    expected = _reference_cipher(alg, key, mode, iv, data, decrypt=decrypt)
    assert token.cipher(obj, mode, iv, data, decrypt=decrypt) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("alg", ALG_PARAMS)
@pytest.mark.parametrize("decrypt", [False, True])
def test_cbc_continues_with_last_ciphertext_block(token: SqliteToken, alg: int, decrypt: bool) -> None:
    """CBC in two calls, the second's IV being the last ciphertext block so far, equals one call."""
    size = _block(alg)
    obj = token.create(alg, secrets.token_bytes(KEY_LENGTHS[alg]))
    iv, data = secrets.token_bytes(size), secrets.token_bytes(size * 6)
    whole = token.cipher(obj, "cbc", iv, data, decrypt=decrypt)
    head, tail = data[: size * 2], data[size * 2 :]
    first = token.cipher(obj, "cbc", iv, head, decrypt=decrypt)
    register = (head if decrypt else first)[-size:]
    assert first + token.cipher(obj, "cbc", register, tail, decrypt=decrypt) == whole


# --- at rest, permissions, redaction -----------------------------------------------------------------------------


def test_material_is_not_in_the_database_in_clear(inst: Installation, token: SqliteToken) -> None:
    """No file of the database (main, -wal, -shm) holds any key in clear, before or after a checkpoint."""
    keys = [secrets.token_bytes(KEY_LENGTHS[alg]) for alg in BLOCK_ALGS]
    for alg, key in zip(BLOCK_ALGS, keys, strict=True):
        token.create(alg, key)

    def blob() -> bytes:
        return b"".join(p.read_bytes() for p in inst.path.iterdir() if p.name.startswith(DB_FILE))

    for _ in range(2):
        contents = blob()
        assert contents
        for key in keys:
            assert key not in contents
            assert key.hex().encode() not in contents
        token._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def test_tampered_row_fails_integrity(inst: Installation, token: SqliteToken) -> None:
    """A row whose ALG_ID or sealed material was altered fails its integrity check (NTE_FAIL), never decrypts."""
    obj = token.create(w.CALG_AES_256, secrets.token_bytes(32))
    with sqlite3.connect(inst.path / DB_FILE) as db:
        db.execute("UPDATE objects SET alg = ? WHERE id = ?", (w.CALG_AES_128, obj))
    db.close()
    fresh = Installation(inst.path)
    try:
        with pytest.raises(CryptError) as info:
            fresh.token.cipher(obj, "ecb", b"", bytes(16), decrypt=False)
        assert _code(info) == w.NTE_FAIL
    finally:
        fresh.close()


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_database_files_are_0600(inst: Installation, token: SqliteToken) -> None:
    """token.sqlite3 and its -wal/-shm companions are readable by their owner only, even under umask 0."""
    token.create(w.CALG_AES_128, AES_KEY)
    names = {p.name: stat.S_IMODE(p.stat().st_mode) for p in inst.path.iterdir() if p.name.startswith(DB_FILE)}
    assert DB_FILE in names
    assert set(names.values()) == {0o600}
    old = os.umask(0)
    try:
        other = Installation(inst.path.parent / "umask0")
        other.token.create(w.CALG_AES_128, AES_KEY)
        assert stat.S_IMODE((other.path / DB_FILE).stat().st_mode) == 0o600
        other.close()
    finally:
        os.umask(old)


def test_no_key_bytes_in_reprs_or_errors(inst: Installation, token: SqliteToken) -> None:
    """Reprs of the token, its cache entries and its errors carry no key bytes."""
    key = secrets.token_bytes(32)
    obj = token.create(w.CALG_AES_256, key)
    texts = [repr(token), str(token), repr(inst), repr(token._cache[obj])]
    for call in (lambda: token.cipher(obj, "ecb", b"", bytes(3), decrypt=False), lambda: token.create(w.CALG_DES, key)):
        with pytest.raises(CryptError) as info:
            call()
        texts += [str(info.value), repr(info.value)]
    for text in texts:
        assert key.hex() not in text
        assert repr(key) not in text
        assert inst.key("token-wrap").hex() not in text


def test_closed_token_refuses_use(inst: Installation) -> None:
    """After close every call is NTE_FAIL (a CSP may meet a token closed under it), and closing twice is
    harmless."""
    token = inst.token
    obj = token.create(w.CALG_AES_128, AES_KEY)
    token.close()
    token.close()
    calls: list[Callable[[], object]] = [
        lambda: token.cipher(obj, "ecb", b"", bytes(16), decrypt=False),
        lambda: token.exists(obj),
        lambda: token.create(w.CALG_AES_128, AES_KEY),
        token.objects,
        lambda: token.delete(obj),
    ]
    for call in calls:
        with pytest.raises(CryptError, match="closed") as info:
            call()
        assert info.value.code == w.NTE_FAIL


def test_a_database_held_past_the_busy_timeout_is_nte_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process stopped inside a write transaction holds the database's lock: past the busy timeout, every call
    that needs the database is NTE_FAIL naming the cause (it was sqlite3.OperationalError), and the token works
    again once the lock is gone."""
    monkeypatch.setattr(sqlite_token, "BUSY_TIMEOUT_S", 0.05)
    with Installation(tmp_path) as inst:
        token = inst.token
        obj = token.create(w.CALG_AES_128, AES_KEY)
        holder = sqlite3.connect(inst.path / DB_FILE, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        for call in (lambda: token.create(w.CALG_AES_128, AES_KEY), lambda: token.delete(obj)):
            with pytest.raises(CryptError, match="locked") as info:
                call()
            assert info.value.code == w.NTE_FAIL
            assert AES_KEY.hex() not in str(info.value)
        holder.execute("ROLLBACK")
        holder.close()
        assert token.objects() == {obj: w.CALG_AES_128}
        token.delete(obj)
        assert token.objects() == {}


def test_a_database_that_fails_on_reads_is_nte_fail(inst: Installation) -> None:
    """Reads fail as CryptError too (here the table is gone: the file was replaced under the token)."""
    token = inst.token
    obj = token.create(w.CALG_AES_128, AES_KEY)
    other = sqlite3.connect(inst.path / DB_FILE, isolation_level=None)
    other.execute("DROP TABLE objects")
    other.close()
    calls: list[Callable[[], object]] = [
        lambda: token.exists(obj),
        token.objects,
        lambda: token.cipher(obj, "ecb", b"", bytes(16), decrypt=False),
    ]
    for call in calls:
        with pytest.raises(CryptError, match="no such table") as info:
            call()
        assert info.value.code == w.NTE_FAIL


# --- deletion seen from elsewhere --------------------------------------------------------------------------------


@pytest.mark.parametrize("used_before", [False, True])
def test_delete_through_another_installation_is_seen(tmp_path: Path, used_before: bool) -> None:
    """An object deleted through another Installation (another connection) is NTE_NOT_FOUND here at next use."""
    mine, theirs = Installation(tmp_path), Installation(tmp_path)
    try:
        obj = mine.token.create(w.CALG_AES_128, AES_KEY)
        keep = mine.token.create(w.CALG_AES_128, AES_KEY)
        if used_before:
            mine.token.cipher(obj, "ecb", b"", bytes(16), decrypt=False)  # now cached here
            mine.token.cipher(keep, "ecb", b"", bytes(16), decrypt=False)
        theirs.token.delete(obj)
        with pytest.raises(CryptError) as info:
            mine.token.cipher(obj, "ecb", b"", bytes(16), decrypt=False)
        assert _code(info) == w.NTE_NOT_FOUND
        assert not mine.token.exists(obj)
        assert mine.token.cipher(keep, "ecb", b"", bytes(16), decrypt=False) == _ecb(algorithms.AES(AES_KEY), bytes(16))
    finally:
        mine.close()
        theirs.close()


def _delete_in_child(home: str, obj: int) -> None:
    with Installation(home) as inst:
        inst.token.delete(obj)


def test_delete_by_another_process_is_seen(inst: Installation, token: SqliteToken) -> None:
    """An object used here, then deleted by a spawned process, is NTE_NOT_FOUND here; other objects still work."""
    obj = token.create(w.CALG_AES_128, AES_KEY)
    keep = token.create(w.CALG_AES_128, AES_KEY)
    token.cipher(obj, "ecb", b"", bytes(16), decrypt=False)
    proc = multiprocessing.get_context("spawn").Process(target=_delete_in_child, args=(str(inst.path), obj))
    proc.start()
    proc.join(timeout=60)
    assert proc.exitcode == 0
    with pytest.raises(CryptError) as info:
        token.cipher(obj, "ecb", b"", bytes(16), decrypt=False)
    assert _code(info) == w.NTE_NOT_FOUND
    assert token.cipher(keep, "ecb", b"", bytes(16), decrypt=False) == _ecb(algorithms.AES(AES_KEY), bytes(16))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX")
def test_token_inherited_across_fork(inst: Installation, token: SqliteToken) -> None:
    """A forked child uses an inherited token through its own connection; the parent's keeps working."""
    obj = token.create(w.CALG_AES_128, AES_KEY)
    expected = token.cipher(obj, "ecb", b"", bytes(16), decrypt=False)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status only
        ok = False
        try:
            ok = token.cipher(obj, "ecb", b"", bytes(16), decrypt=False) == expected
            token.create(w.CALG_DES, bytes(8))
            token.delete(obj)
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with pytest.raises(CryptError) as info:
        token.cipher(obj, "ecb", b"", bytes(16), decrypt=False)
    assert _code(info) == w.NTE_NOT_FOUND
    assert list(token.objects().values()) == [w.CALG_DES]


# --- concurrency -------------------------------------------------------------------------------------------------


def _exercise(token: SqliteToken, objects: int, ciphers: int, tag: int) -> list[int]:
    """Creates objects, deletes every fifth at once, runs ciphers on the others checked against cryptography."""
    survivors: list[int] = []
    for n in range(objects):
        alg = BLOCK_ALGS[(n + tag) % len(BLOCK_ALGS)]
        key = secrets.token_bytes(KEY_LENGTHS[alg])
        obj = token.create(alg, key)
        if n % 5 == 4:
            token.delete(obj)
            assert not token.exists(obj)
            continue
        survivors.append(obj)
        size = _block(alg)
        for i in range(ciphers):
            iv, data = secrets.token_bytes(size), secrets.token_bytes(size * 3)
            got = token.cipher(obj, "cbc", iv, data, decrypt=bool(i % 2))
            assert got == _reference_cipher(alg, key, "cbc", iv, data, decrypt=bool(i % 2))
    return survivors


def test_threads_share_one_token(token: SqliteToken) -> None:
    """8 threads x 200 create/cipher/delete calls on one token: no error, exactly the expected objects remain."""
    errors: list[BaseException] = []
    survivors: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def run(tag: int) -> None:
        start.wait()
        try:
            mine = _exercise(token, 40, 4, tag)  # 40 creates, 8 deletes + exists, 128 ciphers
        except BaseException as exc:  # reported below
            errors.append(exc)
            return
        with lock:
            survivors.extend(mine)

    threads = [threading.Thread(target=run, args=(tag,)) for tag in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert set(token.objects()) == set(survivors)
    assert len(survivors) == len(set(survivors)) == 8 * 32


def _process_worker(home: str, tag: int, barrier: Any, results: Any) -> None:
    with Installation(home) as inst:
        barrier.wait()
        results.put((tag, _exercise(inst.token, 50, 2, tag)))


def test_processes_share_one_token(tmp_path: Path) -> None:
    """4 spawned processes x 50 creates with ciphers and deletes at once: integrity ok, exact object count."""
    ctx = multiprocessing.get_context("spawn")
    home = str(tmp_path / "home")
    Installation(home).close()  # the secret exists; the database is created by the racing workers
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_process_worker, args=(home, tag, barrier, results)) for tag in range(4)]
    for proc in procs:
        proc.start()
    reported = dict(results.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    survivors = [obj for tag in sorted(reported) for obj in reported[tag]]
    assert len(survivors) == 4 * 40  # each made 50 objects and deleted every fifth
    with Installation(home) as inst:
        assert set(inst.token.objects()) == set(survivors)
        with sqlite3.connect(inst.path / DB_FILE) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert db.execute("SELECT count(*) FROM objects").fetchone() == (len(survivors),)
        db.close()
