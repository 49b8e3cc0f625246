"""The reference CSP's core: one process's view of an installation, with CryptoAPI-shaped calls.

:class:`Csp` follows ``docs/model.md`` (the lifecycle table, "Our decisions" and each operation's rules, codes and
check order), derived independently of the model's code: it shares only the vocabulary (constants, CryptError,
the KeyState record, the RC2 primitive). What differs in kind from the model is the machinery: live cipher
engines (``engines``), key material in wipeable buffers, sealed OPAQUEKEYBLOBs (``blobs``), a hardware token and
unguessable, never-reused handles (``handles``).

Thread safety: one table lock guards provider membership (which keys a context owns, whether it is alive), and
each key has its own lock held for the whole of any operation on it. Locks are taken key first, then table,
never the other way round: release marks its context dead under the table lock, lets go of it, then takes each
key's lock to end the key; a key created meanwhile (gen, import, duplicate) registers under the table lock and
finds the context dead.
"""

from __future__ import annotations

import contextlib
import functools
import hmac as hmac_lib
import os
import threading
from contextlib import AbstractContextManager
from types import MethodType, TracebackType
from typing import Final, Protocol

import attrs

from keyhandoff.impl.algorithms import (
    ALGORITHMS,
    DEFAULT_PERMISSIONS,
    HMAC_HASHES,
    IPSEC_MAX_KEY,
    USABLE_MODES,
    AlgInfo,
)
from keyhandoff.impl.blobs import (
    OPAQUE_PURPOSE,
    OpaqueSealer,
    OpaqueState,
    header_fields,
    plaintext_blob,
    plaintext_key,
)
from keyhandoff.impl.engines import Engine, TokenBlockEngine, block_cipher_specs, software_engine
from keyhandoff.impl.evp import native_evp
from keyhandoff.impl.handles import HandleTable
from keyhandoff.impl.live_key import LiveKey
from keyhandoff.impl.token import Token
from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError
from keyhandoff.model.state import KeyState, Lifecycle, Location, Side

__all__ = ["Csp", "InstallationLike"]

_DWORD_MAX: Final = 0xFFFFFFFF
_LOCK_TYPE: Final = type(threading.Lock())  # the type of LiveKey.lock, which the C fast path takes
# Our decision (docs/model.md "Flags"): any other bit is NTE_BAD_FLAGS.
_GEN_FLAGS: Final = w.CRYPT_EXPORTABLE | w.CRYPT_CREATE_SALT | w.CRYPT_NO_SALT
_IMPORT_FLAGS: Final = w.CRYPT_EXPORTABLE | w.CRYPT_IPSEC_HMAC_KEY | w.CRYPT_NO_SALT
_EXPORT_FLAGS: Final = w.CRYPT_DESTROYKEY
_BLOB_TYPES: Final = frozenset({w.PLAINTEXTKEYBLOB, w.OPAQUEKEYBLOB})
_SETTABLE: Final = frozenset(
    {
        w.KP_IV,
        w.KP_SALT,
        w.KP_SALT_EX,
        w.KP_PADDING,
        w.KP_MODE,
        w.KP_MODE_BITS,
        w.KP_PERMISSIONS,
        w.KP_EFFECTIVE_KEYLEN,
    }
)
_BYTES_PARAMS: Final = frozenset({w.KP_IV, w.KP_SALT, w.KP_SALT_EX})
_READABLE: Final = frozenset(
    {
        w.KP_IV,
        w.KP_SALT,
        w.KP_PADDING,
        w.KP_MODE,
        w.KP_MODE_BITS,
        w.KP_PERMISSIONS,
        w.KP_ALGID,
        w.KP_BLOCKLEN,
        w.KP_KEYLEN,
        w.KP_EFFECTIVE_KEYLEN,
    }
)
_MAX_SALT: Final = 24  # KP_SALT_EX: 0..24 bytes (native)
_KP_SALT_LEN: Final = 11  # KP_SALT: exactly 11 bytes (the C API reads 11: "the base provider always sets eleven")
_SALT_40_BIT: Final = bytes(11)  # 40-bit RC2/RC4 keys get 11 zero salt bytes unless CRYPT_NO_SALT (rsaenh)
_DEFAULT_MODE_BITS: Final = 8  # native/documented (Wine: 0)
_RC2_EFFECTIVE: Final = range(1, 1025)


class InstallationLike(Protocol):
    """What the CSP needs of an installation (``keyhandoff.impl.installation.Installation`` is one)."""

    @property
    def id(self) -> bytes: ...

    def key(self, purpose: str) -> bytes: ...

    @property
    def token(self) -> Token: ...


@attrs.define(eq=False)
class _Provider:
    """A CryptAcquireContext handle: its side of the handoff and the keys it owns (guarded by the table lock)."""

    side: Side
    alive: bool = True
    keys: set[int] = attrs.field(factory=set)


