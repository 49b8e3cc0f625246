"""Factories of fresh installations, as the lockstep machine needs (one installation per test case).

Built-in targets get a private temporary home, removed when the process exits, so a check never touches the
user's own installation. A ``python:`` factory is called once per test case and must itself return a fresh
installation.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable

from keyhandoff.target import Target
from keyhandoff.targets import load

__all__ = ["fresh_factory"]

_HOMES: list[str] = []
_HOMED = ("builtin", "builtin-processes")


def _cleanup() -> None:
    for home in _HOMES:
        shutil.rmtree(home, ignore_errors=True)


atexit.register(_cleanup)


def fresh_factory(spec: str) -> Callable[[], Target]:
    """A callable returning a new Target (a new installation) for ``spec`` on every call."""
    if spec in _HOMED:

        def make() -> Target:
            home = tempfile.mkdtemp(prefix="keyhandoff-check-")
            _HOMES.append(home)
            return load(spec, home=home)

        return make
    if spec == "capi" or spec.startswith(
        "capi:"
    ):  # keep Wine's server up for the whole run: a bridge per test case then starts in ~0.03 s
        from keyhandoff.targets.wine import WinePrefix

        WinePrefix.default().hold()  # let go at exit
    load(spec).close()  # fail early, with load's message, on an unknown spec
    return lambda: load(spec)
