"""The PKCS#11 token (keyhandoff.impl.pkcs11_token) on a real SoftHSM2 token, alone and under the CSP.

Every test gets a FRESH SoftHSM2 token (tests/hardware/softhsm.py, fixtures in conftest.py): a private
SOFTHSM2_CONF (its own token directory, file backend) and a token initialised with softhsm2-util. Without
softhsm2-util, the module or python-pkcs11 the tests skip, which tests/conftest.py turns into failures under CI=true.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from keyhandoff.impl.installation import Installation
from keyhandoff.impl.processes import ProcessCsp
from keyhandoff.impl.token import Token
from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError
from tests.hardware.softhsm import MODULE

pkcs11 = pytest.importorskip("pkcs11", reason="python-pkcs11 is not installed (pip install -e '.[pkcs11]')")

from keyhandoff.impl.pkcs11_token import (  # noqa: E402 - after the importorskip
    ENV_PIN,
    ENV_PIN_FILE,
    LABEL_PREFIX,
    Pkcs11Config,
    Pkcs11ConfigError,
    Pkcs11Token,
)

AES_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
SIZES = {
    w.CALG_AES_128: 16,
    w.CALG_AES_192: 24,
    w.CALG_AES_256: 32,
    w.CALG_DES: 8,
    w.CALG_3DES_112: 16,
    w.CALG_3DES: 24,
}
ALG_PARAMS = [pytest.param(alg, id=w.ALG_NAMES[alg]) for alg in SIZES]


def _kat(vector_id: str) -> dict[str, Any]:
    data = json.loads((resources.files("keyhandoff") / "data" / "kat.json").read_text())
    (vector,) = [v for v in data["vectors"] if v["id"] == vector_id]
    return dict(vector)


def _reference(alg: int, key: bytes, mode: str, iv: bytes, data: bytes, *, decrypt: bool) -> bytes:
    if alg in (w.CALG_AES_128, w.CALG_AES_192, w.CALG_AES_256):
        algorithm: Any = algorithms.AES(key)
    else:
        algorithm = TripleDES({8: key * 3, 16: key + key[:8]}.get(len(key), key))
    cipher = Cipher(algorithm, modes.ECB() if mode == "ecb" else modes.CBC(iv))
    ctx = cipher.decryptor() if decrypt else cipher.encryptor()
    return ctx.update(data) + ctx.finalize()


def _session(config: Pkcs11Config) -> Any:
    """The process's logged-in session (reading attributes as an administrator would)."""
    from keyhandoff.impl import pkcs11_token

    return pkcs11_token._module(config.module).session(config.label, config.pin)


def _object(config: Pkcs11Config, obj: int) -> Any:
    from pkcs11 import Attribute

    (found,) = _session(config).get_objects({Attribute.ID: obj.to_bytes(8, "big")})
    return found


# --- the token on its own -----------------------------------------------------------------------------------


def test_is_a_token_with_serial_and_algorithms(token: Pkcs11Token) -> None:
    """serial names the PKCS#11 token; all six block algorithms are held and run (SoftHSM2 on OpenSSL 3 cannot run
    CKM_DES_*: single DES is then a K || K || K 3DES object)."""
    typed: Token = token  # statically a Token; and every protocol member is there
    assert all(callable(getattr(typed, name)) for name in ("algorithms", "create", "exists", "cipher", "objects"))
    assert token.serial.startswith("pkcs11:")
    assert len(token.serial) > len("pkcs11:")
    assert token.algorithms() == set(SIZES)
    assert "pin" not in repr(token).lower().replace("pin=<redacted>", "")


@pytest.mark.parametrize("vector_id", ["sp800-38a-F.1.1-ecb-aes128", "sp800-38a-F.2.1-cbc-aes128"])
def test_aes_known_answers(token: Pkcs11Token, vector_id: str) -> None:
    """SP 800-38A ECB and CBC AES-128 vectors (keyhandoff/data/kat.json), both directions, on the token."""
    vector = _kat(vector_id)
    mode = "cbc" if vector["mode"] == "CBC" else "ecb"
    iv = bytes.fromhex(vector["iv"] or "")
    plain, cipher = bytes.fromhex(vector["plaintext"]), bytes.fromhex(vector["ciphertext"])
    obj = token.create(w.CALG_AES_128, bytes.fromhex(vector["key"]))
    assert token.exists(obj)
    assert token.cipher(obj, mode, iv, plain, decrypt=False) == cipher  # type: ignore[arg-type]
    assert token.cipher(obj, mode, iv, cipher, decrypt=True) == plain  # type: ignore[arg-type]


