"""Concurrent sessions: several random programs at once on one installation, each in lockstep with its own model.

Schannel's application process serves many TLS sessions from many threads, each importing and using keys of its
own. Programs that share no handle commute, so whatever the interleaving, each must get exactly the answers it
gets alone. `keyhandoff concurrent` generates the lockstep machine's programs (against the model, shaped by the
target's capabilities), runs them N at a time, one thread each, on one fresh installation per round, and compares
every answer and key state with the program's own model (:class:`~keyhandoff.lockstep.Lockstep` with
``shared=True``: the token's object count, which is installation-wide, is left out).

A difference is then one of two kinds. The program fails alone too: a plain conformance failure, reported with
the sequential reproducer. Or it fails only in company: a concurrency failure (a race, a shared cache, a lost
update), reported with how often the same round fails again and the programs that make it fail, saved as a trace
that ``keyhandoff replay`` re-runs. A round that does not finish within its timeout is a hang (a deadlock).
"""

from __future__ import annotations

import io
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import attrs
from hypothesis import Phase

from keyhandoff.lockstep import Divergence, Lockstep, TargetHung
from keyhandoff.machine import harness_defect, machine_for, probed_capabilities, run_machine
from keyhandoff.target import Capabilities, InstallationMaker, RunStopped, Target, TargetUnavailable, close_target
from keyhandoff.targets.model_target import ModelTarget
from keyhandoff.traces import (
    Failure,
    Step,
    factory_stub,
    minimize,
    opener,
    replay,
    reproducer,
    save_trace,
    script,
    script_body,
)

__all__ = [
    "ConcurrentFailure",
    "ConcurrentResult",
    "RoundProgress",
    "generate_programs",
    "reruns",
    "run_concurrent",
    "run_round",
    "threaded_reproducer",
    "verdict_text",
]

RERUNS = 5  # re-runs of a failing round: how often it fails, and whether a smaller round still does


class RoundHung(TargetHung):
    """A round's threads did not all finish within the timeout; ``stuck`` are those still running."""

    def __init__(self, programs: int, stuck: list[int], timeout: float) -> None:
        super().__init__(
            f"a round of {programs} programs",
            f"thread(s) {', '.join(map(str, stuck))} still running after {timeout:g} s: a deadlock, or a call that "
            "never returns",
        )
        self.stuck = stuck


class StepNotRunnable(ValueError):
    """A program step the harness itself could not run (a trace edited by hand, or keyhandoff's own fault): no
    verdict on the target."""


@attrs.frozen
class ThreadFailure:
    """One program's failure in a round: which thread, and the replay failure (step, operation, message)."""

    thread: int
    failure: Failure


@attrs.define
class ConcurrentFailure:
    """The first failing round: its programs, the failing thread, and what was learnt about it."""

    programs: list[list[Step]]
    thread: int
    failure: Failure
    alone: Failure | None  # the failing program replayed on its own: None when it passes alone (or hung)
    failed_reruns: int = 0  # of RERUNS re-runs of the (reduced) round
    # The sequential reproducer when the program fails alone; the threaded one of the round when only in company.
    script: str = ""

    @property
    def concurrency(self) -> bool:
        """Whether it fails only in company (a race), not on its own."""
        return self.alone is None and not self.hung

    @property
    def hung(self) -> bool:
        return self.failure.detail == "hung"