class _Held(AbstractContextManager[LiveKey]):
    """A live key's lock, held for a ``with`` block (a class, not a generator: this is on every call's path)."""

    __slots__ = ("_entry", "_operation")

    def __init__(self, entry: LiveKey, operation: str) -> None:
        self._entry = entry
        self._operation = operation

    def __enter__(self) -> LiveKey:
        entry = self._entry
        entry.lock.acquire()
        if entry.tombstone is not None:  # dead: NTE_BAD_KEY, lock released
            entry.lock.release()
            raise CryptError(w.NTE_BAD_KEY, self._operation)
        return entry

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._entry.lock.release()


def _is_dword(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _DWORD_MAX


def _as_bytes(value: object, operation: str) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise CryptError(w.ERROR_INVALID_PARAMETER, operation)


class Csp:
    """One process's view of an installation: providers on either side, keys, blobs, the token.

    Methods take and return CryptoAPI-shaped values and raise :class:`CryptError` with the exact code for every
    refusal. ``inspect`` gives a key's full state (white box); ``_material_view`` exposes a software key's
    material buffer itself, for the test that watches destroy zero it.
    """

    def __init__(self, installation: InstallationLike, *, handle_space: int = 0) -> None:
        self._installation = installation
        self._token = installation.token
        self._token_algorithms = frozenset(self._token.algorithms())
        sealing_key = installation.key(OPAQUE_PURPOSE)  # the Python sealer's, and the native import's below
        self._sealer = OpaqueSealer(sealing_key)
        self._lock = threading.Lock()  # the table lock: provider liveness and membership
        self._closed = False  # set by close, under the table lock: no context is acquired afterwards
        self._handles: HandleTable[_Provider | LiveKey] = HandleTable(handle_space)
        self._lookup = self._handles.lookup
        # The per-call fast path (_fast_crypt) stands for _live + _crypt on calls they would run without refusing;
        # a subclass that overrides either (a planted defect, a wrapper) gets the full path on every call.
        cls = type(self)
        self._fast = cls._crypt is Csp._crypt and cls._live is Csp._live
        # With the C extension, encrypt and decrypt are its FastCrypt's methods on this instance: the whole fast
        # path in one C call on a key with a C engine, and otherwise (having touched nothing) the methods below,
        # which run the Python fast path or the full rules. A subclass overriding encrypt or decrypt keeps its own.
        evp = native_evp()
        if evp is not None and self._fast and cls.encrypt is Csp.encrypt and cls.decrypt is Csp.decrypt:
            fast = evp.FastCrypt(
                self._handles.live_entries,
                LiveKey,
                _LOCK_TYPE,
                MethodType(Csp.encrypt, self),
                MethodType(Csp.decrypt, self),
            )
            self.encrypt = fast.encrypt  # type: ignore[method-assign]  # an instance attribute shadows the method
            self.decrypt = fast.decrypt  # type: ignore[method-assign]
        # And import_key is its FastImport's: this installation's OPAQUEKEYBLOB of a software AES or DES-family
        # key (a handoff's) imported in one C call, and anything else given, untouched, to the method below.
        # Only for this class itself: a subclass may change any step of an import (the fault catalog replaces
        # the sealer, or adds a permission), and the C path would step around it.
        if evp is not None and cls is Csp:
            self.import_key = evp.FastImport(  # type: ignore[method-assign]
                self._handles,
                self._lock,
                _Provider,
                LiveKey,
                threading.Lock,
                sealing_key,
                {
                    alg: (name, ALGORITHMS[alg].block, ALGORITHMS[alg].import_bytes, expand)
                    for alg, (name, expand) in block_cipher_specs().items()
                },
                Location.SOFTWARE,
                Lifecycle.IMPORTED,
                functools.partial(self._register, operation="import_key", provider_gone=w.NTE_BAD_UID),
                MethodType(Csp.import_key, self),
            ).import_key

    def __repr__(self) -> str:
        return f"Csp(handles={len(self._handles)})"

    @property
    def token(self) -> Token:
        return self._token

    @property
    def hardware_algorithms(self) -> frozenset[int]:
        """The algorithms a key may be pinned in hardware with: the token's, among this CSP's."""
        return self._token_algorithms & frozenset(ALGORITHMS)

    # --- handles ------------------------------------------------------------------------------------------

    def _provider(self, prov: object, operation: str) -> _Provider:
        entry = self._handles.get(prov)
        if not isinstance(entry, _Provider) or not entry.alive:
            raise CryptError(w.NTE_BAD_UID, operation)
        return entry

    def _live(self, key: object, operation: str) -> AbstractContextManager[LiveKey]:
        """The key, locked for the whole operation (``with self._live(key, op) as entry``); a dead, unknown or
        non-key handle is NTE_BAD_KEY."""
        entry = self._handles.get(key)
        if not isinstance(entry, LiveKey):
            raise CryptError(w.NTE_BAD_KEY, operation)
        return _Held(entry, operation)

    def _register(self, key: LiveKey, operation: str, *, provider_gone: int) -> int:
        """Issue a handle for a new key in its context; if the context died meanwhile, the key dies unborn."""
        with self._lock:
            provider = self._handles.get(key.provider)
            if isinstance(provider, _Provider) and provider.alive:
                handle = self._handles.issue(key)
                provider.keys.add(handle)
                return handle
        key.kill()
        raise CryptError(provider_gone, operation)

    def _bury(self, handle: int, entry: LiveKey) -> None:
        """After a key's death (destroy, export with CRYPT_DESTROYKEY): its context forgets it, and the table
        keeps it only among the recent dead, so memory follows the live keys, not every key ever made."""
        with self._lock:
            owner = self._handles.get(entry.provider)
            if isinstance(owner, _Provider):
                owner.keys.discard(handle)
            self._handles.retire(handle)

    # --- contexts -----------------------------------------------------------------------------------------

    def acquire(self, side: str | Side = "secure") -> int:
        """CryptAcquireContext on ``"secure"`` or ``"app"``; anything else ERROR_INVALID_PARAMETER."""
        try:
            parsed = side if isinstance(side, Side) else Side(side)
        except ValueError:
            raise CryptError(w.ERROR_INVALID_PARAMETER, "acquire") from None
        with self._lock:
            if self._closed:  # the CSP is unloaded: the call fails as a provider that cannot start does
                raise CryptError(w.NTE_FAIL, "acquire: the CSP has been closed")
            return self._handles.issue(_Provider(parsed))

    def release(self, prov: int) -> None:
        """CryptReleaseContext: the context's live keys end (software wiped, hardware objects kept); the handle
        answers NTE_BAD_UID afterwards (our decision)."""
        with self._lock:
            provider = self._provider(prov, "release")
            provider.alive = False  # from here on no key joins it (_register checks under this lock)
            owned = list(provider.keys)
            provider.keys.clear()
        for handle in owned:
            entry = self._handles.get(handle)
            if isinstance(entry, LiveKey):
                with entry.lock:
                    entry.kill()
            self._handles.retire(handle)
        self._handles.retire(prov)

    def close(self) -> None:
        """Release every live context and acquire none after (this process's view ends; the installation and
        token stay). Every handle is dead afterwards, so each call refuses with its usual code."""
        with self._lock:
            self._closed = True
        for handle in list(self._handles):
            entry = self._handles.get(handle)
            if isinstance(entry, _Provider) and entry.alive:
                with contextlib.suppress(CryptError):  # released concurrently
                    self.release(handle)

    # --- key creation -------------------------------------------------------------------------------------

    def _fresh(
        self,
        prov: int,
        info: AlgInfo,
        material: bytearray,
        *,
        salt: bytes,
        permissions: int,
        hardware: bool,
        hmac_only: bool = False,
    ) -> LiveKey:
        """A key as creation leaves it: mode CBC (0 for RC4), IV and register zero, PKCS#5, mode bits 8."""
        iv = bytes(info.block)
        key_bits = len(material) * 8
        engine: Engine | None
        obj = 0
        if hardware:
            obj = self._token.create(info.alg, bytes(material))
            material[:] = bytes(len(material))
            material = bytearray()  # the material lives in the token only
            engine = TokenBlockEngine(self._token, obj, info.block, iv)
        elif hmac_only:
            engine = None
        else:
            engine = software_engine(info.alg, bytes(material), salt, key_bits, iv)
        return LiveKey(
            provider=prov,
            alg=info.alg,
            location=Location.HARDWARE if hardware else Location.SOFTWARE,
            material=material,
            salt=salt,
            key_bits=key_bits,
            effective_keylen=key_bits,
            mode=0 if info.stream else w.CRYPT_MODE_CBC,
            mode_bits=_DEFAULT_MODE_BITS,
            padding=w.PKCS5_PADDING,
            iv=iv,
            permissions=permissions,
            lifecycle=Lifecycle.CREATED,
            engine=engine,
            hmac_only=hmac_only,
            token_object=obj,
        )

    def gen_key(self, prov: int, alg: int, flags: int = 0, *, hardware: bool = False) -> int:
        """CryptGenKey: NTE_BAD_UID, NTE_BAD_ALGID, NTE_BAD_FLAGS (unknown low flag), the length rule
        (NTE_BAD_FLAGS for the DES family, NTE_BAD_DATA otherwise), NTE_BAD_ALGID for a hardware key of an
        algorithm the token cannot run; in that order. Material from ``os.urandom``."""
        operation = "gen_key"
        self._provider(prov, operation)
        info = ALGORITHMS.get(alg) if _is_dword(alg) else None
        if info is None:
            raise CryptError(w.NTE_BAD_ALGID, operation)
        if not _is_dword(flags) or flags & 0xFFFF & ~_GEN_FLAGS:
            raise CryptError(w.NTE_BAD_FLAGS, operation)
        length = info.gen_bytes(flags >> 16)
        if length is None:
            raise CryptError(w.NTE_BAD_FLAGS if info.des_family else w.NTE_BAD_DATA, operation)
        if hardware and info.alg not in self._token_algorithms:
            raise CryptError(w.NTE_BAD_ALGID, operation)
        salted = info.variable and length == 5 and not flags & (w.CRYPT_NO_SALT | w.CRYPT_CREATE_SALT)
        permissions = DEFAULT_PERMISSIONS | (w.CRYPT_EXPORT if flags & w.CRYPT_EXPORTABLE else 0)
        material = bytearray(os.urandom(length))
        key = self._fresh(
            prov,
            info,
            material,
            salt=_SALT_40_BIT if salted else b"",
            permissions=permissions,
            hardware=bool(hardware),
        )
        return self._register(key, operation, provider_gone=w.NTE_BAD_UID)

    def duplicate_key(self, key: int) -> int:
        """CryptDuplicateKey: an independent copy of the whole state, live register included, in the same
        context, lifecycle CREATED. A hardware key's duplicate is a second handle on the same token object."""
        operation = "duplicate_key"
        with self._live(key, operation) as source:
            twin = attrs.evolve(
                source,
                material=bytearray(source.material),
                engine=source.engine.clone() if source.engine is not None else None,
                lifecycle=Lifecycle.CREATED,
                lock=threading.Lock(),
                tombstone=None,
            )
            return self._register(twin, operation, provider_gone=w.NTE_BAD_KEY)

    def destroy_key(self, key: int) -> None:
        """CryptDestroyKey: software material wiped; a hardware key loses only its handle."""
        with self._live(key, "destroy_key") as entry:
            entry.kill()
        self._bury(key, entry)

    # --- import -------------------------------------------------------------------------------------------

    def import_key(self, prov: int, blob: bytes, *, pub_key: int = 0, flags: int = 0, hardware: bool = False) -> int:
        """CryptImportKey. Header checks in order: too short NTE_BAD_DATA, bVersion NTE_BAD_VER, reserved
        NTE_BAD_DATA, blob type NTE_BAD_TYPE, hPubKey ERROR_INVALID_PARAMETER, algorithm NTE_BAD_ALGID; then the
        blob type's own rules."""
        operation = "import_key"
        self._provider(prov, operation)
        data = _as_bytes(blob, operation)
        blob_type, alg = header_fields(data, operation)
        if blob_type not in _BLOB_TYPES:
            raise CryptError(w.NTE_BAD_TYPE, operation)
        if not _is_dword(pub_key) or pub_key != 0:  # a handle, and none: False or 0.0 is not 0
            raise CryptError(w.ERROR_INVALID_PARAMETER, operation)
        # Flags (and, for an opaque blob, placement) before the algorithm, as the spec orders them.
        opaque = blob_type == w.OPAQUEKEYBLOB
        allowed = w.CRYPT_EXPORTABLE if opaque else _IMPORT_FLAGS
        if not _is_dword(flags) or flags & ~allowed or (opaque and hardware):
            raise CryptError(w.NTE_BAD_FLAGS, operation)
        info = ALGORITHMS.get(alg)
        if info is None:
            raise CryptError(w.NTE_BAD_ALGID, operation)
        if not opaque:
            key = self._import_plaintext(prov, info, data, flags, bool(hardware), operation)
        else:
            key = self._import_opaque(prov, info, data, bool(hardware), operation)
        return self._register(key, operation, provider_gone=w.NTE_BAD_UID)

    def _import_plaintext(
        self, prov: int, info: AlgInfo, blob: bytes, flags: int, hardware: bool, operation: str
    ) -> LiveKey:
        """A fresh key from key bytes: the running state is not in the blob. Length rules: exact body
        (NTE_BAD_DATA), a length the algorithm has (NTE_BAD_DATA) unless CRYPT_IPSEC_HMAC_KEY lifts it for
        RC2/RC4 (1..64 KiB; a length the cipher does not take means HMAC only); a hardware key of an algorithm the token
        cannot run NTE_BAD_ALGID."""
        body = plaintext_key(blob, operation)
        ipsec = bool(flags & w.CRYPT_IPSEC_HMAC_KEY) and info.variable
        if len(body) not in info.import_bytes and not (ipsec and 1 <= len(body) <= IPSEC_MAX_KEY):
            raise CryptError(w.NTE_BAD_DATA, operation)
        if hardware and info.alg not in self._token_algorithms:
            raise CryptError(w.NTE_BAD_ALGID, operation)
        hmac_only = ipsec and len(body) not in info.import_bytes  # a length the cipher does not take: a MAC key
        salted = info.variable and len(body) == 5 and not flags & w.CRYPT_NO_SALT
        permissions = DEFAULT_PERMISSIONS | (w.CRYPT_EXPORT if flags & w.CRYPT_EXPORTABLE else 0)
        key = self._fresh(
            prov,
            info,
            bytearray(body),
            salt=_SALT_40_BIT if salted else b"",
            permissions=permissions,
            hardware=hardware,
            hmac_only=hmac_only,
        )
        key.lifecycle = Lifecycle.IMPORTED
        return key

    def _import_opaque(self, prov: int, info: AlgInfo, blob: bytes, hardware: bool, operation: str) -> LiveKey:
        """Exactly the exported state (lifecycle IMPORTED). ``hardware=True`` NTE_BAD_FLAGS (the blob decides);
        a blob this installation did not seal NTE_BAD_DATA; a newer payload format NTE_BAD_VER; a hardware key
        whose token object is gone NTE_NOT_FOUND. Import flags never add a permission."""
        if hardware:
            raise CryptError(w.NTE_BAD_FLAGS, operation)
        state = self._sealer.open(blob, operation)
        _check_opaque(state, info, operation)
        engine: Engine | None
        material = bytearray()
        if state.location is Location.HARDWARE:
            if state.token_serial != self._token.serial or not self._token.exists(state.token_object):
                raise CryptError(w.NTE_NOT_FOUND, operation)
            engine = TokenBlockEngine(self._token, state.token_object, info.block, state.register)
        else:
            material = bytearray(state.key)
            engine = (
                None
                if state.hmac_only
                else software_engine(
                    info.alg,
                    state.key,
                    state.salt,
                    state.effective_keylen,
                    state.register,
                    state.stream_pos,
                    state.stream_state,
                )
            )
        return LiveKey(
            provider=prov,
            alg=info.alg,
            location=state.location,
            material=material,
            salt=state.salt,
            key_bits=state.key_bits,
            effective_keylen=state.effective_keylen,
            mode=state.mode,
            mode_bits=state.mode_bits,
            padding=state.padding,
            iv=state.iv,
            permissions=state.permissions,
            lifecycle=Lifecycle.IMPORTED,
            engine=engine,
            hmac_only=state.hmac_only,
            token_object=state.token_object,
            salt_reported=state.salt_reported,
        )

    # --- export -------------------------------------------------------------------------------------------

    def export_key(self, key: int, blob_type: int, *, exp_key: int = 0, flags: int = 0) -> bytes:
        """CryptExportKey. In order: dead key NTE_BAD_KEY; flags other than CRYPT_DESTROYKEY NTE_BAD_FLAGS;
        another blob type NTE_BAD_TYPE; hExpKey != 0 ERROR_INVALID_PARAMETER; PLAINTEXTKEYBLOB of a hardware or
        non-exportable key NTE_BAD_KEY_STATE. Export never disturbs the key; CRYPT_DESTROYKEY then ends it."""
        operation = "export_key"
        with self._live(key, operation) as entry:
            if not _is_dword(flags) or flags & ~_EXPORT_FLAGS:
                raise CryptError(w.NTE_BAD_FLAGS, operation)
            if not _is_dword(blob_type) or blob_type not in _BLOB_TYPES:  # True or 8.0 is no blob type
                raise CryptError(w.NTE_BAD_TYPE, operation)
            if not _is_dword(exp_key) or exp_key != 0:
                raise CryptError(w.ERROR_INVALID_PARAMETER, operation)
            if blob_type == w.PLAINTEXTKEYBLOB:
                if entry.location is Location.HARDWARE or not entry.permissions & w.CRYPT_EXPORT:
                    raise CryptError(w.NTE_BAD_KEY_STATE, operation)
                blob = plaintext_blob(entry.alg, bytes(entry.material))
            else:
                blob = self._sealer.seal(_opaque_state(entry, self._token.serial))
            entry.lifecycle = Lifecycle.EXPORTED
            if flags & w.CRYPT_DESTROYKEY:
                entry.kill()
        if flags & w.CRYPT_DESTROYKEY:
            self._bury(key, entry)
        return blob

    # --- parameters ---------------------------------------------------------------------------------------

    def set_key_param(self, key: int, param: int, value: bytes | int) -> None:
        """CryptSetKeyParam: dead key NTE_BAD_KEY; unknown or read-only parameter NTE_BAD_TYPE; a value of the
        wrong type ERROR_INVALID_PARAMETER; then the parameter's own rule (see docs/model.md)."""
        operation = "set_key_param"
        with self._live(key, operation) as entry:
            if not _is_dword(param) or param not in _SETTABLE:  # True or 1.0 is not KP_IV
                raise CryptError(w.NTE_BAD_TYPE, operation)
            if param in _BYTES_PARAMS:
                self._set_bytes(entry, param, _as_bytes(value, operation), operation)
            elif _is_dword(value):
                assert isinstance(value, int)
                self._set_dword(entry, param, value, operation)
            else:
                raise CryptError(w.ERROR_INVALID_PARAMETER, operation)

    def _set_bytes(self, entry: LiveKey, param: int, value: bytes, operation: str) -> None:
        info = ALGORITHMS[entry.alg]
        if param == w.KP_IV:
            # Exactly one block (RC4: empty, and it restarts the stream).
            if len(value) != info.block:
                raise CryptError(w.ERROR_INVALID_PARAMETER, operation)
            entry.iv = value
            _reset(entry)
            return
        # KP_SALT / KP_SALT_EX: RC2 and RC4 only; a new salt re-keys (key || salt) and resets. KP_SALT_EX takes
        # 0..24 bytes and is reported; KP_SALT exactly 11, and KP_SALT then reads back empty (Enhanced provider,
        # native) while that salt goes on keying the cipher, through resets and handoffs (our decision).
        if not info.variable:
            raise CryptError(w.NTE_BAD_KEY, operation)
        if param == w.KP_SALT:
            if len(value) != _KP_SALT_LEN:
                raise CryptError(w.ERROR_INVALID_PARAMETER, operation)
        elif len(value) > _MAX_SALT:
            raise CryptError(w.NTE_BAD_DATA, operation)
        entry.salt = value
        entry.salt_reported = param == w.KP_SALT_EX
        _rekey(entry)

    def _set_dword(self, entry: LiveKey, param: int, value: int, operation: str) -> None:
        if param == w.KP_PADDING:
            if value != w.PKCS5_PADDING:
                raise CryptError(w.NTE_BAD_DATA, operation)
            entry.padding = value
        elif param == w.KP_MODE:
            # Any value is stored (refused at use if not runnable); RC4 stores it too and ignores it (Wine).
            entry.mode = value
        elif param == w.KP_MODE_BITS:
            entry.mode_bits = value  # stored; CFB is 8-bit whatever it says
        elif param == w.KP_PERMISSIONS:
            if value & w.CRYPT_EXPORT and not entry.permissions & w.CRYPT_EXPORT:
                raise CryptError(w.NTE_BAD_DATA, operation)
            # Clearing CRYPT_EXPORT succeeds and changes nothing (native); other bits are stored as given.
            entry.permissions = value | (entry.permissions & w.CRYPT_EXPORT)
        else:  # KP_EFFECTIVE_KEYLEN
            if entry.alg != w.CALG_RC2:
                raise CryptError(w.NTE_BAD_TYPE, operation)
            if value not in _RC2_EFFECTIVE:
                raise CryptError(w.NTE_BAD_DATA, operation)
            entry.effective_keylen = value
            _rekey(entry)

    def get_key_param(self, key: int, param: int) -> bytes | int:
        """CryptGetKeyParam: dead key NTE_BAD_KEY; unknown parameter NTE_BAD_TYPE. KP_IV is the IV as set, not
        the register; KP_BLOCKLEN and KP_KEYLEN are in bits; KP_SALT is empty for a key without salt and for a
        salt set by KP_SALT (not by KP_SALT_EX)."""
        with self._live(key, "get_key_param") as entry:
            if not _is_dword(param) or param not in _READABLE:
                raise CryptError(w.NTE_BAD_TYPE, "get_key_param")
            values: dict[int, bytes | int] = {
                w.KP_IV: entry.iv,
                w.KP_SALT: entry.salt if entry.salt_reported else b"",
                w.KP_PADDING: entry.padding,
                w.KP_MODE: entry.mode,
                w.KP_MODE_BITS: entry.mode_bits,
                w.KP_PERMISSIONS: entry.permissions,
                w.KP_ALGID: entry.alg,
                w.KP_BLOCKLEN: ALGORITHMS[entry.alg].block * 8,
                w.KP_KEYLEN: entry.key_bits,
                w.KP_EFFECTIVE_KEYLEN: entry.effective_keylen,
            }
            return values[param]

    # --- encrypt, decrypt, HMAC ---------------------------------------------------------------------------

    def encrypt(self, key: int, data: bytes, final: bool) -> bytes:
        """CryptEncrypt(hKey, hHash=0, Final, data)."""
        # The fast path (see _FAST_PATH below); kept inline: a call more costs 10% of a 16-byte encrypt.
        if final is False and self._fast and type(data) is bytes and type(key) is int:
            entry = self._lookup(key)
            if type(entry) is LiveKey:
                lock = entry.lock
                lock.acquire()
                try:
                    block = entry.fast_block
                    engine = entry.engine
                    if block >= 0 and engine is not None and entry.tombstone is None:
                        mode = entry.mode
                        if not block or (data and not len(data) % block and mode in USABLE_MODES):
                            return engine.hot(mode, data, False)
                except CryptError as error:  # from a hardware key's token: the code, under this call's name
                    raise CryptError(error.code, "encrypt") from None
                finally:
                    lock.release()
        return self._crypt(key, _as_bytes(data, "encrypt"), bool(final), decrypt=False)

    def decrypt(self, key: int, data: bytes, final: bool) -> bytes:
        """CryptDecrypt(hKey, hHash=0, Final, data)."""
        if final is False and self._fast and type(data) is bytes and type(key) is int:  # as in encrypt
            entry = self._lookup(key)
            if type(entry) is LiveKey:
                lock = entry.lock
                lock.acquire()
                try:
                    block = entry.fast_block
                    engine = entry.engine
                    if block >= 0 and engine is not None and entry.tombstone is None:
                        mode = entry.mode
                        if not block or (data and not len(data) % block and mode in USABLE_MODES):
                            return engine.hot(mode, data, True)
                except CryptError as error:  # from a hardware key's token: the code, under this call's name
                    raise CryptError(error.code, "decrypt") from None
                finally:
                    lock.release()
        return self._crypt(key, _as_bytes(data, "decrypt"), bool(final), decrypt=True)

    # _FAST_PATH: encrypt and decrypt first try a non-Final call that _crypt would run without refusing, and
    # otherwise (having touched nothing) fall through to _crypt, whose full rules then give every refusal, code
    # and order. The fast path runs only when each of _crypt's checks passes: a live cipher key (not HMAC-only),
    # non-empty whole blocks, a usable mode (block ciphers; RC4 takes any length, empty too, and ignores the mode);
    # non-Final, so no padding and no reset. A hardware key qualifies too: such a call reaches the token, which
    # answers NTE_NOT_FOUND itself for a gone object, so _crypt would not ask Token.exists either (empty data
    # never reaches the token: it goes to _crypt, which asks). The handle lookup is lock-free
    # (HandleTable.lookup); the key's own lock is held for the run, as _live holds it. The tests in
    # tests/impl/test_fast_path.py (fast and full path agree) and the lockstep machine hold it to that.
    # With the C extension, the same fast path for a key with a C engine runs in C first (impl/_evp.c, installed
    # in __init__): the same checks, the key's lock found free and the run atomic under the GIL (lock_free in
    # impl/_evp.h); these methods are its fallback.

    def _crypt(self, key: int, data: bytes, final: bool, *, decrypt: bool) -> bytes:
        """The shared rules, in this order: dead key NTE_BAD_KEY; an HMAC-only key NTE_BAD_KEY; a deleted token
        object NTE_NOT_FOUND; Final decrypt of nothing NTE_BAD_LEN; a block cipher's non-final (or final-decrypt)
        length that is not a block multiple NTE_BAD_DATA; a mode other than ECB/CBC/CFB NTE_BAD_ALGID. Each
        leaves the state untouched. Final encrypt pads (PKCS#5, a whole block when aligned); Final decrypt checks
        the pad (NTE_BAD_DATA *and* reset when bad); Final resets register := IV (RC4: the key schedule).

        A hardware key's token is asked whether its object exists (``Token.exists``) only when it will not be
        called: on the refusal paths, where NTE_NOT_FOUND ranks first, and for non-Final empty data (no block to
        run). A call that reaches the token needs no question first: ``Token.cipher`` answers NTE_NOT_FOUND itself
        for a gone object (deleted here or by another process), before the state moves."""
        operation = "decrypt" if decrypt else "encrypt"
        with self._live(key, operation) as entry:
            engine = entry.engine
            if entry.hmac_only or engine is None:
                raise CryptError(w.NTE_BAD_KEY, operation)
            block = ALGORITHMS[entry.alg].block
            refusal = 0
            if decrypt and final and not data:
                refusal = w.NTE_BAD_LEN
            elif block:
                if len(data) % block and (decrypt or not final):
                    refusal = w.NTE_BAD_DATA
                elif entry.mode not in USABLE_MODES:
                    refusal = w.NTE_BAD_ALGID
            if (
                entry.location is Location.HARDWARE
                and (refusal or not (data or final))  # the token will not be called: ask it
                and not self._token.exists(entry.token_object)
            ):
                raise CryptError(w.NTE_NOT_FOUND, operation)  # the token object was deleted by administration
            if refusal:
                raise CryptError(refusal, operation)
            if block and final and not decrypt:
                pad = block - len(data) % block
                data += bytes([pad]) * pad
            try:
                out = engine.run(entry.mode, data, decrypt=decrypt)
            except CryptError as error:  # from the token (NTE_NOT_FOUND): the code, under this call's name
                raise CryptError(error.code, operation) from None
            if block and final and decrypt:
                pad = out[-1]
                if not 1 <= pad <= block or out[-pad:] != bytes([pad]) * pad:
                    engine.reset(entry.iv)
                    raise CryptError(w.NTE_BAD_DATA, operation)
                out = out[:-pad]
            if final:
                engine.reset(entry.iv)
            return out

    def hmac(self, key: int, hash_alg: int, data: bytes) -> bytes:
        """CALG_HMAC keyed with the key's bytes (not the salt): dead key NTE_BAD_KEY; a hash other than MD5,
        SHA-1, SHA-256 NTE_BAD_ALGID; a hardware key NTE_BAD_KEY_STATE. The cipher state is not touched."""
        operation = "hmac"
        message = _as_bytes(data, operation)
        with self._live(key, operation) as entry:
            name = HMAC_HASHES.get(hash_alg) if _is_dword(hash_alg) else None
            if name is None:
                raise CryptError(w.NTE_BAD_ALGID, operation)
            if entry.location is Location.HARDWARE:
                raise CryptError(w.NTE_BAD_KEY_STATE, operation)
            return hmac_lib.new(bytes(entry.material), message, name).digest()

    # --- white box ----------------------------------------------------------------------------------------

    def inspect(self, key: int) -> KeyState:
        """The key's full state; for a dead handle its final state (key and salt empty); unknown NTE_BAD_KEY."""
        entry = self._handles.get(key)
        if not isinstance(entry, LiveKey):
            raise CryptError(w.NTE_BAD_KEY, "inspect")
        with entry.lock:
            return entry.state()

    def _material_view(self, key: int) -> bytearray:
        """White-box hook: the very buffer holding a software key's material (destroy zeroes it in place)."""
        entry = self._handles.get(key)
        if not isinstance(entry, LiveKey):
            raise CryptError(w.NTE_BAD_KEY, "_material_view")
        return entry.material


# --- helpers on a locked key -------------------------------------------------------------------------------


def _reset(entry: LiveKey) -> None:
    """register := IV (block ciphers) or the RC4 key schedule."""
    if entry.engine is not None:
        entry.engine.reset(entry.iv)


def _rekey(entry: LiveKey) -> None:
    """New salt or effective key length: a new key schedule, from the IV (a reset)."""
    if entry.engine is None or entry.location is Location.HARDWARE:
        return  # HMAC-only keys have no cipher; hardware keys take no salt or effective length
    entry.engine = software_engine(entry.alg, bytes(entry.material), entry.salt, entry.effective_keylen, entry.iv)


def _opaque_state(entry: LiveKey, serial: str) -> OpaqueState:
    hardware = entry.location is Location.HARDWARE
    return OpaqueState(
        location=entry.location,
        origin=entry.lifecycle,
        alg=entry.alg,
        key_bits=entry.key_bits,
        effective_keylen=entry.effective_keylen,
        mode=entry.mode,
        mode_bits=entry.mode_bits,
        padding=entry.padding,
        permissions=entry.permissions,
        stream_pos=entry.stream_pos,
        iv=entry.iv,
        register=entry.register,
        salt=entry.salt,
        key=b"" if hardware else bytes(entry.material),
        stream_state=entry.stream_state,
        token_serial=serial if hardware else "",
        token_object=entry.token_object,
        hmac_only=entry.hmac_only,
        salt_reported=entry.salt_reported,
    )


def _check_opaque(state: OpaqueState, info: AlgInfo, operation: str) -> None:
    """An authenticated payload is ours, but is still checked for consistency before any engine is built: a
    payload an engine could not run is NTE_BAD_DATA, never another exception."""
    if not _consistent(state, info):
        raise CryptError(w.NTE_BAD_DATA, operation)


def _stream_state_fits(state: OpaqueState, info: AlgInfo) -> bool:
    """An RC4 state belongs to a software RC4 key past position 0: a permutation for its table, and i is the
    position modulo 256 (RC4's i steps once per byte)."""
    table = state.stream_state[2:]
    return (
        info.stream
        and state.location is Location.SOFTWARE
        and not state.hmac_only
        and state.stream_pos > 0
        and state.stream_state[0] == state.stream_pos & 0xFF
        and len(set(table)) == len(table) == 256
    )


def _consistent(state: OpaqueState, info: AlgInfo) -> bool:
    block = info.block
    if len(state.iv) != block or len(state.register) != block or len(state.salt) > _MAX_SALT:
        return False
    if not state.salt_reported and len(state.salt) != _KP_SALT_LEN:
        return False  # only KP_SALT leaves a salt unreported, and its salt is 11 bytes
    if state.stream_state and not _stream_state_fits(state, info):
        return False
    if state.location is Location.HARDWARE:
        return (
            not (state.salt or state.hmac_only or state.key or not state.token_object)
            and state.key_bits == info.default_bytes * 8
        )
    key_bytes = len(state.key)
    if state.key_bits != key_bytes * 8:
        return False
    if state.salt and not info.variable:
        return False
    if state.hmac_only != (info.variable and key_bytes not in info.import_bytes):
        return False
    if not state.hmac_only and key_bytes not in info.import_bytes and not info.variable:
        return False
    if info.alg == w.CALG_RC2 and not state.hmac_only and state.effective_keylen not in _RC2_EFFECTIVE:
        return False
    if info.alg != w.CALG_RC2 and state.effective_keylen != state.key_bits:
        return False
    return not (state.stream_pos and not info.stream)