@pytest.mark.parametrize("alg", ALG_PARAMS)
def test_every_algorithm_agrees_with_cryptography(token: Pkcs11Token, alg: int) -> None:
    """ECB and CBC in both directions equal `cryptography` for every algorithm the token holds."""
    key = secrets.token_bytes(SIZES[alg])
    block = 16 if alg in (w.CALG_AES_128, w.CALG_AES_192, w.CALG_AES_256) else 8
    obj = token.create(alg, key)
    data, iv = secrets.token_bytes(4 * block), secrets.token_bytes(block)
    for mode, vector in (("ecb", b""), ("cbc", iv)):
        for decrypt in (False, True):
            expected = _reference(alg, key, mode, vector, data, decrypt=decrypt)
            assert token.cipher(obj, mode, vector, data, decrypt=decrypt) == expected  # type: ignore[arg-type]


def test_cbc_continues_with_the_last_block_as_iv(token: Pkcs11Token) -> None:
    """Two CBC calls chained through the last ciphertext block equal one call (the CSP keeps the register)."""
    obj = token.create(w.CALG_AES_256, secrets.token_bytes(32))
    iv, data = secrets.token_bytes(16), secrets.token_bytes(80)
    whole = token.cipher(obj, "cbc", iv, data, decrypt=False)
    first = token.cipher(obj, "cbc", iv, data[:32], decrypt=False)
    second = token.cipher(obj, "cbc", first[-16:], data[32:], decrypt=False)
    assert first + second == whole
    back = token.cipher(obj, "cbc", iv, whole[:48], decrypt=True)
    assert back + token.cipher(obj, "cbc", whole[32:48], whole[48:], decrypt=True) == data


def test_created_objects_follow_the_attribute_policy(token: Pkcs11Token, config: Pkcs11Config) -> None:
    """Token, private, sensitive, not extractable/modifiable/copyable, encrypt/decrypt only, CKA_ID and
    CKA_LABEL set; the token refuses to reveal the value or to change an attribute."""
    from pkcs11 import Attribute
    from pkcs11 import exceptions as p11e

    obj = token.create(w.CALG_AES_128, AES_KEY)
    key = _object(config, obj)
    for attribute, expected in {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.MODIFIABLE: False,
        Attribute.COPYABLE: False,
        Attribute.DESTROYABLE: True,
        Attribute.ENCRYPT: True,
        Attribute.DECRYPT: True,
        Attribute.WRAP: False,
        Attribute.UNWRAP: False,
        Attribute.SIGN: False,
        Attribute.VERIFY: False,
        Attribute.DERIVE: False,
    }.items():
        assert key[attribute] is expected, attribute
    assert key[Attribute.ID] == obj.to_bytes(8, "big")
    assert key[Attribute.LABEL] == LABEL_PREFIX + "ns1"
    with pytest.raises(p11e.AttributeSensitive):
        key[Attribute.VALUE]
    with pytest.raises(p11e.PKCS11Error):
        key[Attribute.LABEL] = "renamed"
    assert key[Attribute.LABEL] == LABEL_PREFIX + "ns1"
    with pytest.raises(p11e.PKCS11Error):
        key.copy({Attribute.EXTRACTABLE: True})


def test_objects_and_delete(token: Pkcs11Token, config: Pkcs11Config) -> None:
    """objects() lists this namespace's objects with their ALG_IDs; delete removes one; another namespace on
    the same token sees neither."""
    a = token.create(w.CALG_AES_192, secrets.token_bytes(24))
    b = token.create(w.CALG_3DES_112, secrets.token_bytes(16))
    d = token.create(w.CALG_DES, secrets.token_bytes(8))
    other = Pkcs11Token(config, "ns2")
    c = other.create(w.CALG_AES_128, AES_KEY)
    assert dict(token.objects()) == {a: w.CALG_AES_192, b: w.CALG_3DES_112, d: w.CALG_DES}
    assert dict(other.objects()) == {c: w.CALG_AES_128}
    assert not other.exists(a)
    assert not token.exists(c)
    token.delete(a)
    assert not token.exists(a)
    assert dict(token.objects()) == {b: w.CALG_3DES_112, d: w.CALG_DES}
    with pytest.raises(CryptError) as caught:
        token.cipher(a, "ecb", b"", bytes(16), decrypt=False)
    assert caught.value.code == w.NTE_NOT_FOUND
    with pytest.raises(CryptError) as caught:
        token.delete(a)
    assert caught.value.code == w.NTE_NOT_FOUND


