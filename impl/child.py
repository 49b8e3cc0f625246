"""The child end of the process boundary: ``python -m keyhandoff.impl.child MODULE:FACTORY [ARG ...]``.

It builds the served object with ``FACTORY(*ARGS)``, then answers framed requests on stdin with framed replies
on stdout until end of input (see :mod:`keyhandoff.impl.boundary`). Only public methods can be called. A
refusal travels back as its CryptoAPI code; any other exception as its type name only (never its message,
which could hold data).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import marshal
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from keyhandoff.impl.boundary import MAX_FRAME, FrameReader, FrameTooLarge, encode_frame, native_frames, write_all
from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError

__all__ = ["main", "native_loop", "serve"]

_UNSERIALISABLE = encode_frame(("crash", "UnserialisableReply"))
_TOO_LARGE = encode_frame(("err", w.NTE_NO_MEMORY, "the app process's reply: more than one frame carries"))


class _Dispatcher:
    """The served object's public methods, each looked up (and checked) once."""

    def __init__(self, target: object) -> None:
        self._target = target
        self._methods: dict[str, Callable[..., object]] = {}

    def method(self, name: object) -> Callable[..., object] | None:
        if type(name) is not str:
            return None
        func = self._methods.get(name)
        if func is None and not name.startswith("_"):
            found = getattr(self._target, name, None)
            if callable(found):
                func = self._methods[name] = found
        return func

    def reply(self, payload: bytes | bytearray) -> tuple[object, ...]:
        try:
            request = marshal.loads(payload)
        except (EOFError, ValueError, TypeError):
            return ("crash", "MalformedRequest")
        if not (type(request) is tuple and len(request) == 3):
            return ("crash", "MalformedRequest")
        name, args, kwargs = request
        if type(args) is not tuple or type(kwargs) is not dict:
            return ("crash", "MalformedRequest")
        func = self.method(name)
        if func is None:
            return ("crash", "NoSuchMethod")
        try:
            return ("ok", func(*args, **kwargs))
        except CryptError as err:
            return ("err", err.code, err.operation)
        except Exception as exc:  # reported by type only: a message could carry data
            return ("crash", type(exc).__name__)


def native_loop() -> Callable[..., None] | None:
    """The same loop in C (``impl/_frames.c``), or None when it was not built or ``KEYHANDOFF_NATIVE_FRAMES=0``.
    It answers every request exactly as :func:`serve`'s Python loop does, without running Python bytecode of its
    own: a handoff is one round trip, and a process just woken runs Python slowly (docs/benchmarks.md)."""
    frames = native_frames()
    return None if frames is None else frames.serve


def serve(target: object, in_fd: int, out_fd: int) -> None:
    """Answer requests from ``in_fd`` on ``out_fd`` until end of input (or a frame header announcing an absurd
    length), then close the served object if it can be closed."""
    dispatcher = _Dispatcher(target)
    try:
        loop = native_loop()
        if loop is not None:
            loop(in_fd, out_fd, dispatcher.method, CryptError, _UNSERIALISABLE, _TOO_LARGE, MAX_FRAME)
        else:
            _python_loop(dispatcher, in_fd, out_fd)
    finally:
        close = getattr(target, "close", None)
        if callable(close):
            close()


def _python_loop(dispatcher: _Dispatcher, in_fd: int, out_fd: int) -> None:
    reader = FrameReader(in_fd)
    while True:
        try:
            payload = reader.next_payload()
        except FrameTooLarge:
            break
        if payload is None:
            if not reader.fill():
                break
            continue
        try:
            frame = encode_frame(dispatcher.reply(payload))
        except ValueError:  # marshal refused the value (not a plain value)
            frame = _UNSERIALISABLE
        if len(frame) > MAX_FRAME:  # the parent would take it for a corrupt stream (a read: nothing changed)
            frame = _TOO_LARGE
        write_all(out_fd, frame)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or ":" not in args[0]:
        print("usage: python -m keyhandoff.impl.child MODULE:FACTORY [ARG ...]", file=sys.stderr)
        return 2
    # The protocol gets a private copy of stdout; fd 1 becomes stderr, so a stray print in the served code
    # (or a library it loads) cannot corrupt a frame.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    module_name, _, factory_name = args[0].partition(":")
    factory = getattr(importlib.import_module(module_name), factory_name)
    target = factory(*args[1:])
    # What is loaded by now (the modules, the served object) lives as long as the process: the collector need
    # not go through it again on every full collection while serving (a handoff's keys are new objects).
    gc.freeze()
    serve(target, 0, out_fd)
    return 0


def _exit_at_once(status: int) -> NoReturn:
    """End the process once serving is over, without the interpreter's finalization.

    By then the served object is closed (its token's database too), so what finalization would do is tear down
    every module and object one by one: 45 to 50 ms of an app process that has loaded the CSP, on the parent's
    clock, since closing waits for the exit (once per installation a check makes). The exit handlers still run
    and the standard streams are flushed; only that teardown is skipped."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a stream already closed or gone: nothing left to flush
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    _exit_at_once(main())
