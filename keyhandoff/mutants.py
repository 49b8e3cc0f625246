"""Known-bad CSPs: the built-in CSP (``keyhandoff.impl``) with exactly one planted defect each.

Each :class:`Mutant` names its defect, the rule of ``docs/model.md`` it breaks (quoted in that document's words)
and a factory ``home -> Target``. The defect is injected from outside ``impl/``: a :class:`~keyhandoff.impl.Csp`
subclass overriding one method (or one hook such as ``_set_bytes``, ``_register``, ``_live``), an
:class:`~keyhandoff.impl.blobs.OpaqueSealer` subclass, or an engine wrapper; the rest of the CSP is the reference
code, unchanged. :func:`hunt` runs the lockstep machine (``keyhandoff.check.run_check``) against one mutant and
reports whether, and how fast, it was caught; ``keyhandoff mutants`` runs them all.

The overrides read a key's record outside its lock where the reference CSP would hold it: mutants are driven by
one thread (the lockstep machine), and none of them is meant to be thread-safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import attrs

from keyhandoff.check import CheckResult, run_check
from keyhandoff.impl.algorithms import ALGORITHMS, AlgInfo
from keyhandoff.impl.blobs import OPAQUE_PURPOSE, OpaqueSealer, OpaqueState
from keyhandoff.impl.builtin import BuiltinCsp
from keyhandoff.impl.csp import Csp, InstallationLike, _Provider
from keyhandoff.impl.engines import Engine, software_engine
from keyhandoff.impl.live_key import LiveKey
from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError
from keyhandoff.model.state import Location
from keyhandoff.target import Target
from keyhandoff.targets.builtin_target import BuiltinTarget

__all__ = ["MUTANTS", "HuntResult", "Mutant", "MutantTarget", "by_name", "hunt"]

Home = str | os.PathLike[str]

_SAME_STATE: Final = '"An OPAQUEKEYBLOB this installation issued gives exactly the exported state"'
_NOT_ISSUED: Final = (
    '"A blob this installation did not issue, byte for byte (changed, truncated, extended, from another '
    'installation) is NTE_BAD_DATA"'
)


@attrs.frozen
class Mutant:
    """One known-bad CSP: a short name, the rule it breaks (docs/model.md wording), and ``home -> Target``."""

    name: str
    rule: str
    factory: Callable[[Home], Target]


# --- the carrier: the built-in target around a mutated Csp ---------------------------------------------------


class _MutantBuiltinCsp(BuiltinCsp):
    """The built-in CSP whose core is ``csp_class`` (a Csp subclass) over the same installation."""

    def __init__(self, home: Home, csp_class: type[Csp]) -> None:
        super().__init__(home, durable=False)  # a scratch installation: every mutant's home is thrown away
        try:
            self._csp = csp_class(self.installation)
        except BaseException:
            self.installation.close()
            raise


class MutantTarget(BuiltinTarget):
    """:class:`~keyhandoff.targets.builtin_target.BuiltinTarget` over a mutated core (one installation, one
    process). Every Target and Inspectable method is the built-in target's."""

    def __init__(self, home: Home, csp_class: type[Csp], name: str) -> None:
        # Not super().__init__: that would open a second installation object on the same home.
        self.csp = _MutantBuiltinCsp(home, csp_class)
        self.mutant = name

    def __repr__(self) -> str:
        return f"MutantTarget({self.mutant!r}, {self.csp!r})"


def _carrier(name: str, csp_class: type[Csp]) -> Callable[[Home], Target]:
    def factory(home: Home) -> Target:
        return MutantTarget(home, csp_class, name)

    return factory


def _entry(csp: Csp, handle: object) -> LiveKey | None:
    """The key record behind ``handle`` (live or tombstone), or None."""
    entry = csp._handles.get(handle)
    return entry if isinstance(entry, LiveKey) else None


# --- opaque blobs that leave out one part of the state ------------------------------------------------------


class _LossySealer(OpaqueSealer):
    """Seals ``transform(state)`` instead of the state: the blob loses what the transform drops."""

    def __init__(self, key: bytes, transform: Callable[[OpaqueState], OpaqueState]) -> None:
        super().__init__(key)
        self._transform = transform

    def seal(self, state: OpaqueState) -> bytes:
        return super().seal(self._transform(state))


