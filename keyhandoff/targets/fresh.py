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

__all__ = ["fresh_factory", "release_spare"]

_HOMES: list[str] = []
_HOMED = ("builtin", "builtin-processes")
_SPARES: list[_OneAhead] = []


def _cleanup() -> None:
    for spare in _SPARES:  # their app processes first: they hold files in the homes
        spare.close()
    for home in _HOMES:
        shutil.rmtree(home, ignore_errors=True)


class _OneAhead:
    """Makes each target one call ahead. A builtin-processes target's app process takes a few hundred
    milliseconds to start (a fresh interpreter importing cryptography), and the machine asks for a new
    installation per test case; made one call ahead, each app process starts while the previous test case runs.
    Constructing the target only spawns the process (nothing waits for it), so this needs no thread."""

    def __init__(self, make: Callable[[], Target]) -> None:
        self._make = make
        self._next: Target | None = None

    def __call__(self) -> Target:
        target = self._next if self._next is not None else self._make()
        self._next = None
        self._next = self._make()
        return target

    def close(self) -> None:
        if self._next is not None:
            self._next.close()
            self._next = None


atexit.register(_cleanup)


def release_spare(factory: object) -> None:
    """Close the target a factory made one call ahead, if it did (the factory stays usable)."""
    if isinstance(factory, _OneAhead):
        factory.close()


def fresh_factory(spec: str) -> Callable[[], Target]:
    """A callable returning a new Target (a new installation) for ``spec`` on every call."""
    if spec in _HOMED:

        def make() -> Target:
            home = tempfile.mkdtemp(prefix="keyhandoff-check-")
            _HOMES.append(home)
            return load(spec, home=home)

        if spec != "builtin-processes":
            return make
        ahead = _OneAhead(make)
        _SPARES.append(ahead)
        return ahead
    if spec == "capi" or spec.startswith(
        "capi:"
    ):  # keep Wine's server up for the whole run: a bridge per test case then starts in ~0.03 s
        from keyhandoff.targets.wine import WinePrefix

        WinePrefix.default().hold()  # let go at exit
    load(spec).close()  # fail early, with load's message, on an unknown spec
    return lambda: load(spec)