@attrs.define
class ConcurrentResult:
    spec: str
    seed: int
    threads: int
    rounds: int
    steps: int = 0  # steps run, all threads together
    seconds: float = 0.0
    failure: ConcurrentFailure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def verdict(self) -> str:
        """passed, or the failure's kind: alone (fails on its own too), concurrency, hung."""
        found = self.failure
        if found is None:
            return "passed"
        return "hung" if found.hung else "concurrency" if found.concurrency else "alone"

    def to_json(self) -> dict[str, object]:
        """The JSON report of ``keyhandoff concurrent --report``."""
        found = self.failure
        return {
            "target": self.spec,
            "seed": self.seed,
            "threads": self.threads,
            "rounds": self.rounds,
            "steps": self.steps,
            "seconds": round(self.seconds, 2),
            "passed": self.ok,
            "verdict": self.verdict,
            "failure": None
            if found is None
            else {
                "thread": found.thread,
                **attrs.asdict(found.failure),
                "failed_reruns": found.failed_reruns if found.concurrency else None,
                "reruns": RERUNS,
                "reproducer": found.script or None,
                "programs": found.programs,
            },
        }


def generate_programs(caps: Capabilities, count: int, steps: int, seed: int) -> list[list[Step]]:
    """Up to ``count`` programs of the lockstep machine for a target of ``caps``: its rules, drawn from ``seed``, run
    against the model alone (fast), kept as their JSON steps. Foreign-blob steps are left in: each program opens
    another installation of its own for them."""

    class Shaped(ModelTarget):
        def capabilities(self) -> Capabilities:
            return caps

    programs: list[list[Step]] = []
    base = machine_for(Shaped, name="Programs")

    class Recording(base):  # type: ignore[valid-type,misc]  # a class machine_for made
        def teardown(self) -> None:
            if any(step["op"] != "acquire" for step in self.ls.trace):  # not only the two opening contexts
                programs.append(list(self.ls.trace))
            super().teardown()

    run_machine(Recording, examples=count, steps=steps, seed=seed, phases=(Phase.generate,))
    return programs[:count]  # (Hypothesis may run a test case or two more than asked)


def run_round(
    factory: Callable[[], Target], programs: list[list[Step]], timeout: float
) -> tuple[list[ThreadFailure], int]:
    """Run ``programs`` at once, one thread each, on one new installation; the failures (by thread) and the steps
    run. A round still running after ``timeout`` seconds raises RoundHung (its threads are left behind); a step
    the harness itself cannot run, StepNotRunnable."""
    target = factory()
    start = threading.Barrier(len(programs))
    failures: list[ThreadFailure] = []
    stopped: list[RunStopped] = []  # a foreign installation that could not be made or ended: no verdict
    done = [0] * len(programs)  # steps each thread ran to the end

    def run(thread: int) -> None:
        program = programs[thread]
        ls: Lockstep | None = None

        def failed(message: str, detail: str) -> None:
            at = done[thread]
            op = str(program[at]["op"]) if at < len(program) else "start"
            failures.append(ThreadFailure(thread, Failure(at, op, message, detail)))

        try:
            ls = Lockstep(target, another=factory, shared=True)
            start.wait(timeout)  # all threads start their first step together
            for step in program:
                ls.apply(step)
                ls.check_invariants()
                done[thread] += 1
        except Divergence as div:
            failed(str(div), div.detail)
        except TargetHung as hung:
            failed(str(hung), "hung")
        except RunStopped as exc:
            stopped.append(exc)
        except Exception as exc:  # a step that cannot run (the harness's fault, said as such), a broken barrier
            failed(f"keyhandoff raised {harness_defect(exc)}", "harness error")
        finally:
            if ls is not None:
                try:
                    ls.close()
                except RunStopped as exc:
                    stopped.append(exc)

    threads = [threading.Thread(target=run, args=(k,), daemon=True, name=f"program-{k}") for k in range(len(programs))]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [k for k, thread in enumerate(threads) if thread.is_alive()]
    if stuck:  # the threads cannot be stopped, nor the target closed under them: both are left as they are
        raise RoundHung(len(programs), stuck, timeout)
    close_target(target)
    if stopped:
        raise stopped[0]
    failures.sort(key=lambda f: f.thread)
    for found in failures:
        if found.failure.detail == "harness error":
            where = f"step {found.failure.index + 1} ({found.failure.op})"
            raise StepNotRunnable(f"thread {found.thread}'s {where} cannot be run: {found.failure.message}")
    return failures, sum(done)


