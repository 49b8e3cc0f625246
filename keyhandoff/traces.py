"""Durable traces: replay a recorded program, shrink it further by deleting steps, print it as a script.

A trace is the JSON list of steps :class:`~keyhandoff.lockstep.Lockstep` recorded. Steps name providers, keys
and blobs by the order they were made, so deleting a step that made a reference renumbers the later uses of
later references, and a deletion that would orphan a use is not tried.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path

import attrs

from keyhandoff.lockstep import Divergence, Lockstep, Observed
from keyhandoff.machine import DEFAULT_KEY_BYTES
from keyhandoff.model import wincrypt as w
from keyhandoff.model.wincrypt import describe_code
from keyhandoff.target import Target

__all__ = ["Failure", "load_trace", "minimize", "replay", "reproducer", "save_trace"]

Step = dict[str, object]
_REFS = {
    "prov": "providers",
    "key": "keys",
    "first": "keys",
    "second": "keys",
    "sender": "keys",
    "receiver": "keys",
    "blob": "blobs",
}


@attrs.frozen
class Failure:
    """How a replay ended in a divergence: at which step, on which operation, and what was said."""

    index: int
    op: str
    message: str
    detail: str

    def same_kind(self, other: Failure) -> bool:
        return self.op == other.op and self.detail == other.detail


def replay(steps: list[Step], factory: Callable[[], Target]) -> tuple[Failure | None, Lockstep]:
    """Run ``steps`` on a fresh target; the first divergence (outcome, state) ends it."""
    target = factory()
    ls = Lockstep(target, another=factory)
    try:
        for index, step in enumerate(steps):
            try:
                ls.apply(step)
                ls.check_states()
            except Divergence as div:
                return Failure(index, str(step["op"]), str(div), div.detail), ls
            except (IndexError, KeyError, TypeError, ValueError) as exc:  # a trace that does not fit this run
                raise ValueError(f"step {index + 1} ({step.get('op')}) cannot be replayed: {exc}") from None
        return None, ls
    finally:
        ls.close()
        target.close()


def _made(steps: list[Step], factory: Callable[[], Target]) -> list[dict[str, int]]:
    """For each step, how many providers, keys and blobs it made (from a replay of the whole trace)."""
    ls = Lockstep(factory(), another=factory)
    counts: list[dict[str, int]] = []
    try:
        for step in steps:
            before = {"providers": len(ls.providers), "keys": len(ls.keys), "blobs": len(ls.blobs)}
            with contextlib.suppress(Divergence, IndexError, ValueError):
                ls.apply(step)
            counts.append(
                {
                    k: {"providers": len(ls.providers), "keys": len(ls.keys), "blobs": len(ls.blobs)}[k] - v
                    for k, v in before.items()
                }
            )
    finally:
        ls.close()
        ls.target.close()
    return counts


def _without(steps: list[Step], made: list[dict[str, int]], index: int) -> list[Step] | None:
    """``steps`` minus step ``index``, later references renumbered; None if a later step uses what it made."""
    base = {kind: sum(m[kind] for m in made[:index]) for kind in ("providers", "keys", "blobs")}
    removed = made[index]
    out: list[Step] = []
    for position, step in enumerate(steps):
        if position == index:
            continue
        if position > index:
            step = dict(step)
            for field, kind in _REFS.items():
                value = step.get(field)
                if not isinstance(value, int) or not removed[kind]:
                    continue
                if base[kind] <= value < base[kind] + removed[kind]:
                    return None
                if value >= base[kind] + removed[kind]:
                    step[field] = value - removed[kind]
        out.append(step)
    return out


_DES_FAMILY = (w.CALG_DES, w.CALG_3DES_112, w.CALG_3DES)


def _as_import(step: Step) -> Step | None:
    """The gen_key ``step`` as the import of a fixed test key of the same algorithm and length, if it has one."""
    alg, flags = step.get("alg"), step.get("flags")
    if not isinstance(alg, int) or not isinstance(flags, int) or alg not in DEFAULT_KEY_BYTES:
        return None
    bits = flags >> 16
    size = DEFAULT_KEY_BYTES[alg] if bits == 0 or alg in _DES_FAMILY else bits // 8
    keep = flags & 0x11  # CRYPT_EXPORTABLE | CRYPT_NO_SALT: the flags an import also takes
    return {
        "op": "import_plaintext",
        "prov": step["prov"],
        "alg": alg,
        "seed": 0,
        "size": size,
        "flags": keep,
        "hardware": step.get("hardware", False),
    }


def _fix_material(steps: list[Step], factory: Callable[[], Target], failure: Failure) -> tuple[list[Step], Failure]:
    """Replace generated keys by fixed test keys while the same failure persists: the reproducer then asserts
    exact bytes, run after run."""
    for index, step in enumerate(steps):
        if step.get("op") != "gen_key":
            continue
        replacement = _as_import(step)
        if replacement is None:
            continue
        candidate = [*steps[:index], replacement, *steps[index + 1 :]]
        try:
            again, _ = replay(candidate, factory)
        except ValueError:
            continue
        if again is not None and again.same_kind(failure):
            steps, failure = candidate[: again.index + 1], again
    return steps, failure


def minimize(steps: list[Step], factory: Callable[[], Target], failure: Failure) -> tuple[list[Step], Failure]:
    """Delete steps one at a time (last first) while the same kind of failure persists, repeating until a whole
    pass deletes nothing; then replace generated keys by fixed test keys where the failure survives it."""
    steps = steps[: failure.index + 1]
    changed = True
    while changed:
        changed = False
        index = len(steps) - 2
        while index >= 0:
            candidate = _without(steps, _made(steps, factory), index) if index < len(steps) - 1 else None
            if candidate is not None:
                try:
                    again, _ = replay(candidate, factory)
                except (IndexError, ValueError, KeyError):
                    again = None
                if again is not None and again.same_kind(failure):
                    steps, failure = candidate[: again.index + 1], again
                    changed = True
            index -= 1
    return _fix_material(steps, factory, failure)


def reproducer(steps: list[Step], spec: str, factory: Callable[[], Target], failure: Failure | None) -> str:
    """A runnable script against the Target API that asserts the model's answer at every step.

    A step the model refuses is wrapped in ``expect_refusal(code)``; the ciphertext of a key whose material is
    known is compared with the model's bytes. Run against the target, the script fails at the divergence.
    """
    expected: list[Observed] = []
    target = factory()
    ls = Lockstep(target, another=factory)
    ls.on_step = lambda _step, observed: expected.append(observed)
    try:
        for step in steps:
            try:
                ls.apply(step)
                ls.check_states()
            except Divergence:
                break
    finally:
        ls.close()
        target.close()
    lines = [
        '"""keyhandoff reproducer: each step asserts what the model answers; run it against the target."""',
        "from keyhandoff import targets",
        "from keyhandoff.expect import expect_refusal",
        "from keyhandoff.lockstep import edit_blob, plaintext_blob, test_key  # noqa: F401",
        "",
        f"csp = targets.load({spec!r})",
    ]
    for number, (step, line) in enumerate(zip(steps, ls.program, strict=False)):
        observed = expected[number] if number < len(expected) else None
        lines.extend(_render(step, line, observed, ls))
    if failure is not None:
        lines.append(f"# model and target differ at the last step: {failure.message}")
        if failure.message.startswith("state of "):
            lines.extend(_state_assertions(failure, ls))
    lines.append("csp.close()")
    return "\n".join(lines) + "\n"


def _render(step: Step, line: str, observed: Observed | None, ls: Lockstep) -> list[str]:
    if observed is None or line.startswith(("#", "assert")):
        return [line]
    if not observed.ok:
        code = observed.code or 0
        call = line.split(" = ", 1)[1] if " = csp." in line else line
        return [f"with expect_refusal({code:#x}):  # {describe_code(code)}", f"    {call}"]
    key = step.get("key")
    known = isinstance(key, int) and ls.keys[key].known and ls.keys[key].fixed
    if step.get("op") in ("encrypt", "decrypt", "hmac") and known and isinstance(observed.value, bytes):
        return [f"assert {line} == bytes.fromhex({observed.value.hex()!r})"]
    return [line]


def _state_assertions(failure: Failure, ls: Lockstep) -> list[str]:
    """``assert csp.inspect(k).field == model value`` for each differing field that is not secret."""
    name = failure.message.split()[2].rstrip(":")
    ref = next((r for r in ls.keys if r.name == name), None)
    if ref is None:
        return []
    state = ls.model.inspect(ref.model)
    fields = [f.strip() for f in failure.detail.removeprefix("fields differ:").split(",")]
    out = []
    for field in fields:
        if field in ("key", "salt"):
            out.append(f"# {field} differs (secret: not printed)")
        elif field == "register" and not ref.fixed:
            out.append("# register differs (it depends on generated material: compare inspect() by hand)")
        elif hasattr(state, field):
            out.append(f"assert csp.inspect({name}).{field} == {getattr(state, field)!r}  # the model's value")
    return out


def save_trace(path: Path, steps: list[Step], *, spec: str, failure: Failure | None, seed: int | None) -> None:
    data = {
        "format": 1,
        "target": spec,
        "seed": seed,
        "failure": attrs.asdict(failure) if failure else None,
        "steps": steps,
    }
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def load_trace(path: Path) -> tuple[list[Step], dict[str, object]]:
    """The steps and the whole record of a trace :func:`save_trace` wrote. A file that is not one is ValueError
    (a step that does not fit is found by :func:`replay`); a file that cannot be read is OSError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a keyhandoff trace ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != 1:
        raise ValueError(f"{path}: not a keyhandoff trace (format 1)")
    steps = data.get("steps")
    if not isinstance(steps, list) or not all(isinstance(step, dict) and "op" in step for step in steps):
        raise ValueError(f"{path}: a trace's steps are a list of objects, each with an 'op'")
    return steps, data
