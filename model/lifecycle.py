"""The key lifecycle as data: (from-state, operation, condition, to-state).

This table is the single source of the state diagram: the model's operations move a key only through
:func:`advance`, ``docs/model.md`` renders the table, and the conformance tool counts which rows fired.
``None`` as a source means "no key yet" (the operation creates the handle).
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from keyhandoff.model.state import Lifecycle, Location

__all__ = ["TRANSITIONS", "Transition", "advance", "find_transition", "mermaid"]


@attrs.frozen
class Transition:
    source: Lifecycle | None
    operation: str
    condition: str
    target: Lifecycle
    source_note: str  # where the rule comes from

    @property
    def label(self) -> str:
        src = self.source.name if self.source is not None else "[*]"
        cond = f" [{self.condition}]" if self.condition else ""
        return f"{src} --{self.operation}{cond}--> {self.target.name}"


_SEED = "seed (Crossing Process Boundaries)"
_LIVE = (Lifecycle.CREATED, Lifecycle.EXPORTED, Lifecycle.IMPORTED)
_SW = "software"
_HW = "hardware"


def _table() -> tuple[Transition, ...]:
    rows: list[Transition] = [
        Transition(None, "gen_key", _SW, Lifecycle.CREATED, "CryptGenKey doc"),
        Transition(None, "gen_key", _HW, Lifecycle.CREATED, "our decision: hardware placement at creation"),
        Transition(None, "duplicate_key", "", Lifecycle.CREATED, "CryptDuplicateKey doc"),
        Transition(None, "import_key", "OPAQUEKEYBLOB", Lifecycle.IMPORTED, _SEED),
        Transition(None, "import_key", "PLAINTEXTKEYBLOB", Lifecycle.IMPORTED, "CryptImportKey doc"),
    ]
    for live in _LIVE:
        rows += [
            Transition(live, "export_key", "", Lifecycle.EXPORTED, "CryptExportKey doc; export never disturbs"),
            Transition(live, "export_key", f"CRYPT_DESTROYKEY, {_SW}", Lifecycle.DESTROYED, "CryptExportKey doc"),
            Transition(live, "export_key", f"CRYPT_DESTROYKEY, {_HW}", Lifecycle.HARDWARE_PINNED, _SEED),
            Transition(live, "destroy_key", _SW, Lifecycle.DESTROYED, _SEED),
            Transition(live, "destroy_key", _HW, Lifecycle.HARDWARE_PINNED, _SEED),
            Transition(live, "release", _SW, Lifecycle.DESTROYED, "our decision: release destroys the context's keys"),
            Transition(live, "release", _HW, Lifecycle.HARDWARE_PINNED, _SEED),
        ]
    return tuple(rows)


TRANSITIONS: tuple[Transition, ...] = _table()


def location_condition(location: Location) -> str:
    return _HW if location is Location.HARDWARE else _SW


def find_transition(source: Lifecycle | None, operation: str, condition: str = "") -> Transition:
    """The row for this move; a missing row is a bug in the model, never a user error."""
    for row in TRANSITIONS:
        if row.source is source and row.operation == operation and row.condition == condition:
            return row
    raise LookupError(f"no lifecycle transition for {source} --{operation} [{condition}]")


def advance(source: Lifecycle | None, operation: str, condition: str = "") -> tuple[Lifecycle, Transition]:
    row = find_transition(source, operation, condition)
    return row.target, row


def mermaid(rows: Iterable[Transition] = TRANSITIONS) -> str:
    """The table as a Mermaid state diagram (rows with the same ends and operation are merged)."""
    merged: dict[tuple[str, str, str], list[str]] = {}
    for row in rows:
        src = row.source.name if row.source is not None else "[*]"
        merged.setdefault((src, row.target.name, row.operation), []).append(row.condition)
    lines = ["stateDiagram-v2"]
    for (src, dst, op), conds in merged.items():
        shown = [c for c in conds if c]
        label = op + (f" [{' | '.join(shown)}]" if shown else "")
        lines.append(f"    {src} --> {dst}: {label}")
    return "\n".join(lines)
