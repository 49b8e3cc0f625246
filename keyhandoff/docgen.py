"""Generated parts of the docs: in ``docs/model.md`` the lifecycle diagram and table and each operation's rules;
in ``docs/findings.md`` each declared deviation of the capi target with its reproducer.

``python -m keyhandoff.docgen docs/model.md`` rewrites the blocks between ``<!-- BEGIN name -->`` and
``<!-- END name -->`` that the file has; ``--check`` exits 1 when the checked-in file is stale (a test runs it).
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from collections.abc import Callable, Sequence

from keyhandoff import model
from keyhandoff.model.lifecycle import TRANSITIONS, mermaid
from keyhandoff.target import Deviation

__all__ = ["OPERATIONS", "main", "render"]

# Target operations that make a key: a deviation retired on one destroys the key only the target made.
_MAKING = frozenset({"gen_key", "import_key", "duplicate_key"})

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


def _findings() -> str:
    from keyhandoff.targets.wine_findings import ADVAPI32_DEVIATIONS, WINE_DEVIATIONS

    return "\n\n".join(_finding(dev) for dev in ADVAPI32_DEVIATIONS + WINE_DEVIATIONS)


def _finding(dev: Deviation) -> str:
    from keyhandoff.targets.model_target import ModelTarget
    from keyhandoff.traces import reproducer

    scope = [f"Operation `{dev.operation}`"]
    if dev.param is not None:
        scope.append(f"parameter {dev.param}")
    if dev.blob_type is not None:
        scope.append(f"blob type {dev.blob_type:#x}")
    if dev.condition:
        scope.append(f"condition `{dev.condition}`")
    if dev.model_rule:
        scope.append(f'model rule "{dev.model_rule}"')
    answers = f"Model: {_answer(dev.model_code)}; target: {_answer(dev.target_code)}."
    if dev.model_code is None and dev.target_code is None:
        answers = "Model and target: success, with a different value or different bytes."
    how = " (not sent in runs)" if dev.not_sent else ""
    if dev.retire and set(dev.operation.split(",")) <= _MAKING:
        how += " (retired: a key only the target made is destroyed; one only the model made goes on alone)"
    elif dev.retire:
        how += " (retired: the key is detached and the model goes on alone)"
    text = f"### {dev.id}\n{dev.description[0].upper()}{dev.description[1:]}.  \n{', '.join(scope)}{how}.  \n"
    text += answers
    if dev.reproducer:
        script = reproducer([dict(step) for step in dev.reproducer], "capi", ModelTarget, None).splitlines()
        opened = next(n for n, line in enumerate(script) if line.startswith("csp = "))
        body = script[opened + 1 : -1]  # between the preamble and close()
        text += "\n\n```python\n" + "\n".join(body) + "\n```"
    return text


def _answer(code: int | None) -> str:
    from keyhandoff.model.wincrypt import describe_code
    from keyhandoff.target import ANY_OUTCOME, ANY_REFUSAL

    if code is None:
        return "success"
    return {ANY_REFUSAL: "any refusal", ANY_OUTCOME: "any outcome"}.get(code) or describe_code(code)


BLOCKS: dict[str, Callable[[], str]] = {
    "diagram": _diagram,
    "table": _table,
    "operations": _operations,
    "findings": _findings,
}


def render(text: str) -> str:
    """``text`` with each generated block it has replaced by its current content (it must have one)."""
    found_any = False
    for name, make in BLOCKS.items():
        begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
        pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
        found = pattern.search(text)
        if found is None:
            continue
        found_any = True
        text = text[: found.start()] + begin + "\n" + make() + "\n" + end + text[found.end() :]
    if not found_any:
        raise ValueError("no generated block in the document")
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
