"""``keyhandoff check``: run the lockstep machine against a target and say what agreed and what did not.

The run is a Hypothesis stateful test. On a divergence the minimal program Hypothesis found is shrunk further
by deleting steps (:func:`keyhandoff.traces.minimize`), saved as a JSON trace and printed as a runnable script.
"""

from __future__ import annotations

import random
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import attrs
from hypothesis import Phase
from hypothesis.errors import Flaky, HypothesisException

from keyhandoff.lockstep import Lockstep, TargetHung
from keyhandoff.machine import Coverage, LockstepMachine, harness_defect, machine_for, run_machine
from keyhandoff.model import wincrypt as w
from keyhandoff.model.lifecycle import TRANSITIONS
from keyhandoff.model_rules import reachable_rules
from keyhandoff.target import Capabilities, InstallationMaker, RunStopped, Target, TargetUnavailable
from keyhandoff.targets.fresh import release_spare
from keyhandoff.traces import Failure, hung_reproducer, minimize, replay, reproducer

__all__ = ["PROFILES", "CheckResult", "ConformanceFailure", "Row", "required_coverage", "run_check", "run_conformance"]

_PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)
_PHASES_NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target)

_OPAQUE_ROWS = frozenset(row.label for row in TRANSITIONS if row.condition == "OPAQUEKEYBLOB")

PROFILES: dict[str, tuple[int, int]] = {"quick": (30, 30), "default": (150, 50), "thorough": (600, 80)}

# Error outcomes the machine can always provoke; each must fire in a run that requires coverage.
_REQUIRED_OUTCOMES = [
    ("encrypt", "NTE_BAD_DATA"),
    ("encrypt", "NTE_BAD_KEY"),
    ("encrypt", "NTE_BAD_ALGID"),
    ("decrypt", "NTE_BAD_DATA"),
    ("decrypt", "NTE_BAD_LEN"),
    ("gen_key", "NTE_BAD_ALGID"),
    ("gen_key", "NTE_BAD_FLAGS"),
    ("import_bytes", "NTE_BAD_TYPE"),
    ("import_bytes", "NTE_BAD_VER"),
    ("import_bytes", "NTE_BAD_DATA"),
    ("export_key", "NTE_BAD_TYPE"),
    ("export_key", "NTE_BAD_FLAGS"),
    ("set_key_param", "NTE_BAD_DATA"),
    ("set_key_param", "NTE_BAD_TYPE"),
    ("get_key_param", "NTE_BAD_TYPE"),
    ("destroy_key", "NTE_BAD_KEY"),
]
PROPERTIES = {
    "outcome": "same outcome: bytes, value or error code",
    "state": "same key state (inspect)",
    "token": "hardware objects survive destroy",
    "twins": "unknown material: twins agree",
    "opaque": "opaque handoff (OPAQUEKEYBLOB)",
}


def required_coverage(caps: Capabilities) -> tuple[list[str], list[tuple[str, str]]]:
    """The lifecycle rows and error outcomes a run against a target with ``caps`` must exercise."""
    rows = []
    for row in TRANSITIONS:
        if "hardware" in row.condition and not caps.hardware:
            continue
        if row.condition == "OPAQUEKEYBLOB" and not caps.opaque:
            continue
        if row.operation == "duplicate_key" and not caps.duplicate:
            continue
        rows.append(row.label)
    outcomes = list(_REQUIRED_OUTCOMES)
    if caps.opaque:
        outcomes.append(("import_blob", "NTE_BAD_DATA"))
    if w.PLAINTEXTKEYBLOB in caps.blob_types:
        outcomes.append(("export_key", "NTE_BAD_KEY_STATE"))
    if caps.hmac_algorithms:
        outcomes.append(("hmac", "NTE_BAD_ALGID"))
    return rows, outcomes


