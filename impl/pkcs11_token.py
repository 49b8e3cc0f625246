"""A PKCS#11 hardware token (SoftHSM2 or a real HSM) behind the :class:`keyhandoff.impl.token.Token` interface.

Configuration. A module path (the vendor's PKCS#11 library), a token label and the user PIN. :meth:`Pkcs11Config.
from_environment` reads ``KEYHANDOFF_PKCS11_MODULE``, ``KEYHANDOFF_PKCS11_TOKEN`` and the PIN from
``KEYHANDOFF_PKCS11_PIN`` or, when that is unset, from the file named by ``KEYHANDOFF_PKCS11_PIN_FILE`` (first line,
trailing newline stripped). The PIN never appears on a command line, in a repr or in an error message.

Objects. :meth:`Pkcs11Token.create` imports the key material the CSP already holds as a secret-key object with
the attribute policy :data:`KEY_POLICY`: token, private, sensitive, not extractable, not modifiable, not copyable,
usable for ENCRYPT/DECRYPT only. ``destroyable`` is a choice (:class:`Pkcs11Config`): with CKA_DESTROYABLE false the
token refuses C_DestroyObject (CKR_ACTION_PROHIBITED), so administrative deletion is impossible; the default is
destroyable, because the CSP never destroys a token object itself (CryptDestroyKey only ends a handle) and
administration must be able to remove keys. Each object carries CKA_ID = the object id (a random 62-bit int,
8 bytes big-endian) and CKA_LABEL = ``keyhandoff/`` + a namespace (the installation id in hex), so one token
may serve many installations and each sees only its own objects. Single DES on a token that cannot run CKM_DES_*
(SoftHSM2 built on OpenSSL 3 lists the mechanisms but refuses them) is kept as a three-key 3DES object holding
K || K || K (EDE with three equal keys is single DES) under the label ``keyhandoff/<namespace>/des-ede``, so
objects() still reports it as CALG_DES; the material stays on the token as for every other key.

Hazards (see docs/hardware.md). python-pkcs11 initialises the library with NULL arguments, so a module may run
without its own locking, while python-pkcs11 releases the GIL on every call: every PKCS#11 call in this process
goes through one process-wide lock. SoftHSM2 rewrites its token file on every login: each process logs in once
per (module, token) and keeps that session for its life (closing a Pkcs11Token does not log out). On
GeneralError, NoSuchToken and the like the library is re-initialised, the session reopened and the call retried
once; a second failure is CryptError(NTE_FAIL) (never a raw pkcs11 exception once the token is open). While a token
opens (a process starting while others log in reads the token file half-written), the attempts are retried up to
six times after a short growing pause (:data:`_OPEN_BACKOFF`, about 0.5 s in all); a token that really is not there
is then the same Pkcs11ConfigError, and a refused PIN is never retried.

Handles. Object handles are per process. A located object's handle is cached by CKA_ID and trusted without asking
the token while this process has received no new handle since it was last confirmed (no find, create or
re-initialisation: the *epoch* of :class:`_Module`): until then a module cannot have bound that handle to another
object, and an object deleted meanwhile (by administration, perhaps in another process) makes the operation itself
fail with CKR_OBJECT_HANDLE_INVALID / CKR_KEY_HANDLE_INVALID, after which the object is looked up again (gone:
NTE_NOT_FOUND). Otherwise the handle is confirmed by one attribute read (CKA_ID and CKA_LABEL) before use.
:meth:`Pkcs11Token.exists` always asks the token, but through the cached handle (one attribute read) rather than
a search.

Errors. CryptError(NTE_BAD_ALGID) for an algorithm the token cannot hold or run, CryptError(NTE_BAD_DATA) for a
wrong key length or data/IV of the wrong size, CryptError(NTE_NOT_FOUND) for a missing object, CryptError(NTE_PERM)
for a delete the token refuses, CryptError(NTE_FAIL) for any other token failure. :class:`Pkcs11ConfigError` for a
configuration or login that cannot work. Using a closed token is CryptError(NTE_FAIL) too.
"""

from __future__ import annotations

import os
import random
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar, cast

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11e

from keyhandoff.impl.installation import InstallationError
from keyhandoff.impl.token import TokenMode
from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError

__all__ = [
    "ENV_MODULE",
    "ENV_PIN",
    "ENV_PIN_FILE",
    "ENV_TOKEN",
    "KEY_POLICY",
    "LABEL_PREFIX",
    "Pkcs11Config",
    "Pkcs11ConfigError",
    "Pkcs11Token",
]

ENV_MODULE: Final = "KEYHANDOFF_PKCS11_MODULE"
ENV_TOKEN: Final = "KEYHANDOFF_PKCS11_TOKEN"
ENV_PIN: Final = "KEYHANDOFF_PKCS11_PIN"
ENV_PIN_FILE: Final = "KEYHANDOFF_PKCS11_PIN_FILE"
LABEL_PREFIX: Final = "keyhandoff/"
_ID_BITS: Final = 62
_ID_SIZE: Final = 8

# The attribute policy of every object this token creates (CKA_DESTROYABLE comes from the configuration).
KEY_POLICY: Final[Mapping[Attribute, bool]] = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.MODIFIABLE: False,
    Attribute.COPYABLE: False,
    Attribute.ENCRYPT: True,
    Attribute.DECRYPT: True,
    Attribute.WRAP: False,
    Attribute.UNWRAP: False,
    Attribute.SIGN: False,
    Attribute.VERIFY: False,
    Attribute.DERIVE: False,
}

_DES_KEY: Final = KeyType._DES  # python-pkcs11 marks single DES as deprecated with a leading underscore
_DES_ECB: Final = Mechanism._DES_ECB
_DES_CBC: Final = Mechanism._DES_CBC

# ALG_ID -> (key type, key length in bytes, block size, ECB mechanism, CBC mechanism)
_SPECS: Final[Mapping[int, tuple[KeyType, int, int, Mechanism, Mechanism]]] = {
    w.CALG_AES_128: (KeyType.AES, 16, 16, Mechanism.AES_ECB, Mechanism.AES_CBC),
    w.CALG_AES_192: (KeyType.AES, 24, 16, Mechanism.AES_ECB, Mechanism.AES_CBC),
    w.CALG_AES_256: (KeyType.AES, 32, 16, Mechanism.AES_ECB, Mechanism.AES_CBC),
    w.CALG_DES: (_DES_KEY, 8, 8, _DES_ECB, _DES_CBC),
    w.CALG_3DES_112: (KeyType.DES2, 16, 8, Mechanism.DES3_ECB, Mechanism.DES3_CBC),
    w.CALG_3DES: (KeyType.DES3, 24, 8, Mechanism.DES3_ECB, Mechanism.DES3_CBC),
}

# Failures after which the library is re-initialised and the call retried once (hazard 2, a vanished token).
_RECOVERABLE: Final = (
    p11e.GeneralError,
    p11e.NoSuchToken,
    p11e.TokenNotPresent,
    p11e.TokenNotRecognised,
    p11e.DeviceRemoved,
    p11e.DeviceError,
    p11e.SessionClosed,
    p11e.SessionHandleInvalid,
    p11e.UserNotLoggedIn,
)


# Hazard 2 at open: SoftHSM2 rewrites its token file on every login, and a process that starts while another one
# logs in reads the file half-written, so the token is missing (NoSuchToken) or unusable (GeneralError) for as long
# as the write lasts; re-initialising at once only reads the same half-written file again. So while a token opens,
# each recoverable failure is followed by a pause (these base seconds, jittered by x0.5 to x1.5), a
# re-initialisation and another attempt: at most 1 + 6 attempts and about 0.5 s in all, after which a token that
# really is not there gives the same Pkcs11ConfigError as at once.
_OPEN_BACKOFF: Final = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16)


def _recoverable(exc: p11e.PKCS11Error) -> bool:
    """A failure after which re-initialising may help: :data:`_RECOVERABLE`, and CKR_CRYPTOKI_NOT_INITIALIZED
    (another user of the module in this process called C_Finalize; python-pkcs11 shares one ``pkcs11.lib`` per
    path and reports that code as a bare PKCS11Error saying so)."""
    if isinstance(exc, _RECOVERABLE):
        return True
    return type(exc) is p11e.PKCS11Error and "not initialized" in str(exc)


_T = TypeVar("_T")

# HAZARD 1: one lock for every PKCS#11 call in this process (re-entrant: a retry runs under the same lock).
_LOCK: Final = threading.RLock()


