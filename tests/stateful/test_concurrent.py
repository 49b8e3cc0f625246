"""`keyhandoff concurrent`: programs at once on one installation, each in lockstep with its own model."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyhandoff.check import run_check
from keyhandoff.cli import main
from keyhandoff.concurrent import RERUNS, generate_programs, run_concurrent, verdict_text
from keyhandoff.target import TargetUnavailable
from keyhandoff.targets.builtin_target import BuiltinTarget
from keyhandoff.targets.model_target import ModelTarget
from tests.stateful.planted import Deadlocks, WrongAlone, home, remove_homes


@pytest.fixture(autouse=True)
def _no_home_left() -> Iterator[None]:
    yield
    remove_homes()


class RacyTarget(BuiltinTarget):
    """Planted, only visible in company: encrypt passes its key through one slot that every thread shares."""

    def __init__(self) -> None:
        super().__init__(home(), remove_home=True)
        self.slot = 0

    def encrypt(self, key: int, data: bytes, final: bool) -> bytes:
        self.slot = key
        time.sleep(0.001)  # another thread runs here, as during any blocking call (a token, a socket)
        return super().encrypt(self.slot, data, final)


def make_racy() -> RacyTarget:
    return RacyTarget()


# The steps that call the racy encrypt: an encrypt, and a round trip (it encrypts on a duplicate, then decrypts).
_ENCRYPTING = {"encrypt", "round_trip"}


@pytest.mark.parametrize("spec", ["builtin", "builtin-processes"])
def test_the_builtin_csp_passes_in_company(spec: str) -> None:
    from keyhandoff.targets.fresh import fresh_factory

    result = run_concurrent(spec, fresh_factory(spec), threads=4, rounds=3, steps=25, seed=1)
    assert result.ok, verdict_text(result)
    assert result.steps > 200


def test_programs_fit_the_target_and_are_reproducible() -> None:
    target = BuiltinTarget(home(), remove_home=True)
    caps = target.capabilities()
    target.close()
    first = generate_programs(caps, 6, 20, seed=4)
    assert first == generate_programs(caps, 6, 20, seed=4)
    assert 4 <= len(first) <= 6
    assert all(program[0]["op"] == "acquire" for program in first)
    assert all(any(step["op"] != "acquire" for step in program) for program in first)
    # the handoff's own steps; a given rule (round_trip, once) may or may not be drawn in 6 programs of 20 rules
    assert {"export_key", "import_blob", "encrypt"} <= {step["op"] for program in first for step in program}


def test_a_race_is_found_only_in_company() -> None:
    """The sequential check passes the racy target; run in company, a program gets another's ciphertext. The
    failing program passes alone, the round is cut down to the programs it needs and fails again on re-runs."""
    assert run_check("python:racy", make_racy, profile="quick", seed=1).ok
    result = run_concurrent("python:racy", make_racy, threads=4, rounds=10, steps=30, seed=1)
    found = result.failure
    assert found is not None
    assert found.concurrency
    assert found.alone is None
    assert found.failure.op in _ENCRYPTING  # the racy call
    # It ran under another thread's key: bytes under that key, or that key's refusal where the model gave bytes
    # (another program's key may be in a mode it cannot run, or destroyed: 4 runs in 30 measured).
    refused = re.search(r"model <\d+ bytes, sha256 [0-9a-f]+>, target NTE_BAD_(ALGID|KEY) ", found.failure.message)
    assert found.failure.detail == "different bytes" or refused, found.failure.message
    assert 2 <= len(found.programs) <= 4
    assert found.failed_reruns >= 1
    assert len(found.programs[found.thread]) == found.failure.index + 1  # cut after its failing step


def test_a_failure_alone_is_said_as_such_with_its_reproducer() -> None:
    result = run_concurrent("python:wrong", WrongAlone, threads=3, rounds=5, steps=30, seed=2)
    found = result.failure
    assert found is not None
    assert not found.concurrency
    assert found.alone is not None
    assert found.script.startswith('"""keyhandoff reproducer')  # the sequential one, minimised
    assert "csp.encrypt(" in found.script


def test_a_deadlock_is_a_hang_within_the_timeout() -> None:
    began = time.monotonic()
    result = run_concurrent("python:deadlocks", Deadlocks, threads=4, rounds=5, steps=30, seed=3, timeout=5)
    found = result.failure
    assert found is not None
    assert found.hung
    assert "still running after 5 s" in found.failure.message
    assert time.monotonic() - began < 60


