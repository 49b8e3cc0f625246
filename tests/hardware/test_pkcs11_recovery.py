"""Hazard 2 on a real SoftHSM2 token, with faults injected at the python-pkcs11 boundary, and the handle cache.

The token re-initialises the library (C_Finalize + C_Initialize), reopens its session and retries once when a call
fails with GeneralError, NoSuchToken and the like. Here the faults are real exceptions raised where python-pkcs11
would raise them: the process's ``pkcs11.lib`` and session are wrapped (:class:`Faults`), so the recovery runs for
real (a real re-initialisation, a real new login, a real search for the object) and only the first call(s) fail.
Also faults made without any wrapper: the session closed, the library finalised behind the token's back. And the
cached object handles: an object deleted by another process is NOT_FOUND, never a stale success.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError
from tests.hardware.softhsm import MODULE
from tests.impl.conftest import assert_gone_object_is_not_found

pkcs11 = pytest.importorskip("pkcs11", reason="python-pkcs11 is not installed (pip install -e '.[pkcs11]')")

from pkcs11 import exceptions as p11e  # noqa: E402 - after the importorskip

from keyhandoff.impl import pkcs11_token  # noqa: E402
from keyhandoff.impl.builtin import BuiltinCsp  # noqa: E402
from keyhandoff.impl.pkcs11_token import Pkcs11Config, Pkcs11Token  # noqa: E402
from keyhandoff.impl.processes import ProcessCsp  # noqa: E402

KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
IV = bytes(range(16))
PLAIN = bytes(range(64))

# Failures the token must recover from with one re-initialisation (hazard 2 and its relatives).
RECOVERABLE = [p11e.GeneralError, p11e.NoSuchToken, p11e.TokenNotPresent, p11e.DeviceRemoved, p11e.SessionHandleInvalid]
ERRORS = [pytest.param(error, id=error.__name__) for error in RECOVERABLE]


def _aes(mode: str, data: bytes, *, decrypt: bool = False) -> bytes:
    cipher = Cipher(algorithms.AES(KEY), modes.ECB() if mode == "ecb" else modes.CBC(IV))
    ctx = cipher.decryptor() if decrypt else cipher.encryptor()
    return ctx.update(data) + ctx.finalize()


# --- the fault injector -------------------------------------------------------------------------------------


class Faults:
    """A plan of failures at the python-pkcs11 boundary. Each armed fault makes the next library call at its
    point (any point when None) raise the given pkcs11 exception, before the call reaches the module or, with
    ``after``, once the module has done it (the token acted, the caller sees a failure)."""

    def __init__(self) -> None:
        self.plan: list[tuple[str | None, type[p11e.PKCS11Error], bool]] = []
        self.raised: list[tuple[str, str]] = []
        self.reinitialisations = 0

    def arm(self, error: type[p11e.PKCS11Error], *, times: int = 1, at: str | None = None, after: bool = False) -> None:
        self.plan += [(at, error, after)] * times

    def _hit(self, point: str, after: bool) -> None:
        if self.plan:
            at, error, late = self.plan[0]
            if at in (None, point) and late == after:
                self.plan.pop(0)
                self.raised.append((point, error.__name__))
                raise error()

    def call(self, point: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self._hit(point, False)
        result = func(*args, **kwargs)
        self._hit(point, True)
        return result


class FaultyLib:
    """The process's pkcs11.lib: get_token may fail; reinitialize is counted and done for real."""

    def __init__(self, lib: Any, faults: Faults) -> None:
        self._lib, self._faults = lib, faults

    def get_token(self, **kwargs: Any) -> Any:
        return FaultyToken(self._faults.call("get_token", self._lib.get_token, **kwargs), self._faults)

    def reinitialize(self) -> None:
        self._faults.reinitialisations += 1
        self._lib.reinitialize()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lib, name)


class FaultyToken:
    def __init__(self, token: Any, faults: Faults) -> None:
        self._token, self._faults = token, faults

    def open(self, **kwargs: Any) -> Any:
        return FaultySession(self._faults.call("open", self._token.open, **kwargs), self._faults)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._token, name)


