"""Fixtures for the reference CSP: every installation lives in a pytest temporary directory."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keyhandoff.impl import engines, evp
from keyhandoff.impl.builtin import BuiltinCsp
from keyhandoff.impl.evp import native_evp
from keyhandoff.impl.rc4_state import native_rc4
from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError
from keyhandoff.targets import load
from keyhandoff.targets.builtin_target import BuiltinTarget


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh installation directory (never the user data dir)."""
    return tmp_path / "home"


@pytest.fixture
def csp(home: Path) -> Iterator[BuiltinCsp]:
    """A fresh built-in CSP over its own installation."""
    provider = BuiltinCsp(home)
    yield provider
    provider.close()


@pytest.fixture(params=["native", "fallback"])
def rc4_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """RC4 engines on libcrypto's RC4 with a state of our own ("native": exported and restored in O(1)), or on
    cryptography's ARC4 ("fallback": restored by replaying). Native must be there under CI=true."""
    if request.param == "native":
        if native_rc4() is None:
            pytest.skip("libcrypto's RC4 is not usable here (keyhandoff.impl.rc4_state)")
    else:
        monkeypatch.setattr(engines, "native_rc4", lambda: None)
    return str(request.param)


def use_data_path(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """CSPs and engines made from here on run on the C extension's engines and fast path ("c"; a skip where it
    was not built, a failure under CI=true) or on the pure-Python ones ("python", as without the extension)."""
    if kind == "c":
        if native_evp() is None:
            pytest.skip("the C extension keyhandoff.impl._evp was not built (a C compiler and OpenSSL's headers)")
    else:
        monkeypatch.setattr(evp, "_turned_off", True)  # what evp.python_data_path sets, undone after the test


@pytest.fixture(params=["c", "python"])
def data_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test using it runs on both data paths (see ``use_data_path``)."""
    use_data_path(str(request.param), monkeypatch)
    return str(request.param)


@pytest.fixture(scope="module")
def shared_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltinTarget]:
    """One built-in target per module, through the public loader (Hypothesis tests reuse it)."""
    target = load("builtin", home=tmp_path_factory.mktemp("home"))
    assert isinstance(target, BuiltinTarget)
    yield target
    target.close()


def plaintext_blob(alg: int, key: bytes, *, length: int | None = None, trailing: bytes = b"") -> bytes:
    """PLAINTEXTKEYBLOB written by hand from the wincrypt.h layout."""
    size = len(key) if length is None else length
    return struct.pack("<BBHII", w.PLAINTEXTKEYBLOB, 2, 0, alg, size) + key + trailing


def rc4_keystream(key: bytes, count: int) -> bytes:
    """RC4 written out (RFC 6229's algorithm), for key lengths cryptography's ARC4 refuses."""
    table = list(range(256))
    j = 0
    for i in range(256):
        j = (j + table[i] + key[i % len(key)]) % 256
        table[i], table[j] = table[j], table[i]
    i = j = 0
    out = bytearray()
    for _ in range(count):
        i = (i + 1) % 256
        j = (j + table[i]) % 256
        table[i], table[j] = table[j], table[i]
        out.append(table[(table[i] + table[j]) % 256])
    return bytes(out)


# Every path of encrypt/decrypt on an AES-128 hardware key, as (KP_MODE, operation, data, Final): the calls that
# reach the token (whole blocks in ECB, CBC and CFB-8; Final encrypt, padded even when empty; Final decrypt) and
# those that do not (empty non-Final data; a Final decrypt of nothing, ragged data, an unusable mode: refusals).
HARDWARE_CALL_PATHS = [
    (w.CRYPT_MODE_CBC, "encrypt", bytes(16), False),
    (w.CRYPT_MODE_CBC, "encrypt", bytes(5), True),
    (w.CRYPT_MODE_CBC, "encrypt", b"", True),
    (w.CRYPT_MODE_CBC, "decrypt", bytes(32), False),
    (w.CRYPT_MODE_CBC, "decrypt", bytes(16), True),
    (w.CRYPT_MODE_ECB, "encrypt", bytes(16), False),
    (w.CRYPT_MODE_CFB, "encrypt", bytes(16), False),
    (w.CRYPT_MODE_CFB, "decrypt", bytes(16), False),
    (w.CRYPT_MODE_CBC, "encrypt", b"", False),
    (w.CRYPT_MODE_CBC, "decrypt", b"", False),
    (w.CRYPT_MODE_CBC, "decrypt", b"", True),
    (w.CRYPT_MODE_CBC, "encrypt", bytes(5), False),
    (w.CRYPT_MODE_CBC, "decrypt", bytes(5), True),
    (w.CRYPT_MODE_OFB, "encrypt", bytes(16), False),
]


def assert_gone_object_is_not_found(csp: Any, key: int) -> None:
    """Every path of encrypt/decrypt on ``key`` (an AES-128 hardware key whose token object was deleted, here or
    by another process) is CryptError(NTE_NOT_FOUND) under the call's name, and leaves the key's state as it was.
    ``csp`` is a BuiltinCsp or a ProcessCsp."""
    for mode, operation, data, final in HARDWARE_CALL_PATHS:
        csp.set_key_param(key, w.KP_MODE, mode)
        before = csp.inspect(key)
        with pytest.raises(CryptError) as caught:
            getattr(csp, operation)(key, data, final)
        assert (caught.value.code, caught.value.operation) == (w.NTE_NOT_FOUND, operation), (mode, data, final)
        assert csp.inspect(key) == before
