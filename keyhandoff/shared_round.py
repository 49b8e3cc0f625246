"""A round on shared keys: its plan, its calls on the target at once, and what the keys they made answer.

A round's keys are made by a setup program (lockstep steps: the model and the target must agree on it), and each
thread's calls are lockstep steps naming those keys, so a round is also a plain program: its setup, then every
thread's calls one thread after another (:meth:`Plan.sequential`). A call whose answer is a new key
(``export_key``, ``duplicate_key``) is judged by that key: after the round, each exported blob is imported on the
app side and each duplicate used, and what they answer to :func:`probe` (mode, IV, the next ciphertext) is kept
beside the call. Every shared key is probed the same way at the end. The same functions run a call or a probe on
the model, which :mod:`keyhandoff.linearize` does while it searches for an order of the calls.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import attrs

from keyhandoff.lockstep import Divergence, Lockstep, Observed, TargetHung, _observe
from keyhandoff.model import wincrypt as w
from keyhandoff.model.algorithms import ALGORITHMS
from keyhandoff.model.world import World
from keyhandoff.target import Capabilities, Target, TargetUnavailable, close_target
from keyhandoff.targets.model_target import ModelTarget
from keyhandoff.traces import Step

__all__ = [
    "MAKES_KEY",
    "PROBED_PARAMS",
    "Done",
    "History",
    "Plan",
    "RoundSide",
    "RoundStuck",
    "as_int",
    "compared",
    "made_key_probe",
    "perform",
    "plan_round",
    "probe",
    "run_shared_round",
]

T = TypeVar("T")

SWITCH_INTERVAL = 1e-5  # seconds between the interpreter's thread switches during a round (default 5 ms)
PROBED_PARAMS = (w.KP_MODE, w.KP_IV)

# The calls a thread may make on a shared key, with their weights.
_CALL_WEIGHTS = {
    "encrypt": 4,
    "decrypt": 2,
    "set_iv": 2,
    "set_mode": 1,
    "get": 1,
    "export": 2,
    "duplicate": 2,
    "hmac": 1,
}


@attrs.frozen
class Plan:
    """One round: the setup program (lockstep steps; its keys are the shared ones, by index) and each thread's
    calls (lockstep steps naming those keys)."""

    setup: tuple[Step, ...]
    keys: int  # the setup's keys are its first ``keys`` key references
    threads: tuple[tuple[Step, ...], ...]
    # The mode a probe switches a block cipher key to before its last encrypt, so that the register shows even
    # when the key is in ECB (0: none, for a target without CBC).
    register_mode: int = w.CRYPT_MODE_CBC

    def thread_order(self) -> list[tuple[int, int]]:
        """Every call as (thread, index), thread after thread."""
        return [(thread, index) for thread, calls in enumerate(self.threads) for index in range(len(calls))]

    def sequential(self, order: Sequence[tuple[int, int]] | None = None) -> list[Step]:
        """The round as one program: the setup, then its calls one at a time in ``order`` (default: thread after
        thread)."""
        chosen = self.thread_order() if order is None else order
        return [*self.setup, *(self.threads[thread][index] for thread, index in chosen)]

    def is_block_cipher(self, key: int) -> bool:
        """Whether shared key ``key`` (its setup's import) is a block cipher's."""
        imports = [step for step in self.setup if step["op"] == "import_plaintext"]
        alg = imports[key]["alg"]
        return type(alg) is int and alg in ALGORITHMS and ALGORITHMS[alg].block_len > 0


@attrs.frozen
class Done:
    """A call as it happened on the target: when it began and ended (ns, one clock), its answer, and for a call
    that makes a key (export, duplicate) what that key answered to the probe after the round."""

    thread: int
    index: int
    call: Step
    began: int
    ended: int
    answer: Observed
    probe: tuple[Observed, ...] = ()


@attrs.frozen
class History:
    calls: tuple[tuple[Done, ...], ...]  # by thread, in program order
    final: tuple[tuple[Observed, ...], ...]  # each shared key's probe after the round


def _usable_algorithms(caps: Capabilities) -> list[int]:
    return sorted(alg for alg in caps.algorithms if alg in ALGORITHMS)


def plan_round(caps: Capabilities, rng: random.Random, threads: int, calls: int) -> Plan:
    """A round for a target of ``caps`` (:func:`keyhandoff.machine.probed_capabilities` asks an installation for
    them and closes it): one or two keys (imported test keys: both sides know their material;
    some on the secure side, some on the app side, some pinned in hardware), and ``calls`` calls per thread on
    them, drawn from ``rng``. At most one call of the round destroys a key."""
    algorithms = _usable_algorithms(caps)
    if not algorithms:
        raise TargetUnavailable(f"{caps.name} declares no algorithm the model knows")
    setup: list[Step] = [{"op": "acquire", "side": "secure"}, {"op": "acquire", "side": "app"}]
    blocks: list[int] = []
    for index in range(rng.choice((1, 1, 2))):
        info = ALGORITHMS[rng.choice(algorithms)]
        hardware = info.hardware and info.alg in caps.hardware_algorithms and rng.random() < 0.3
        setup.append(
            {
                "op": "import_plaintext",
                "prov": rng.randrange(2),
                "alg": info.alg,
                "seed": rng.randrange(1 << 16),
                "size": info.default_bytes,
                "flags": 0,
                "hardware": hardware,
            }
        )
        modes = sorted(caps.modes)
        if info.block_len and modes and rng.random() < 0.5:
            setup.append({"op": "set_key_param", "key": index, "param": w.KP_MODE, "value": rng.choice(modes)})
        blocks.append(info.block_len)
    weights = dict(_CALL_WEIGHTS)
    if w.OPAQUEKEYBLOB not in caps.blob_types:
        del weights["export"]
    if not caps.duplicate:
        del weights["duplicate"]
    hashes = sorted(caps.hmac_algorithms)
    if not hashes:
        del weights["hmac"]
    plan = [[_call(rng, weights, blocks, sorted(caps.modes), hashes) for _ in range(calls)] for _ in range(threads)]
    if rng.random() < 0.4:  # a destroy racing the other threads' calls: late in its thread, so they overlap it
        chosen = plan[rng.randrange(threads)]
        chosen[rng.randrange(calls // 2, calls)] = {"op": "destroy_key", "key": rng.randrange(len(blocks))}
    register_mode = w.CRYPT_MODE_CBC if w.CRYPT_MODE_CBC in caps.modes else 0
    return Plan(tuple(setup), len(blocks), tuple(tuple(calls) for calls in plan), register_mode)


def _call(rng: random.Random, weights: dict[str, int], blocks: list[int], modes: list[int], hashes: list[int]) -> Step:
    key = rng.randrange(len(blocks))
    block = blocks[key]
    kind = rng.choices(list(weights), list(weights.values()))[0]
    if kind in ("set_iv", "set_mode") and (not block or (kind == "set_mode" and not modes)):  # RC4 has neither
        kind = "encrypt"
    if kind in ("encrypt", "decrypt"):
        final = rng.random() < 0.25
        if not block:
            size = rng.randrange(1, 33)
        elif final and kind == "encrypt":
            size = rng.randrange(0, 2 * block + 1)
        else:
            size = block * rng.randrange(1, 4)
        return {"op": kind, "key": key, "data_hex": rng.randbytes(size).hex(), "final": final}
    if kind == "set_iv":
        return {"op": "set_key_param", "key": key, "param": w.KP_IV, "value_hex": rng.randbytes(block).hex()}
    if kind == "set_mode":
        return {"op": "set_key_param", "key": key, "param": w.KP_MODE, "value": rng.choice(modes)}
    if kind == "get":
        return {"op": "get_key_param", "key": key, "param": rng.choice(PROBED_PARAMS)}
    if kind == "hmac":  # reads the material a racing destroy wipes
        return {"op": "hmac", "key": key, "hash_alg": rng.choice(hashes), "data_hex": rng.randbytes(16).hex()}
    if kind == "export":
        flags = w.CRYPT_DESTROYKEY if rng.random() < 0.15 else 0
        return {"op": "export_key", "key": key, "blob_type": w.OPAQUEKEYBLOB, "flags": flags}
    return {"op": "duplicate_key", "key": key}


# --- calls, on the target or on the model --------------------------------------------------------------------


@attrs.frozen
class RoundSide:
    """One side of a round: the target or the model, the shared keys' handles and the app context there, and
    for each shared key the mode its probe switches to (0: none; see Plan.register_mode)."""

    target: Target
    keys: tuple[int, ...]
    app: int
    register_modes: tuple[int, ...]


MAKES_KEY = frozenset({"export_key", "duplicate_key"})


def perform(side: RoundSide, call: Step, who: str) -> Observed:
    """One call of a thread, as ``who`` (model or target) answers it."""
    t, op = side.target, str(call["op"])
    key = side.keys[as_int(call["key"])]
    line = f"{op} of k{call['key']}"
    if op in ("encrypt", "decrypt"):
        data, final = bytes.fromhex(str(call["data_hex"])), bool(call["final"])
        crypt = t.encrypt if op == "encrypt" else t.decrypt
        return _observe(lambda: crypt(key, data, final), who, line)
    if op == "set_key_param":
        value: bytes | int = bytes.fromhex(str(call["value_hex"])) if "value_hex" in call else as_int(call["value"])
        return _observe(lambda: t.set_key_param(key, as_int(call["param"]), value), who, line)
    if op == "get_key_param":
        return _observe(lambda: t.get_key_param(key, as_int(call["param"])), who, line)
    if op == "export_key":
        return _observe(lambda: t.export_key(key, w.OPAQUEKEYBLOB, flags=as_int(call["flags"])), who, line)
    if op == "duplicate_key":
        return _observe(lambda: t.duplicate_key(key), who, line)
    if op == "destroy_key":
        return _observe(lambda: t.destroy_key(key), who, line)
    if op == "hmac":
        data = bytes.fromhex(str(call["data_hex"]))
        return _observe(lambda: t.hmac(key, as_int(call["hash_alg"]), data), who, line)
    raise ValueError(f"a shared round cannot run a {op!r} call")


def as_int(value: object) -> int:
    if type(value) is not int:
        raise ValueError(f"expected an int in a shared round's call, got {type(value).__name__}")
    return value


def probe(side: RoundSide, handle: int, who: str, key: int) -> tuple[Observed, ...]:
    """What a key (shared key ``key``, or one made from it) answers about its state: its mode and IV, and the
    ciphertext of a fixed 16-byte message, which depends on the material, the register and the stream position;
    then, for a block cipher, it is switched to CBC and encrypts again: in ECB the first ciphertext shows no
    register."""
    t = side.target
    answers = [_observe(_getter(t, handle, param), who, "probe") for param in PROBED_PARAMS]
    answers.append(_observe(lambda: t.encrypt(handle, bytes(range(16)), False), who, "probe"))
    mode = side.register_modes[key]
    if mode:
        answers.append(_observe(lambda: t.set_key_param(handle, w.KP_MODE, mode), who, "probe"))
        answers.append(_observe(lambda: t.encrypt(handle, bytes(range(16)), False), who, "probe"))
    return tuple(answers)


def _getter(target: Target, handle: int, param: int) -> Callable[[], object]:
    return lambda: target.get_key_param(handle, param)


def made_key_probe(side: RoundSide, call: Step, answer: Observed, who: str) -> tuple[Observed, ...]:
    """The probe of the key an export or a duplicate made (an export's blob imported on the app side first)."""
    if not answer.ok or call["op"] not in MAKES_KEY:
        return ()
    key = as_int(call["key"])
    if call["op"] == "duplicate_key":
        return probe(side, as_int(answer.value), who, key)
    blob = answer.value
    imported = _observe(lambda: side.target.import_key(side.app, blob), who, "import of the exported blob")  # type: ignore[arg-type]
    if not imported.ok:
        return (imported,)
    return probe(side, as_int(imported.value), who, key)


def compared(call: Step, answer: Observed) -> Observed:
    """What of an answer must equal the model's: all of it, but the handle or blob of a call that makes a key
    (each side's own), which is judged by its probe."""
    return Observed(code=answer.code) if call["op"] in MAKES_KEY else answer


# --- a round on the target -----------------------------------------------------------------------------------


@contextmanager
def _switching_often() -> Iterator[None]:
    """Threads switch every SWITCH_INTERVAL instead of every 5 ms, so an unlocked read-modify-write in a
    Python CSP is interrupted at all: at the default, each thread would run its few calls in one go."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


class RoundStuck(TargetHung):
    """A round's threads, setup or probes did not finish within its timeout. The threads are left behind (they
    cannot be stopped), and the target is not closed under them."""

    def __init__(self, what: str, timeout: float) -> None:
        super().__init__(what, f"still running after {timeout:g} s: a deadlock, or a call that never returns")


def _call_name(plan: Plan, thread: int, index: int | None) -> str:
    if index is None:
        return "no call yet"
    call = plan.threads[thread][index]
    return f"call {index + 1}, {call['op']} of k{call['key']}"


def _bounded(work: Callable[[], T], deadline: float, phase: str, timeout: float) -> T:
    """``work()`` on a thread of its own, given until ``deadline``: an in-process target's call could otherwise
    hang the run (RoundStuck; the thread is left behind, as a round's are)."""
    result: list[T] = []
    raised: list[BaseException] = []

    def run() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # said in the caller's thread
            raised.append(exc)

    worker = threading.Thread(target=run, daemon=True, name=f"round-{phase}")
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()))
    if worker.is_alive():
        raise RoundStuck(f"the round's {phase}", timeout)
    if raised:
        raise raised[0]
    return result[0]