def test_a_deadlock_comes_with_a_script_that_hangs_on_it_and_not_on_the_builtin_csp() -> None:
    spec = "python:tests.stateful.test_concurrent:Deadlocks"
    found = run_concurrent(spec, Deadlocks, threads=4, rounds=5, steps=30, seed=3, timeout=5).failure
    assert found is not None
    assert found.hung
    assert "TIMEOUT = 5  #" in found.script
    hung = _run_script(found.script)
    assert hung.returncode == 1
    assert re.search(r"^thread\(s\) \[[\d, ]+\] still running after 5 s: a deadlock", hung.stderr, re.MULTILINE)
    clean = _run_script(found.script.replace(f"fresh({spec!r})", "fresh('builtin')"))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.startswith("no thread raised in 50 rounds")


def test_the_command_saves_a_hung_round_and_replay_runs_it_from_the_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A deadlock found by the command: its round is saved as asked (--trace was ignored for a hang), and replay
    prints the round's script from the model and runs the round again, which hangs again."""
    trace = tmp_path / "hung.json"
    spec = "python:tests.stateful.test_concurrent:Deadlocks"
    args = ["concurrent", "--target", spec, "--threads", "4", "--rounds", "5", "--steps", "30", "--seed", "3"]
    assert main([*args, "--timeout", "5", "--trace", str(trace)]) == 1
    out = capsys.readouterr().out
    assert f"trace saved: {trace} (keyhandoff replay {trace} re-runs the round)" in out
    saved = json.loads(trace.read_text())
    assert (saved["kind"], saved["failure"]["detail"]) == ("concurrent", "hung")


def test_a_target_not_declared_concurrent_is_refused() -> None:
    with pytest.raises(TargetUnavailable, match="does not declare concurrent use"):
        run_concurrent("model", ModelTarget, threads=2, rounds=1, seed=1)


def test_the_command_saves_a_race_and_replay_runs_the_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = "python:tests.stateful.test_concurrent:make_racy"
    trace = tmp_path / "race.json"
    report = tmp_path / "report.json"
    args = ["concurrent", "--target", spec, "--rounds", "10", "--seed", "1", "--trace", str(trace)]
    status = main([*args, "--report", str(report)])
    out = capsys.readouterr().out
    assert status == 1
    assert "FAILED (concurrency)" in out
    verdict = json.loads(report.read_text())
    assert (verdict["passed"], verdict["verdict"], verdict["seed"]) == (False, "concurrency", 1)
    assert verdict["target"] == spec
    assert verdict["failure"]["op"] in _ENCRYPTING
    assert 1 <= verdict["failure"]["failed_reruns"] <= verdict["failure"]["reruns"]
    saved = json.loads(trace.read_text())
    assert saved["kind"] == "concurrent"
    assert len(saved["programs"]) >= 2
    assert saved["steps"] == saved["programs"][saved["thread"]]
    assert main(["replay", str(trace)]) == 1
    replayed = capsys.readouterr().out
    assert replayed.startswith('"""keyhandoff concurrency reproducer')  # the round as its script, then its re-runs
    assert f"{RERUNS} times:" in replayed
    assert main(["replay", str(trace), "--alone"]) == 0  # the program on its own: model and target agree
    assert "recorded a failure" not in capsys.readouterr().out  # as expected alone: no "did not happen" note
    script = verdict["failure"]["reproducer"]
    assert script.startswith('"""keyhandoff concurrency reproducer')
    assert script in out  # printed, and reported
    failed = verdict["failure"]["thread"]
    assert f'def program_{failed}(csp):\n    """Thread {failed}: the program that failed."""' in script


def _run_script(script: str) -> subprocess.CompletedProcess[str]:
    """A printed script run as its user would, from the project's root (where its spec's module imports)."""
    root = Path(__file__).resolve().parents[2]
    return subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=300)


def test_the_threaded_reproducer_fails_on_the_race_and_passes_without_it() -> None:
    """The round of a concurrency failure as a runnable script: each program in a thread of its own on one
    installation, asserting its model's answers. It fails against the racy target; the same programs against
    the built-in CSP pass every round."""
    spec = "python:tests.stateful.test_concurrent:make_racy"
    found = run_concurrent(spec, make_racy, threads=4, rounds=10, steps=30, seed=1).failure
    assert found is not None
    assert found.concurrency
    raced = _run_script(found.script)
    assert raced.returncode == 1, raced.stderr
    assert re.search(r"^round \d+: thread \d+ raised AssertionError$", raced.stdout, re.MULTILINE)
    assert re.search(r'File "<string>", line \d+, in program_\d+', raced.stdout)  # the program's own line
    clean = _run_script(found.script.replace(f"fresh({spec!r})", "fresh('builtin')"))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.strip() == "no thread raised in 50 rounds: the interleaving that fails did not occur"