def _lossy(transform: Callable[[OpaqueState], OpaqueState]) -> type[Csp]:
    class LossyBlobCsp(Csp):
        def __init__(self, installation: InstallationLike) -> None:
            super().__init__(installation)
            self._sealer = _LossySealer(installation.key(OPAQUE_PURPOSE), transform)

    return LossyBlobCsp


def _creation_mode(state: OpaqueState) -> int:
    return 0 if state.alg == w.CALG_RC4 else w.CRYPT_MODE_CBC


# --- import, export, destroy, duplicate ---------------------------------------------------------------------


class _ImportAddsExport(Csp):
    """Every OPAQUEKEYBLOB import gains CRYPT_EXPORT."""

    def _import_opaque(self, prov: int, info: AlgInfo, blob: bytes, hardware: bool, operation: str) -> LiveKey:
        key = super()._import_opaque(prov, info, blob, hardware, operation)
        key.permissions |= w.CRYPT_EXPORT
        return key


class _ExportableFlagAddsExport(Csp):
    """An OPAQUEKEYBLOB imported with CRYPT_EXPORTABLE gains CRYPT_EXPORT (the flag applied as on a plaintext
    import)."""

    def import_key(self, prov: int, blob: bytes, *, pub_key: int = 0, flags: int = 0, hardware: bool = False) -> int:
        handle = super().import_key(prov, blob, pub_key=pub_key, flags=flags, hardware=hardware)
        entry = _entry(self, handle)
        if entry is not None and flags & w.CRYPT_EXPORTABLE and bytes(blob[:1]) == bytes([w.OPAQUEKEYBLOB]):
            entry.permissions |= w.CRYPT_EXPORT
        return handle


class _DestroyDeletesTokenObject(Csp):
    """CryptDestroyKey of a hardware key deletes its token object."""

    def destroy_key(self, key: int) -> None:
        entry = _entry(self, key)
        super().destroy_key(key)
        if entry is not None and entry.location is Location.HARDWARE and self._token.exists(entry.token_object):
            self._token.delete(entry.token_object)


class _DestroyKeepsHandle(Csp):
    """CryptDestroyKey checks the handle and returns; the key lives on."""

    def destroy_key(self, key: int) -> None:
        with self._live(key, "destroy_key"):
            pass


class _RecyclesHandles(Csp):
    """A destroyed key's handle number goes on a LIFO free list and is issued to the next key (as in Wine)."""

    def __init__(self, installation: InstallationLike) -> None:
        super().__init__(installation)
        self._free: list[int] = []

    def destroy_key(self, key: int) -> None:
        super().destroy_key(key)
        self._free.append(key)

    def _register(self, key: LiveKey, operation: str, *, provider_gone: int) -> int:
        while self._free and self._free[-1] not in self._handles:  # forgotten by the table: cannot be revived
            self._free.pop()
        if not self._free:
            return super()._register(key, operation, provider_gone=provider_gone)
        with self._lock:
            provider = self._handles.get(key.provider)
            if isinstance(provider, _Provider) and provider.alive:
                handle = self._free.pop()
                self._handles.replace(handle, key)  # destroy already took the number out of its context
                provider.keys.add(handle)
                return handle
        key.kill()
        raise CryptError(provider_gone, operation)


class _DuplicateSharesState(Csp):
    """CryptDuplicateKey gives a new handle whose cipher engine is the source's own."""

    def duplicate_key(self, key: int) -> int:
        handle = super().duplicate_key(key)
        source, twin = _entry(self, key), _entry(self, handle)
        if source is not None and twin is not None and source.engine is not None:
            twin.engine = source.engine
        return handle


class _ExportResetsRegister(Csp):
    """CryptExportKey (without CRYPT_DESTROYKEY) resets the key it exported to its IV."""

    def export_key(self, key: int, blob_type: int, *, exp_key: int = 0, flags: int = 0) -> bytes:
        blob = super().export_key(key, blob_type, exp_key=exp_key, flags=flags)
        entry = _entry(self, key)
        if entry is not None and entry.alive and entry.engine is not None:
            entry.engine.reset(entry.iv)
        return blob


