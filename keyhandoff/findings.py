"""Replay each declared deviation's reproducer: is the finding still there, and is its declaration needed?

A declaration outlives the bug it describes unless something checks it. For every :class:`Deviation` with a
``reproducer``, :func:`check_findings` runs the program twice on fresh installations of the target:

- *met*: with all of the target's declarations, the program runs without a divergence and this deviation is
  counted. Not met means the target no longer behaves so (fixed upstream, or another version): the declaration
  is stale and would hide a regression; or another declaration matches the same calls first (shadowed).
- *needed*: with this one declaration removed, the program diverges. Not needed means the reproducer does not
  show the difference, or another declaration already covers it.

``keyhandoff findings --target capi`` prints the verdicts; tests/capi requires every one met and needed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import attrs

from keyhandoff.lockstep import Divergence, open_lockstep
from keyhandoff.target import Deviation, Target, close_target, declared_capabilities

__all__ = ["FindingCheck", "check_findings"]


@attrs.frozen
class FindingCheck:
    """The verdict on one declared deviation (``detail`` says what happened; never key bytes).

    ``verdict``: "confirmed" (met, and needed), "stale" (not met: the target no longer shows it), "shadowed"
    (not met because another declaration matches the same calls first), "not needed" (met, but the program
    does not diverge without it) or "diverges" (something undeclared differs on the way)."""

    id: str
    verdict: str
    detail: str

    @property
    def ok(self) -> bool:
        return self.verdict == "confirmed"


def check_findings(factory: Callable[[], Target], ids: Sequence[str] = ()) -> list[FindingCheck]:
    """Check every declared deviation of the target that has a reproducer (or those named in ``ids``)."""
    probe = factory()
    try:
        declared = declared_capabilities(probe).deviations
    finally:
        close_target(probe)
    chosen = [d for d in declared if d.reproducer and (not ids or d.id in ids)]
    unknown = set(ids) - {d.id for d in declared}
    if unknown:
        raise ValueError(f"no declared deviation {', '.join(sorted(unknown))}")
    return [_check(factory, dev) for dev in chosen]


def _check(factory: Callable[[], Target], dev: Deviation) -> FindingCheck:
    with_it = _replay(factory, dev.reproducer, without=())
    if isinstance(with_it, Divergence):
        return FindingCheck(dev.id, "diverges", f"with the declarations: {with_it}")
    if not with_it.get(dev.id):
        others = tuple(k for k, v in with_it.items() if v)
        alone = _replay(factory, dev.reproducer, without=others) if others else None
        if isinstance(alone, dict) and alone.get(dev.id):
            return FindingCheck(dev.id, "shadowed", f"another declaration matches first: {', '.join(others)}")
        return FindingCheck(dev.id, "stale", "not met: the target no longer shows it")
    without = _replay(factory, dev.reproducer, without=(dev.id,))
    if isinstance(without, Divergence):
        return FindingCheck(dev.id, "confirmed", f"without the declaration: {without}")
    others_met = ", ".join(sorted(k for k, v in without.items() if v)) or "none"
    return FindingCheck(dev.id, "not needed", f"no divergence without the declaration (others met: {others_met})")


def _replay(
    factory: Callable[[], Target], steps: Sequence[Mapping[str, object]], without: Sequence[str]
) -> Divergence | dict[str, int]:
    """Run ``steps`` on a fresh installation with the target's declarations but those ``without``; the
    deviations counted, or the divergence that ended it."""
    ls = open_lockstep(factory)
    target = ls.target
    if without:
        caps = ls.capabilities
        ls.capabilities = attrs.evolve(caps, deviations=tuple(d for d in caps.deviations if d.id not in without))
    try:
        for step in steps:
            ls.apply(dict(step))
        return dict(ls.deviations)
    except Divergence as div:
        return div
    finally:
        ls.close()
        close_target(target)
