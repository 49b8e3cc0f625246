"""Generated parts of ``docs/model.md``: the lifecycle diagram and table, and each operation's rules.

``python -m keyhandoff.docgen docs/model.md`` rewrites the blocks between ``<!-- BEGIN name -->`` and
``<!-- END name -->``; ``--check`` exits 1 when the checked-in file is stale (a test runs it).
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from collections.abc import Callable, Sequence

from keyhandoff import model
from keyhandoff.model.lifecycle import TRANSITIONS, mermaid

__all__ = ["OPERATIONS", "main", "render"]

OPERATIONS: tuple[Callable[..., object], ...] = (
    model.acquire,
    model.release,
    model.gen_key,
    model.duplicate_key,
    model.destroy_key,
    model.export_key,
    model.import_key,
    model.blobs._import_plaintext,
    model.blobs._import_opaque,
    model.set_key_param,
    model.get_key_param,
    model.encrypt,
    model.decrypt,
    model.hmac,
    model.delete_token_object,
)


def _diagram() -> str:
    return f"```mermaid\n{mermaid()}\n```"


def _table() -> str:
    rows = ["| from | operation | condition | to | source |", "|---|---|---|---|---|"]
    for row in TRANSITIONS:
        src = row.source.name if row.source is not None else "(none)"
        rows.append(f"| {src} | {row.operation} | {row.condition or '-'} | {row.target.name} | {row.source_note} |")
    return "\n".join(rows)


def _operations() -> str:
    parts = []
    for func in OPERATIONS:
        name = func.__name__.lstrip("_")
        module = func.__module__.removeprefix("keyhandoff.")
        doc = inspect.cleandoc(func.__doc__ or "(undocumented)")
        parts.append(f"### `{name}` ({module})\n\n{doc}")
    crypt_doc = inspect.cleandoc(model.crypt.__doc__ or "")
    parts.append(f"### Encrypt and decrypt: the shared rules ({'model.crypt'})\n\n{crypt_doc}")
    return "\n\n".join(parts)


BLOCKS: dict[str, Callable[[], str]] = {"diagram": _diagram, "table": _table, "operations": _operations}


def render(text: str) -> str:
    """``text`` with every generated block replaced by its current content."""
    for name, make in BLOCKS.items():
        begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
        pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
        found = pattern.search(text)
        if found is None:
            raise ValueError(f"no generated block {name!r} in the document")
        text = text[: found.start()] + begin + "\n" + make() + "\n" + end + text[found.end() :]
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keyhandoff.docgen")
    parser.add_argument("path")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    with open(args.path, encoding="utf-8") as fh:
        current = fh.read()
    fresh = render(current)
    if args.check:
        if fresh != current:
            print(f"{args.path} is stale: run python -m keyhandoff.docgen {args.path}", file=sys.stderr)
            return 1
        return 0
    with open(args.path, "w", encoding="utf-8") as fh:
        fh.write(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