class _ImportsShareState(Csp):
    """A second import of the same OPAQUEKEYBLOB bytes shares the first (still live) import's engine."""

    def __init__(self, installation: InstallationLike) -> None:
        super().__init__(installation)
        self._first: dict[bytes, LiveKey] = {}

    def import_key(self, prov: int, blob: bytes, *, pub_key: int = 0, flags: int = 0, hardware: bool = False) -> int:
        handle = super().import_key(prov, blob, pub_key=pub_key, flags=flags, hardware=hardware)
        entry = _entry(self, handle)
        if entry is None or bytes(blob[:1]) != bytes([w.OPAQUEKEYBLOB]):
            return handle
        first = self._first.get(bytes(blob))
        if first is not None and first.alive and first.engine is not None:
            entry.engine = first.engine
        else:
            self._first[bytes(blob)] = entry
        return handle


class _PlaintextImportContinues(Csp):
    """Remembers the running state (register, RC4 position) a key had when each PLAINTEXTKEYBLOB of it was
    exported, and an import of those very bytes continues from there instead of starting fresh."""

    def __init__(self, installation: InstallationLike) -> None:
        super().__init__(installation)
        self._running: dict[bytes, tuple[bytes, int]] = {}

    def export_key(self, key: int, blob_type: int, *, exp_key: int = 0, flags: int = 0) -> bytes:
        entry = _entry(self, key)
        running = (entry.register, entry.stream_pos) if entry is not None and entry.alive else None
        blob = super().export_key(key, blob_type, exp_key=exp_key, flags=flags)
        if blob_type == w.PLAINTEXTKEYBLOB and running is not None:
            self._running[blob] = running
        return blob

    def import_key(self, prov: int, blob: bytes, *, pub_key: int = 0, flags: int = 0, hardware: bool = False) -> int:
        handle = super().import_key(prov, blob, pub_key=pub_key, flags=flags, hardware=hardware)
        entry = _entry(self, handle)
        running = self._running.get(bytes(blob))
        if entry is None or running is None or entry.engine is None or entry.location is Location.HARDWARE:
            return handle
        register, position = running
        if len(register) == len(entry.iv):
            entry.engine = software_engine(
                entry.alg, bytes(entry.material), entry.salt, entry.effective_keylen, register, position
            )
        return handle


class _DestroyKeyFlagIgnored(Csp):
    """CryptExportKey accepts CRYPT_DESTROYKEY and ignores it (as Wine does)."""

    def export_key(self, key: int, blob_type: int, *, exp_key: int = 0, flags: int = 0) -> bytes:
        if isinstance(flags, int) and flags & w.CRYPT_DESTROYKEY:
            flags &= ~w.CRYPT_DESTROYKEY
        return super().export_key(key, blob_type, exp_key=exp_key, flags=flags)


class _PlaintextExportIgnoresPermission(Csp):
    """PLAINTEXTKEYBLOB export of a software key without CRYPT_EXPORT succeeds (as Wine does)."""

    def export_key(self, key: int, blob_type: int, *, exp_key: int = 0, flags: int = 0) -> bytes:
        entry = _entry(self, key)
        if blob_type != w.PLAINTEXTKEYBLOB or entry is None or not entry.alive:
            return super().export_key(key, blob_type, exp_key=exp_key, flags=flags)
        kept = entry.permissions
        entry.permissions |= w.CRYPT_EXPORT
        try:
            return super().export_key(key, blob_type, exp_key=exp_key, flags=flags)
        finally:
            entry.permissions = kept


# --- sealing ------------------------------------------------------------------------------------------------


class _LastByteUncheckedSealer(OpaqueSealer):
    """Opens a blob whose last byte (the last tag byte) was changed: it tries every value of that byte."""

    def open(self, blob: bytes, operation: str = "import_key") -> OpaqueState:
        try:
            return super().open(blob, operation)
        except CryptError as error:
            if error.code != w.NTE_BAD_DATA or not blob:
                raise
            for value in range(256):
                if value == blob[-1]:
                    continue
                try:
                    return super().open(blob[:-1] + bytes([value]), operation)
                except CryptError:
                    continue
            raise


