"""The C data path (``impl/_evp.c``): its engine against ``cryptography``'s, call for call; its refusals (its
wipe on a key's death is in test_safety.py); and its fast path in the CSP (installed where it may be, falling
back with nothing touched, waiting for a busy key, collected with its CSP). Where the extension was not built
these skip, and fail under CI=true."""

from __future__ import annotations

import gc
import os
import sys
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from keyhandoff.impl.builtin import BuiltinCsp
from keyhandoff.impl.csp import Csp
from keyhandoff.impl.engines import CryptographyBlockEngine, Engine, software_engine
from keyhandoff.impl.evp import native_evp
from keyhandoff.impl.installation import Installation
from keyhandoff.impl.live_key import LiveKey
from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError
from tests.impl.conftest import plaintext_blob

MODES = (w.CRYPT_MODE_ECB, w.CRYPT_MODE_CBC, w.CRYPT_MODE_CFB)

# (ALG_ID, key bytes, block bytes, the cryptography algorithm the Python engine runs)
CIPHERS: tuple[tuple[int, int, int, Callable[[bytes], object]], ...] = (
    (w.CALG_AES_128, 16, 16, algorithms.AES),
    (w.CALG_AES_192, 24, 16, algorithms.AES),
    (w.CALG_AES_256, 32, 16, algorithms.AES),
    (w.CALG_DES, 8, 8, lambda key: TripleDES(key * 3)),
    (w.CALG_3DES_112, 16, 8, lambda key: TripleDES(key + key[:8])),
    (w.CALG_3DES, 24, 8, TripleDES),
)


@pytest.fixture(scope="module")
def evp() -> ModuleType:
    module = native_evp()
    if module is None:
        pytest.skip("the C extension keyhandoff.impl._evp was not built (a C compiler and OpenSSL's headers)")
    return module


def python_engine(spec: tuple[int, int, int, Callable[[bytes], object]], key: bytes, iv: bytes) -> Engine:
    _, _, block, make = spec
    return CryptographyBlockEngine(lambda: make(key), iv, block)  # type: ignore[arg-type, return-value]


# A step: ("run"|"hot", mode, decrypt, blocks) | ("reset",) | ("clone",) (continue on the clone, as a duplicate).
Step = tuple[object, ...]
steps = st.one_of(
    st.tuples(st.sampled_from(["run", "hot"]), st.sampled_from(MODES), st.booleans(), st.integers(0, 5)),
    st.tuples(st.just("reset")),
    st.tuples(st.just("clone")),
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(CIPHERS), st.lists(steps, min_size=1, max_size=25))
def test_the_c_engine_is_the_python_engine_call_for_call(
    evp: ModuleType, spec: tuple[int, int, int, Callable[[bytes], object]], program: list[Step]
) -> None:
    """Every cipher and mode, directions interleaved on the one register, resets and clones: the same bytes
    and the same register after every step as the ``cryptography`` engine."""
    alg, key_len, block, _ = spec
    key, iv = os.urandom(key_len), os.urandom(block)
    c_engine = software_engine(alg, key, b"", key_len * 8, iv)
    assert type(c_engine) is evp.BlockCipher
    py_engine = python_engine(spec, key, iv)
    for step in program:
        if step[0] == "reset":
            fresh = os.urandom(block)
            c_engine.reset(fresh)
            py_engine.reset(fresh)
        elif step[0] == "clone":
            c_engine, py_engine = c_engine.clone(), py_engine.clone()
        else:
            _, mode, decrypt, count = step
            assert isinstance(mode, int)
            assert isinstance(decrypt, bool)
            assert isinstance(count, int)
            data = os.urandom(count * block)
            if step[0] == "hot" and count:
                got = c_engine.hot(mode, data, decrypt)
            else:
                got = c_engine.run(mode, data, decrypt=decrypt)
            assert got == py_engine.run(mode, data, decrypt=decrypt), step
        assert c_engine.register == py_engine.register, step
    assert (c_engine.stream_pos, c_engine.stream_state) == (0, b"")