def test_undestroyable_objects_cannot_be_deleted(config: Pkcs11Config) -> None:
    """With destroyable=False the token refuses C_DestroyObject (CKR_ACTION_PROHIBITED): NTE_PERM, object kept."""
    strict = Pkcs11Token(Pkcs11Config(config.module, config.label, config.pin, destroyable=False), "strict")
    obj = strict.create(w.CALG_AES_128, AES_KEY)
    from pkcs11 import Attribute

    assert _object(config, obj)[Attribute.DESTROYABLE] is False
    with pytest.raises(CryptError) as caught:
        strict.delete(obj)
    assert caught.value.code == w.NTE_PERM
    assert strict.exists(obj)


def test_errors(token: Pkcs11Token) -> None:
    """Unsupported algorithm, wrong key length, ragged data, bad IV, unknown object, closed token."""

    def code(call: Any) -> int:
        with pytest.raises(CryptError) as caught:
            call()
        return caught.value.code

    assert code(lambda: token.create(w.CALG_RC4, bytes(16))) == w.NTE_BAD_ALGID
    assert code(lambda: token.create(w.CALG_RC2, bytes(16))) == w.NTE_BAD_ALGID
    assert code(lambda: token.create(w.CALG_AES_128, bytes(15))) == w.NTE_BAD_DATA
    obj = token.create(w.CALG_AES_128, AES_KEY)
    assert code(lambda: token.cipher(obj, "ecb", b"", bytes(15), decrypt=False)) == w.NTE_BAD_DATA
    assert code(lambda: token.cipher(obj, "cbc", bytes(8), bytes(16), decrypt=False)) == w.NTE_BAD_DATA
    assert token.cipher(obj, "ecb", b"", b"", decrypt=False) == b""
    for missing in (12345, 0, -1, 1 << 70):
        assert not token.exists(missing)
        assert code(lambda m=missing: token.cipher(m, "ecb", b"", bytes(16), decrypt=False)) == w.NTE_NOT_FOUND
    with pytest.raises(ValueError, match="mode"):
        token.cipher(obj, "ofb", b"", bytes(16), decrypt=False)  # type: ignore[arg-type]
    token.close()
    assert code(lambda: token.exists(obj)) == w.NTE_FAIL  # closed


