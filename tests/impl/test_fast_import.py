"""The native import (impl/_import.c, ``FastImport``) against the Python import, blob for blob: the same refusal
(code and operation) or the same key (its whole state, and the bytes it encrypts next). The other side is a Csp
subclass, which never gets the native import, on the same installation (so the same sealing key and token)."""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyhandoff.impl import csp as csp_module
from keyhandoff.impl.blobs import OPAQUE_PURPOSE
from keyhandoff.impl.csp import Csp
from keyhandoff.impl.evp import native_evp
from keyhandoff.impl.handles import HandleTable
from keyhandoff.impl.installation import Installation
from keyhandoff.impl.live_key import LiveKey
from keyhandoff.impl.xaes import Xaes256Gcm
from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError
from tests.impl.conftest import plaintext_blob


class FullImportCsp(Csp):
    """The Python import only: a subclass never gets the native one."""


@pytest.fixture(scope="module", autouse=True)
def _needs_the_extension() -> None:
    if native_evp() is None:  # a skip, which fails the run under CI=true (tests/conftest.py)
        pytest.skip("the C extension keyhandoff.impl._evp was not built")


# (alg, key bytes, what is done to the key before its export) for keys of every kind the import meets.
def _encrypt(n: int) -> Callable[[Csp, int], None]:
    def run(csp: Csp, key: int) -> None:
        csp.encrypt(key, bytes(n), False)

    return run


def _param(param: int, value: bytes | int) -> Callable[[Csp, int], None]:
    return lambda csp, key: csp.set_key_param(key, param, value)


def _steps(*steps: Callable[[Csp, int], None]) -> Callable[[Csp, int], None]:
    def run(csp: Csp, key: int) -> None:
        for step in steps:
            step(csp, key)

    return run


SOURCES: list[tuple[int, bytes, int, Callable[[Csp, int], None]]] = [
    (w.CALG_AES_128, bytes(range(16)), 0, _encrypt(48)),
    (w.CALG_AES_192, bytes(range(24)), 0, _steps(_param(w.KP_MODE, w.CRYPT_MODE_CFB), _encrypt(32))),
    (w.CALG_AES_256, bytes(range(32)), 0, _steps(_param(w.KP_IV, bytes(range(16))), _encrypt(16))),
    (w.CALG_AES_128, bytes(range(16)), 0, _steps(_param(w.KP_MODE, w.CRYPT_MODE_ECB), _encrypt(32))),
    (w.CALG_AES_128, bytes(16), 0, _param(w.KP_PERMISSIONS, w.CRYPT_ENCRYPT | w.CRYPT_EXPORT)),
    (w.CALG_AES_128, bytes(16), 0, _param(w.KP_MODE, 99)),  # any mode is stored; it fails at use
    (w.CALG_DES, bytes(range(8)), 0, _encrypt(24)),
    (w.CALG_3DES_112, bytes(range(16)), 0, _encrypt(8)),
    (w.CALG_3DES, bytes(range(24)), 0, _steps(_param(w.KP_MODE, w.CRYPT_MODE_CFB), _encrypt(8))),
    (w.CALG_RC2, bytes(range(5)), 0, _encrypt(8)),
    (w.CALG_RC2, bytes(range(16)), 0, _param(w.KP_EFFECTIVE_KEYLEN, 40)),
    (w.CALG_RC4, bytes(range(16)), 0, _encrypt(100)),
    (w.CALG_RC4, bytes(range(3)), w.CRYPT_IPSEC_HMAC_KEY, lambda csp, key: None),
]