def reruns(
    factory: Callable[[], Target], programs: list[list[Step]], timeout: float
) -> Iterator[list[ThreadFailure] | RoundHung]:
    """How each of RERUNS runs of ``programs`` ended: its failures (none: it passed), or its hang, which is the last
    run (each would leave more threads stuck)."""
    for _ in range(RERUNS):
        try:
            failures, _ = run_round(factory, programs, timeout)
        except RoundHung as hung:
            yield hung
            return
        yield failures


def run_concurrent(
    spec: str,
    factory: Callable[[], Target],
    *,
    threads: int = 4,
    rounds: int = 25,
    steps: int = 30,
    seed: int | None = None,
    timeout: float = 120.0,
    progress: TextIO | None = None,
) -> ConcurrentResult:
    """``rounds`` rounds of ``threads`` programs of up to ``steps`` steps; on a failure, its analysis (alone or
    only in company, re-runs, the smallest set of programs that still fails)."""
    if threads < 2 or rounds < 1 or steps < 1:
        raise ValueError("threads is at least 2, rounds and steps at least 1")
    opened = InstallationMaker(factory)  # a factory failing during the run stops it without a verdict, as in run_check
    try:
        return _run(spec, opened, threads, rounds, steps, seed, timeout, progress)
    except RunStopped as stop:
        raise TargetUnavailable(f"{spec}: the run stopped: {stop}") from stop.__cause__


def _run(
    spec: str,
    factory: Callable[[], Target],
    threads: int,
    rounds: int,
    steps: int,
    seed: int | None,
    timeout: float,
    progress: TextIO | None,
) -> ConcurrentResult:
    caps = probed_capabilities(factory)
    if not caps.concurrent:
        raise TargetUnavailable(
            f"{spec} does not declare concurrent use (Capabilities(concurrent=True)): its calls may not come "
            "from several threads at once"
        )
    seed = seed if seed is not None else random.randrange(1 << 32)
    result = ConcurrentResult(spec, seed, threads, rounds)
    began = time.perf_counter()
    programs = generate_programs(caps, threads * rounds, steps, seed)
    if len(programs) < threads:
        raise TargetUnavailable(f"{spec}: the machine made {len(programs)} programs, fewer than {threads} threads")
    said = RoundProgress(progress, rounds)
    for number in range(rounds):
        batch = [programs[(number * threads + k) % len(programs)] for k in range(threads)]
        said.starting(number)
        try:
            failures, ran = run_round(factory, batch, timeout)
        except RoundHung as hung:  # not re-run: each run could wait as long again, and leave more threads stuck
            found = ConcurrentFailure(batch, hung.stuck[0], Failure(0, "round", str(hung), "hung"), None)
            # Its script is rendered from the model alone (as a sequential hang's is): the target could hang again.
            found.script = threaded_reproducer(batch, found.thread, spec, ModelTarget, timeout=timeout, note=_HUNG_NOTE)
            result.failure = found
            break
        result.steps += ran
        if failures:
            result.failure = _analyse(spec, factory, batch, failures[0], timeout)
            break
    said.ended()
    result.seconds = time.perf_counter() - began
    return result