def _set_up(target: Target, plan: Plan) -> tuple[RoundSide, RoundSide, World]:
    """Run the setup in lockstep (a Divergence there is a plain conformance failure); the two sides of the round."""
    ls = Lockstep(target, shared=True)
    for step in plan.setup:
        ls.apply(step)
    refs = ls.keys[: plan.keys]
    if len(refs) < plan.keys or len(ls.providers) < 2:
        raise ValueError("a shared round's setup makes its keys and the two contexts")
    made = ls.model.world
    modes = tuple(plan.register_mode if plan.is_block_cipher(key) else 0 for key in range(plan.keys))
    model = RoundSide(ModelTarget(), tuple(ref.model for ref in refs), ls.providers[1][0], modes)
    on_target = RoundSide(target, tuple(ref.target for ref in refs), ls.providers[1][1], modes)
    return on_target, model, made


def _issued_once(on_target: RoundSide, done: list[list[Done]]) -> None:
    """Each duplicate's handle is new: not a shared key's, nor another duplicate's (a handle counter without its
    lock issues one twice; the probes could not tell two keys in the same state apart)."""
    seen = {handle: f"k{key}" for key, handle in enumerate(on_target.keys)}
    for thread in done:
        for d in thread:
            if d.call["op"] == "duplicate_key" and d.answer.ok:
                line = f"{d.thread}.{d.index + 1} duplicate_key(k{d.call['key']})"
                handle = as_int(d.answer.value)
                if handle in seen:
                    raise Divergence(line, "a new handle", f"the handle of {seen[handle]}", "a handle issued twice")
                seen[handle] = line