def test_a_clone_is_independent(evp: ModuleType) -> None:
    """A clone continues from the state it was made in, and neither moves the other."""
    engine = evp.BlockCipher("AES", bytes(range(16)), bytes(16))
    engine.run(w.CRYPT_MODE_CBC, bytes(32), decrypt=False)
    twin = engine.clone()
    first = engine.run(w.CRYPT_MODE_CBC, bytes(16), decrypt=False)
    assert twin.register != engine.register
    assert twin.run(w.CRYPT_MODE_CBC, bytes(16), decrypt=False) == first
    assert twin.register == engine.register


def test_the_c_engine_takes_any_bytes_like(evp: ModuleType) -> None:
    engine = evp.BlockCipher("DES-EDE3", bytes(24), bytes(8))
    twin = engine.clone()
    data = bytes(range(16))
    assert engine.run(w.CRYPT_MODE_CBC, bytearray(data), decrypt=False) == twin.hot(w.CRYPT_MODE_CBC, data, False)
    engine.reset(memoryview(bytes(8)))
    assert engine.register == bytes(8)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("AES", bytes(15), bytes(16)), ValueError, "16, 24 or 32 bytes"),
        (("AES", bytes(16), bytes(8)), ValueError, "one block"),
        (("DES-EDE3", bytes(16), bytes(8)), ValueError, "24 bytes"),
        (("RC2", bytes(16), bytes(8)), ValueError, "no EVP engine"),
        (("AES", "key", bytes(16)), TypeError, None),
    ],
)
def test_the_c_engine_refuses_bad_construction(
    evp: ModuleType, args: tuple[object, ...], error: type[Exception], message: str | None
) -> None:
    with pytest.raises(error, match=message):
        evp.BlockCipher(*args)


def test_the_c_engine_refuses_what_the_csp_checks_first(evp: ModuleType) -> None:
    """The same programming errors as the Python engine, and a wiped engine runs nothing."""
    engine = evp.BlockCipher("AES", bytes(16), bytes(16))
    for call, match in (
        (lambda: engine.run(w.CRYPT_MODE_CBC, bytes(3), decrypt=False), "whole blocks"),
        (lambda: engine.run(w.CRYPT_MODE_OFB, bytes(16), decrypt=False), "not runnable"),
        (lambda: engine.hot(2**80, bytes(16), False), "too large"),
        (lambda: engine.reset(bytes(8)), "one block"),
    ):
        with pytest.raises((ValueError, OverflowError), match=match):
            call()
    with pytest.raises(TypeError):
        engine.run(w.CRYPT_MODE_CBC, "text", decrypt=False)
    with pytest.raises(TypeError):
        engine.hot(w.CRYPT_MODE_CBC, bytes(16))
    assert engine.run(w.CRYPT_MODE_CBC, b"", decrypt=True) == b""
    engine.wipe()
    for call in (
        lambda: engine.run(w.CRYPT_MODE_CBC, bytes(16), decrypt=False),
        engine.clone,
        lambda: engine.reset(bytes(16)),
    ):
        with pytest.raises(ValueError, match="wiped"):
            call()


def test_no_key_bytes_in_the_repr(evp: ModuleType) -> None:
    key = bytes(range(0x41, 0x51))
    engine = evp.BlockCipher("AES", key, bytes(16))
    text = repr(engine)
    assert text == "<BlockCipher AES-128>"
    assert key.hex() not in text
    assert "ABCD" not in text
    engine.wipe()
    assert repr(engine) == "<BlockCipher AES-128, wiped>"


# --- the fast path in the CSP -------------------------------------------------------------------------------


