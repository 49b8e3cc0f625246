"""Fixtures for the reference CSP: every installation lives in a pytest temporary directory."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyhandoff.impl.builtin import BuiltinCsp
from keyhandoff.model import wincrypt as w
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