def test_configuration_from_the_environment(
    hsm_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Module, label and PIN from the environment, the PIN from a file when the variable is unset; a wrong PIN
    or an unknown label is a configuration error that never shows the PIN."""
    assert Pkcs11Config.from_environment().pin == hsm_env[ENV_PIN]
    monkeypatch.delenv(ENV_PIN)
    with pytest.raises(Pkcs11ConfigError):
        Pkcs11Config.from_environment()
    pin_file = tmp_path / "pin"
    pin_file.write_text(hsm_env[ENV_PIN] + "\n")
    monkeypatch.setenv(ENV_PIN_FILE, str(pin_file))
    config = Pkcs11Config.from_environment()
    assert config.pin == hsm_env[ENV_PIN]
    assert hsm_env[ENV_PIN] not in repr(config)
    Pkcs11Token.from_environment("fromfile").close()
    with pytest.raises(Pkcs11ConfigError) as caught:
        Pkcs11Token(Pkcs11Config(MODULE, "no-such-token-label", "1234"), "x")
    assert "1234" not in str(caught.value)


# --- concurrency ------------------------------------------------------------------------------------------


def test_threads_share_one_token(token: Pkcs11Token) -> None:
    """4 threads x 50 cipher calls on one token: no crash, no error, right answers (hazard 1: one lock)."""
    key = secrets.token_bytes(16)
    obj = token.create(w.CALG_AES_128, key)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for i in range(50):
                data = bytes([seed, i]) * 16
                got = token.cipher(obj, "cbc", bytes(16), data, decrypt=False)
                assert got == _reference(w.CALG_AES_128, key, "cbc", bytes(16), data, decrypt=False)
                assert token.exists(obj)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def _worker(env: dict[str, str], obj: int, rounds: int) -> bytes:
    os.environ.update(env)
    token = Pkcs11Token.from_environment("ns1")
    try:
        out = b""
        for _ in range(rounds):
            out = token.cipher(obj, "ecb", b"", bytes(16), decrypt=False)
        return out
    finally:
        token.close()


def test_spawned_processes_share_one_token(token: Pkcs11Token, hsm_env: dict[str, str]) -> None:
    """3 spawned processes log in to one token at once and all run the same object (hazard 2)."""
    obj = token.create(w.CALG_AES_128, AES_KEY)
    expected = token.cipher(obj, "ecb", b"", bytes(16), decrypt=False)
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        results = pool.starmap(_worker, [(hsm_env, obj, 30)] * 3)
    assert results == [expected] * 3


# --- the CSP on a PKCS#11 token ---------------------------------------------------------------------------


@pytest.fixture
def csp(hsm_env: dict[str, str], tmp_path: Path) -> Iterator[ProcessCsp]:
    c = ProcessCsp(tmp_path / "home", token="pkcs11")
    yield c
    c.close()


def test_installation_selects_the_token(
    hsm_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """token="pkcs11" (or KEYHANDOFF_TOKEN=pkcs11) gives a Pkcs11Token scoped to the installation; the default
    stays SQLite; a pickled installation keeps its choice."""
    import pickle

    with Installation(tmp_path / "a", token="pkcs11") as inst:
        assert isinstance(inst.token, Pkcs11Token)
        assert inst.token.serial.startswith("pkcs11:")
        assert pickle.loads(pickle.dumps(inst)).token_kind == "pkcs11"
    with Installation(tmp_path / "b") as inst:
        assert inst.token.serial.startswith("sqlite:")
    monkeypatch.setenv("KEYHANDOFF_TOKEN", "pkcs11")
    with Installation(tmp_path / "c") as inst:
        assert isinstance(inst.token, Pkcs11Token)
    with pytest.raises(ValueError, match="token kind"):
        Installation(tmp_path / "d", token="tpm")


def test_hardware_key_hands_off_to_the_app_process(csp: ProcessCsp) -> None:
    """A key generated in hardware encrypts, exports opaque and is destroyed (the object stays on the token);
    the app process imports it and continues exactly like a duplicate taken before the export."""
    assert csp.capabilities_data()["hardware_algorithms"] == set(SIZES)
    secure, app = csp.acquire("secure"), csp.acquire("app")
    for alg in (w.CALG_AES_128, w.CALG_DES, w.CALG_3DES_112):
        pinned = csp.gen_key(secure, alg, hardware=True)
        first = csp.encrypt(pinned, bytes(48), False)
        assert len(first) == 48
        twin = csp.duplicate_key(pinned)
        before = dict(csp.token_objects())
        blob = csp.export_key(pinned, w.OPAQUEKEYBLOB)
        csp.destroy_key(pinned)
        assert dict(csp.token_objects()) == before  # destroy never deletes the object
        moved = csp.import_key(app, blob)
        assert csp.encrypt(moved, b"x" * 48, False) == csp.encrypt(twin, b"x" * 48, False)
        assert csp.encrypt(moved, b"y" * 5, True) == csp.encrypt(twin, b"y" * 5, True)
        assert csp.inspect(moved).key == b""  # the material never left the token


def test_blob_of_a_deleted_object_is_not_found(csp: ProcessCsp) -> None:
    """Administration deletes the object: importing its blob, and using a live handle on it, give NTE_NOT_FOUND."""
    secure, app = csp.acquire("secure"), csp.acquire("app")
    pinned = csp.gen_key(secure, w.CALG_AES_256, hardware=True)
    blob = csp.export_key(pinned, w.OPAQUEKEYBLOB)
    (obj,) = csp.token_objects()
    csp.delete_token_object(obj)
    assert dict(csp.token_objects()) == {}
    for call in (lambda: csp.import_key(app, blob), lambda: csp.encrypt(pinned, bytes(16), False)):
        with pytest.raises(CryptError) as caught:
            call()
        assert caught.value.code == w.NTE_NOT_FOUND


def test_builtin_targets_load_with_the_token(hsm_env: dict[str, str], tmp_path: Path) -> None:
    """load("builtin", token="pkcs11") and load("builtin-processes", token="pkcs11") pin keys on the token."""
    from keyhandoff.targets import load

    for spec in ("builtin", "builtin-processes"):
        target = load(spec, home=tmp_path / spec, token="pkcs11")
        try:
            prov = target.acquire("secure")
            target.gen_key(prov, w.CALG_AES_128, hardware=True)
            assert len(target.token_objects()) == 1  # type: ignore[attr-defined]
            assert target.capabilities().hardware_algorithms >= {w.CALG_AES_128}
        finally:
            target.close()


def test_a_temporary_installation_leaves_no_object_on_the_token(
    hsm_env: dict[str, str], config: Any, tmp_path: Path
) -> None:
    """A target whose home is removed as it closes (every check's test case) deletes its objects from the token,
    which outlives the home: a run left hundreds. A kept installation's objects stay."""
    from pkcs11 import Attribute, ObjectClass

    from keyhandoff.targets import load

    for spec in ("builtin", "builtin-processes"):
        for name, remove in (("kept", False), ("scratch", True)):
            target = load(spec, home=tmp_path / f"{name}-{spec}", token="pkcs11", remove_home=remove)
            try:
                prov = target.acquire("secure")
                target.gen_key(prov, w.CALG_AES_128, hardware=True)
                target.gen_key(prov, w.CALG_DES, hardware=True)  # the emulated DES label too
                assert len(target.token_objects()) == 2  # type: ignore[attr-defined]
            finally:
                target.close()
    left = list(_session(config).get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY}))
    assert len(left) == 4  # the two kept installations' objects
    assert not (tmp_path / "scratch-builtin").exists()


