"""Running a printed reproducer as its user would, with its target swapped for a test factory: where it stops."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from keyhandoff.model.errors import CryptError
from keyhandoff.target import Target
from keyhandoff.targets.line_target import PeerCrashed

MARKER = "# model and target differ from the next step on: "


@attrs.frozen
class Stop:
    """Where a reproducer stopped: the error, its line number (1-based, 0 when it ran to the end) and the line."""

    error: BaseException | None
    lineno: int
    line: str


def run_reproducer(script: str, spec: str, make: Callable[[], Target]) -> Stop:
    """Run ``script`` with every installation it opens (``fresh(spec)``, or ``new_installation()`` where the spec
    names no loadable target) made by ``make`` instead. It must compile; an AssertionError, a CryptError or a
    crash of the CSP (a line peer's) is where it stops, any other exception propagates."""
    source = script.replace(f"fresh({spec!r})", "make()").replace("= new_installation()", "= make()")
    assert source != script, "the reproducer opens no installation"
    code = compile(source, "<reproducer>", "exec")
    try:
        exec(code, {"make": make, "__name__": "reproducer"})  # the script under test
    except (AssertionError, CryptError, PeerCrashed) as error:
        lineno, trace = 0, error.__traceback__
        while trace is not None:
            if trace.tb_frame.f_code.co_filename == "<reproducer>":
                lineno = trace.tb_lineno
            trace = trace.tb_next
        return Stop(error, lineno, source.splitlines()[lineno - 1])
    return Stop(None, 0, "")


def marker_line(script: str) -> int:
    """The 1-based number of the line that says where model and target part (0 when there is none)."""
    return next((n for n, line in enumerate(script.splitlines(), 1) if line.startswith(MARKER)), 0)