class FaultySession:
    """A real session whose searches and creates may fail; the keys it hands out are the real objects (still
    SecretKeys) with encrypt, decrypt, get_attributes and destroy routed through the plan."""

    def __init__(self, session: Any, faults: Faults) -> None:
        self._session, self._faults = session, faults

    def _key(self, key: Any) -> Any:
        for name in ("encrypt", "decrypt", "get_attributes", "destroy"):
            setattr(key, name, functools.partial(self._faults.call, name, getattr(key, name)))
        return key

    def get_objects(self, attrs: Any = None) -> list[Any]:
        found = self._faults.call("get_objects", lambda: list(self._session.get_objects(attrs)))
        return [self._key(key) for key in found]

    def create_object(self, attrs: Any) -> Any:
        return self._key(self._faults.call("create_object", self._session.create_object, attrs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def _install(config: Pkcs11Config, monkeypatch: pytest.MonkeyPatch) -> Faults:
    """Wrap the process's library and its open sessions (restored at teardown). Handles cached so far are voided
    (as by a re-initialisation) so that every key is found again through the wrapped session."""
    module = pkcs11_token._module(config.module)
    module.generation += 1
    faults = Faults()
    monkeypatch.setattr(module, "lib", FaultyLib(module.lib, faults))
    monkeypatch.setattr(module, "sessions", {k: FaultySession(s, faults) for k, s in module.sessions.items()})
    return faults


@pytest.fixture
def faults(token: Pkcs11Token, config: Pkcs11Config, monkeypatch: pytest.MonkeyPatch) -> Faults:
    """Faults on this test's token, installed once ``token`` is open (keys created later go through them)."""
    return _install(config, monkeypatch)


def _nte_fail(call: Callable[[], object]) -> CryptError:
    """The call fails with CryptError(NTE_FAIL) (never a raw pkcs11 exception) and the error names no secret."""
    with pytest.raises(CryptError) as caught:
        call()
    assert caught.value.code == w.NTE_FAIL
    assert not isinstance(caught.value, p11e.PKCS11Error)
    return caught.value


# --- one failure: re-initialise, retry, right answer -----------------------------------------------------------


@pytest.mark.parametrize("error", ERRORS)
def test_a_failing_cipher_call_is_retried_after_reinitialising(token: Pkcs11Token, faults: Faults, error: Any) -> None:
    """The encrypt call itself fails once: one re-initialisation, a new session, the same ciphertext."""
    obj = token.create(w.CALG_AES_128, KEY)
    faults.arm(error, at="encrypt")
    assert token.cipher(obj, "cbc", IV, PLAIN, decrypt=False) == _aes("cbc", PLAIN)
    assert faults.raised == [("encrypt", error.__name__)]
    assert faults.reinitialisations == 1
    assert token.cipher(obj, "ecb", b"", PLAIN, decrypt=False) == _aes("ecb", PLAIN)
    assert faults.reinitialisations == 1
    assert dict(token.objects()) == {obj: w.CALG_AES_128}


OPERATIONS: dict[str, Callable[[Pkcs11Token, int], object]] = {
    "exists": lambda t, obj: t.exists(obj),
    "encrypt-cbc": lambda t, obj: t.cipher(obj, "cbc", IV, PLAIN, decrypt=False),
    "decrypt-ecb": lambda t, obj: t.cipher(obj, "ecb", b"", _aes("ecb", PLAIN), decrypt=True),
    "objects": lambda t, obj: dict(t.objects()),
    "create": lambda t, obj: t.create(w.CALG_3DES, secrets.token_bytes(24)),
}
EXPECTED: dict[str, Callable[[int], object]] = {
    "exists": lambda obj: True,
    "encrypt-cbc": lambda obj: _aes("cbc", PLAIN),
    "decrypt-ecb": lambda obj: PLAIN,
    "objects": lambda obj: {obj: w.CALG_AES_128},
}


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_every_operation_survives_one_failure_of_its_first_library_call(
    token: Pkcs11Token, faults: Faults, name: str
) -> None:
    """Whatever library call an operation makes first raises GeneralError: the operation still answers right.
    Cached handles are forgotten at re-initialisation, so the retry searches the token for real."""
    obj = token.create(w.CALG_AES_128, KEY)
    token.exists(obj)  # a confirmed, cached handle: the first call of a cipher is the cipher itself
    faults.arm(p11e.GeneralError)
    result = OPERATIONS[name](token, obj)
    assert len(faults.raised) == 1
    assert faults.reinitialisations == 1
    if name == "create":
        assert isinstance(result, int)
        assert dict(token.objects()) == {obj: w.CALG_AES_128, result: w.CALG_3DES}
    else:
        assert result == EXPECTED[name](obj)


def test_no_such_token_when_opening_the_session(token: Pkcs11Token, config: Pkcs11Config, faults: Faults) -> None:
    """A process that must open its session while another process logs in (SoftHSM2 rewrites the token file) may
    get NoSuchToken: one re-initialisation, then the token opens and the object runs."""
    obj = token.create(w.CALG_AES_128, KEY)
    module = pkcs11_token._module(config.module)
    module.sessions.clear()  # as in a fresh process: the next call opens a session
    faults.arm(p11e.NoSuchToken, at="get_token")
    assert token.cipher(obj, "cbc", IV, PLAIN, decrypt=False) == _aes("cbc", PLAIN)
    assert faults.raised == [("get_token", "NoSuchToken")]
    module.sessions.clear()
    faults.arm(p11e.NoSuchToken, at="get_token")
    other = Pkcs11Token(config, "ns-opened-late")  # the constructor's first call (the serial) recovers too
    assert other.serial == token.serial
    assert other.algorithms() == token.algorithms()
    assert faults.reinitialisations == 2


def test_create_that_failed_after_the_token_stored_the_object_leaves_no_orphan(
    token: Pkcs11Token, faults: Faults
) -> None:
    """C_CreateObject stores the key and then the call fails: the retry finds the object under the id it drew and
    returns it, instead of storing a second copy."""
    faults.arm(p11e.GeneralError, at="create_object", after=True)
    obj = token.create(w.CALG_AES_128, KEY)
    assert faults.raised == [("create_object", "GeneralError")]
    assert dict(token.objects()) == {obj: w.CALG_AES_128}
    assert token.cipher(obj, "cbc", IV, PLAIN, decrypt=False) == _aes("cbc", PLAIN)


# --- two failures in a row: CryptError(NTE_FAIL), nothing lost ----------------------------------------------------


@pytest.mark.parametrize("error", ERRORS)
@pytest.mark.parametrize("name", list(OPERATIONS))
def test_a_second_consecutive_failure_is_nte_fail_and_loses_nothing(
    token: Pkcs11Token, faults: Faults, name: str, error: Any
) -> None:
    """The call fails, and so does its retry after re-initialising: CryptError(NTE_FAIL) naming the failure, no
    raw pkcs11 exception. Once the token answers again, the key is there and gives the same bytes."""
    obj = token.create(w.CALG_AES_128, KEY)
    faults.arm(error, times=2)
    failure = _nte_fail(lambda: OPERATIONS[name](token, obj))
    assert f"{error.__name__} after re-initialising" in str(failure)
    assert len(faults.raised) == 2
    assert faults.reinitialisations == 1
    assert faults.plan == []
    assert dict(token.objects()) == {obj: w.CALG_AES_128}  # no key lost, no half-created one either
    assert token.cipher(obj, "cbc", IV, PLAIN, decrypt=False) == _aes("cbc", PLAIN)


def test_a_failing_finalize_still_recovers(token: Pkcs11Token, faults: Faults) -> None:
    """C_Finalize fails during recovery, so the old session lives on (still logged in): the new session joins that
    login (a second C_Login would be CKR_USER_ALREADY_LOGGED_IN) and the call succeeds."""
    obj = token.create(w.CALG_AES_128, KEY)
    calls: list[str] = []

    def finalize_fails() -> None:
        calls.append("reinitialize")
        raise p11e.GeneralError()

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pkcs11_token._module(MODULE).lib, "reinitialize", finalize_fails)
        faults.arm(p11e.GeneralError, at="encrypt")
        assert token.cipher(obj, "ecb", b"", PLAIN, decrypt=False) == _aes("ecb", PLAIN)
    assert calls == ["reinitialize"]


def test_a_failing_initialize_is_nte_fail_until_the_library_works(token: Pkcs11Token, faults: Faults) -> None:
    """C_Finalize works but C_Initialize fails during recovery: NTE_FAIL, not the raw exception. The next call
    finds the library uninitialised (CKR_CRYPTOKI_NOT_INITIALIZED), initialises it and succeeds."""
    obj = token.create(w.CALG_AES_128, KEY)
    lib = pkcs11_token._module(MODULE).lib
    real = pkcs11.lib(MODULE)

    def initialize_fails() -> None:
        raise p11e.GeneralError()

    def finalize_then_fail() -> None:
        real.finalize()
        initialize_fails()

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lib, "reinitialize", finalize_then_fail)
        mp.setattr(lib, "initialize", initialize_fails)
        faults.arm(p11e.GeneralError, at="encrypt")
        failure = _nte_fail(lambda: token.cipher(obj, "ecb", b"", PLAIN, decrypt=False))
        assert "GeneralError after re-initialising" in str(failure)
    try:
        assert token.cipher(obj, "ecb", b"", PLAIN, decrypt=False) == _aes("ecb", PLAIN)
        assert dict(token.objects()) == {obj: w.CALG_AES_128}
    finally:
        real.initialize()  # a no-op once recovered; leaves the module usable for later tests if not