class _TrailingBytesIgnoredSealer(OpaqueSealer):
    """Opens a blob with up to 8 bytes appended: it drops trailing bytes until the tag verifies."""

    def open(self, blob: bytes, operation: str = "import_key") -> OpaqueState:
        try:
            return super().open(blob, operation)
        except CryptError as error:
            if error.code != w.NTE_BAD_DATA:
                raise
            for cut in range(1, 9):
                try:
                    return super().open(blob[:-cut], operation)
                except CryptError:
                    continue
            raise


def _sealed_with(make: Callable[[InstallationLike], OpaqueSealer]) -> type[Csp]:
    class SealerCsp(Csp):
        def __init__(self, installation: InstallationLike) -> None:
            super().__init__(installation)
            self._sealer = make(installation)

    return SealerCsp


# One sealing key for every installation, instead of the installation's own key(OPAQUE_PURPOSE).
_SHARED_SEALING_KEY: Final = hashlib.sha256(b"keyhandoff mutant: one sealing key for every installation").digest()


# --- encrypt, decrypt, parameters, handles ------------------------------------------------------------------


class _HeldReset:
    """Wraps an engine for one Final call and holds back its ``reset`` calls; :meth:`release` lets them through."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.held: list[bytes] = []

    @property
    def register(self) -> bytes:
        return self.engine.register

    @property
    def stream_pos(self) -> int:
        return self.engine.stream_pos

    @property
    def stream_state(self) -> bytes:
        return self.engine.stream_state

    def run(self, mode: int, data: bytes, *, decrypt: bool) -> bytes:
        return self.engine.run(mode, data, decrypt=decrypt)

    def hot(self, mode: int, data: bytes, decrypt: bool, /) -> bytes:
        return self.engine.hot(mode, data, decrypt)

    def reset(self, iv: bytes) -> None:
        self.held.append(iv)

    def wipe(self) -> None:
        self.engine.wipe()

    def clone(self) -> Engine:
        return self.engine.clone()

    def release(self) -> None:
        for iv in self.held:
            self.engine.reset(iv)


class _FinalResetPolicy(Csp):
    """Runs each Final encrypt/decrypt with the key's resets held back, then lets them through or drops them:
    ``reset_on_success`` for a Final that returned, ``reset_on_error`` for one refused (a bad pad)."""

    reset_on_success = True
    reset_on_error = True

    def _crypt(self, key: int, data: bytes, final: bool, *, decrypt: bool) -> bytes:
        entry = _entry(self, key)
        if not final or entry is None or entry.engine is None:
            return super()._crypt(key, data, final, decrypt=decrypt)
        real = entry.engine
        held = _HeldReset(real)
        entry.engine = held
        try:
            out = super()._crypt(key, data, final, decrypt=decrypt)
        except CryptError:
            if self.reset_on_error:
                held.release()
            raise
        finally:
            if entry.engine is held:
                entry.engine = real
        if self.reset_on_success:
            held.release()
        return out


class _FinalKeepsRegister(_FinalResetPolicy):
    """A successful Final encrypt or decrypt does not reset the register (RC4: the stream)."""

    reset_on_success = False


class _BadPadKeepsRegister(_FinalResetPolicy):
    """A Final decrypt refused for a bad pad does not reset the key."""

    reset_on_error = False


class _SetIvKeepsRegister(Csp):
    """KP_IV stores the new IV but leaves the register (RC4: the stream) running."""

    def _set_bytes(self, entry: LiveKey, param: int, value: bytes, operation: str) -> None:
        if param == w.KP_IV and len(value) == ALGORITHMS[entry.alg].block:
            entry.iv = value
            return
        super()._set_bytes(entry, param, value, operation)


class _PadLastByteOnly(Csp):
    """A Final decrypt checks only the pad's last byte (a length from 1 to the block), not the bytes it names."""

    def _crypt(self, key: int, data: bytes, final: bool, *, decrypt: bool) -> bytes:
        entry = _entry(self, key)
        block = ALGORITHMS[entry.alg].block if entry is not None and entry.alg in ALGORITHMS else 0
        if not (final and decrypt and block and data) or entry is None:
            return super()._crypt(key, data, final, decrypt=decrypt)
        out = super()._crypt(key, data, False, decrypt=True)  # every refusal as a Final decrypt's, no unpadding
        pad = out[-1]
        if entry.engine is not None:
            entry.engine.reset(entry.iv)  # a Final resets, refused or not
        if not 1 <= pad <= block:
            raise CryptError(w.NTE_BAD_DATA, "decrypt")
        return out[:-pad]