def test_the_command_passes_the_builtin_csp_and_refuses_one_thread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "report.json"
    args = ["concurrent", "--target", "builtin", "--threads", "2", "--rounds", "2", "--steps", "10", "--seed", "1"]
    assert main([*args, "--report", str(report)]) == 0
    assert "PASSED" in capsys.readouterr().out
    verdict = json.loads(report.read_text())
    assert (verdict["passed"], verdict["verdict"], verdict["failure"], verdict["threads"]) == (True, "passed", None, 2)
    assert verdict["steps"] > 0
    with pytest.raises(SystemExit) as exited:
        main(["concurrent", "--target", "builtin", "--threads", "1"])
    assert exited.value.code == 2
    assert main(["concurrent", "--target", "model", "--rounds", "1"]) == 2


@pytest.mark.parametrize("works", [1, 2])
def test_a_factory_failing_mid_run_stops_it_without_a_verdict(works: int) -> None:
    """Installations the factory cannot make, for a round (after the probe: works=1) or for a program's foreign
    blob in its thread (works=2: the probe and the round's own): no verdict on the CSP, said as such, and not a
    'concurrency failure' of a program that happened to need one."""
    made = 0
    failed_in: list[str] = []

    def factory() -> BuiltinTarget:
        nonlocal made
        made += 1
        if made > works:
            failed_in.append(threading.current_thread().name)
            raise OSError("no room left for another installation")
        return BuiltinTarget(home(), remove_home=True)

    with pytest.raises(TargetUnavailable) as raised:
        run_concurrent("python:lossy", factory, threads=4, rounds=3, steps=30, seed=1)
    message = str(raised.value)
    assert message.startswith(f"python:lossy: the run stopped: making installation {works + 1} of the run failed")
    assert message.endswith("(OSError: no room left for another installation); this is no verdict on the CSP")
    where = failed_in[0]  # the round's own installation, or a program thread's foreign one
    assert where == "MainThread" if works == 1 else where.startswith("program-")


def test_a_close_that_raises_stops_a_concurrent_run_without_a_verdict() -> None:
    """The round's installation (or a program's foreign one, closed in its thread) that cannot be ended."""
    made = 0

    class ClosingFails(BuiltinTarget):
        def __init__(self) -> None:
            nonlocal made
            made += 1
            self.number = made
            super().__init__(home(), remove_home=True)

        def close(self) -> None:
            super().close()
            if self.number >= 2:  # the probe closes cleanly; every installation after it does not
                raise OSError("the bridge is gone")

    with pytest.raises(TargetUnavailable, match=r"the run stopped: ClosingFails.close\(\) raised OSError: the bridge"):
        run_concurrent("python:closing", ClosingFails, threads=3, rounds=2, steps=20, seed=1)


def test_replay_of_a_round_whose_step_cannot_run_is_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hand-edited round (a step naming a key no step made) is no divergence of the target: one line, status 2.
    Each thread's program ran it inside the round, where it used to be printed as the target's divergence."""
    opening = [{"op": "acquire", "side": "secure"}, {"op": "acquire", "side": "app"}]
    broken = [*opening, {"op": "destroy_key", "key": 7}]
    trace = tmp_path / "edited.json"
    trace.write_text(
        json.dumps(
            {
                "format": 1,
                "target": "builtin",
                "seed": 1,
                "failure": None,
                "steps": broken,
                "kind": "concurrent",
                "thread": 0,
                "programs": [broken, opening],
            }
        )
    )
    assert main(["replay", str(trace)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("keyhandoff replay: error: the trace's programs cannot be replayed: thread 0's step 3 ")


def test_a_factory_of_no_target_is_said_before_any_round() -> None:
    """The same check as keyhandoff check's: a value without the Target methods is named with what it lacks."""
    with pytest.raises(TypeError, match=r"the factory returned a value of type object, not a Target: it has no "):
        run_concurrent("python:nothing", object, threads=2, rounds=1, seed=1)  # type: ignore[arg-type]


def test_progress_off_a_terminal_is_lines_without_carriage_returns() -> None:
    """In a log (not a terminal) each 10% of the rounds is a line of its own: the terminal's one rewritten line
    ran together there ("round 1/25round 2/25...")."""
    import io

    out = io.StringIO()
    result = run_concurrent(
        "builtin", lambda: BuiltinTarget(home(), remove_home=True), threads=2, rounds=20, steps=5, seed=1, progress=out
    )
    assert result.ok
    assert "\r" not in out.getvalue()
    assert out.getvalue().splitlines() == [f"round {n}/20" for n in range(2, 21, 2)]