class _CipherKey(Protocol):
    """What python-pkcs11 mixes into a secret key that has CKA_ENCRYPT/CKA_DECRYPT (its stubs do not say so)."""

    def encrypt(self, data: bytes, *, mechanism: Mechanism | None = None, mechanism_param: Any = None) -> bytes: ...

    def decrypt(self, data: bytes, *, mechanism: Mechanism | None = None, mechanism_param: Any = None) -> bytes: ...


class Pkcs11ConfigError(InstallationError):
    """The PKCS#11 token is not configured, cannot be found or refuses the login (never carries the PIN). An
    InstallationError: the installation cannot be used, and the commands say so in one line."""


class Pkcs11Config:
    """Module path, token label, PIN (redacted in repr) and whether created objects are destroyable."""

    __slots__ = ("destroyable", "label", "module", "pin")

    def __init__(self, module: str, label: str, pin: str, *, destroyable: bool = True) -> None:
        if not module or not label:
            raise Pkcs11ConfigError("a PKCS#11 token needs a module path and a token label")
        self.module = module
        self.label = label
        self.pin = pin
        self.destroyable = destroyable

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Pkcs11Config:
        """From ``KEYHANDOFF_PKCS11_MODULE``, ``_TOKEN`` and ``_PIN`` (or ``_PIN_FILE``)."""
        env = os.environ if environ is None else environ
        module = env.get(ENV_MODULE, "")
        label = env.get(ENV_TOKEN, "")
        if not module or not label:
            raise Pkcs11ConfigError(f"set {ENV_MODULE} (the PKCS#11 module path) and {ENV_TOKEN} (the token label)")
        pin = env.get(ENV_PIN)
        if pin is None:
            pin_file = env.get(ENV_PIN_FILE)
            if not pin_file:
                raise Pkcs11ConfigError(f"set {ENV_PIN} or {ENV_PIN_FILE} (a file holding the user PIN)")
            try:
                lines = Path(pin_file).read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise Pkcs11ConfigError(f"cannot read the PIN file {pin_file}: {exc.strerror}") from None
            except UnicodeDecodeError:  # its message would quote a byte of the PIN
                raise Pkcs11ConfigError(f"the PIN file {pin_file} is not UTF-8 text") from None
            pin = lines[0] if lines else ""
        return cls(module, label, pin)

    def __repr__(self) -> str:
        return f"Pkcs11Config({self.module!r}, {self.label!r}, pin=<redacted>, destroyable={self.destroyable})"