class _CfbRegisterFromPlaintext(Csp):
    """A non-Final CFB-8 decrypt leaves the last block of *plaintext* in the register, not of ciphertext (the
    encrypt side is right; a CBC or ECB key, RC4 and Final calls are as ever)."""

    def _crypt(self, key: int, data: bytes, final: bool, *, decrypt: bool) -> bytes:
        out = super()._crypt(key, data, final, decrypt=decrypt)
        entry = _entry(self, key)
        if decrypt and not final and entry is not None and entry.engine is not None and entry.mode == w.CRYPT_MODE_CFB:
            block = ALGORITHMS[entry.alg].block
            if block and len(out) >= block:
                entry.engine.reset(out[-block:])  # the register := this plaintext's last block
        return out


class _ModeResetsRegister(Csp):
    """KP_MODE, stored as ever, also puts the register back to the IV (a cipher context rebuilt from the IV)."""

    def _set_dword(self, entry: LiveKey, param: int, value: int, operation: str) -> None:
        super()._set_dword(entry, param, value, operation)
        if param == w.KP_MODE and entry.engine is not None:
            entry.engine.reset(entry.iv)


class _EffectiveKeylenKeepsRegister(Csp):
    """KP_EFFECTIVE_KEYLEN makes the new key schedule but continues from the register, not from the IV."""

    def _set_dword(self, entry: LiveKey, param: int, value: int, operation: str) -> None:
        register = entry.engine.register if entry.engine is not None else b""
        super()._set_dword(entry, param, value, operation)
        if param == w.KP_EFFECTIVE_KEYLEN and entry.engine is not None and register:
            entry.engine.reset(register)


class _PermissionsClearExport(Csp):
    """KP_PERMISSIONS without CRYPT_EXPORT clears it (adding it is refused as ever)."""

    def _set_dword(self, entry: LiveKey, param: int, value: int, operation: str) -> None:
        super()._set_dword(entry, param, value, operation)
        if param == w.KP_PERMISSIONS:
            entry.permissions = value


class _ParamsAnsweredOnce(Csp):
    """get_key_param answers, for a key and parameter, what it answered the first time: a cache that
    set_key_param never updates. Refusals are as ever (a dead key is NTE_BAD_KEY)."""

    def get_key_param(self, key: int, param: int) -> bytes | int:
        value = super().get_key_param(key, param)
        answered: dict[tuple[int, int], bytes | int] = self.__dict__.setdefault("_answered", {})
        return answered.setdefault((key, param), value)


class _StaleHandleWrongCode(Csp):
    """A destroyed key's handle answers ERROR_INVALID_HANDLE (advapi32-style) instead of NTE_BAD_KEY."""

    @contextmanager
    def _live(self, key: object, operation: str) -> Iterator[LiveKey]:
        entry = _entry(self, key)
        if entry is not None and not entry.alive:
            raise CryptError(w.ERROR_INVALID_HANDLE, operation)
        with super()._live(key, operation) as live:
            yield live


# --- the catalog --------------------------------------------------------------------------------------------


def _m(name: str, rule: str, csp_class: type[Csp]) -> Mutant:
    return Mutant(name, rule, _carrier(name, csp_class))