def test_the_csp_keeps_the_key_state_through_token_failures(
    hsm_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the CSP: a hardware key's encrypt survives one failure of the token (the search for its object, the
    cipher call, or the exists() asked when no block goes to the token), two in a row are CryptError(NTE_FAIL) for
    that call only: the feedback register did not move, the object is still there, and the key goes on exactly
    like a duplicate taken before, also across an opaque handoff."""
    csp = BuiltinCsp(tmp_path / "home", token="pkcs11")
    try:
        secure = csp.acquire("secure")
        key = csp.gen_key(secure, w.CALG_AES_256, hardware=True)
        twin = csp.duplicate_key(key)
        objects = dict(csp.token_objects())
        config = Pkcs11Config.from_environment()
        faults = _install(config, monkeypatch)
        module = pkcs11_token._module(config.module)
        # get_objects: the search for the object, its cached handle voided first; encrypt: the cipher call on the
        # cached handle; get_attributes: exists() confirming the handle, asked for empty data (no token call).
        for point, data, void in (
            ("get_objects", PLAIN, True),
            ("encrypt", PLAIN, False),
            ("get_attributes", b"", False),
        ):
            for plan in ([point], [point, None]):  # one failure, recovered; two in a row (the retry's first call)
                if void:
                    module.generation += 1
                for at in plan:
                    faults.arm(p11e.GeneralError, at=at)
                if len(plan) == 1:
                    assert csp.encrypt(key, data, False) == csp.encrypt(twin, data, False)
                    assert faults.raised[-1] == (point, "GeneralError")
                else:
                    _nte_fail(lambda data=data: csp.encrypt(key, data, False))
                    assert faults.raised[-2][0] == point
                assert faults.plan == []
                assert csp.encrypt(key, PLAIN[:32], True) == csp.encrypt(twin, PLAIN[:32], True)
        assert faults.reinitialisations == 6
        assert dict(csp.token_objects()) == objects
        blob = csp.export_key(key, w.OPAQUEKEYBLOB)
        faults.arm(p11e.NoSuchToken)
        moved = csp.import_key(csp.acquire("app"), blob)
        assert csp.encrypt(moved, PLAIN, True) == csp.encrypt(twin, PLAIN, True)
        assert csp.inspect(moved).key == b""
    finally:
        csp.close()


# --- real faults, no wrapper ------------------------------------------------------------------------------------


def test_session_closed_behind_the_tokens_back(token: Pkcs11Token, config: Pkcs11Config) -> None:
    """Someone in this process closes the token's session (C_CloseSession): SessionHandleInvalid, recovered."""
    obj = token.create(w.CALG_AES_128, KEY)
    pkcs11_token._module(config.module).session(config.label, config.pin).close()
    assert token.cipher(obj, "cbc", IV, PLAIN, decrypt=False) == _aes("cbc", PLAIN)
    assert token.exists(obj)


