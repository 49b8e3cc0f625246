"""Objects served in a child process by the boundary tests (imported there by module path)."""

from __future__ import annotations

import os
import time

from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError


class Echo:
    """Answers, refuses, crashes, hangs or dies on request."""

    def echo(self, value: object) -> object:
        return value

    def refuse(self, code: int) -> None:
        raise CryptError(code, "refuse")

    def crash(self) -> None:
        raise RuntimeError("secret detail that must not cross")

    def hang(self, seconds: float) -> None:
        time.sleep(seconds)

    def die(self) -> None:
        os._exit(3)

    def pid(self) -> int:
        return os.getpid()

    def not_plain(self) -> object:
        return object()

    def chatty(self, value: object) -> object:
        print("a stray line on stdout", value)  # must not reach the protocol's pipe
        os.write(1, b"\x00\x00\x00\x05 and raw bytes on fd 1")
        return value

    def bad_key(self) -> None:
        raise CryptError(w.NTE_BAD_KEY, "encrypt")


def make_echo() -> Echo:
    return Echo()