class RoundProgress:
    """ "round N/M" on ``out`` (if any): one line rewritten on a terminal; elsewhere (a CI log) a line per 10% of
    the rounds, not one run-on line of carriage returns."""

    def __init__(self, out: TextIO | None, rounds: int) -> None:
        self.out, self.rounds = out, rounds
        self.on_terminal = out is not None and out.isatty()

    def starting(self, number: int) -> None:
        """Round ``number`` (from 0) begins."""
        out, rounds = self.out, self.rounds
        if out is not None and (self.on_terminal or 10 * (number + 1) // rounds != 10 * number // rounds):
            out.write(f"\rround {number + 1}/{rounds}" if self.on_terminal else f"round {number + 1}/{rounds}\n")
            out.flush()

    def ended(self) -> None:
        if self.out is not None and self.on_terminal:
            self.out.write("\n")


def _analyse(
    spec: str, factory: Callable[[], Target], batch: list[list[Step]], first: ThreadFailure, timeout: float
) -> ConcurrentFailure:
    program = batch[first.thread][: first.failure.index + 1]  # its later steps cannot have made it fail
    batch = [program if k == first.thread else other for k, other in enumerate(batch)]
    alone, _ = replay(program, factory)
    found = ConcurrentFailure(batch, first.thread, first.failure, alone)
    if alone is not None:  # not about concurrency: the sequential minimiser and reproducer say it best
        steps, failure = minimize(program, factory, alone)
        found.script = reproducer(steps, spec, factory, failure)
        return found
    # Fails only in company. How often a round fails is a rate, not a yes or no: another program is dropped only
    # where the smaller round fails at least as often in as many re-runs, so the saved round stays a good one.
    kept = list(range(len(batch)))
    rate = _failing_reruns(factory, batch, timeout)
    for other in [k for k in range(len(batch)) if k != first.thread]:
        trial = [k for k in kept if k != other]
        if len(trial) < 2:
            continue
        trial_rate = _failing_reruns(factory, [batch[k] for k in trial], timeout)
        if trial_rate >= max(rate, 1):
            kept, rate = trial, trial_rate
    found.programs = [batch[k] for k in kept]
    found.thread = kept.index(first.thread)
    found.failed_reruns = rate
    note = f"the round failed again in {rate} of {RERUNS} re-runs: a race shows in some interleavings only"
    found.script = threaded_reproducer(found.programs, found.thread, spec, factory, timeout=timeout, note=note)
    return found


def _failing_reruns(factory: Callable[[], Target], programs: list[list[Step]], timeout: float) -> int:
    """How many of RERUNS runs of ``programs`` fail (a hang counts, and ends the count)."""
    return sum(isinstance(ended, RoundHung) or bool(ended) for ended in reruns(factory, programs, timeout))


ROUNDS_IN_SCRIPT = 50  # rounds a threaded reproducer runs before it says the failure did not show
_HUNG_NOTE = "the round hung in the run: a deadlock, too, shows in some interleavings only"


# A threaded reproducer after its programs: OPEN_INSTALLATION stands for how it opens a new installation.
_RUNNER = """

def one_round():
    \"\"\"Every program at once, one thread each, on one new installation: what each raised, by thread.\"\"\"
    csp = OPEN_INSTALLATION
    start = threading.Barrier(len(PROGRAMS))
    raised = {}

    def run(number, program):
        start.wait()
        try:
            program(csp)
        except Exception as exc:
            raised[number] = exc

    threads = [threading.Thread(target=run, args=pair, daemon=True) for pair in enumerate(PROGRAMS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    stuck = [number for number, thread in enumerate(threads) if thread.is_alive()]
    if stuck:
        raise SystemExit(f"thread(s) {stuck} still running after {TIMEOUT} s: a deadlock, or a call that never returns")
    csp.close()
    return raised


for done in range(1, ROUNDS + 1):
    raised = one_round()
    for number, exc in sorted(raised.items()):
        print(f"round {done}: thread {number} raised {type(exc).__name__}")
        traceback.print_exception(exc, file=sys.stdout)
    if raised:
        raise SystemExit(1)
print(f"no thread raised in {ROUNDS} rounds: the interleaving that fails did not occur")"""


def threaded_reproducer(
    programs: list[list[Step]],
    thread: int,
    spec: str,
    factory: Callable[[], Target],
    *,
    timeout: float,
    note: str,
) -> str:
    """A runnable script of a round: each program a function asserting what its model answers (rendered from a
    replay of it alone, as the sequential reproducer is), all of them run at once, one thread each, on one new
    installation, round after round until one raises, a round hangs, or ROUNDS_IN_SCRIPT rounds pass. A race shows
    in some interleavings only, so the script says how many rounds it ran. ``note`` says how often it failed (or
    that it hung)."""
    functions: list[str] = []
    for number, program in enumerate(programs):
        role = "the program that failed" if number == thread else "another program of the round"
        try:
            body = script_body(program, spec, factory, None)
        except ValueError as exc:  # a step the harness cannot run (a hand-edited trace)
            raise StepNotRunnable(f"thread {number}'s {exc}") from None
        functions += [
            "",
            "",
            f"def program_{number}(csp):",
            f'    """Thread {number}: {role}."""',
            *(f"    {line}" if line else "" for line in body),
        ]
    text = "\n".join(
        [
            *factory_stub(spec),
            f"ROUNDS = {ROUNDS_IN_SCRIPT}  # {note}",
            f"TIMEOUT = {timeout:g}  # seconds a round may take before it counts as hung",
            *functions,
            "",
            "",
            f"PROGRAMS = [{', '.join(f'program_{n}' for n in range(len(programs)))}]",
            _RUNNER.replace("OPEN_INSTALLATION", opener(spec)),
        ]
    )
    doc = (
        "keyhandoff concurrency reproducer: programs at once on one installation, each asserting what its\n"
        "model answers; run it against the target."
    )
    return script(text, doc=doc, modules=("sys", "threading", "traceback"))


def save_concurrent_trace(path: Path, found: ConcurrentFailure, *, spec: str, seed: int) -> None:
    """The failing round as a trace: ``programs`` (``keyhandoff replay`` re-runs the round) and, as ``steps``, the
    failing program (``keyhandoff replay --alone`` runs it on its own)."""
    extra = {"kind": "concurrent", "thread": found.thread, "programs": found.programs}
    save_trace(path, found.programs[found.thread], spec=spec, failure=found.failure, seed=seed, **extra)


def verdict_text(result: ConcurrentResult) -> str:
    """:func:`render`'s text, for a test's failure message (an assertion's repr of the result is cut short)."""
    out = io.StringIO()
    render(result, out)
    return out.getvalue()


def render(result: ConcurrentResult, out: TextIO) -> None:
    """The verdict in a few lines: what ran, and the failure's analysis."""
    head = (
        f"keyhandoff concurrent: {result.spec}, {result.threads} threads x {result.rounds} rounds, seed "
        f"{result.seed}: {result.steps} steps in {result.seconds:.1f} s"
    )
    found = result.failure
    if found is None:
        out.write(f"{head}\nPASSED: every program got, in company, the answers and states its model gives\n")
        return
    failure = found.failure
    if found.hung:
        out.write(
            f"{head}\nFAILED (hung): {failure.message}\nThe round as a script, each program in a thread of its own "
            f"(its assertions are the model's answers), run until a round hangs or {ROUNDS_IN_SCRIPT} rounds "
            f"pass:\n\n{found.script}\n"
        )
        return
    where = f"thread {found.thread}'s program diverged at step {failure.index + 1} ({failure.op}): {failure.message}"
    if not found.concurrency:
        out.write(
            f"{head}\nFAILED: {where}\nIt fails on its own as well, so this is no concurrency failure; its minimal "
            f"reproducer (run `keyhandoff check` for the full sequential verdict):\n\n{found.script}\n"
        )
        return
    out.write(
        f"{head}\nFAILED (concurrency): {where}\nAlone that program passes. With {len(found.programs) - 1} other "
        f"program(s) at once it failed again in {found.failed_reruns} of {RERUNS} re-runs: a race, a shared "
        "cache or a lost update in the target. The round as a script, each program in a thread of its own, run "
        f"until a thread raises (at most {ROUNDS_IN_SCRIPT} rounds):\n\n{found.script}\n"
    )
