"""The child end of the process boundary: ``python -m keyhandoff.impl.child MODULE:FACTORY [ARG ...]``.

It builds the served object with ``FACTORY(*ARGS)``, then answers framed requests on stdin with framed replies
on stdout until end of input (see :mod:`keyhandoff.impl.boundary`). Only public methods can be called. A
refusal travels back as its CryptoAPI code; any other exception as its type name only (never its message,
which could hold data).
"""

from __future__ import annotations

import importlib
import sys
from typing import IO

from keyhandoff.impl.boundary import read_frame, write_frame
from keyhandoff.model.errors import CryptError

__all__ = ["main", "serve"]


def _reply(target: object, request: object) -> tuple[object, ...]:
    if not (isinstance(request, tuple) and len(request) == 3):
        return ("crash", "MalformedRequest")
    method, args, kwargs = request
    if not isinstance(method, str) or method.startswith("_") or not isinstance(args, tuple):
        return ("crash", "MalformedRequest")
    func = getattr(target, method, None)
    if not callable(func) or not isinstance(kwargs, dict):
        return ("crash", "NoSuchMethod")
    try:
        return ("ok", func(*args, **kwargs))
    except CryptError as err:
        return ("err", err.code, err.operation)
    except Exception as exc:  # reported by type only: a message could carry data
        return ("crash", type(exc).__name__)


def serve(target: object, stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """Answer requests until end of input, then close the served object if it can be closed."""
    try:
        while True:
            try:
                request = read_frame(stdin)
            except EOFError:
                break
            reply = _reply(target, request)
            try:
                write_frame(stdout, reply)
            except ValueError:  # marshal refused the value (not a plain value)
                write_frame(stdout, ("crash", "UnserialisableReply"))
    finally:
        close = getattr(target, "close", None)
        if callable(close):
            close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or ":" not in args[0]:
        print("usage: python -m keyhandoff.impl.child MODULE:FACTORY [ARG ...]", file=sys.stderr)
        return 2
    module_name, _, factory_name = args[0].partition(":")
    factory = getattr(importlib.import_module(module_name), factory_name)
    serve(factory(*args[1:]), sys.stdin.buffer, sys.stdout.buffer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