def test_the_csp_runs_its_data_path_in_c(evp: ModuleType, tmp_path: Path) -> None:
    """The Csp's encrypt/decrypt are the C fast path's methods, and a software AES key has a C engine."""
    with BuiltinCsp(tmp_path / "home") as csp:
        for method in (csp.csp.encrypt, csp.csp.decrypt):
            assert type(getattr(method, "__self__", None)) is evp.FastCrypt
        prov = csp.acquire("secure")
        key = csp.gen_key(prov, w.CALG_AES_256)
        entry = csp.csp._handles.get(key)
        assert isinstance(entry, LiveKey)
        assert type(entry.engine) is evp.BlockCipher


def test_subclasses_keep_their_own_methods(evp: ModuleType, tmp_path: Path) -> None:
    """A subclass overriding encrypt, or the rules the fast path stands for (``_crypt``, as some mutants do),
    gets no C fast path; its methods are called."""
    calls: list[str] = []

    class Wrapped(Csp):
        def encrypt(self, key: int, data: bytes, final: bool) -> bytes:
            calls.append("encrypt")
            return super().encrypt(key, data, final)

    class FullRules(Csp):
        def _crypt(self, key: int, data: bytes, final: bool, *, decrypt: bool) -> bytes:
            calls.append("_crypt")
            return super()._crypt(key, data, final, decrypt=decrypt)

    with Installation(tmp_path / "a") as installation:
        for cls in (Wrapped, FullRules):
            csp = cls(installation)
            assert "encrypt" not in vars(csp)
            key = csp.import_key(csp.acquire("secure"), plaintext_blob(w.CALG_AES_128, bytes(16)))
            csp.encrypt(key, bytes(16), False)
            csp.close()
    assert calls == ["encrypt", "_crypt"]


def test_what_the_c_path_leaves_to_python_gets_the_rules(evp: ModuleType, tmp_path: Path) -> None:
    """Keywords, a bytearray, Final, a refusal, a bool or float handle, a provider handle: the same answers as
    the rules give, through the fallback."""
    with BuiltinCsp(tmp_path / "home") as csp:
        prov = csp.acquire("secure")
        key = csp.import_key(prov, plaintext_blob(w.CALG_AES_128, bytes(16)))
        twin = csp.duplicate_key(key)
        assert csp.encrypt(key=key, data=bytes(16), final=False) == csp.encrypt(twin, bytes(16), False)
        assert csp.encrypt(key, bytearray(16), False) == csp.encrypt(twin, bytes(16), False)
        assert len(csp.encrypt(key, bytes(16), True)) == 32
        for handle, data, code in (
            (key, bytes(15), w.NTE_BAD_DATA),
            (prov, bytes(16), w.NTE_BAD_KEY),
            (True, bytes(16), w.NTE_BAD_KEY),
            (float(key), bytes(16), w.NTE_BAD_KEY),
            (key + 1, bytes(16), w.NTE_BAD_KEY),
        ):
            with pytest.raises(CryptError) as caught:
                csp.decrypt(handle, data, False)
            assert (caught.value.code, caught.value.operation) == (code, "decrypt")
        csp.set_key_param(key, w.KP_MODE, w.CRYPT_MODE_OFB)
        with pytest.raises(CryptError) as caught:
            csp.encrypt(key, bytes(16), False)
        assert caught.value.code == w.NTE_BAD_ALGID
        csp.destroy_key(twin)
        with pytest.raises(CryptError) as caught:
            csp.encrypt(twin, bytes(16), False)
        assert caught.value.code == w.NTE_BAD_KEY


def test_a_busy_key_is_waited_for(evp: ModuleType, tmp_path: Path) -> None:
    """A key whose lock another thread holds (an operation under way) is not run from C: the call waits for the
    lock in the fallback, then runs on the state that operation left."""
    with BuiltinCsp(tmp_path / "home") as csp:
        prov = csp.acquire("secure")
        key = csp.import_key(prov, plaintext_blob(w.CALG_AES_128, bytes(16)))
        reference = csp.duplicate_key(key)
        entry = csp.csp._handles.get(key)
        assert isinstance(entry, LiveKey)
        answers: list[bytes] = []
        entry.lock.acquire()
        try:
            worker = threading.Thread(target=lambda: answers.append(csp.encrypt(key, bytes(16), False)))
            worker.start()
            worker.join(0.3)
            assert worker.is_alive()
            assert not answers
            entry.engine.reset(bytes(range(16)))  # type: ignore[union-attr]  # what the holder does meanwhile
            csp.csp._handles.get(reference).engine.reset(bytes(range(16)))  # type: ignore[union-attr]
        finally:
            entry.lock.release()
        worker.join(10)
        assert answers == [csp.encrypt(reference, bytes(16), False)]