@attrs.frozen
class Row:
    """One line of the summary: a property or an operation and its counts."""

    name: str
    passed: int
    failed: int
    unsupported: bool = False
    deviations: int = 0
    unchecked: bool = False  # supported, but the target offers nothing to check it with

    @property
    def verdict(self) -> str:
        if self.failed:
            return "FAILED"
        if self.unsupported:
            return "not supported"
        if self.unchecked:
            return "not checked"
        if self.deviations:
            return "known deviation"
        return "passed" if self.passed else "not exercised"


@attrs.define
class CheckResult:
    spec: str
    seed: int
    profile: str
    examples: int
    seconds: float
    coverage: Coverage
    capabilities: Capabilities
    failure: Failure | None = None
    steps: list[dict[str, object]] = attrs.field(factory=list)
    script: str = ""
    several_failures: bool = False
    missing_transitions: list[str] = attrs.field(factory=list)
    missing_outcomes: list[tuple[str, str]] = attrs.field(factory=list)
    # The model's refusal rules this target can reach that answered no step (information: never required).
    rules_not_fired: list[str] = attrs.field(factory=list)
    require_coverage: bool = False

    @property
    def ok(self) -> bool:
        if self.failure is not None:
            return False
        return not (self.require_coverage and (self.missing_transitions or self.missing_outcomes))

    def rows(self) -> list[Row]:
        caps = self.capabilities
        failed_prop = _property_of(self.failure) if self.failure else None
        out = [
            Row(PROPERTIES["outcome"], self.coverage.steps, int(failed_prop == "outcome")),
            Row(
                PROPERTIES["state"],
                self.coverage.steps if caps.inspect else 0,
                int(failed_prop == "state"),
                unsupported=not caps.inspect,
            ),
            Row(
                PROPERTIES["token"],
                self.coverage.steps if caps.hardware and self.coverage.token_checked else 0,
                int(failed_prop == "token"),
                unsupported=not caps.hardware,
                unchecked=not self.coverage.token_checked,  # no token_objects(): a lost object shows in outcomes
            ),
            Row(
                PROPERTIES["twins"],
                self.coverage.operations.get("compare_twins", 0),
                int(failed_prop == "twins"),
                unsupported=not caps.duplicate,
            ),
            Row(
                PROPERTIES["opaque"],
                sum(n for label, n in self.coverage.transitions.items() if label in _OPAQUE_ROWS),
                0,
                unsupported=not caps.opaque,
            ),
        ]
        # The step that failed a property was counted among the steps: it did not pass.
        out = [attrs.evolve(row, passed=max(row.passed - row.failed, 0)) for row in out]
        for dev in caps.deviations:
            seen = self.coverage.deviations.get(dev.id, 0)
            out.append(Row(f"deviation {dev.id}", seen, 0, deviations=seen))
        ops = sorted(set(self.coverage.operations) | {"hmac", "duplicate_key", "import_blob"})
        for op in ops:
            unsupported = (
                (op == "hmac" and not caps.hmac_algorithms)
                or (op == "duplicate_key" and not caps.duplicate)
                or (op == "import_blob" and not caps.opaque)
            )
            failed = int(self.failure is not None and self.failure.op == op)
            out.append(
                Row(
                    f"operation {op}",
                    self.coverage.operations.get(op, 0) - failed,
                    failed,
                    unsupported=unsupported and not self.coverage.operations.get(op),
                )
            )
        return out

    def to_json(self) -> dict[str, object]:
        return {
            "target": self.spec,
            "seed": self.seed,
            "profile": self.profile,
            "passed": self.ok,
            "examples": self.examples,
            "seconds": round(self.seconds, 2),
            "rows": [
                {"name": r.name, "verdict": r.verdict, "passed": r.passed, "failed": r.failed} for r in self.rows()
            ],
            "deviations": [
                {"id": d.id, "description": d.description, "met": self.coverage.deviations.get(d.id, 0)}
                for d in self.capabilities.deviations
            ],
            "coverage": self.coverage.to_json(),
            "missing_transitions": self.missing_transitions,
            "missing_outcomes": [f"{op} -> {code}" for op, code in self.missing_outcomes],
            "refusal_rules_not_fired": self.rules_not_fired,
            "failure": attrs.asdict(self.failure) if self.failure else None,
            "reproducer_steps": len(self.steps) if self.failure else 0,
            "reproducer": self.script if self.failure else None,  # the script the summary prints
            "trace": self.steps if self.failure else None,  # its steps, as `keyhandoff replay` takes them
        }