MUTANTS: tuple[Mutant, ...] = (
    _m(
        "opaque-drops-register",
        f"import_opaque: {_SAME_STATE}; the blob leaves out the live feedback register "
        '("a CBC continuation is CBC under IV = register")',
        _lossy(lambda s: attrs.evolve(s, register=s.iv)),
    ),
    _m(
        "opaque-drops-stream-position",
        f'import_opaque: {_SAME_STATE}; the blob leaves out "the RC4 stream position" '
        '("RC4 output is the keystream from the position")',
        _lossy(lambda s: attrs.evolve(s, stream_pos=0, stream_state=b"")),
    ),
    _m(
        "opaque-drops-salt",
        f"import_opaque: {_SAME_STATE}; the blob leaves out the salt (KP_SALT)",
        _lossy(lambda s: attrs.evolve(s, salt=b"")),
    ),
    _m(
        "opaque-drops-mode",
        f"import_opaque: {_SAME_STATE}; the blob leaves out KP_MODE (the import gets the creation mode)",
        _lossy(lambda s: attrs.evolve(s, mode=_creation_mode(s))),
    ),
    _m(
        "opaque-drops-effective-keylen",
        f"import_opaque: {_SAME_STATE}; the blob leaves out KP_EFFECTIVE_KEYLEN (RC2 gets its key length)",
        _lossy(lambda s: attrs.evolve(s, effective_keylen=s.key_bits)),
    ),
    _m(
        "opaque-drops-mode-bits",
        f"import_opaque: {_SAME_STATE}; the blob leaves out KP_MODE_BITS (the import gets 8)",
        _lossy(lambda s: attrs.evolve(s, mode_bits=8)),
    ),
    _m(
        "import-adds-export",
        'Our decisions, opaque blobs: "The imported key has exactly the blob\'s permissions" (every OPAQUEKEYBLOB '
        "import gains CRYPT_EXPORT)",
        _ImportAddsExport,
    ),
    _m(
        "exportable-flag-adds-export",
        "Our decisions, opaque blobs: \"The imported key has exactly the blob's permissions: import flags never "
        'add one" (CRYPT_EXPORTABLE on an OPAQUEKEYBLOB import adds CRYPT_EXPORT)',
        _ExportableFlagAddsExport,
    ),
    _m(
        "destroy-deletes-token-object",
        'Our decisions, hardware keys: "CryptDestroyKey, CRYPT_DESTROYKEY and CryptReleaseContext release the '
        'handle and never delete the token object"',
        _DestroyDeletesTokenObject,
    ),
    _m(
        "destroy-keeps-handle",
        'Lifecycle: "DESTROYED and HARDWARE_PINNED are handle ends: every call on such a handle is NTE_BAD_KEY" '
        "(CryptDestroyKey leaves the handle usable)",
        _DestroyKeepsHandle,
    ),
    _m(
        "handles-recycled",
        "Our decisions, handles: \"Never reused: a stale handle can never reach a newer key (Wine's LIFO free "
        'list can)"',
        _RecyclesHandles,
    ),
    _m(
        "final-keeps-register",
        'Encrypt and decrypt: "Final resets register := IV"; "RC4: no padding, no length rule; Final only resets '
        'to the key schedule"',
        _FinalKeepsRegister,
    ),
    _m(
        "bad-pad-keeps-register",
        'Encrypt and decrypt: "A bad pad: NTE_BAD_DATA *and* the key resets"',
        _BadPadKeepsRegister,
    ),
    _m(
        "pad-last-byte-only",
        'Encrypt and decrypt: "A bad pad: NTE_BAD_DATA *and* the key resets" (a pad whose last byte is a length '
        "but whose other bytes are wrong is taken)",
        _PadLastByteOnly,
    ),
    _m(
        "cfb-register-from-plaintext",
        'The key state: "a CBC continuation is CBC under IV = register, CFB-8 likewise" (a CFB-8 decrypt keeps the '
        "last block of plaintext as its register, not of ciphertext)",
        _CfbRegisterFromPlaintext,
    ),
    _m(
        "mode-resets-register",
        'set_key_param: "KP_MODE, KP_MODE_BITS and KP_PERMISSIONS never reset the live state" (KP_MODE puts the '
        "register back to the IV)",
        _ModeResetsRegister,
    ),
    _m(
        "effective-keylen-keeps-register",
        'set_key_param: "KP_EFFECTIVE_KEYLEN: RC2 only, else NTE_BAD_TYPE (Wine); 1..1024, else NTE_BAD_DATA '
        '(native). Resets." (the new key schedule continues from the register)',
        _EffectiveKeylenKeepsRegister,
    ),
    _m(
        "permissions-clear-export",
        'set_key_param: "KP_PERMISSIONS: adding CRYPT_EXPORT is NTE_BAD_DATA (reference); clearing it succeeds and '
        'changes nothing" (clearing it removes it)',
        _PermissionsClearExport,
    ),
    _m(
        "key-param-answered-once",
        'get_key_param: "KP_IV is the IV as last set, not the live register" (a parameter read once keeps that '
        "answer after set_key_param changes it)",
        _ParamsAnsweredOnce,
    ),
    _m(
        "duplicate-shares-state",
        'duplicate_key: "CryptDuplicateKey: an independent copy of the entire state, live register included"',
        _DuplicateSharesState,
    ),
    _m(
        "export-resets-register",
        'export_key: "Export never disturbs the key"',
        _ExportResetsRegister,
    ),
    _m(
        "imports-share-state",
        'Encrypt and decrypt: "Encrypt and decrypt share one register / stream position per handle"; two imports '
        "of one OPAQUEKEYBLOB are two keys, each with the exported state",
        _ImportsShareState,
    ),
    _m(
        "tampered-last-byte-accepted",
        f"Our decisions, opaque blobs: {_NOT_ISSUED}; a blob whose last byte changed is accepted",
        _sealed_with(lambda inst: _LastByteUncheckedSealer(inst.key(OPAQUE_PURPOSE))),
    ),
    _m(
        "extended-blob-accepted",
        f"Our decisions, opaque blobs: {_NOT_ISSUED}; a blob with bytes appended is accepted",
        _sealed_with(lambda inst: _TrailingBytesIgnoredSealer(inst.key(OPAQUE_PURPOSE))),
    ),
    _m(
        "foreign-blob-accepted",
        'Our decisions, opaque blobs: "the blob is sealed and only this installation opens it"; the sealing key '
        "is the same in every installation",
        _sealed_with(lambda _inst: OpaqueSealer(_SHARED_SEALING_KEY)),
    ),
    _m(
        "plaintext-import-continues",
        'import_plaintext: "A PLAINTEXTKEYBLOB gives a fresh key: its running state is not in the blob" (an import '
        "of a PLAINTEXTKEYBLOB exported from a live key continues its register / RC4 position)",
        _PlaintextImportContinues,
    ),
    _m(
        "set-iv-keeps-register",
        'set_key_param: "KP_IV: exactly one block (RC4: empty, and it restarts the stream, as in Wine). Resets."',
        _SetIvKeepsRegister,
    ),
    _m(
        "stale-handle-wrong-code",
        'Lifecycle: "every call on such a handle is NTE_BAD_KEY" (a destroyed handle answers ERROR_INVALID_HANDLE)',
        _StaleHandleWrongCode,
    ),
    _m(
        "destroykey-flag-ignored",
        'export_key: "Export never disturbs the key (reference); CRYPT_DESTROYKEY then ends it as CryptDestroyKey '
        'would" (the flag is accepted and ignored, as in Wine)',
        _DestroyKeyFlagIgnored,
    ),
    _m(
        "plaintext-export-ignores-permission",
        'export_key: "PLAINTEXTKEYBLOB of a hardware key, or of a key without CRYPT_EXPORT: NTE_BAD_KEY_STATE" '
        "(the permission is not checked, as in Wine)",
        _PlaintextExportIgnoresPermission,
    ),
)


