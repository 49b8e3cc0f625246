"""The factory that makes each installation one call ahead, called from several threads at once."""

from __future__ import annotations

import threading
import time

from keyhandoff.targets.fresh import _OneAhead, release_spare


class Made:
    """A stand-in target: counts itself and whether it was closed."""

    def __init__(self, made: list[Made]) -> None:
        self.closed = False
        made.append(self)

    def close(self) -> None:
        self.closed = True


def test_no_installation_is_handed_out_twice_or_lost() -> None:
    """Threads asking at once (the concurrent check's programs open foreign installations) each get their own
    installation, and every one made is handed out or, the spare, closed at release: none is dropped unclosed."""
    made: list[Made] = []

    def make() -> Made:
        time.sleep(0.002)  # a process starting: other threads run meanwhile
        return Made(made)

    factory = _OneAhead(make, in_thread=False)  # type: ignore[arg-type]  # Made is enough of a Target here
    handed: list[object] = []

    def ask() -> None:
        for _ in range(10):
            handed.append(factory())

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    release_spare(factory)
    assert len(handed) == 60
    assert len({id(target) for target in handed}) == 60
    unaccounted = [m for m in made if m not in handed and not m.closed]
    assert unaccounted == []
    assert len(made) == 61  # one spare beyond what was handed out, closed by the release
