"""Factories of fresh installations, as the lockstep machine needs (one installation per test case).

Built-in targets get a private temporary home, removed when the target closes (or, failing that, when the
process exits), so a check never touches the user's own installation and leaves none behind; it is a scratch
installation (``durable=False``: nothing fsynced, since no one opens it again). A ``python:`` factory is called
once per test case and must itself return a fresh installation. Targets with a process of their own per
installation (builtin-processes, ``line:``) are made one call ahead, so each process starts while the previous
test case runs; ``release_spare`` ends the last one.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from keyhandoff.target import Target, close_target
from keyhandoff.targets import load

__all__ = ["fresh", "fresh_factory", "release_spare", "temporary_home"]

_HOMES: list[str] = []
_HOMED = ("builtin", "builtin-processes")
_SPARES: list[_OneAhead] = []


def _cleanup() -> None:
    for spare in _SPARES:  # their app processes first: they hold files in the homes
        spare.close()
    for home in _HOMES:
        shutil.rmtree(home, ignore_errors=True)


class _OneAhead:
    """Makes each target one call ahead, so that its process starts while the previous test case runs (the
    machine asks for a new installation per test case, and a new process is a few hundred milliseconds).

    A builtin-processes target only spawns its app process when constructed (nothing waits for it), so it is
    made right here. A line target waits for its peer's ``hello``, so it is made in a worker thread; it shares
    nothing with the target in use. A failure to make the spare is raised by the call that asks for it.

    Calls may come from several threads (``keyhandoff concurrent`` opens foreign installations from its program
    threads): one lock, so that no spare is handed out twice, and none is replaced without being handed out."""

    def __init__(self, make: Callable[[], Target], *, in_thread: bool) -> None:
        self._make = make
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="keyhandoff-ahead") if in_thread else None
        self._next: Future[Target] | None = None
        self._lock = threading.Lock()

    def __call__(self) -> Target:
        with self._lock:
            pending, self._next = self._next, None
            target = pending.result() if pending is not None else self._make()
            self._next = self._start()
            return target

    def _start(self) -> Future[Target]:
        if self._pool is not None:
            return self._pool.submit(self._make)
        made: Future[Target] = Future()
        try:
            made.set_result(self._make())
        except Exception as exc:  # raised when the spare is asked for, like the threaded case
            made.set_exception(exc)
        return made

    def close(self) -> None:
        """Close the spare, if one was made (waiting for it to be made first). The factory stays usable."""
        with self._lock:
            pending, self._next = self._next, None
        if pending is None:
            return
        try:
            spare = pending.result()
        except Exception:  # it never came to be: nothing to close
            return
        spare.close()


atexit.register(_cleanup)


def release_spare(factory: object) -> None:
    """Close the target a factory made one call ahead, if it did (the factory stays usable)."""
    if isinstance(factory, _OneAhead):
        factory.close()


def temporary_home() -> str:
    """A new private installation directory, removed when this process exits."""
    home = tempfile.mkdtemp(prefix="keyhandoff-check-")
    _HOMES.append(home)
    return home


def fresh(spec: str) -> Target:
    """A Target on a new installation of ``spec``: a built-in target as a scratch installation in a private
    temporary home (removed when the target closes, or else when this process exits); any other spec is
    ``load(spec)``, which makes a new one per call (a model, a peer process, a ``python:`` factory by its
    contract, a mutant in a temporary home). Reproducers open their targets with it, as the check did."""
    if spec in _HOMED:
        return load(spec, home=temporary_home(), durable=False, remove_home=True)
    return load(spec)


def fresh_factory(spec: str) -> Callable[[], Target]:
    """A callable returning a new Target (a new installation) for ``spec`` on every call."""
    if spec in _HOMED:
        make = functools.partial(fresh, spec)
        return make if spec != "builtin-processes" else _ahead(make, in_thread=False)
    if spec == "capi" or spec.startswith(
        "capi:"
    ):  # keep Wine's server up for the whole run: a bridge per test case then starts in ~0.03 s
        from keyhandoff.targets.wine import WinePrefix

        WinePrefix.default().hold()  # let go at exit
    close_target(load(spec))  # fail early, with load's message, on an unknown spec
    if spec.startswith("line:"):  # a peer per test case: each starts while the previous test case runs
        return _ahead(lambda: load(spec), in_thread=True)
    return lambda: load(spec)


def _ahead(make: Callable[[], Target], *, in_thread: bool) -> _OneAhead:
    ahead = _OneAhead(make, in_thread=in_thread)
    _SPARES.append(ahead)
    return ahead