def test_threads_share_a_key_between_the_c_and_python_paths(evp: ModuleType, tmp_path: Path) -> None:
    """6 threads advance one AES-CBC key at once, half through C (bytes) and half through the Python fast path
    (a bytearray, which C hands on): C finds the key's lock free and runs its whole step under the GIL, Python
    holds the lock for its step. Every ciphertext block is the next block of one chain, none twice, none lost:
    exactly what a single thread encrypting the same zeros gets."""
    key_bytes, per_thread, threads = bytes(range(16)), 300, 6
    with BuiltinCsp(tmp_path / "home") as csp:
        prov = csp.acquire("secure")
        key = csp.import_key(prov, plaintext_blob(w.CALG_AES_128, key_bytes))
        iv = csp.get_key_param(key, w.KP_IV)
        assert isinstance(iv, bytes)
        produced: list[list[bytes]] = [[] for _ in range(threads)]
        start = threading.Barrier(threads)

        def worker(index: int) -> None:
            data: bytes | bytearray = bytes(16) if index % 2 else bytearray(16)
            start.wait()
            for _ in range(per_thread):
                produced[index].append(csp.encrypt(key, data, False))  # type: ignore[arg-type]

        workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can: mid-step in Python
        try:
            for thread in workers:
                thread.start()
            for thread in workers:
                thread.join()
        finally:
            sys.setswitchinterval(interval)
        encryptor = Cipher(algorithms.AES(key_bytes), modes.CBC(iv)).encryptor()
        chain = encryptor.update(bytes(16 * per_thread * threads))
        blocks = [chain[i : i + 16] for i in range(0, len(chain), 16)]
        assert sorted(b for made in produced for b in made) == sorted(blocks)
        for made in produced:  # each thread sees its own blocks in chain order
            assert [blocks.index(b) for b in made] == sorted(blocks.index(b) for b in made)
        assert csp.inspect(key).register == blocks[-1]


def test_the_fast_path_goes_with_its_csp(evp: ModuleType, tmp_path: Path) -> None:
    """The CSP and its FastCrypt refer to each other: the cycle is collected."""
    with Installation(tmp_path / "home") as installation:
        csp = Csp(installation)
        gone = weakref.ref(csp)
        csp.close()
        del csp
        gc.collect()
        assert gone() is None


def test_fast_crypt_refuses_what_it_cannot_read(evp: ModuleType) -> None:
    """It reads the key record's slots directly, so it takes only a slots class with object slots."""

    class Plain:
        engine = mode = tombstone = lock = None

    lock_type = type(threading.Lock())
    with pytest.raises(TypeError, match="not an object slot"):
        evp.FastCrypt({}, Plain, lock_type, print, print)
    with pytest.raises(TypeError):
        evp.FastCrypt([], LiveKey, lock_type, print, print)
    with pytest.raises(TypeError, match="callable"):
        evp.FastCrypt({}, LiveKey, lock_type, None, print)
    with pytest.raises(TypeError, match=r"threading\.Lock"):  # it reads what a _thread.lock's locked() means
        evp.FastCrypt({}, LiveKey, type(threading.RLock()), print, print)


def test_under_ci_the_c_data_path_is_built() -> None:
    """CI installs a compiler and OpenSSL's headers (.ci/run); the extension must then be there."""
    if os.environ.get("CI") == "true":
        assert native_evp() is not None, "keyhandoff.impl._evp was not built"
    elif native_evp() is None:
        pytest.skip("the C extension was not built here")
