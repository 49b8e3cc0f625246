"""A line-protocol peer in Python: keyhandoff's reference CSP served over stdin/stdout (docs/targets.md).

A peer is what you write to check a CSP that lives outside Python (a C library, a service, another language):
it reads one request per line and answers one line. This one serves keyhandoff's built-in CSP, so that it runs
anywhere; replace the calls on ``csp`` by your CSP's.

Run it:  keyhandoff check --target "line:python docs/examples/line_peer.py"
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable

from keyhandoff import CryptError
from keyhandoff.impl.builtin import BuiltinCsp

ERROR_BAD_FORMAT = 0x0000000B  # a request that is not of the protocol


def _int(field: str) -> int:
    return int(field, 0)


def _bytes(field: str) -> bytes:
    return b"" if field == "-" else bytes.fromhex(field)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.hex() or "-"
    return str(value)


def _answer(value: object) -> str:
    """``ok`` and the results: nothing, one value, or several (a typed parameter value: ``i 5``, ``b 00ff``)."""
    if value is None:
        return "ok"
    values = value if isinstance(value, tuple) else (value,)
    return " ".join(["ok", *(_text(v) for v in values)])


def _typed(value: bytes | int) -> tuple[str, bytes | int]:
    return ("b", value) if isinstance(value, bytes) else ("i", value)


def serve(csp: BuiltinCsp, lines: Iterable[str], write: Callable[[str], object]) -> None:
    """Answer each request line until ``quit`` or the end of input."""
    requests: dict[str, Callable[..., object]] = {
        "acquire": lambda side: csp.acquire(side),
        "release": lambda prov: csp.release(_int(prov)),
        "genkey": lambda prov, alg, flags, hw: csp.gen_key(_int(prov), _int(alg), _int(flags), hardware=hw == "1"),
        "import": lambda prov, pub, flags, hw, blob: csp.import_key(
            _int(prov), _bytes(blob), pub_key=_int(pub), flags=_int(flags), hardware=hw == "1"
        ),
        "export": lambda key, exp, kind, flags: csp.export_key(
            _int(key), _int(kind), exp_key=_int(exp), flags=_int(flags)
        ),
        "destroy": lambda key: csp.destroy_key(_int(key)),
        "dup": lambda key: csp.duplicate_key(_int(key)),
        "setparam": lambda key, param, kind, value: csp.set_key_param(
            _int(key), _int(param), _bytes(value) if kind == "b" else _int(value)
        ),
        "getparam": lambda key, param: _typed(csp.get_key_param(_int(key), _int(param))),
        "encrypt": lambda key, final, data: csp.encrypt(_int(key), _bytes(data), final == "1"),
        "decrypt": lambda key, final, data: csp.decrypt(_int(key), _bytes(data), final == "1"),
        "hmac": lambda key, alg, data: csp.hmac(_int(key), _int(alg), _bytes(data)),
    }
    for line in lines:
        name, *fields = line.split() or [""]
        if name == "hello":
            write("ok 1 python keyhandoff reference CSP over the line protocol")
            continue
        if name == "quit":
            write("ok")
            return
        handler = requests.get(name)
        try:
            if handler is None:
                raise TypeError(name)
            value = handler(*fields)
        except CryptError as err:
            write(f"err 0x{err.code:08x}")
            continue
        except (TypeError, ValueError):  # unknown request, wrong field count, a field that does not parse
            write(f"err 0x{ERROR_BAD_FORMAT:08x}")
            continue
        write(_answer(value))


def main() -> None:
    home = tempfile.mkdtemp(prefix="keyhandoff-line-peer-")  # a fresh installation per peer process
    csp = BuiltinCsp(home)
    try:
        serve(csp, sys.stdin, lambda text: print(text, flush=True))
    finally:
        csp.close()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
