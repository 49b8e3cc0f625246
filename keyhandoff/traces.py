"""Durable traces: replay a recorded program, shrink it further by deleting steps, print it as a script.

A trace is the JSON list of steps :class:`~keyhandoff.lockstep.Lockstep` recorded. Steps name providers, keys
and blobs by the order they were made, so deleting a step that made a reference renumbers the later uses of
later references, and a deletion that would orphan a use is not tried.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from pathlib import Path

import attrs

from keyhandoff.lockstep import Divergence, Lockstep, Observed, TargetHung, open_lockstep, script_value
from keyhandoff.machine import DEFAULT_KEY_BYTES
from keyhandoff.model import wincrypt as w
from keyhandoff.model.algorithms import ALGORITHMS
from keyhandoff.model.wincrypt import describe_code
from keyhandoff.target import Target, close_target
from keyhandoff.targets import is_spec
from keyhandoff.targets.model_target import ModelTarget

__all__ = ["Failure", "hung_reproducer", "load_trace", "minimize", "replay", "reproducer", "save_trace"]

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
    ls = open_lockstep(factory)
    target = ls.target
    try:
        for index, step in enumerate(steps):
            try:
                ls.apply(step)
                ls.check_invariants()
            except Divergence as div:
                return Failure(index, str(step["op"]), str(div), div.detail), ls
            except TargetHung as hung:  # no answer at all: a failure too, and the rest would wait again
                return Failure(index, str(step["op"]), str(hung), "hung"), ls
            except (IndexError, KeyError, TypeError, ValueError) as exc:  # a trace that does not fit this run
                raise ValueError(f"step {index + 1} ({step.get('op')}) cannot be replayed: {exc}") from None
        return None, ls
    finally:
        ls.close()
        close_target(target)


def _made(steps: list[Step], factory: Callable[[], Target]) -> list[dict[str, int]]:
    """For each step, how many providers, keys and blobs it made (from a replay of the whole trace)."""
    ls = open_lockstep(factory)
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
        close_target(ls.target)
    return counts


def _without(steps: list[Step], made: list[dict[str, int]], start: int, stop: int) -> list[Step] | None:
    """``steps`` minus steps ``start`` to ``stop - 1``, later references renumbered; None if a later step uses
    what they made."""
    kinds = ("providers", "keys", "blobs")
    base = {kind: sum(m[kind] for m in made[:start]) for kind in kinds}
    removed = {kind: sum(m[kind] for m in made[start:stop]) for kind in kinds}
    out: list[Step] = []
    for position, step in enumerate(steps):
        if start <= position < stop:
            continue
        if position >= stop:
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
    """Delete runs of steps while the same kind of failure persists: runs of half the program's length, then of
    a quarter, and so on down to single steps (last first), repeating until a whole pass deletes nothing, so no
    single step can go; then replace generated keys by fixed test keys where the failure survives it.

    A failing program of a few hundred steps mostly holds steps that do not matter: deleting them a run at a time
    takes a few replays where one at a time took one per step (each a replay of the whole program)."""
    steps = steps[: failure.index + 1]
    made = _made(steps, factory)  # what each step makes (renumbering needs it), kept true to steps
    changed = True
    while changed:
        changed = False
        size = max(1, (len(steps) - 1) // 2)
        while size >= 1:
            stop = len(steps) - 1  # the failing step stays
            while stop > 0:
                start = max(0, stop - size)
                candidate = _without(steps, made, start, stop)
                if candidate is not None:
                    try:
                        again, _ = replay(candidate, factory)
                    except (IndexError, ValueError, KeyError):
                        again = None
                    if again is not None and again.same_kind(failure):
                        steps, failure = candidate[: again.index + 1], again
                        made = _made(steps, factory)
                        changed = True
                        stop = min(start, len(steps) - 1)
                        continue
                stop = start
            size //= 2
    return _fix_material(steps, factory, failure)


def reproducer(
    steps: list[Step], spec: str, factory: Callable[[], Target], failure: Failure | None, *, unanswered: str = ""
) -> str:
    """A runnable script against the Target API that asserts the model's answer at every step.

    A step the model refuses is wrapped in ``expect_refusal(code)``; an output the lockstep compares (bytes of a
    key whose material the program fixes, lengths otherwise, a parameter's value) is asserted; a difference seen
    only after the call (a key's state, a reused handle, a lost hardware object) ends the script with the
    assertions the divergence names. Run against the target, the script fails at the divergence; run against the
    model (``fresh('model')``) it passes. A step a declared deviation covers asserts nothing (where it was not sent
    to the target, it stays a comment). With ``unanswered`` (why), the last step is a call the target never
    answered: it is printed bare, after a note that says so.
    """
    body = script_body(steps, spec, factory, failure, unanswered=unanswered)
    text = "\n".join([*factory_stub(spec), f"csp = {opener(spec)}  # a new installation", *body, "csp.close()"])
    return script(text)


def script_body(
    steps: list[Step], spec: str, factory: Callable[[], Target], failure: Failure | None, *, unanswered: str = ""
) -> list[str]:
    """The lines of :func:`reproducer` between opening ``csp`` and closing it: ``steps`` run on a new installation
    of ``factory``, each asserting what the model answers (another installation it opens for foreign blobs is
    closed again at the end)."""
    expected: list[Observed | None] = []
    ls = open_lockstep(factory)
    target = ls.target
    ls.on_step = lambda _step, observed: expected.append(observed)
    body: list[str] = []
    divergence: Divergence | None = None
    other = False  # whether the script has opened another installation (for foreign blobs)
    try:
        for index, step in enumerate(steps):
            seen, before, made = len(expected), +ls.deviations, len(ls.keys)
            try:
                ls.apply(step)
                ls.check_invariants()
            except Divergence as div:
                divergence = div
            except TargetHung as hung:  # (it answered in the run that failed): the call, then nothing more
                divergence = Divergence(hung.step, "an answer", "none", str(hung))
            except (IndexError, KeyError, TypeError, ValueError) as exc:  # a trace that does not fit, as in replay
                raise ValueError(f"step {index + 1} ({step.get('op')}) cannot be replayed: {exc}") from None
            observed = expected[seen] if len(expected) > seen else None
            if step.get("op") == "import_foreign" and not other:
                other = True
                body += [
                    f"other = {opener(spec)}  # another installation: its blobs must not open in this one",
                    "other_prov = other.acquire('secure')",
                ]
            if unanswered and step is steps[-1]:
                body += [_comment(f"the target gives no answer to the next call: {unanswered}"), ls.program[-1]]
                break
            if divergence is not None:
                body.append(_comment(f"model and target differ from the next step on: {divergence}"))
            declared = sorted((ls.deviations - before).keys())
            body += _render(step, ls.program[-1], observed, ls, declared)
            if len(ls.keys) > made and not declared and (divergence is not None or step is steps[-1]):
                body += _fresh_handle(ls)  # where the program ends (elsewhere a declared reuse would stop it)
            if divergence is not None:
                body.extend(divergence.checks)
                break
    finally:
        ls.close()
        close_target(target)
    if failure is not None and divergence is None:  # a target that answers otherwise from run to run
        body.append(_comment(f"the reported run differed at the last step ({failure.message}); this replay did not"))
    if other:
        body.append("other.close()")
    return body


def factory_stub(spec: str) -> list[str]:
    """Where the spec names no target a script can open: a ``new_installation()`` its reader fills in."""
    if is_spec(spec):
        return []
    return [
        f"def new_installation():  # <- your factory ({spec}): a new installation of your CSP on each call",
        '    raise NotImplementedError("return a new installation of your CSP here")',
        "",
        "",
    ]


_DOC = "keyhandoff reproducer: each step asserts what the model answers; run it against the target."


def script(text: str, *, doc: str = _DOC, modules: tuple[str, ...] = ()) -> str:
    """A script's ``text`` under its docstring, the standard ``modules`` it imports and the keyhandoff helpers it
    uses."""
    return "\n".join([*_preamble(text, doc, modules), text]) + "\n"


def hung_reproducer(steps: list[Step], spec: str, hung: TargetHung) -> str:
    """The script of a program whose last call the target never answered: the steps before it as the model
    answers them (replayed on the model alone: the target would hang again), then the call itself."""
    return reproducer(steps, spec, ModelTarget, None, unanswered=str(hung))


def _comment(text: str) -> str:
    """``text`` as one comment line of a script: messages may span lines (Hypothesis's do), and a second line
    outside the comment would make the reproducer unrunnable."""
    return "# " + " ".join(text.split())


def opener(spec: str) -> str:
    """How a script opens a new installation of the target: ``fresh(spec)``, or the reader's own factory."""
    return f"fresh({spec!r})" if is_spec(spec) else "new_installation()"


# What a script body may use, and where it comes from (imported only when used).
_SCRIPT_NAMES = (
    ("expect_refusal", "keyhandoff.expect"),
    ("edit_blob", "keyhandoff.lockstep"),
    ("plaintext_blob", "keyhandoff.lockstep"),
    ("test_key", "keyhandoff.lockstep"),
    ("CryptError", "keyhandoff.model.errors"),
    ("KeyState", "keyhandoff.model.state"),
    ("Lifecycle", "keyhandoff.model.state"),
    ("Location", "keyhandoff.model.state"),
    ("fresh", "keyhandoff.targets.fresh"),
)


def _preamble(body: str, doc: str, modules: tuple[str, ...]) -> list[str]:
    used: dict[str, list[str]] = {}
    for name, module in _SCRIPT_NAMES:
        if re.search(rf"\b{name}\b", body):
            used.setdefault(module, []).append(name)
    return [
        f'"""{doc}"""',
        *(f"import {module}" for module in sorted(modules)),
        *(f"from {module} import {', '.join(names)}" for module, names in sorted(used.items())),
        "",
    ]


def _render(step: Step, line: str, observed: Observed | None, ls: Lockstep, declared: list[str]) -> list[str]:
    """The script lines of one step: the call, asserting what the lockstep compared on it."""
    if declared:  # a declared deviation: the target may answer otherwise, or was not asked
        why = f"declared deviation {', '.join(declared)}"
        if not ls.sent:
            return [f"# not sent to the target ({why}): {line}"]
        return [f"try:  # {why}: the target may answer otherwise", f"    {line}", "except CryptError:", "    pass"]
    if observed is None:
        return [line]
    if _pad_decides(step, observed, ls):
        return [
            "try:  # whether the last block unpads depends on the bytes of a key made anew in each installation",
            f"    {line}",
            "except CryptError as err:",
            f"    assert err.code == {w.NTE_BAD_DATA:#x}, err  # NTE_BAD_DATA, a bad pad (a valid one is right too)",
        ]
    op = step.get("op")
    if not observed.ok:
        refusal = f"with expect_refusal({observed.code or 0:#x}):  # {describe_code(observed.code or 0)}"
        if op == "compare_twins":  # twins are refused alike, and both calls are made
            calls = line.removeprefix("assert ").split("  #")[0].split(" == ")
            return [refusal, f"    {calls[0]}", refusal, f"    {calls[1]}"]
        return [refusal, f"    {line.split(' = ', 1)[1] if ' = csp.' in line else line}"]
    value = observed.value
    if op in ("encrypt", "decrypt", "hmac") and isinstance(value, bytes):
        ref = ls.keys[_index(step, "key")]  # output of a key the program fixes (the model knows its material)
        exact = ref.known and ref.fixed
        return [f"assert {line} == {script_value(value)}" if exact else f"assert len({line}) == {len(value)}"]
    if op == "get_key_param":  # public values (an IV, a salt: the model's are never random); an ALG_ID in hex
        literal = f"{value:#x}" if isinstance(value, int) and step.get("param") in _HEX_PARAMS else None
        return [f"assert {line} == {literal or script_value(value)}"]
    if op == "round_trip" and isinstance(value, bytes):
        sender, receiver = ls.keys[_index(step, "sender")], ls.keys[_index(step, "receiver")]
        fixed = sender.known and receiver.known and sender.fixed and receiver.fixed
        if fixed or value == bytes.fromhex(str(step["data_hex"])):
            return [f"assert {line} == {script_value(value)}"]
    if op == "export_key" and step.get("blob_type") == w.PLAINTEXTKEYBLOB and isinstance(value, bytes):
        name, shown = line.split(" = ", 1)[0], ls.material(value)
        if ls.keys[_index(step, "key")].known:  # a key's bytes: never printed, named as the test key they are
            return [line, f"assert {name} == {shown}" if shown else f"assert len({name}) == {len(value)}"]
    return [line]


def _pad_decides(step: Step, observed: Observed, ls: Lockstep) -> bool:
    """Whether a step's outcome turned on a Final decrypt's padding under a key whose bytes the program does not fix
    (generated, or made from one): in another installation the same call may unpad or not (the lockstep takes
    either, see Lockstep._crypt)."""
    if step.get("op") != "decrypt" or not step.get("final") or observed.code not in (None, w.NTE_BAD_DATA):
        return False
    ref = ls.keys[_index(step, "key")]
    if ref.known and ref.fixed:
        return False
    algorithm = ALGORITHMS.get(ls.model.inspect(ref.model).alg)
    size = len(bytes.fromhex(str(step["data_hex"])))
    return algorithm is not None and algorithm.block_len > 0 and size > 0 and size % algorithm.block_len == 0


def _fresh_handle(ls: Lockstep) -> list[str]:
    """After a step that made a key: it must not have the handle of a key that is dead by now (the lockstep
    compares every new handle with the earlier ones; a stale handle reaching the new key is the defect)."""
    new = ls.keys[-1]
    dead = [ref.name for ref in ls.keys[:-1] if not ref.detached and not ls.model.inspect(ref.model).lifecycle.alive]
    if new.detached or not dead:
        return []
    return [f"assert {new.name} not in ({', '.join(dead)},)  # a new handle, never a dead key's"]


_HEX_PARAMS = (w.KP_ALGID, w.KP_PERMISSIONS)


def _index(step: Step, field: str) -> int:
    value = step[field]
    if not isinstance(value, int):
        raise ValueError(f"a {step.get('op')} step's {field} is a reference number")
    return value


def save_trace(
    path: Path, steps: list[Step], *, spec: str, failure: Failure | None, seed: int | None, **extra: object
) -> None:
    """``steps`` as a trace file; ``extra`` fields go in beside them (a concurrent round's programs)."""
    data = {
        "format": 1,
        "target": spec,
        "seed": seed,
        "failure": attrs.asdict(failure) if failure else None,
        "steps": steps,
        **extra,
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