class _Module:
    """One loaded PKCS#11 library in this process and its one logged-in session per token label."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lib = pkcs11.lib(path)
        self.sessions: dict[str, pkcs11.Session] = {}
        self.generation = 0  # bumped on every re-initialisation: object handles of older generations are void
        # Bumped whenever this process may be handed a new object handle (a find, a create, a re-initialisation):
        # a handle confirmed in the current epoch cannot have been rebound to another object since.
        self.epoch = 0

    def session(self, label: str, pin: str) -> pkcs11.Session:
        session = self.sessions.get(label)
        if session is None:
            token = self.lib.get_token(token_label=label)
            try:
                session = token.open(user_pin=pin, rw=True)
            except p11e.UserAlreadyLoggedIn:
                # A session of this process survived (C_Finalize failed during a re-initialisation): the login
                # state is per application and token, so a new session shares it.
                session = token.open(rw=True)
            self.sessions[label] = session
        return session

    def reinitialize(self) -> None:
        self.sessions.clear()  # C_Finalize closes them all; never close a stale handle (it may be reused)
        self.generation += 1
        self.epoch += 1
        try:
            self.lib.reinitialize()
        except p11e.PKCS11Error:
            self.lib.initialize()


_MODULES: dict[str, _Module] = {}


def _module(path: str) -> _Module:
    module = _MODULES.get(path)
    if module is None:
        try:
            module = _Module(path)
        except (OSError, RuntimeError) as exc:
            raise Pkcs11ConfigError(f"cannot load the PKCS#11 module {path}: {type(exc).__name__}") from None
        _MODULES[path] = module
    return module


class _Entry:
    """A located object: its handle (this process, this generation), ALG_ID and mechanisms, and the module epoch
    in which the handle was last confirmed to name the object."""

    __slots__ = ("alg", "block", "cbc", "ecb", "epoch", "generation", "key", "run")

    def __init__(self, key: pkcs11.SecretKey, alg: int, module: _Module, *, emulated_des: bool) -> None:
        self.key = key
        self.run = cast(_CipherKey, key)
        self.alg = alg
        spec = _SPECS[w.CALG_3DES if emulated_des else alg]
        self.block, self.ecb, self.cbc = spec[2], spec[3], spec[4]
        self.generation = module.generation
        self.epoch = module.epoch


def _issuable(obj: int) -> bool:
    return isinstance(obj, int) and not isinstance(obj, bool) and 0 < obj < 1 << _ID_BITS


def _ck_id(obj: int) -> bytes:
    return obj.to_bytes(_ID_SIZE, "big")


def _alg_of(key: pkcs11.Object, *, emulated_des: bool = False) -> int | None:
    """The ALG_ID of a secret key from its CKA_KEY_TYPE (and CKA_VALUE_LEN for AES); None if not ours."""
    key_type = key[Attribute.KEY_TYPE]
    if emulated_des:
        return w.CALG_DES if key_type == KeyType.DES3 else None
    if key_type == KeyType.AES:
        return {16: w.CALG_AES_128, 24: w.CALG_AES_192, 32: w.CALG_AES_256}.get(int(key[Attribute.VALUE_LEN]))
    return {_DES_KEY: w.CALG_DES, KeyType.DES2: w.CALG_3DES_112, KeyType.DES3: w.CALG_3DES}.get(key_type)


class Pkcs11Token:
    """A :class:`keyhandoff.impl.token.Token` on a PKCS#11 token, one namespace (installation) of its objects."""

    def __init__(self, config: Pkcs11Config, namespace: str) -> None:
        if not namespace or "/" in namespace:
            raise ValueError("a PKCS#11 token namespace is a non-empty string without '/'")
        self._config = config
        self._label = LABEL_PREFIX + namespace
        self._des_label = self._label + "/des-ede"
        self._emulated_des = False
        self._entries: dict[int, _Entry] = {}
        self._closed = False
        self._open = False  # set once the token answered: later failures are CryptErrors, not configuration errors
        with _LOCK:
            self._module = _module(config.module)
            serial = self._call(lambda session: session.token.serial)
            self._serial = "pkcs11:" + serial.decode("ascii", "replace").strip()
            native = self._call(self._probe)
            if w.CALG_DES not in native and w.CALG_3DES in native:
                self._emulated_des = True
                native |= {w.CALG_DES}
            self._algorithms = native
            self._open = True

    @classmethod
    def from_environment(cls, namespace: str) -> Pkcs11Token:
        return cls(Pkcs11Config.from_environment(), namespace)

    # --- the one way into the library ----------------------------------------------------------------------

    def _session(self) -> pkcs11.Session:
        if self._closed:
            raise CryptError(w.NTE_FAIL, "pkcs11: the token is closed")
        try:
            return self._module.session(self._config.label, self._config.pin)
        except (p11e.PinIncorrect, p11e.PinInvalid, p11e.PinLenRange, p11e.PinLocked, p11e.PinExpired) as exc:
            if self._open:  # the login worked when the token opened: to the CSP this is a token failure
                raise CryptError(w.NTE_FAIL, f"pkcs11: the token refused the login ({type(exc).__name__})") from None
            raise Pkcs11ConfigError(
                f"the token {self._config.label!r} refused the PIN ({type(exc).__name__})"
            ) from None

    def _call(self, operation: Callable[[pkcs11.Session], _T]) -> _T:
        """Run one operation under the process-wide lock; on a recoverable failure (hazard 2) re-initialise the
        library, reopen the session and retry: once when the token is open, and up to ``len(_OPEN_BACKOFF)`` times
        with a growing pause before each re-initialisation while it opens (:data:`_OPEN_BACKOFF`). Every pkcs11
        failure leaves as a CryptError (before the token first answered, a token that is not there or a refused PIN
        as Pkcs11ConfigError; a refused PIN is never retried)."""
        with _LOCK:
            pauses = iter(_OPEN_BACKOFF if not self._open else (0.0,))
            retried = False
            while True:
                try:
                    try:
                        return operation(self._session())
                    except p11e.PKCS11Error as exc:
                        pause = next(pauses, None)
                        if pause is None or not _recoverable(exc):
                            raise
                    if pause:
                        time.sleep(pause * (0.5 + random.random()))  # jittered: processes started together spread
                    retried = True
                    self._entries.clear()
                    try:
                        self._module.reinitialize()
                    except p11e.PKCS11Error:
                        if self._open:
                            raise
                        # Opening: the next attempt finds the library uninitialised (recoverable) and tries again.
                except p11e.PKCS11Error as exc:
                    raise self._failure(exc, retried) from None

    def _failure(self, exc: p11e.PKCS11Error, retried: bool) -> Exception:
        """The CryptError (or, before the token first answered, Pkcs11ConfigError) for a pkcs11 failure."""
        if isinstance(exc, p11e.MechanismInvalid):
            return CryptError(w.NTE_BAD_ALGID, "pkcs11: the token cannot run this mechanism")
        if isinstance(
            exc, (p11e.DataLenRange, p11e.EncryptedDataLenRange, p11e.DataInvalid, p11e.EncryptedDataInvalid)
        ):
            return CryptError(w.NTE_BAD_DATA, "pkcs11: the token refused the data length")
        if isinstance(exc, p11e.NoSuchToken) and not self._open:
            return Pkcs11ConfigError(f"no PKCS#11 token labelled {self._config.label!r}")
        after = " after re-initialising" if retried else ""
        return CryptError(w.NTE_FAIL, f"pkcs11: {type(exc).__name__}{after}")

    def _probe(self, session: pkcs11.Session) -> frozenset[int]:
        """The algorithms the token both holds and runs: one block through a session object of each type."""
        supported = set()
        mechanisms = session.token.slot.get_mechanisms()
        for alg, (key_type, size, block, ecb, cbc) in _SPECS.items():
            if ecb not in mechanisms or cbc not in mechanisms:
                continue
            self._module.epoch += 1  # C_CreateObject hands out a handle
            try:
                key = session.create_object(
                    {
                        Attribute.CLASS: ObjectClass.SECRET_KEY,
                        Attribute.KEY_TYPE: key_type,
                        Attribute.TOKEN: False,
                        Attribute.ENCRYPT: True,
                        Attribute.VALUE: bytes(range(1, size * 2, 2)),  # odd bytes: valid DES parity
                    }
                )
            except p11e.PKCS11Error as exc:
                if _recoverable(exc):
                    raise
                continue  # the token refuses this key type
            try:
                cast(_CipherKey, key).encrypt(bytes(block), mechanism=ecb)
                cast(_CipherKey, key).encrypt(bytes(block), mechanism=cbc, mechanism_param=bytes(block))
                supported.add(alg)
            except (p11e.MechanismInvalid, p11e.KeyTypeInconsistent, p11e.FunctionFailed):
                pass  # e.g. SoftHSM2 on OpenSSL 3 lists CKM_DES_ECB but cannot run it
            finally:
                key.destroy()
        return frozenset(supported)

    # --- locating objects -------------------------------------------------------------------------------------

    def _ours(self, label: object) -> bool:
        return label == self._label or label == self._des_label

    def _find(self, session: pkcs11.Session, obj: int) -> _Entry | None:
        """Search the token for the object (always asks the token); caches and returns its entry, or None."""
        self._entries.pop(obj, None)
        if not _issuable(obj):
            return None
        self._module.epoch += 1  # C_FindObjects hands out handles
        candidates = session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.ID: _ck_id(obj)})
        for key in list(candidates):
            try:
                label = key[Attribute.LABEL]
                if not self._ours(label):
                    continue
                emulated = label == self._des_label
                alg = _alg_of(key, emulated_des=emulated)
            except (p11e.ObjectHandleInvalid, p11e.KeyHandleInvalid):
                continue  # deleted (by another process) between the search and the read
            if alg is None or not isinstance(key, pkcs11.SecretKey):
                raise CryptError(w.NTE_FAIL, "pkcs11: the object is not a key of a known algorithm")
            entry = _Entry(key, alg, self._module, emulated_des=emulated)
            self._entries[obj] = entry
            return entry
        return None

    def _confirmed(self, entry: _Entry, obj: int) -> bool:
        """Whether the cached handle still names the object, asked of the token (one attribute read)."""
        try:
            attrs = entry.key.get_attributes([Attribute.ID, Attribute.LABEL])
        except (p11e.ObjectHandleInvalid, p11e.KeyHandleInvalid):
            return False
        if attrs.get(Attribute.ID) != _ck_id(obj) or not self._ours(attrs.get(Attribute.LABEL)):
            return False
        entry.epoch = self._module.epoch
        return True

    def _locate(self, session: pkcs11.Session, obj: int, *, confirm: bool) -> _Entry | None:
        """The object's entry, or None when it is not on the token. A cached handle is used without asking the
        token while it is trusted (confirmed in this epoch) unless ``confirm``; otherwise it is confirmed by one
        attribute read, and when that fails the token is searched."""
        entry = self._entries.get(obj)
        if entry is not None and entry.generation == self._module.generation:
            trusted = entry.epoch == self._module.epoch and not confirm
            if trusted or self._confirmed(entry, obj):
                return entry
        return self._find(session, obj)

    def _entry(self, session: pkcs11.Session, obj: int, *, confirm: bool = False) -> _Entry:
        entry = self._locate(session, obj, confirm=confirm)
        if entry is None:
            raise CryptError(w.NTE_NOT_FOUND, "token: no such object")
        return entry

    # --- Token protocol ---------------------------------------------------------------------------------------

    @property
    def serial(self) -> str:
        """``pkcs11:`` and the token's serial number."""
        return self._serial

    @property
    def emulated_des(self) -> bool:
        """Whether single DES is kept as a K || K || K three-key 3DES object (the token cannot run CKM_DES_*)."""
        return self._emulated_des

    def algorithms(self) -> frozenset[int]:
        """The ALG_IDs among AES-128/192/256, DES, 3DES-112 and 3DES whose key type and ECB/CBC mechanisms the
        token runs (probed at open); single DES also when only 3DES runs (see :attr:`emulated_des`)."""
        return self._algorithms

    def create(self, alg: int, key: bytes) -> int:
        """Import the material as a pinned secret-key object (:data:`KEY_POLICY`); returns its random id.

        A retry after re-initialisation (hazard 2) first looks for the object the failed attempt may already have
        created under the same id, so a failure after the token stored the object leaves no orphan behind."""
        if alg not in self._algorithms:
            raise CryptError(w.NTE_BAD_ALGID, "token create: the token cannot hold keys of this algorithm")
        key_type, size, _, _, _ = _SPECS[alg]
        material = bytes(key)
        if len(material) != size:
            raise CryptError(w.NTE_BAD_DATA, "token create: wrong key length for the algorithm")
        emulated = alg == w.CALG_DES and self._emulated_des
        label = self._des_label if emulated else self._label
        if emulated:
            key_type, material = KeyType.DES3, material * 3  # EDE with K1 = K2 = K3 is single DES
        attempted: list[int] = []  # the id a previous attempt sent to C_CreateObject (found free just before)

        def create(session: pkcs11.Session) -> int:
            if attempted:
                earlier = self._find(session, attempted[0])
                if earlier is not None:
                    if earlier.alg != alg:
                        raise CryptError(w.NTE_FAIL, "token create: the retried object has another algorithm")
                    return attempted[0]
                attempted.clear()
            for _ in range(16):
                obj = 0
                while obj == 0:
                    obj = secrets.randbits(_ID_BITS)
                if self._find(session, obj) is not None:
                    continue  # id collision in this namespace: draw again
                template: dict[Attribute, Any] = {
                    Attribute.CLASS: ObjectClass.SECRET_KEY,
                    Attribute.KEY_TYPE: key_type,
                    **KEY_POLICY,
                    Attribute.DESTROYABLE: self._config.destroyable,
                    Attribute.ID: _ck_id(obj),
                    Attribute.LABEL: label,
                    Attribute.VALUE: material,
                }
                attempted.append(obj)
                self._module.epoch += 1  # C_CreateObject hands out a handle
                created = session.create_object(template)
                if not isinstance(created, pkcs11.SecretKey):
                    raise CryptError(w.NTE_FAIL, "pkcs11: the token created something other than a secret key")
                self._entries[obj] = _Entry(created, alg, self._module, emulated_des=emulated)
                return obj
            raise CryptError(w.NTE_FAIL, "token create: could not draw a free object id")

        return self._call(create)

    def exists(self, obj: int) -> bool:
        """Whether the object is on the token now. Always asks the token: one attribute read through the cached
        handle (a search when there is none or it no longer names the object)."""
        if not _issuable(obj):
            return False
        return self._call(lambda session: self._locate(session, obj, confirm=True) is not None)

    def cipher(self, obj: int, mode: TokenMode, iv: bytes, data: bytes, *, decrypt: bool) -> bytes:
        """Run the object's block cipher over whole blocks (``ecb``, or ``cbc`` from ``iv``) on the token.

        NTE_NOT_FOUND ranks before NTE_BAD_DATA: a refused or empty request asks the token whether the object is
        still there; any other runs on the cached handle, and its own failure on a deleted object says so."""
        if mode not in ("ecb", "cbc"):
            raise ValueError(f"token cipher: unknown mode {mode!r} (expected 'ecb' or 'cbc')")
        payload = bytes(data)
        vector = bytes(iv)

        def crypt(entry: _Entry) -> bytes:
            mechanism, param = (entry.ecb, None) if mode == "ecb" else (entry.cbc, vector)
            if decrypt:
                return bytes(entry.run.decrypt(payload, mechanism=mechanism, mechanism_param=param))
            return bytes(entry.run.encrypt(payload, mechanism=mechanism, mechanism_param=param))

        def run(session: pkcs11.Session) -> bytes:
            entry = self._entry(session, obj)
            ragged = len(payload) % entry.block != 0
            bad_iv = mode == "cbc" and len(vector) != entry.block
            if ragged or bad_iv or not payload:
                entry = self._entry(session, obj, confirm=True)
                if ragged:
                    raise CryptError(w.NTE_BAD_DATA, "token cipher: data is not a whole number of blocks")
                if bad_iv:
                    raise CryptError(w.NTE_BAD_DATA, "token cipher: the IV is not one block long")
                return b""
            try:
                return crypt(entry)
            except (p11e.ObjectHandleInvalid, p11e.KeyHandleInvalid):
                pass  # deleted meanwhile (perhaps by another process), or the handle went stale: search again
            try:
                return crypt(self._entry(session, obj))
            except (p11e.ObjectHandleInvalid, p11e.KeyHandleInvalid):
                self._entries.pop(obj, None)
                raise CryptError(w.NTE_NOT_FOUND, "token: no such object") from None

        return self._call(run)

    def objects(self) -> Mapping[int, int]:
        """Every object of this namespace: id and ALG_ID."""

        def scan(session: pkcs11.Session) -> dict[int, int]:
            out: dict[int, int] = {}
            self._module.epoch += 1  # C_FindObjects hands out handles
            for label in (self._label, self._des_label):
                for key in list(session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: label})):
                    try:
                        ck_id = key[Attribute.ID]
                        alg = _alg_of(key, emulated_des=label == self._des_label)
                    except (p11e.ObjectHandleInvalid, p11e.KeyHandleInvalid):
                        continue  # deleted (by another process) between the search and the read
                    if isinstance(ck_id, bytes) and len(ck_id) == _ID_SIZE and alg is not None:
                        out[int.from_bytes(ck_id, "big")] = alg
            return dict(sorted(out.items()))

        return self._call(scan)

    def delete(self, obj: int) -> None:
        """Destroy the object: NTE_NOT_FOUND if absent, NTE_PERM if it was created not destroyable."""

        def destroy(session: pkcs11.Session) -> None:
            entry = self._find(session, obj)
            if entry is None:
                raise CryptError(w.NTE_NOT_FOUND, "token delete: no such object")
            try:
                entry.key.destroy()
            except (p11e.ObjectHandleInvalid, p11e.KeyHandleInvalid):
                raise CryptError(w.NTE_NOT_FOUND, "token delete: no such object") from None  # deleted meanwhile
            except p11e.PKCS11Error as exc:
                # CKR_ACTION_PROHIBITED (0x1B) for CKA_DESTROYABLE false; python-pkcs11 does not map it.
                if (type(exc) is p11e.PKCS11Error and not _recoverable(exc)) or isinstance(exc, p11e.AttributeReadOnly):
                    raise CryptError(w.NTE_PERM, "token delete: the object is not destroyable") from None
                raise
            finally:
                self._entries.pop(obj, None)

        self._call(destroy)

    def close(self) -> None:
        """Forget this namespace's handles; the process's session stays logged in (hazard 2). Idempotent."""
        with _LOCK:
            self._closed = True
            self._entries.clear()

    def __enter__(self) -> Pkcs11Token:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"Pkcs11Token({self._serial!r}, {self._config.label!r}, {self._label!r}, {state})"
