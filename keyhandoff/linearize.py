"""Linearizability: is there an order of a round's calls, respecting their timing, that the model answers alike?

A CSP must make each call atomic, so whatever threads sharing a key do, their answers must be those of *some*
order of the calls in which a call that returned before another began comes first: the calls must be
linearizable (Herlihy and Wing, 1990). The model is a pure function of a world value, so trying orders is cheap:
:func:`linearize` searches them depth first, pruned by every answer, and remembers the states it has already
ruled out (Wing and Gong's algorithm, with Lowe's memo). When none fits, it says the longest order that does and
what each call that could come next would have had to answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from keyhandoff.lockstep import Observed
from keyhandoff.model import wincrypt as w
from keyhandoff.model.world import World
from keyhandoff.shared_round import (
    MAKES_KEY,
    PROBED_PARAMS,
    Done,
    History,
    RoundSide,
    as_int,
    compared,
    made_key_probe,
    perform,
    probe,
)
from keyhandoff.targets.model_target import ModelTarget

__all__ = ["SEARCH_LIMIT", "Linearization", "describe_call", "explain", "linearize"]

SEARCH_LIMIT = 200_000  # states the search may visit for one key of a round before it gives up


@attrs.frozen
class Linearization:
    """The search's verdict on a history: an order that explains every answer, or why none does."""

    order: tuple[Done, ...]  # the order found, or the longest prefix that fits when none does
    ok: bool
    complete: bool = True  # False: the search gave up (SEARCH_LIMIT)
    misfits: tuple[str, ...] = ()  # after the longest prefix: each candidate call and what the model answers
    key: int = 0  # the shared key whose calls no order explains (each key's calls are searched on their own)


# --- how calls and answers are said --------------------------------------------------------------------------


def describe_call(done: Done) -> str:
    call = done.call
    op, key = str(call["op"]), f"k{call['key']}"
    if op in ("encrypt", "decrypt"):
        return f"{op}({key}, {len(str(call['data_hex'])) // 2} bytes, final={call['final']})"
    if op in ("set_key_param", "get_key_param"):
        name = w.KP_NAMES.get(as_int(call["param"]), str(call["param"]))
        return f"{op}({key}, {name})"
    if op == "export_key":
        return f"export_key({key}, OPAQUEKEYBLOB{', CRYPT_DESTROYKEY' if call['flags'] else ''})"
    if op == "hmac":
        hashed = w.ALG_NAMES.get(as_int(call["hash_alg"]), str(call["hash_alg"]))
        return f"hmac({key}, {hashed}, {len(str(call['data_hex'])) // 2} bytes)"
    return f"{op}({key})"


def _label(done: Done) -> str:
    """``T.C``: thread T's call C (both from 0 and 1, as the history lists them)."""
    return f"{done.thread}.{done.index + 1}"


def _where(done: Done) -> str:
    return f"{_label(done)} {describe_call(done)}"


_PROBE_NAMES = (*(w.KP_NAMES[param] for param in PROBED_PARAMS), "then encrypts", "set to CBC", "then encrypts")


def _said(answers: Sequence[Observed]) -> str:
    """A probe's answers, each named (an import that failed is said alone)."""
    if len(answers) == 1:
        return f"its import {answers[0].describe()}"
    return ", ".join(f"{name} {_probed(name, a)}" for name, a in zip(_PROBE_NAMES, answers, strict=False)) or "nothing"


def _probed(name: str, answer: Observed) -> str:
    """One probe answer: a mode by its name, a set that succeeded as "ok", anything else as reports say it."""
    if answer.ok and answer.value is None:
        return "ok"
    if answer.ok and name == "KP_MODE" and type(answer.value) is int and answer.value in w.MODE_NAMES:
        return w.MODE_NAMES[answer.value]
    return answer.describe()


def _outcome(done: Done, answer: Observed) -> str:
    """An answer as compared: a key an export or a duplicate made is "a key" (its handle or blob is each side's)."""
    return "a key" if done.call["op"] in MAKES_KEY and answer.ok else answer.describe()


def _answered(done: Done) -> str:
    if done.call["op"] in MAKES_KEY and done.answer.ok:
        return f"a key ({_said(done.probe)})"
    return done.answer.describe()


# --- the search ----------------------------------------------------------------------------------------------