def by_name(name: str) -> Mutant:
    """The mutant called ``name``; ValueError naming the known ones otherwise."""
    for candidate in MUTANTS:
        if candidate.name == name:
            return candidate
    raise ValueError(f"unknown mutant {name!r}; known: {', '.join(m.name for m in MUTANTS)}")


# --- hunting ------------------------------------------------------------------------------------------------


@attrs.frozen
class HuntResult:
    """One run of the lockstep machine against one mutant.

    ``cases`` counts the machine's test cases up to and including the one that caught the mutant (all of them
    when it was not caught); ``steps`` is the length of the minimised reproducer (0 when not caught).
    """

    name: str
    rule: str
    caught: bool
    cases: int
    steps: int
    seconds: float
    message: str
    check: CheckResult = attrs.field(eq=False, repr=False)


class _CaseCounter(io.StringIO):
    """A progress stream that counts the runner's per-test-case ticks (``LockstepMachine.on_start``): it claims to
    be a terminal, so ``run_check``'s progress bar writes once per test case."""

    def __init__(self) -> None:
        super().__init__()
        self.ticks = 0

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text.startswith("\r"):
            self.ticks += 1
        return len(text)


def hunt(
    mutant: Mutant, *, profile: str = "default", seed: int = 0, examples: int | None = None, isolated: bool = True
) -> HuntResult:
    """Run the lockstep machine (no Hypothesis shrinking; the step-deleting minimiser still runs) against
    ``mutant``, every installation in a fresh home under one temporary directory removed afterwards.

    ``isolated`` (the default) runs the hunt in a fresh Python process. Hypothesis seeds its generation with
    constants mined from every local module loaded in the process, so in-process the same seed explores different
    programs under pytest, the CLI or a script, and after other hunts; a fresh process makes the verdict depend on
    ``(mutant, profile, seed, examples)`` alone. A mutant outside :data:`MUTANTS` that cannot be pickled runs
    in-process.
    """
    if isolated:
        request: tuple[str | Mutant, str, int, int | None] | None = None
        if any(candidate is mutant for candidate in MUTANTS):
            request = (mutant.name, profile, seed, examples)
        else:
            with contextlib.suppress(pickle.PicklingError, AttributeError, TypeError):
                pickle.dumps(mutant)
                request = (mutant, profile, seed, examples)
        if request is not None:
            return _hunt_in_child(request)
    return _hunt_here(mutant, profile=profile, seed=seed, examples=examples)