class Pair:
    def __init__(self, home: Path) -> None:
        installation = Installation(home)
        self.fast, self.full = Csp(installation), FullImportCsp(installation)
        self.sealing_key = installation.key(OPAQUE_PURPOSE)
        self.secure = self.fast.acquire("secure")
        self.apps = {id(self.fast): self.fast.acquire("app"), id(self.full): self.full.acquire("app")}
        self.blobs: list[bytes] = []
        for alg, material, flags, prepare in SOURCES:
            key = self.fast.import_key(self.secure, plaintext_blob(alg, material), flags=flags | w.CRYPT_EXPORTABLE)
            prepare(self.fast, key)
            self.blobs.append(self.fast.export_key(key, w.OPAQUEKEYBLOB))
        hardware = self.fast.gen_key(self.secure, w.CALG_AES_128, hardware=True)
        self.blobs.append(self.fast.export_key(hardware, w.OPAQUEKEYBLOB))

    def reseal(self, payload: bytes, header: bytes) -> bytes:
        nonce = os.urandom(24)
        return header + nonce + Xaes256Gcm(self.sealing_key).encrypt(nonce, payload, header)

    def payload(self, blob: bytes) -> bytes:
        return Xaes256Gcm(self.sealing_key).decrypt(blob[8:32], blob[32:], blob[:8])

    def outcome(self, csp: Csp, blob: object, prov: object = None, **kwargs: Any) -> tuple[object, ...]:
        """What importing ``blob`` gives: the refusal, or the key's state and what it does next."""
        try:
            key = csp.import_key(self.apps[id(csp)] if prov is None else prov, blob, **kwargs)  # type: ignore[arg-type]
        except CryptError as error:
            return ("refused", error.code, error.operation)
        state = csp.inspect(key)
        try:
            first: object = csp.encrypt(key, bytes(16), False)
        except CryptError as error:
            first = ("refused", error.code)
        after = csp.inspect(key)
        csp.destroy_key(key)
        return ("imported", state, first, after, csp.inspect(key))

    def same(self, blob: object, **kwargs: Any) -> tuple[object, ...]:
        fast, full = self.outcome(self.fast, blob, **kwargs), self.outcome(self.full, blob, **kwargs)
        assert fast == full
        return fast

    def close(self) -> None:
        self.fast.close()
        self.full.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    built = Pair(tmp_path_factory.mktemp("fast-import"))
    yield built
    built.close()


def test_the_native_import_is_installed_on_csp_only(pair: Pair) -> None:
    assert type(pair.fast.import_key).__name__ == "builtin_function_or_method"
    assert "import_key" not in vars(pair.full)


def test_every_kind_of_key_imports_the_same(pair: Pair) -> None:
    """Software block-cipher keys in many states (the native path's), RC2, RC4, an HMAC-only key, a hardware
    key (the Python path's): each the same key either way, and each works."""
    outcomes = [pair.same(blob) for blob in pair.blobs]
    assert all(outcome[0] == "imported" for outcome in outcomes)


