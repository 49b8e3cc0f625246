"""The ``keyhandoff`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from keyhandoff._version import __version__
from keyhandoff.model.errors import CryptError

__all__ = ["main"]


def _vectors(args: argparse.Namespace) -> int:
    from keyhandoff.targets import load
    from keyhandoff.vectors import load_vectors, matches, run_stream

    target = load(args.target)
    failed = 0
    try:
        for vector in load_vectors(args.file):
            plans: list[tuple[str, dict[str, object]]] = [("whole", {})]
            if len(vector.plaintext) >= 2 * max(vector.block, 1):
                cut = max(vector.block, 1)
                plans.append(("handoff", {"cuts": [cut], "actions": ["handoff"]}))
                if target.capabilities().duplicate:
                    plans.append(("duplicate", {"cuts": [cut], "actions": ["duplicate"]}))
            for label, plan in plans:
                for decrypt in (False, True) if not vector.stream else (False,):
                    name = f"{vector.id} {label} {'decrypt' if decrypt else 'encrypt'}"
                    try:
                        ok = matches(vector, run_stream(target, vector, decrypt=decrypt, **plan), decrypt=decrypt)  # type: ignore[arg-type]
                        detail = "" if ok else "wrong bytes"
                    except CryptError as exc:
                        ok, detail = False, str(exc)
                    failed += not ok
                    print(f"{'ok  ' if ok else 'FAIL'} {name}{'  ' + detail if detail else ''}")
    finally:
        target.close()
    print(f"{failed} failed" if failed else "all vectors passed")
    return 1 if failed else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keyhandoff",
        description="Conformance kit for CryptoAPI session-key lifecycle semantics: checks that a key exported "
        "as an OPAQUEKEYBLOB, destroyed and imported in another process is in exactly the state it had.",
    )
    parser.add_argument("--version", action="version", version=f"keyhandoff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    vec = sub.add_parser("vectors", help="run the known-answer vectors (whole, across a handoff, via a duplicate)")
    vec.add_argument("--target", default="model", help="target spec (default: model)")
    vec.add_argument("--file", default=None, help="a vector file in the kat.json format (default: shipped)")
    vec.set_defaults(func=_vectors)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