def _hunt_here(mutant: Mutant, *, profile: str, seed: int, examples: int | None) -> HuntResult:
    with tempfile.TemporaryDirectory(prefix="keyhandoff-mutant-", ignore_cleanup_errors=True) as root:
        numbers = itertools.count()

        def factory() -> Target:
            return mutant.factory(Path(root) / f"home-{next(numbers)}")

        counter = _CaseCounter()
        start = time.perf_counter()
        spec = f"mutant:{mutant.name}" if any(m is mutant for m in MUTANTS) else mutant.name  # as load() takes it
        result = run_check(spec, factory, profile=profile, seed=seed, examples=examples, shrink=False, progress=counter)
        seconds = time.perf_counter() - start
    caught = result.failure is not None
    # Hypothesis runs a falsifying test case once more to report it: that last tick is not a new case.
    cases = max(counter.ticks - 1, 1) if caught else counter.ticks
    return HuntResult(
        name=mutant.name,
        rule=mutant.rule,
        caught=caught,
        cases=cases,
        steps=len(result.steps) if caught else 0,
        seconds=seconds,
        message=result.failure.message if result.failure is not None else "",
        check=result,
    )


_CHILD = "import sys; from keyhandoff.mutants import _child_main; _child_main(sys.argv[1])"


def _interrupted(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # as Ctrl-C: Hypothesis lets it through, and every ``with`` cleans up on the way out


def _hunt_in_child(request: tuple[str | Mutant, str, int, int | None]) -> HuntResult:
    with tempfile.TemporaryDirectory(prefix="keyhandoff-hunt-") as exchange:
        folder = Path(exchange)
        (folder / "request.pickle").write_bytes(pickle.dumps(request))
        # The child imports this very keyhandoff, whatever made it importable here.
        package_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
        with subprocess.Popen(
            [sys.executable, "-c", _CHILD, exchange], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        ) as child:
            try:
                _, stderr = child.communicate(timeout=3600)
            except BaseException:  # interrupted, terminated or timed out: the child removes its homes as it goes
                child.terminate()
                try:
                    child.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    child.kill()
                raise
        answer = folder / "result.pickle"
        if child.returncode != 0 or not answer.exists():
            raise RuntimeError(f"the hunt's child process failed ({child.returncode}):\n{stderr[-4000:]}")
        result = pickle.loads(answer.read_bytes())
    if not isinstance(result, HuntResult):
        raise RuntimeError("the hunt's child process answered something else than a HuntResult")
    return result


def _child_main(exchange: str) -> None:
    """The child side of an isolated hunt: read the request, hunt in this process, write the result. SIGTERM
    (the parent interrupted) ends it as Ctrl-C would, so its temporary homes are removed."""
    signal.signal(signal.SIGTERM, _interrupted)
    folder = Path(exchange)
    target, profile, seed, examples = pickle.loads((folder / "request.pickle").read_bytes())
    chosen = by_name(target) if isinstance(target, str) else target
    with contextlib.redirect_stdout(sys.stderr):  # Hypothesis reports falsifying examples on stdout
        result = _hunt_here(chosen, profile=profile, seed=seed, examples=examples)
    (folder / "result.pickle").write_bytes(pickle.dumps(result))