def test_library_finalised_behind_the_tokens_back(token: Pkcs11Token) -> None:
    """Another user of the module in this process calls C_Finalize (python-pkcs11 shares one lib per path):
    CKR_CRYPTOKI_NOT_INITIALIZED, recovered by initialising again."""
    obj = token.create(w.CALG_AES_128, KEY)
    lib = pkcs11.lib(MODULE)
    lib.finalize()
    try:
        assert token.cipher(obj, "cbc", IV, PLAIN, decrypt=False) == _aes("cbc", PLAIN)
        assert dict(token.objects()) == {obj: w.CALG_AES_128}
    finally:
        lib.initialize()  # a no-op once recovered; leaves the module usable for later tests if not


# --- opening while another process rewrites the token file (hazard 2 at process start) --------------------------
#
# The real fault: SoftHSM2 rewrites token.object on every login, and a process whose C_Initialize reads it half-written
# has no such token (NoSuchToken) until it re-initialises once the write is over. Here the file is really half-written
# (its first half) and written back whole by a timer a little later, as the other process's login would; the library
# is really re-initialised in between. _Module.generation counts the re-initialisations.


@contextlib.contextmanager
def _token_file_half_written(hsm_env: dict[str, str], seconds: float) -> Iterator[None]:
    """token.object holds its first half until ``seconds`` have passed (then whole again, and at the latest on exit)."""
    (path,) = Path(hsm_env["SOFTHSM2_CONF"]).parent.glob("tokens/*/token.object")
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    timer = threading.Timer(seconds, path.write_bytes, (whole,))
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join()
        path.write_bytes(whole)


