"""The ``keyhandoff`` command line."""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from keyhandoff._version import __version__
from keyhandoff.model.errors import CryptError
from keyhandoff.target import RunStopped, TargetUnavailable, close_target, declared_capabilities
from keyhandoff.targets import SPECS

__all__ = ["main"]

_EXIT_STATUS = """exit status: 0 the command succeeded (the target conforms); 1 it found a difference, a failed
vector, an unconfirmed finding or a mutant not caught; 2 it could not run (bad arguments, a target that is
unknown or cannot be started here, a file that cannot be read or written); 130 interrupted; 141 its output was
closed (piped into a program that stopped reading); 143 terminated (SIGTERM)."""


class CannotRun(Exception):
    """The command cannot start or finish for a reason the user can fix: printed as one line, exit status 2."""


def _positive(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def _two_or_more(text: str) -> int:
    """argparse type: a whole number >= 2 (threads: one program alone is what `keyhandoff check` runs)."""
    value = _positive(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"{value} is not at least 2")
    return value


def _writable(path: str | None, what: str) -> None:
    """Refuse an output path whose directory is not there or not writable before the work, not after it."""
    if path is None:
        return
    folder = Path(path).resolve().parent
    if Path(path).is_dir():
        raise CannotRun(f"{what} {path}: is a directory (give a file name)")
    if not folder.is_dir():
        raise CannotRun(f"{what} {path}: the directory {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise CannotRun(f"{what} {path}: the directory {folder} is not writable")


def _vectors(args: argparse.Namespace) -> int:
    from keyhandoff.targets import load
    from keyhandoff.vectors import load_vectors, matches, run_stream

    try:
        vectors = load_vectors(args.file)
    except (OSError, ValueError) as exc:
        raise CannotRun(_file_error(exc)) from None
    target = load(args.target)
    failed = 0
    try:
        duplicates = declared_capabilities(target).duplicate
        for vector in vectors:
            plans: list[tuple[str, dict[str, object]]] = [("whole", {})]
            if len(vector.plaintext) >= 2 * max(vector.block, 1):
                cut = max(vector.block, 1)
                plans.append(("handoff", {"cuts": [cut], "actions": ["handoff"]}))
                if duplicates:
                    plans.append(("duplicate", {"cuts": [cut], "actions": ["duplicate"]}))
            for label, plan in plans:
                for decrypt in (False, True) if not vector.stream else (False,):
                    name = f"{vector.id} {label} {'decrypt' if decrypt else 'encrypt'}"
                    try:
                        ok = matches(vector, run_stream(target, vector, decrypt=decrypt, **plan), decrypt=decrypt)  # type: ignore[arg-type]
                        detail = "" if ok else "wrong bytes"
                    except CryptError as exc:
                        ok, detail = False, str(exc)
                    failed += not ok
                    print(f"{'ok  ' if ok else 'FAIL'} {name}{'  ' + detail if detail else ''}")
    finally:
        close_target(target)
    print(f"{failed} failed" if failed else "all vectors passed")
    return 1 if failed else 0


def _check(args: argparse.Namespace) -> int:
    import json

    from keyhandoff.check import render_summary, run_check, write_junit
    from keyhandoff.targets.fresh import fresh_factory
    from keyhandoff.traces import save_trace

    _writable(args.report, "--report")
    _writable(args.junit, "--junit")
    _writable(args.trace, "--trace")
    factory = fresh_factory(args.target)
    result = run_check(
        args.target,
        factory,
        profile=args.profile,
        examples=args.examples,
        steps=args.steps,
        seed=args.seed,
        progress=sys.stderr,
        require_coverage=args.require_coverage,
    )
    # The files first, the summary after: a reader that stops early (``| head``) ends the printing, and must not
    # take the trace of the failure with it.
    saved, not_saved, report_error = "", "", ""
    if result.failure is not None:
        trace = Path(args.trace) if args.trace else _unused(f"keyhandoff-failure-{result.seed}")
        try:
            save_trace(trace, result.steps, spec=args.target, failure=result.failure, seed=result.seed)
        except OSError as exc:  # the run and its reproducer stand; only the file is missing
            not_saved = f"keyhandoff check: trace not saved: {_file_error(exc)}"
        else:
            saved = f"trace saved: {trace} (keyhandoff replay {trace})"
    try:
        if args.report:
            Path(args.report).write_text(json.dumps(result.to_json(), indent=1) + "\n", encoding="utf-8")
        if args.junit:
            write_junit(result, Path(args.junit))
    except OSError as exc:  # asked for and missing: a CI job reading it must not go on as if it were there
        report_error = f"keyhandoff check: error: report not written: {_file_error(exc)}"
    render_summary(result)
    if saved:
        print(saved)
    for message in (not_saved, report_error):
        if message:
            print(message, file=sys.stderr)
    if report_error:
        return 2
    return 0 if result.ok else 1


def _replay(args: argparse.Namespace) -> int:
    from keyhandoff.targets.fresh import fresh_factory
    from keyhandoff.traces import load_trace, replay, reproducer

    try:
        steps, meta = load_trace(Path(args.trace))
    except (OSError, ValueError) as exc:
        raise CannotRun(_file_error(exc)) from None
    spec = args.target or str(meta.get("target") or "builtin")
    if meta.get("kind") == "shared" and not args.alone:
        return _replay_shared(meta, spec, args.timeout)
    if meta.get("kind") == "concurrent" and not args.alone:
        failure = meta.get("failure")
        hung = isinstance(failure, dict) and failure.get("detail") == "hung"
        return _replay_round(meta.get("programs"), meta.get("thread"), spec, args.timeout, hung)
    factory = fresh_factory(spec)
    try:
        failure, _ = replay(steps, factory)
    except ValueError as exc:  # a step this trace cannot replay (edited by hand, or from another version)
        raise CannotRun(f"{args.trace}: {exc}") from None
    print(reproducer(steps, spec, factory, failure))
    if failure is None:
        print(f"replayed {len(steps)} steps against {spec}: model and target agree")
        recorded = meta.get("failure")
        # --alone: a round's failure in company is expected not to recur
        alone = meta.get("kind") in ("concurrent", "shared")
        if not alone and isinstance(recorded, dict) and isinstance(recorded.get("index"), int):
            print(
                f"the trace recorded a failure at step {recorded['index'] + 1} ({recorded.get('op', '?')}), which "
                "did not happen this time: the CSP was fixed, or its answers are not reproducible (they depend on "
                "more than the program: a counter, a clock, another process)"
            )
        return 0
    print(f"replayed against {spec}: diverges at step {failure.index + 1} ({failure.op}): {failure.message}")
    return 1


def _findings(args: argparse.Namespace) -> int:
    from keyhandoff.findings import check_findings
    from keyhandoff.targets.fresh import fresh_factory

    factory = fresh_factory(args.target)
    try:
        checks = check_findings(factory, args.only or ())
    except ValueError as exc:  # an --only naming no declared deviation
        raise CannotRun(str(exc)) from None
    if not checks:
        print(f"{args.target} declares no deviation with a reproducer")
        return 0
    width = max(len(c.id) for c in checks)
    print(f"{'deviation':<{width}}  {'verdict':<10}  what happened")
    for check in checks:
        print(f"{check.id:<{width}}  {check.verdict:<10}  {check.detail}", flush=True)
    bad = [c for c in checks if not c.ok]
    print(f"\n{len(checks) - len(bad)}/{len(checks)} declared deviations confirmed against {args.target}")
    return 1 if bad else 0


def _demo(args: argparse.Namespace) -> int:
    from keyhandoff.demo import main_demo
    from keyhandoff.impl.installation import InstallationError

    try:
        return main_demo(args.home)
    except InstallationError as exc:  # no installation can be made or opened there, or its token cannot be used
        raise CannotRun(f"--home {args.home}: {exc}" if args.home else str(exc)) from None


def _mutants(args: argparse.Namespace) -> int:
    from keyhandoff.mutants import MUTANTS, by_name, hunt

    try:
        chosen = [by_name(name) for name in args.only] if args.only else list(MUTANTS)
    except ValueError as exc:
        raise CannotRun(str(exc)) from None
    width = max(len(m.name) for m in chosen)
    print(f"{'mutant':<{width}}  {'verdict':<10} {'cases':>5} {'steps':>5} {'seconds':>7}  rule broken (docs/model.md)")
    missed = []
    for mutant in chosen:
        result = hunt(mutant, profile=args.profile, seed=args.seed)
        verdict = "caught" if result.caught else "NOT CAUGHT"
        steps = str(result.steps) if result.caught else "-"
        print(
            f"{result.name:<{width}}  {verdict:<10} {result.cases:>5} {steps:>5} {result.seconds:>7.1f}  {result.rule}",
            flush=True,
        )
        if not result.caught:
            missed.append(result.name)
    print(f"\n{len(chosen) - len(missed)}/{len(chosen)} mutants caught (profile {args.profile}, seed {args.seed})")
    for name in missed:
        print(f"NOT CAUGHT: {name}")
    return 1 if missed else 0


def _concurrent(args: argparse.Namespace) -> int:
    from keyhandoff.concurrent import render, run_concurrent, save_concurrent_trace
    from keyhandoff.targets.fresh import fresh_factory

    _writable(args.trace, "--trace")
    _writable(args.report, "--report")
    if args.shared:
        return _concurrent_shared(args)
    result = run_concurrent(
        args.target,
        fresh_factory(args.target),
        threads=args.threads,
        rounds=args.rounds,
        steps=args.steps or 30,
        seed=args.seed,
        timeout=args.timeout,
        progress=sys.stderr,
    )
    render(result, sys.stdout)
    found = result.failure
    if found is not None:  # a hang and a program failing alone too: the round is kept (--trace was ignored)
        how = "--alone runs the failing program on its own" if found.alone is not None else "re-runs the round"
        _save_round(
            args.trace,
            f"keyhandoff-concurrent-{result.seed}",
            how,
            save_concurrent_trace,
            found,
            args.target,
            result.seed,
        )
    if not _report(args.report, result.to_json()):
        return 2
    return 0 if result.ok else 1


def _concurrent_shared(args: argparse.Namespace) -> int:
    """``keyhandoff concurrent --shared``: rounds of threads on shared keys, each checked for linearizability."""
    from keyhandoff.shared_keys import render_shared, run_shared, save_shared_trace
    from keyhandoff.targets.fresh import fresh_factory

    try:
        result = run_shared(
            args.target,
            fresh_factory(args.target),
            threads=args.threads,
            rounds=args.rounds,
            calls=args.steps or 6,
            seed=args.seed,
            timeout=args.timeout,
            progress=sys.stderr,
        )
    except ValueError as exc:  # too many calls for a round
        raise CannotRun(str(exc)) from None
    render_shared(result, sys.stdout)
    if result.failure is not None:
        how = "re-runs the round; with --alone, the round as one program"
        _save_round(
            args.trace,
            f"keyhandoff-shared-{result.seed}",
            how,
            save_shared_trace,
            result.failure,
            args.target,
            result.seed,
        )
    if not _report(args.report, result.to_json()):
        return 2
    return 0 if result.ok else 2 if result.verdict == "undecided" else 1


def _save_round(
    asked: str | None, default: str, how: str, save: Callable[..., None], found: object, spec: str, seed: int
) -> None:
    """Save a failing round of ``keyhandoff concurrent`` as a trace and say where (``how``: what replay does)."""
    trace = Path(asked) if asked else _unused(default)
    try:
        save(trace, found, spec=spec, seed=seed)
    except OSError as exc:
        print(f"keyhandoff concurrent: trace not saved: {_file_error(exc)}", file=sys.stderr)
    else:
        print(f"trace saved: {trace} (keyhandoff replay {trace} {how})")


def _report(asked: str | None, report: dict[str, object]) -> bool:
    """Write ``keyhandoff concurrent``'s JSON report where asked; False (said) if it could not be written."""
    import json

    if asked:
        try:
            Path(asked).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        except OSError as exc:  # asked for and missing: a CI job reading it must not go on as if it were there
            print(f"keyhandoff concurrent: error: report not written: {_file_error(exc)}", file=sys.stderr)
            return False
    return True


def _replay_shared(meta: dict[str, object], spec: str, timeout: float) -> int:
    """``keyhandoff replay`` of a trace ``keyhandoff concurrent --shared`` saved: the round run RERUNS times, each
    run's verdict said."""
    from keyhandoff.concurrent import RERUNS
    from keyhandoff.shared_keys import plan_of_trace, replay_round
    from keyhandoff.targets.fresh import fresh_factory

    try:
        plan = plan_of_trace(meta)
        factory = fresh_factory(spec)
        failed = 0
        for run in range(1, RERUNS + 1):
            verdict = replay_round(factory, plan, timeout)
            print(f"run {run}: {verdict or 'every answer fits an order of the calls'}")
            failed += bool(verdict)
            if verdict.startswith("hung"):
                break
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        raise CannotRun(f"the trace's round cannot be replayed: {exc}") from None
    print(f"replayed the round of {len(plan.threads)} threads on shared keys against {spec}: {failed} run(s) failed")
    return 1 if failed else 0


def _replay_round(programs: object, thread: object, spec: str, timeout: float, hung: bool) -> int:
    """``keyhandoff replay`` of a trace ``keyhandoff concurrent`` saved: the round as its threaded script (from the
    model alone if the round hung: the target could hang again), then the round run RERUNS times."""
    from keyhandoff.concurrent import RERUNS, RoundHung, reruns, threaded_reproducer
    from keyhandoff.targets.fresh import fresh_factory
    from keyhandoff.targets.model_target import ModelTarget

    if not (isinstance(programs, list) and len(programs) >= 2 and isinstance(thread, int)):
        raise CannotRun("a concurrent trace holds 'programs' (two or more) and the failing 'thread'")
    factory = fresh_factory(spec)
    failed = 0
    note = "replayed from a saved round: a race shows in some interleavings only"
    try:
        print(threaded_reproducer(programs, thread, spec, ModelTarget if hung else factory, timeout=timeout, note=note))
        for run, ended in enumerate(reruns(factory, programs, timeout), 1):
            if isinstance(ended, RoundHung):
                print(f"run {run}: {ended}")
                return 1
            failed += bool(ended)
            for found in ended:
                where = f"step {found.failure.index + 1} ({found.failure.op})"
                print(f"run {run}: thread {found.thread} diverged at {where}: {found.failure.message}")
    except (IndexError, KeyError, TypeError, ValueError) as exc:  # StepNotRunnable is a ValueError
        raise CannotRun(f"the trace's programs cannot be replayed: {exc}") from None
    print(f"replayed the round of {len(programs)} programs against {spec} {RERUNS} times: {failed} failed")
    return 1 if failed else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keyhandoff",
        description="Conformance kit for CryptoAPI session-key lifecycle semantics: checks that a key exported "
        "as an OPAQUEKEYBLOB, destroyed and imported in another process is in exactly the state it had.",
        epilog=_EXIT_STATUS,
    )
    parser.add_argument("--version", action="version", version=f"keyhandoff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    vec = sub.add_parser("vectors", help="run the known-answer vectors (whole, across a handoff, via a duplicate)")
    vec.add_argument("--target", default="model", help="target spec (default: model)")
    vec.add_argument("--file", default=None, help="a vector file in the kat.json format (default: shipped)")
    vec.set_defaults(func=_vectors)

    chk = sub.add_parser("check", help="run the lockstep state machine: model vs a target, with reproducers")
    chk.add_argument(
        "--target",
        default="builtin-processes",
        help=f"target spec, one of: {', '.join(SPECS)} (default: builtin-processes)",
    )
    chk.add_argument("--profile", choices=["quick", "default", "thorough"], default="default")
    chk.add_argument("--examples", type=_positive, default=None, help="test cases (overrides the profile)")
    chk.add_argument(
        "--steps",
        type=_positive,
        default=None,
        help="rules per test case; a rule makes one or more steps, its calls (overrides the profile)",
    )
    chk.add_argument("--seed", type=int, default=None, help="make the run reproducible")
    chk.add_argument("--report", default=None, help="write a JSON report here")
    chk.add_argument("--junit", default=None, help="write a JUnit XML report here")
    chk.add_argument(
        "--trace",
        default=None,
        help="where to save a failure's trace (default: keyhandoff-failure-SEED.json here, never overwriting one)",
    )
    chk.add_argument(
        "--require-coverage",
        action="store_true",
        help="fail when a supported lifecycle transition or error outcome never fired",
    )
    chk.set_defaults(func=_check)

    fnd = sub.add_parser(
        "findings", help="replay each declared deviation's reproducer: still there, and its declaration needed?"
    )
    fnd.add_argument("--target", default="capi", help="target spec (default: capi)")
    fnd.add_argument("--only", action="append", metavar="ID", help="only this deviation (repeatable)")
    fnd.set_defaults(func=_findings)

    dem = sub.add_parser("demo", help="the Schannel handoff across two real processes, proved byte-identical")
    dem.add_argument("--home", default=None, help="installation directory (default: a temporary one)")
    dem.set_defaults(func=_demo)

    rep = sub.add_parser("replay", help="re-run a saved trace and print it as a script")
    rep.add_argument("trace", help="a trace JSON written by keyhandoff check or keyhandoff concurrent")
    rep.add_argument("--target", default=None, help="replay against another target than the recorded one")
    rep.add_argument(
        "--alone",
        action="store_true",
        help="of a trace keyhandoff concurrent saved: the failing program alone (--shared: the round as one program)",
    )
    rep.add_argument("--timeout", type=_positive, default=120, help="of a concurrent trace: seconds per round")
    rep.set_defaults(func=_replay)

    con = sub.add_parser(
        "concurrent", help="run the machine's programs several at once on one installation, one thread each"
    )
    con.add_argument("--target", default="builtin-processes", help="target spec (default: builtin-processes)")
    con.add_argument("--threads", type=_two_or_more, default=4, help="programs at once, one thread each (default: 4)")
    con.add_argument("--rounds", type=_positive, default=25, help="rounds, each on a new installation (default: 25)")
    con.add_argument(
        "--steps",
        type=_positive,
        default=None,
        help="rules per program (default: 30); with --shared, calls per thread (default: 6)",
    )
    con.add_argument(
        "--shared",
        action="store_true",
        help="the threads share one or two keys: every round's answers must fit some order of its calls",
    )
    con.add_argument("--seed", type=int, default=None, help="the programs' seed (the interleaving is the OS's)")
    con.add_argument("--timeout", type=_positive, default=120, help="seconds a round may take (default: 120)")
    con.add_argument(
        "--trace",
        default=None,
        help="where to save a failing round (default: keyhandoff-concurrent-SEED.json; --shared: "
        "keyhandoff-shared-SEED.json)",
    )
    con.add_argument("--report", default=None, help="write a JSON report here")
    con.set_defaults(func=_concurrent)

    mut = sub.add_parser("mutants", help="run the machine against known-bad CSPs: each must be caught")
    mut.add_argument("--profile", choices=["quick", "default", "thorough"], default="default")
    mut.add_argument("--seed", type=int, default=0, help="Hypothesis seed (default: 0)")
    mut.add_argument("--only", action="append", metavar="NAME", help="only this mutant (repeatable)")
    mut.set_defaults(func=_mutants)
    return parser


_TERMINATED: list[int] = []  # the signal that ended the command, if one did


def _terminated(signum: int, _frame: object) -> None:
    """SIGTERM (a CI job's timeout, ``kill``) ends the command as Ctrl-C does, through its ``finally`` blocks and
    exit handlers: app processes ended, temporary installations removed (they used to be left behind). As a
    KeyboardInterrupt, which Hypothesis lets through at once; any other exception it would take for a failure."""
    _TERMINATED.append(signum)
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        code: int = args.func(args)
    except (CannotRun, TargetUnavailable, RunStopped) as exc:
        print(f"keyhandoff {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"keyhandoff {args.command}: {'terminated' if _TERMINATED else 'interrupted'}", file=sys.stderr)
        return 128 + _TERMINATED[0] if _TERMINATED else 130
    return code


def entry() -> int:
    """The ``keyhandoff`` command: :func:`main`, with Hypothesis's files kept in a private temporary directory
    (removed at exit) instead of ``./.hypothesis`` wherever the command runs. What Hypothesis keeps there is its
    cache of the literals it mines from local modules, your CSP's source among them. A HYPOTHESIS_STORAGE_DIRECTORY
    set by the caller is respected; child processes (mutant hunts) inherit the choice. The current directory is
    searched for a ``python:`` target's module after everything else on the path."""
    if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
        home = tempfile.mkdtemp(prefix="keyhandoff-hypothesis-")
        atexit.register(shutil.rmtree, home, ignore_errors=True)
        os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = home
    if os.getcwd() not in sys.path:  # python:adapter:make_target finds ./adapter.py, as `python -m` would; last,
        sys.path.append(os.getcwd())  # so that a file here never shadows an installed module
    signal.signal(signal.SIGTERM, _terminated)
    try:
        return main()
    except BrokenPipeError:  # the reader went away (keyhandoff check | head): no traceback, the shell's status
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the flush at exit fails no more
        return 141


def _unused(stem: str) -> Path:
    """``stem.json`` in this directory, or ``stem-2.json``, ... if taken: a second failing run with the same
    seed (against another target, say) keeps the first one's trace."""
    path, number = Path(f"{stem}.json"), 2
    while path.exists():
        path, number = Path(f"{stem}-{number}.json"), number + 1
    return path


def _file_error(exc: OSError | ValueError) -> str:
    """One line for a file that could not be read (OSError: its name and the reason) or parsed (ValueError)."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)


if __name__ == "__main__":
    sys.exit(entry())