def linearize(history: History, model: RoundSide, world: World) -> Linearization:
    """An order of the history's calls that respects their timing and in which the model, from ``world`` (the
    setup's), gives every answer and probe the target gave, and ends with the shared keys in the states the
    target's keys were probed in; or the longest prefix of such an order and, after it, what each call that could
    come next would have had to answer.

    Each key is searched on its own: every call names one key and no call's answer depends on another key's
    state, and linearizability is local (Herlihy and Wing: a history is linearizable if and only if each
    object's subhistory is), so the orders found for each key merge into one. Searching them apart keeps the
    search small: two keys' calls never multiply each other's interleavings."""
    order: list[Done] = []
    for key in range(len(model.keys)):
        calls = tuple(tuple(d for d in thread if d.call["key"] == key) for thread in history.calls)
        found = _search(calls, history.final[key], key, model, world)
        if not found.ok:
            return found
        order += found.order
    return Linearization(tuple(order), True)


def _search(
    threads: tuple[tuple[Done, ...], ...], final: tuple[Observed, ...], key: int, model: RoundSide, world: World
) -> Linearization:
    """:func:`linearize` for the calls on shared key ``key`` alone (``final``: its probe after the round)."""
    m = model.target
    assert isinstance(m, ModelTarget)
    handle = model.keys[key]
    failed: set[object] = set()  # (positions, the key's entry) from which no order fits
    order: list[Done] = []
    best: list[Done] = []
    misfits: list[str] = []
    budget = [SEARCH_LIMIT]

    def step(at: World, done: Done) -> tuple[World, str]:
        """The model's world after ``done``'s call, and "" if it answers as the target did (else why not)."""
        m.world = at
        answer = perform(model, done.call, "model")
        after = m.world
        if compared(done.call, answer) != compared(done.call, done.answer):
            why = f"model {_outcome(done, answer)}, target {_outcome(done, done.answer)}"
        else:
            said = made_key_probe(model, done.call, answer, "model")
            why = "" if said == done.probe else f"its key answers: model {_said(said)}, target {_said(done.probe)}"
        m.world = after  # the probe's effects are not the call's
        return after, why

    def finish(at: World) -> str:
        m.world = at
        said = probe(model, handle, "model", key)
        return "" if said == final else f"k{key} at the end: model {_said(said)}, target {_said(final)}"

    def visit(positions: tuple[int, ...], at: World) -> bool:
        budget[0] -= 1
        if budget[0] < 0:
            return False
        pending = [threads[k][p] for k, p in enumerate(positions) if p < len(threads[k])]
        notes: list[str] = []
        if not pending:
            why = finish(at)
            if not why:
                return True
            notes.append(why)
        else:
            memo = (positions, at.keys.get(handle))
            if memo in failed:
                return False
            first_end = min(done.ended for done in pending)
            for done in pending:
                if done.began > first_end:  # another pending call returned before this one began
                    continue
                after, why = step(at, done)
                if why:
                    notes.append(f"{_where(done)}: {why}")
                    continue
                order.append(done)
                moved = tuple(p + (k == done.thread) for k, p in enumerate(positions))
                if visit(moved, after):
                    return True
                order.pop()
            failed.add(memo)
        if len(order) > len(best) or not best:
            best[:], misfits[:] = order, notes
        return False

    ok = visit(tuple(0 for _ in threads), world)
    complete = ok or budget[0] >= 0
    return Linearization(tuple(order if ok else best), ok, complete=complete, misfits=tuple(misfits), key=key)


def explain(history: History, found: Linearization) -> str:
    """A failing round for a report: each call with its timing and answer, each key's final probe, and the
    search's verdict (the longest order that fits, and what each call that could come next would have had to
    answer). Values as reports show them: lengths and digests, never bytes."""
    lines = ["What each call answered (call thread.call, then began .. ended in us from the first call):"]
    zero = min((d.began for calls in history.calls for d in calls), default=0)
    for number, calls in enumerate(history.calls):
        lines.append(f"  thread {number}:")
        for d in calls:
            lines.append(
                f"    call {_label(d):<5} {(d.began - zero) / 1000:9.1f} .. {(d.ended - zero) / 1000:9.1f}  "
                f"{describe_call(d)}: {_answered(d)}"
            )
    for number, said in enumerate(history.final):
        lines.append(f"  k{number} after the round: {_said(said)}")
    if not found.complete:
        lines.append(f"The search gave up after {SEARCH_LIMIT} states of one key: no verdict on this round.")
        return "\n".join(lines)
    total = sum(d.call["key"] == found.key for calls in history.calls for d in calls)
    lines.append(
        f"No order of the {total} calls on k{found.key} that respects their timing gives these answers (each key's "
        f"calls are ordered on their own). The longest order that fits ({len(found.order)} calls, by "
        "thread.call): " + (" ".join(_label(d) for d in found.order) or "none")
    )
    lines.append("After it, nothing fits:" if found.misfits else "")
    lines += [f"  {why}" for why in found.misfits]
    return "\n".join(line for line in lines if line)