def run_shared_round(
    factory: Callable[[], Target], plan: Plan, timeout: float, *, order: Sequence[tuple[int, int]] | None = None
) -> tuple[History, RoundSide, World]:
    """Run ``plan`` on one new installation: the setup, then every thread's calls at once (or, given ``order``,
    one call at a time in that order), then the probes, all within ``timeout`` seconds (else RoundStuck). The
    history, and the model's side and world after the setup."""
    deadline = time.monotonic() + timeout
    target = factory()
    abandoned = False  # a thread still inside the target: it is not closed under that thread
    try:
        on_target, model, world = _bounded(lambda: _set_up(target, plan), deadline, "setup", timeout)
        done: list[list[Done]] = [[] for _ in plan.threads]
        in_flight: dict[int, int] = {}  # the call each thread is making (or made last), by index

        def call(thread: int, index: int) -> None:
            in_flight[thread] = index
            began = time.perf_counter_ns()
            answer = perform(on_target, plan.threads[thread][index], "target")
            done[thread].append(Done(thread, index, plan.threads[thread][index], began, time.perf_counter_ns(), answer))

        if order is not None:

            def one_at_a_time() -> None:
                for thread, index in order:
                    call(thread, index)

            _bounded(one_at_a_time, deadline, "calls", timeout)
            done = [sorted(calls, key=lambda d: d.index) for calls in done]
        else:
            _at_once(plan, call, in_flight, deadline, timeout)
        _issued_once(on_target, done)

        def probes() -> History:
            calls = tuple(
                tuple(attrs.evolve(d, probe=made_key_probe(on_target, d.call, d.answer, "target")) for d in thread)
                for thread in done
            )
            final = tuple(probe(on_target, handle, "target", key) for key, handle in enumerate(on_target.keys))
            return History(calls, final)

        return _bounded(probes, deadline, "probes", timeout), model, world
    except RoundStuck:
        abandoned = True
        raise
    finally:
        if not abandoned:
            close_target(target)


def _at_once(
    plan: Plan, call: Callable[[int, int], None], in_flight: dict[int, int], deadline: float, timeout: float
) -> None:
    """Every thread's calls, the threads started together; the first exception a thread raised, raised here."""
    start = threading.Barrier(len(plan.threads))
    crashed: list[BaseException] = []

    def run(thread: int) -> None:
        try:
            start.wait(timeout)
            for index in range(len(plan.threads[thread])):
                call(thread, index)
        except BaseException as exc:  # a crash (Divergence), a hang, a broken barrier: the first one is said
            crashed.append(exc)

    with _switching_often():
        workers = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(len(plan.threads))]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
    stuck = [k for k, worker in enumerate(workers) if worker.is_alive()]
    if stuck:  # the threads cannot be stopped, nor the target closed under them
        inside = "; ".join(f"thread {k} in {_call_name(plan, k, in_flight.get(k))}" for k in stuck)
        raise RoundStuck(f"a round of threads on shared keys ({inside})", timeout)
    if crashed:
        raise crashed[0]