def _open_while_written(env: dict[str, str], obj: int) -> tuple[bytes, int]:
    """A fresh process starts while the token file is half-written: its ciphertext and re-initialisations."""
    os.environ.update(env)
    with _token_file_half_written(env, 0.02):
        token = Pkcs11Token.from_environment("ns1")
    try:
        return token.cipher(obj, "ecb", b"", PLAIN, decrypt=False), pkcs11_token._module(MODULE).generation
    finally:
        token.close()


def test_a_process_starting_while_the_token_file_is_rewritten_opens_it(
    token: Pkcs11Token, hsm_env: dict[str, str]
) -> None:
    """A spawned process's first C_Initialize reads the half-written file (NoSuchToken): it pauses, re-initialises
    and retries until the file is whole again (an immediate single retry reads the same half file), then runs the
    object. Its library was re-initialised at least once and at most len(_OPEN_BACKOFF) times."""
    obj = token.create(w.CALG_AES_128, KEY)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        ciphertext, reinitialisations = pool.apply(_open_while_written, (hsm_env, obj))
    assert ciphertext == _aes("ecb", PLAIN)
    assert 1 <= reinitialisations <= len(pkcs11_token._OPEN_BACKOFF)


def test_opening_retries_until_the_token_file_is_whole(
    token: Pkcs11Token, config: Pkcs11Config, hsm_env: dict[str, str]
) -> None:
    """The same in this process: the library re-initialised (as at a process start) while the file is half-written;
    a token opened now recovers and runs the object, and so does the first token, whose session went with it."""
    obj = token.create(w.CALG_AES_128, KEY)
    module = pkcs11_token._module(config.module)
    with _token_file_half_written(hsm_env, 0.02):
        module.reinitialize()
        before = module.generation
        other = Pkcs11Token(config, "ns1")
    assert 1 <= module.generation - before <= len(pkcs11_token._OPEN_BACKOFF)
    assert other.cipher(obj, "cbc", IV, PLAIN, decrypt=False) == _aes("cbc", PLAIN)
    assert token.cipher(obj, "ecb", b"", PLAIN, decrypt=False) == _aes("ecb", PLAIN)
    other.close()


def test_a_token_that_is_not_there_is_still_a_clear_error_after_the_bounded_retries(config: Pkcs11Config) -> None:
    """An unknown label: every attempt is NoSuchToken, so after len(_OPEN_BACKOFF) pauses and re-initialisations
    (well under two seconds) the same Pkcs11ConfigError as ever, naming the label and never the PIN."""
    module = pkcs11_token._module(config.module)
    before = module.generation
    started = time.monotonic()
    with pytest.raises(pkcs11_token.Pkcs11ConfigError, match="no PKCS#11 token labelled 'no-such-label'") as caught:
        Pkcs11Token(Pkcs11Config(config.module, "no-such-label", config.pin), "x")
    assert time.monotonic() - started < 2.0
    assert module.generation - before == len(pkcs11_token._OPEN_BACKOFF)
    assert config.pin not in str(caught.value)


