"""Planted defects the concurrency tests share (test_concurrent, test_shared_keys), and the homes they make.

Each target is the built-in CSP on a temporary home of its own (made with ``remove_home=True``, so a closed one
removes it). A run that deadlocks abandons its targets unclosed: each test module's autouse fixture calls
:func:`remove_homes` after every test.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time

from keyhandoff.targets.builtin_target import BuiltinTarget

_HOMES: list[str] = []


def home() -> str:
    """A temporary home for one target, removed by :func:`remove_homes` if its target does not remove it."""
    made = tempfile.mkdtemp(prefix="keyhandoff-concurrent-test-")
    _HOMES.append(made)
    return made


def remove_homes() -> None:
    while _HOMES:
        shutil.rmtree(_HOMES.pop(), ignore_errors=True)


class WrongAlone(BuiltinTarget):
    """Planted, visible alone too: a Final encrypt answers one byte short."""

    def __init__(self) -> None:
        super().__init__(home(), remove_home=True)

    def encrypt(self, key: int, data: bytes, final: bool) -> bytes:
        out = super().encrypt(key, data, final)
        return out[:-1] if final and out else out


class Deadlocks(BuiltinTarget):
    """Planted: encrypt takes two locks in one order and decrypt in the other (a deadlock in company)."""

    def __init__(self) -> None:
        super().__init__(home(), remove_home=True)
        self.first, self.second = threading.Lock(), threading.Lock()

    def encrypt(self, key: int, data: bytes, final: bool) -> bytes:
        with self.first:
            time.sleep(0.005)
            with self.second:
                return super().encrypt(key, data, final)

    def decrypt(self, key: int, data: bytes, final: bool) -> bytes:
        with self.second:
            time.sleep(0.005)
            with self.first:
                return super().decrypt(key, data, final)