def test_the_native_path_takes_what_it_should(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Which imports the native path answers itself: every software AES or DES-family blob, with the argument
    forms a caller uses; the Python import gets the rest (counted through the fallback it was given)."""
    fallback_calls: list[object] = []
    python_import = Csp.import_key

    def counting(self: Csp, prov: int, blob: bytes, **kwargs: Any) -> int:
        fallback_calls.append(blob)
        return python_import(self, prov, blob, **kwargs)

    monkeypatch.setattr(Csp, "import_key", counting)
    local = Pair(tmp_path / "home")  # made after the patch: its fallback counts
    fallback_calls.clear()  # the plaintext imports that made its blobs
    try:
        csp, app = local.fast, local.apps[id(local.fast)]
        python_algs = (w.CALG_RC2, w.CALG_RC4)
        native = [blob for (alg, *_), blob in zip(SOURCES, local.blobs, strict=False) if alg not in python_algs]
        assert len(native) == 9
        for blob in native:
            for kwargs in ({}, {"pub_key": 0, "flags": 0, "hardware": False}, {"flags": w.CRYPT_EXPORTABLE}):
                csp.destroy_key(csp.import_key(app, blob, **kwargs))
        assert fallback_calls == []
        others: list[tuple[object, dict[str, object]]] = [(blob, {}) for blob in local.blobs if blob not in native]
        others += [(bytearray(native[0]), {}), (native[0], {"flags": True}), (native[0], {"pub_key": False})]
        others += [(native[0], {"hardware": 0}), (native[0][:-1], {}), (plaintext_blob(w.CALG_AES_128, bytes(16)), {})]
        for blob, kwargs in others:
            with contextlib.suppress(CryptError):
                csp.destroy_key(csp.import_key(app, blob, **kwargs))  # type: ignore[arg-type]
        assert len(fallback_calls) == len(others)
    finally:
        local.close()


ARGUMENTS: list[dict[str, object]] = [
    {},
    {"flags": w.CRYPT_EXPORTABLE},
    {"flags": w.CRYPT_IPSEC_HMAC_KEY},
    {"flags": True},
    {"flags": 1 << 40},
    {"pub_key": 1},
    {"pub_key": False},
    {"pub_key": 0.0},
    {"pub_key": -(1 << 70)},
    {"hardware": True},
    {"hardware": 0},
    {"hardware": None},
]


# bType, bVersion, reserved, aiKeyAlg: values each field may take instead.
HEADER_VALUES = [
    [0, 1, 8, 9, 255],
    [0, 1, 2, 3],
    [0, 1, 0xFFFF],
    [w.CALG_AES_128, w.CALG_AES_256, w.CALG_3DES, w.CALG_RC4, w.CALG_HMAC, 0, 0xFFFFFFFF],
]


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_mutated_blobs_and_arguments_answer_the_same(pair: Pair, data: st.DataObject) -> None:
    """Authentic seals over mutated payloads (versions, codes, flags, lengths, bounds, the state's fields),
    blobs with bits flipped or cut, headers changed, and every argument form: the same answer either way."""
    blob = data.draw(st.sampled_from(pair.blobs))
    kind = data.draw(st.sampled_from(["payload", "payload", "payload", "flip", "cut", "header", "arguments"]))
    kwargs: dict[str, object] = {}
    if kind == "payload":
        payload = bytearray(pair.payload(blob))
        for _ in range(data.draw(st.integers(1, 3))):
            payload[data.draw(st.integers(0, len(payload) - 1))] = data.draw(st.integers(0, 255))
        if data.draw(st.booleans()):
            payload += data.draw(st.binary(min_size=1, max_size=3))
        blob = pair.reseal(bytes(payload), blob[:8])
    elif kind == "flip":
        index = data.draw(st.integers(0, len(blob) * 8 - 1))
        blob = blob[: index // 8] + bytes([blob[index // 8] ^ (1 << index % 8)]) + blob[index // 8 + 1 :]
    elif kind == "cut":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif kind == "header":
        fields = list(struct.unpack_from("<BBHI", blob))
        index = data.draw(st.integers(0, 3))
        fields[index] = data.draw(st.sampled_from(HEADER_VALUES[index]))
        header = struct.pack("<BBHI", *fields)
        resealed = data.draw(st.booleans())  # sealed under the new header (authentic) or not
        blob = pair.reseal(pair.payload(blob), header) if resealed else header + blob[8:]
    else:
        kwargs = data.draw(st.sampled_from(ARGUMENTS))
    pair.same(blob, **kwargs)


def test_version_1_payloads_and_the_alg_agreement(pair: Pair) -> None:
    """A version 1 payload (the same without the RC4 state) imports the same; a payload whose ALG_ID disagrees
    with its header (both authentic) is refused the same."""
    blob = pair.blobs[0]
    payload = pair.payload(blob)
    assert pair.same(pair.reseal(b"\x01" + payload[1:], blob[:8]))[0] == "imported"
    other = struct.pack("<BBHI", w.OPAQUEKEYBLOB, 2, 0, w.CALG_AES_256)
    assert pair.same(pair.reseal(payload, other)) == ("refused", w.NTE_BAD_DATA, "import_key")


def test_provider_handles(pair: Pair) -> None:
    """A key handle, a released context, values that are not handles: the Python import's codes."""
    blob = pair.blobs[0]
    for csp in (pair.fast, pair.full):
        key = csp.import_key(pair.apps[id(csp)], blob)
        gone = csp.acquire("app")
        csp.release(gone)
        for prov in (key, gone, True, 1 << 80, -1, "app"):
            assert pair.outcome(csp, blob, prov=prov) == ("refused", w.NTE_BAD_UID, "import_key")
        csp.destroy_key(key)


def test_a_native_import_is_registered_like_any_key(pair: Pair) -> None:
    """The handle is the table's (its space), the context owns the key (releasing it ends the key), and destroy
    wipes the material buffer and the engine's key."""
    csp = pair.fast
    prov = csp.acquire("app")
    before = len(csp._handles)
    key = csp.import_key(prov, pair.blobs[0])
    assert len(csp._handles) == before + 1
    entry = csp._handles.get(key)
    assert isinstance(entry, LiveKey)
    material, engine = entry.material, entry.engine
    assert bytes(material) == bytes(range(16))
    assert isinstance(entry.lock, type(threading.Lock()))
    assert entry.fast_block == 16
    csp.release(prov)
    with pytest.raises(CryptError) as dead:
        csp.encrypt(key, bytes(16), False)
    assert dead.value.code == w.NTE_BAD_KEY
    assert bytes(material) == bytes(16)
    assert engine is not None
    assert engine.key_zeroed  # type: ignore[attr-defined]


def test_the_native_registration_issues_as_the_table_does(pair: Pair) -> None:
    """The next handle of the table's sequence, counted, owned by the context; and when the sequence must be
    refilled, the CSP's own registration does it (the import still succeeds, and the next one is native again)."""
    csp = pair.fast
    prov = csp.acquire("app")
    table = csp._handles
    ready = table.sequence.ready
    issued = len(table)
    expected = table.native_issue()[4] | ready[-1]
    key = csp.import_key(prov, pair.blobs[0])
    assert key == expected
    assert len(table) == issued + 1
    assert key in csp._handles.get(prov).keys  # type: ignore[union-attr]
    table.sequence.ready = []  # used up: the Python registration refills it
    refilled = csp.import_key(prov, pair.blobs[0])
    assert len(table.sequence.ready) == 511
    assert refilled in csp._handles.get(prov).keys  # type: ignore[union-attr]
    after = csp.import_key(prov, pair.blobs[0])
    assert len(table.sequence.ready) == 510
    assert len(table) == issued + 3
    assert len({key, refilled, after}) == 3
    csp.release(prov)


@pytest.mark.parametrize("held", ["the CSP's", "the handle table's"])
def test_a_busy_lock_waits_for_its_holder(pair: Pair, held: str) -> None:
    """Another thread holding the CSP's lock or the handle table's (issuing, or retiring a handle): the native
    registration steps aside and the CSP's own waits."""
    csp = pair.fast
    prov = csp.acquire("app")
    answers: list[int] = []
    with csp._lock if held == "the CSP's" else csp._handles._lock:
        worker = threading.Thread(target=lambda: answers.append(csp.import_key(prov, pair.blobs[0])))
        worker.start()
        worker.join(0.2)
        assert worker.is_alive()  # waiting for the lock
    worker.join(10)
    assert len(answers) == 1
    assert answers[0] in csp._handles.get(prov).keys  # type: ignore[union-attr]
    csp.release(prov)


def test_a_context_released_while_importing_kills_the_key(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """A context that dies between the import's checks and its handle (another thread releases it while Python
    code runs mid-import: here a key expansion, as the DES family's are) gives NTE_BAD_UID, and the key dies
    unborn (wiped): the native registration sees the dead context and leaves the key to the CSP's own."""
    born: list[LiveKey] = []
    register = Csp._register

    def recording(self: Csp, key: LiveKey, operation: str, *, provider_gone: int) -> int:
        born.append(key)
        return register(self, key, operation, provider_gone=provider_gone)

    def releasing(key: bytes) -> bytes:
        fresh.release(prov)
        return key

    monkeypatch.setattr(Csp, "_register", recording)
    monkeypatch.setattr(csp_module, "block_cipher_specs", lambda: {w.CALG_AES_128: ("AES", releasing)})
    fresh = Csp(pair.fast._installation)  # its ciphers and registration are the patched ones
    try:
        prov = fresh.acquire("app")
        with pytest.raises(CryptError) as refused:
            fresh.import_key(prov, pair.blobs[0])
        assert (refused.value.code, refused.value.operation) == (w.NTE_BAD_UID, "import_key")
        assert len(born) == 1
        assert not born[0].alive
        assert bytes(born[0].material) == bytes(16)
    finally:
        fresh.close()


def test_fast_import_refuses_what_it_cannot_serve(pair: Pair) -> None:
    evp = native_evp()
    assert evp is not None
    csp = pair.fast
    good: dict[str, Any] = {
        "handles": csp._handles,
        "csp_lock": csp._lock,
        "provider_type": csp_module._Provider,
        "key_type": LiveKey,
        "new_lock": threading.Lock,
        "seal_key": pair.sealing_key,
        "ciphers": {w.CALG_AES_128: ("AES", 16, {16}, None)},
        "software": None,
        "imported": None,
        "register": print,
        "fallback": print,
    }
    evp.FastImport(**good)

    class Record:
        __slots__ = ("alg", "provider")

    class Watched(HandleTable[Any]):
        def __setattr__(self, name: str, value: object) -> None:
            super().__setattr__(name, value)

    for change, error in [
        ({"seal_key": bytes(16)}, ValueError),
        ({"register": None}, ValueError),
        ({"ciphers": {w.CALG_AES_128: ("AES", 12, {16}, None)}}, ValueError),
        ({"ciphers": {w.CALG_AES_128: ("AES", 16, {64}, None)}}, ValueError),
        ({"ciphers": {w.CALG_AES_128: ("AES", 16, {16})}}, TypeError),
        ({"key_type": Record}, TypeError),
        ({"provider_type": Record}, TypeError),
        ({"handles": object()}, AttributeError),
        ({"csp_lock": threading.RLock()}, TypeError),
        ({"handles": Watched(1)}, TypeError),  # Python code would run in the registration's atomic section
    ]:
        with pytest.raises(error):
            evp.FastImport(**{**good, **change})
    assert repr(evp.FastImport(**good)) == "<FastImport>"