def test_a_wrong_pin_is_not_retried(token: Pkcs11Token, config: Pkcs11Config, hsm_env: dict[str, str]) -> None:
    """A refused PIN at open is a Pkcs11ConfigError at once, without re-initialising; also when the attempt before
    it found the token missing (file half-written): the retries stop at the refusal."""
    wrong = Pkcs11Config(config.module, config.label, "0" * 8 if config.pin != "0" * 8 else "1" * 8)
    module = pkcs11_token._module(config.module)
    module.reinitialize()  # no session of this process any more: opening logs in
    before = module.generation
    with pytest.raises(pkcs11_token.Pkcs11ConfigError, match="refused the PIN") as caught:
        Pkcs11Token(wrong, "x")
    assert module.generation == before
    assert wrong.pin not in str(caught.value)
    with _token_file_half_written(hsm_env, 0.02):
        module.reinitialize()
        before = module.generation
        with pytest.raises(pkcs11_token.Pkcs11ConfigError, match="refused the PIN"):
            Pkcs11Token(wrong, "x")
    assert 1 <= module.generation - before < len(pkcs11_token._OPEN_BACKOFF)
    assert token.cipher(token.create(w.CALG_AES_128, KEY), "ecb", b"", PLAIN, decrypt=False) == _aes("ecb", PLAIN)


# --- the handle cache against deletion elsewhere ----------------------------------------------------------------


def _delete(env: dict[str, str], obj: int) -> None:
    os.environ.update(env)
    with Pkcs11Token.from_environment("ns1") as token:
        token.delete(obj)


@pytest.fixture
def other_process(hsm_env: dict[str, str]) -> Iterator[Callable[[int], None]]:
    """Deletes an object of namespace ns1 from a spawned process (administration elsewhere)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        yield lambda obj: pool.apply(_delete, (hsm_env, obj))


def test_object_deleted_by_another_process_is_not_found(token: Pkcs11Token, other_process) -> None:
    """A cached, trusted handle does not outlive the object: after another process deleted it, exists is False
    and every cipher call, the refused ones included (NTE_NOT_FOUND ranks before NTE_BAD_DATA), is NOT_FOUND."""
    obj = token.create(w.CALG_AES_128, KEY)
    kept = token.create(w.CALG_AES_128, KEY[::-1])
    assert token.cipher(obj, "cbc", IV, PLAIN, decrypt=False) == _aes("cbc", PLAIN)
    other_process(obj)
    calls: list[Callable[[], object]] = [
        lambda: token.cipher(obj, "cbc", IV, PLAIN, decrypt=False),
        lambda: token.cipher(obj, "ecb", b"", bytes(15), decrypt=True),
        lambda: token.cipher(obj, "cbc", bytes(8), PLAIN, decrypt=False),
        lambda: token.cipher(obj, "ecb", b"", b"", decrypt=False),
    ]
    for call in calls:
        with pytest.raises(CryptError) as caught:
            call()
        assert caught.value.code == w.NTE_NOT_FOUND
    assert not token.exists(obj)
    assert token.exists(kept)
    assert dict(token.objects()) == {kept: w.CALG_AES_128}


def test_app_process_sees_the_deletion_made_by_the_secure_process(hsm_env: dict[str, str], tmp_path: Path) -> None:
    """ProcessCsp: the app process holds an imported hardware key (its handle cached there); administration in the
    secure process deletes the object; every encrypt/decrypt path there is NOT_FOUND, the ones that reach the token
    (it answers for itself: the CSP no longer asks exists() first) and the ones that do not."""
    csp = ProcessCsp(tmp_path / "home", token="pkcs11")
    try:
        secure, app = csp.acquire("secure"), csp.acquire("app")
        key = csp.gen_key(secure, w.CALG_AES_128, hardware=True)
        moved = csp.import_key(app, csp.export_key(key, w.OPAQUEKEYBLOB))
        assert len(csp.encrypt(moved, PLAIN, False)) == len(PLAIN)
        (obj,) = csp.token_objects()
        csp.delete_token_object(obj)
        # Every path, the first on the app's cached handle: those reaching the token, and the others.
        assert_gone_object_is_not_found(csp, moved)
        for call in (lambda: csp.encrypt(moved, PLAIN, False), lambda: csp.decrypt(moved, b"", True)):
            with pytest.raises(CryptError) as caught:
                call()
            assert caught.value.code == w.NTE_NOT_FOUND
    finally:
        csp.close()