def _property_of(failure: Failure) -> str:
    if failure.message.startswith("state of"):
        return "state"
    if failure.message.startswith("token objects"):
        return "token"
    if "twins" in failure.detail:
        return "twins"
    return "outcome"


class _Progress:
    """A one-line progress bar on a terminal; a line per 10% elsewhere. Once a program has failed, it counts
    the programs Hypothesis tries while it shrinks that one (a slow target can take minutes: the run is not
    hung), on a terminal each one, elsewhere at 1, 10, 100, ... tries."""

    def __init__(self, total: int, stream: TextIO | None) -> None:
        self.total, self.stream, self.count, self.shown = total, stream, 0, -1
        self.shrinks = 0
        self.failed: Callable[[], bool] = lambda: False  # set by the run once its machine exists

    def tick(self, steps: int) -> None:
        self.count += 1
        if self.stream is None:
            return
        if self.failed():
            self._shrinking()
            return
        done = min(self.count, self.total)
        if self.stream.isatty():
            bar = "#" * (30 * done // self.total)
            self.stream.write(f"\r[{bar:<30}] {done}/{self.total} examples, {steps} steps")
            self.stream.flush()
        elif 10 * done // self.total != self.shown:
            self.shown = 10 * done // self.total
            self.stream.write(f"{done}/{self.total} examples, {steps} steps\n")

    def _shrinking(self) -> None:
        assert self.stream is not None
        self.shrinks += 1
        text = f"a program failed; shrinking it: {self.shrinks} tried"
        if self.stream.isatty():
            self.stream.write(f"\r{text:<60}")
            self.stream.flush()
        elif len(str(self.shrinks)) > len(str(self.shrinks - 1)) or self.shrinks == 1:  # 1, 10, 100, ...
            self.stream.write(text + "\n")

    def end(self) -> None:
        if self.stream is not None and self.stream.isatty():
            self.stream.write("\n")


def run_check(
    spec: str,
    factory: Callable[[], Target],
    *,
    profile: str = "default",
    examples: int | None = None,
    steps: int | None = None,
    seed: int | None = None,
    progress: TextIO | None = None,
    require_coverage: bool = False,
    shrink: bool = True,
) -> CheckResult:
    """Run the machine; on failure shrink (Hypothesis, unless ``shrink=False``), minimise by deleting steps, and
    render the reproducer."""
    if profile not in PROFILES:
        raise ValueError(f"profile {profile!r}: one of {', '.join(PROFILES)}")
    for what, count in (("examples", examples), ("steps", steps)):
        if count is not None and (type(count) is not int or count < 1):
            raise ValueError(f"{what} is a whole number from 1 (None: the profile's), not {count!r}")
    if seed is not None and type(seed) is not int:  # "1" would run, and be reported, as another seed than 1
        raise ValueError(f"seed is a whole number (None: a random one), not {seed!r}")
    default_examples, default_steps = PROFILES[profile]
    examples = examples if examples is not None else default_examples
    steps = steps if steps is not None else default_steps
    seed = seed if seed is not None else random.randrange(1 << 32)
    bar = _Progress(examples, progress)
    opened = InstallationMaker(factory)
    try:
        result = _run(spec, opened, profile, examples, steps, seed, bar, require_coverage, shrink)
    except RunStopped as stop:  # no verdict: the run could not go on (the target's fault or its host's)
        raise TargetUnavailable(f"{spec}: the run stopped: {stop}") from stop.__cause__
    finally:
        bar.end()
        release_spare(factory)  # a target made one call ahead (builtin-processes) is not needed any more
    rows, outcomes = required_coverage(result.capabilities)
    result.missing_transitions = [r for r in rows if not result.coverage.transitions.get(r)]
    result.missing_outcomes = [o for o in outcomes if not result.coverage.outcomes.get(o)]
    result.rules_not_fired = [r.text for r in reachable_rules(result.capabilities) if not result.coverage.rules[r.text]]
    return result


def _run(
    spec: str,
    factory: Callable[[], Target],
    profile: str,
    examples: int,
    steps: int,
    seed: int,
    bar: _Progress,
    require_coverage: bool,
    shrink: bool,
) -> CheckResult:
    machine = machine_for(factory, name="Target", misshapen_plaintext=profile == "thorough")
    coverage = Coverage()
    machine.coverage = coverage
    machine.on_start = [bar.tick]
    bar.failed = lambda: machine.first_failure is not None
    caps = machine.capabilities
    result = CheckResult(spec, seed, profile, examples, 0.0, coverage, caps, require_coverage=require_coverage)
    start = time.perf_counter()
    try:
        run_machine(machine, examples=examples, steps=steps, seed=seed, phases=_PHASES if shrink else _PHASES_NO_SHRINK)
    except (TargetHung, Exception) as exc:
        stop = _hidden_stop(exc)
        if isinstance(stop, RunStopped):
            raise stop from stop.__cause__
        if isinstance(stop, TargetHung):  # not replayed, not shrunk: every replay would wait for the timeout again
            _report_hung(result, machine.last, spec, stop)
        else:  # the target's failure is reported with its trace; keyhandoff's own is no verdict
            ended = _what_ended(exc, machine)
            _stop_if_ours(exc, machine)
            _report_failure(result, machine, spec, factory, ended)
    result.seconds = time.perf_counter() - start
    return result


def _report_failure(
    result: CheckResult, machine: type[LockstepMachine], spec: str, factory: Callable[[], Target], message: str
) -> None:
    """The failure replayed, minimised and rendered; or, if it does not replay, reported as it first happened."""
    last = machine.last
    candidates = [list(last.trace) if last is not None else []]
    if machine.first_failure is not None:  # what failed first, before Hypothesis replayed and shrank it
        candidates.append(machine.first_failure[0])
    failure, trace = None, candidates[-1]
    for candidate in candidates:
        try:
            failure, _ = replay(candidate, factory)
        except ValueError:
            failure = None
        if failure is not None:
            trace = candidate
            break
    if failure is None:  # the target does not answer the same program the same way twice: say what failed
        first = machine.first_failure[1] if machine.first_failure is not None else message
        failure = Failure(
            len(trace) - 1,
            _op_of(trace),
            f"{first} (on replay the same program did not fail: the target's answers are not reproducible)",
            "not replayable",
        )
        result.steps = trace
    else:
        result.steps, failure = minimize(trace, factory, failure)
    result.failure = failure
    result.script = reproducer(result.steps, spec, factory, failure)


def _report_hung(result: CheckResult, last: Lockstep | None, spec: str, hung: TargetHung) -> None:
    result.steps = list(last.trace) if last is not None else []
    result.failure = Failure(max(len(result.steps) - 1, 0), _op_of(result.steps), str(hung), "hung")
    result.script = hung_reproducer(result.steps, spec, hung)


def _what_ended(exc: BaseException, machine: type[LockstepMachine]) -> str:
    """What ended the run, said for the report. Hypothesis's "Inconsistent data generation" names no cause: the
    exception that ended the test case, if there was one, is its context and is said instead. With none, and no
    test case failed, the same choices drew differently with nothing raised: the machine's draws depend on
    something besides its choices and the model's answers (a keyhandoff defect), so there is no verdict."""
    if not isinstance(exc, Flaky) or machine.first_failure is not None:
        return str(exc)
    seen = _behind_hypothesis(exc)
    if seen is None:
        said = (str(exc).strip().splitlines() or [type(exc).__name__])[-1].strip()
        raise RunStopped(
            f"Hypothesis found two test cases that drew differently on the same choices, and none had failed "
            f"({said}): the harness's draws are not reproducible, not the CSP's answers "
            "(a keyhandoff defect: please report it with the seed); this is no verdict on the CSP"
        ) from exc
    where = "outside the program's steps, as a test case started or ended"
    return f"{type(seen).__name__}: {seen} (raised {where}; Hypothesis then found the draws inconsistent)"


def _stop_if_ours(exc: BaseException, machine: type[LockstepMachine]) -> None:
    """Raise RunStopped if what ended the run was keyhandoff's own defect (harness_defect), not the target's
    failure: the exception Hypothesis raised or, if it found the program flaky, the first failing test case's."""
    trace = list(machine.last.trace) if machine.last is not None else []
    if isinstance(exc, Flaky) and machine.first_failure is not None:
        trace, _, defect = machine.first_failure
    else:
        seen = _behind_hypothesis(exc) if isinstance(exc, Flaky) else exc
        defect = harness_defect(seen) if seen is not None else None
    if defect is not None:
        where = f"after {len(trace)} steps (the last: {trace[-1]['op']})" if trace else "before the first step"
        raise RunStopped(
            f"{where}: keyhandoff raised {defect}, outside any call on the target (a keyhandoff defect: please "
            "report it with the seed); this is no verdict on the CSP"
        ) from exc


def _hidden_stop(exc: BaseException) -> TargetHung | RunStopped | None:
    """The stop (a hang, a lost installation) behind ``exc``, if any. Hypothesis checks each test case's draws
    against the earlier ones as it ends, even one ended by a BaseException: one that stopped at a point where an
    earlier case drew on is reported as "Inconsistent data generation" (FlakyStrategyDefinition), with the real
    stop as its context. A factory failing as a test case starts is always such a case."""
    return next((link for link in _chain(exc) if isinstance(link, (TargetHung, RunStopped))), None)


def _behind_hypothesis(exc: BaseException) -> BaseException | None:
    """The nearest exception behind ``exc`` that is not Hypothesis's own (what a Flaky report wraps), if any."""
    return next((link for link in _chain(exc) if not isinstance(link, HypothesisException)), None)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it was raised from or during, nearest first."""
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def _op_of(steps: list[dict[str, object]]) -> str:
    return str(steps[-1]["op"]) if steps else "?"


def render_summary(result: CheckResult, out: TextIO | None = None) -> None:
    """The table per property and operation, coverage, and the verdict (to stdout by default)."""
    out = out if out is not None else sys.stdout
    out.write(f"\nkeyhandoff check: target {result.spec}, profile {result.profile}, seed {result.seed}\n")
    out.write(
        f"{result.examples} examples, {result.coverage.steps} steps (calls on model and target"
        f"{', shrinking included' if result.failure is not None else ''}) in {result.seconds:.1f} s\n\n"
    )
    width = max(len(r.name) for r in result.rows()) + 2
    out.write(f"{'property / operation':<{width}} {'verdict':<16} {'passed':>8} {'failed':>7}\n")
    for row in result.rows():
        out.write(f"{row.name:<{width}} {row.verdict:<16} {row.passed:>8} {row.failed:>7}\n")
    if not result.capabilities.opaque:
        out.write("\nOPAQUEKEYBLOB is not supported by this target (refused as a blob type): no opaque handoff ran\n")
    met = [d for d in result.capabilities.deviations if result.coverage.deviations.get(d.id)]
    if met:
        out.write("\nknown deviations met (declared by the target; docs/findings.md):\n")
        for dev in met:
            out.write(textwrap.fill(f"{dev.id}: {dev.description}", 110, initial_indent="  ", subsequent_indent="    "))
            out.write("\n")
    rows, outcomes = required_coverage(result.capabilities)
    fired = len(rows) - len(result.missing_transitions)
    out.write(f"\nlifecycle transitions fired: {fired}/{len(rows)}")
    out.write(f"; error outcomes fired: {len(outcomes) - len(result.missing_outcomes)}/{len(outcomes)}")
    reachable = len(reachable_rules(result.capabilities))
    out.write(f"; model refusal rules met: {reachable - len(result.rules_not_fired)}/{reachable}")
    if result.failure is not None:  # the run stopped at the failure: what it did not reach says nothing
        out.write(" (up to the failure)\n")
    else:
        out.write("\n")
        for label in result.missing_transitions:
            out.write(f"  never fired: {label}\n")
        for op, code in result.missing_outcomes:
            out.write(f"  never seen: {op} -> {code}\n")
        for text in result.rules_not_fired:
            out.write(f"  no step refused by: {text}\n")
    if result.failure is not None:
        out.write(f"\nFAILED at step {result.failure.index + 1} ({result.failure.op}): {result.failure.message}\n")
        out.write(f"minimal reproducer ({len(result.steps)} steps):\n\n{result.script}\n")
    verdict = "PASSED" if result.ok else "FAILED"
    out.write(f"\n{verdict}\n")


def write_junit(result: CheckResult, path: Path) -> None:
    suite = ET.Element(
        "testsuite",
        name=f"keyhandoff check {result.spec}",
        tests=str(len(result.rows())),
        failures=str(sum(1 for r in result.rows() if r.failed)),
        time=f"{result.seconds:.2f}",
    )
    for row in result.rows():
        case = ET.SubElement(suite, "testcase", classname="keyhandoff.check", name=row.name)
        if row.failed and result.failure is not None:
            ET.SubElement(case, "failure", message=result.failure.message).text = result.script
        elif row.unsupported:
            ET.SubElement(case, "skipped", message="not supported by the target")
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def python_spec(factory: object) -> str:
    """``python:<module>:<name>`` for a factory importable by that name (a module-level function or class), else
    ``python target`` (a lambda, a closure, a local class: the reproducer then asks for the factory)."""
    module, name = getattr(factory, "__module__", None), getattr(factory, "__qualname__", "")
    if isinstance(module, str) and module != "__main__" and name.isidentifier():
        imported = sys.modules.get(module)
        if imported is not None and getattr(imported, name, None) is factory:
            return f"python:{module}:{name}"
    return "python target"


class ConformanceFailure(AssertionError):
    """Raised by :func:`run_conformance`: the message is the summary with the minimal reproducer."""


def run_conformance(
    factory: Callable[[], Target],
    *,
    profile: str = "default",
    examples: int | None = None,
    steps: int | None = None,
    seed: int | None = None,
    require_coverage: bool = False,
    name: str | None = None,
) -> CheckResult:
    """Check a CSP from a pytest test in one call: ``keyhandoff.run_conformance(MyCsp)``.

    ``factory`` returns a fresh installation of the CSP (a Target) on every call. Returns the result when
    everything agreed; raises :class:`ConformanceFailure` carrying the summary and the reproducer otherwise.

    - ``profile``: ``"quick"`` (30 test cases x 30 rules, a first look), ``"default"`` (150 x 50) or
      ``"thorough"`` (600 x 80); ``examples`` and ``steps`` override its counts (whole numbers from 1).
    - ``seed``: a whole number makes the run repeatable with the same code installed; None draws one (it is in
      the result and the report).
    - ``require_coverage``: fail a run in which a lifecycle transition or an error outcome the CSP supports
      never fired.
    - ``name``: the target's spec in the report and the reproducer; by default ``python:<module>:<name>`` for a
      factory importable by name, so that the reproducer opens it as it is.

    Raises ValueError for an option out of range; :class:`~keyhandoff.target.TargetUnavailable` (no verdict)
    when the run cannot go on: the factory or a target's ``capabilities()`` or ``close()`` raised;
    :class:`~keyhandoff.target.NotATarget` (a TypeError too) for a factory that does not make a Target. A target
    that hangs is a failure (:class:`ConformanceFailure`, the program as it ran).
    """
    import io

    result = run_check(
        name or python_spec(factory),
        factory,
        profile=profile,
        examples=examples,
        steps=steps,
        seed=seed,
        require_coverage=require_coverage,
    )
    if not result.ok:
        text = io.StringIO()
        render_summary(result, text)
        raise ConformanceFailure(text.getvalue())
    return result