def test_lockstep_machine_on_the_token(hsm_env: dict[str, str]) -> None:
    """The lockstep machine (two processes, fresh installation per run, one shared test token) agrees with the
    model."""
    from keyhandoff.check import run_check

    with _on_the_token("builtin-processes") as factory:
        result = run_check("builtin-processes", factory, profile="quick", examples=20, seed=1)
    assert result.ok, result.script


@contextlib.contextmanager
def _on_the_token(spec: str) -> Iterator[Callable[[], Any]]:
    """A factory of installations of ``spec`` on this test's PKCS#11 token, each in a new home (removed after)."""
    from keyhandoff.targets import load

    homes: list[str] = []

    def factory() -> Any:
        home = tempfile.mkdtemp(prefix="keyhandoff-pkcs11-")
        homes.append(home)
        return load(spec, home=home, token="pkcs11")

    try:
        yield factory
    finally:
        for home in homes:
            shutil.rmtree(home, ignore_errors=True)


@pytest.mark.parametrize("processes", [False, True])
def test_programs_at_once_on_the_token(hsm_env: dict[str, str], processes: bool) -> None:
    """`keyhandoff concurrent` on the PKCS#11 token: python-pkcs11 releases the GIL on every call, so the threads
    really do run inside the token at once; each program still gets what its model gives."""
    from keyhandoff.concurrent import run_concurrent, verdict_text

    spec = "builtin-processes" if processes else "builtin"
    with _on_the_token(spec) as factory:
        result = run_concurrent(spec, factory, threads=4, rounds=4, steps=30, seed=2)
    assert result.ok, verdict_text(result)
    assert result.steps > 300


@pytest.mark.parametrize("processes", [False, True])
def test_threads_sharing_pinned_keys_on_the_token(hsm_env: dict[str, str], processes: bool) -> None:
    """`keyhandoff concurrent --shared` on the PKCS#11 token: threads use the same pinned keys at once (the token
    runs their blocks outside the GIL), and every round's answers still fit an order of the calls."""
    from keyhandoff.shared_keys import run_shared, shared_verdict_text

    spec = "builtin-processes" if processes else "builtin"
    with _on_the_token(spec) as factory:
        result = run_shared(spec, factory, threads=4, rounds=12, calls=6, seed=3)
    assert result.ok, shared_verdict_text(result)
    assert result.ran == 4 * 6 * 12
