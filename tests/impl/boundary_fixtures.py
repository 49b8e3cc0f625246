"""Objects served in a child process by the boundary tests (imported there by module path)."""

from __future__ import annotations

import atexit
import os
import threading
import time
from pathlib import Path

from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError


class Echo:
    """Answers, refuses, crashes, hangs or dies on request."""

    def __init__(self) -> None:
        self._stamps: list[float] = []

    def start_ticker(self) -> None:
        """A thread of this process noting the time every 10 ms, for as long as the process lives (each note
        needs the GIL)."""

        def tick() -> None:
            while True:
                time.sleep(0.01)
                self._stamps.append(time.monotonic())

        threading.Thread(target=tick, daemon=True).start()

    def stamps(self) -> list[float]:
        return list(self._stamps)

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

    def zeros(self, size: int) -> bytes:
        return bytes(size)

    def not_plain(self) -> object:
        return object()

    def chatty(self, value: object) -> object:
        print("a stray line on stdout", value)  # must not reach the protocol's pipe
        os.write(1, b"\x00\x00\x00\x05 and raw bytes on fd 1")
        return value

    def bad_key(self) -> None:
        raise CryptError(w.NTE_BAD_KEY, "encrypt")

    def serving_loop(self) -> str:
        """Which loop serves this process: "c" (impl/_frames.c) or "python"."""
        from keyhandoff.impl.child import native_loop

        return "c" if native_loop() is not None else "python"

    def at_exit(self, path: str) -> None:
        """Leave ``path`` behind when the process ends (an exit handler, as served code may register)."""
        atexit.register(Path(path).write_text, "exit handlers ran")


def make_echo() -> Echo:
    return Echo()
