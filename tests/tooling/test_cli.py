"""The keyhandoff command line and the package's importability from anywhere."""

from __future__ import annotations

import copy
import errno
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import keyhandoff
from keyhandoff.check import run_check
from keyhandoff.cli import main
from keyhandoff.model import wincrypt as w
from keyhandoff.targets import TargetUnavailable, load
from keyhandoff.targets.line_target import LineTarget, PeerError
from keyhandoff.traces import replay

ROOT = Path(__file__).resolve().parents[2]


def test_version(capsys) -> None:
    """keyhandoff --version prints the package version."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert keyhandoff.__version__ in capsys.readouterr().out


def test_help_lists_commands(capsys) -> None:
    """keyhandoff --help describes the tool and its commands."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "OPAQUEKEYBLOB" in out
    assert "vectors" in out


def test_vectors_command_passes_on_the_model(capsys) -> None:
    """keyhandoff vectors runs every known-answer vector (whole, handoff, duplicate) and exits 0."""
    assert main(["vectors", "--target", "model"]) == 0
    out = capsys.readouterr().out
    assert "all vectors passed" in out
    assert "handoff" in out


def test_vectors_command_fails_on_wrong_vectors(tmp_path: Path, capsys) -> None:
    """A vector file with a wrong ciphertext makes the command fail (exit 1)."""
    text = (ROOT / "keyhandoff" / "data" / "kat.json").read_text()
    bad = tmp_path / "bad.json"
    bad.write_text(text.replace("7649abac8119b246", "7649abac8119b247", 1))
    assert main(["vectors", "--file", str(bad)]) == 1
    assert "FAIL sp800-38a-F.2.1-cbc-aes128" in capsys.readouterr().out


def test_console_script_from_another_directory(tmp_path: Path) -> None:
    """The installed console script and the subpackages import from any directory."""
    code = "import keyhandoff.model, keyhandoff.impl, keyhandoff.targets; print(keyhandoff.model.ErrorCode(0x80090003))"
    for cwd in (tmp_path, ROOT):
        result = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "NTE_BAD_KEY (0x80090003)"
    script = subprocess.run(["keyhandoff", "--version"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert script.returncode == 0
    assert keyhandoff.__version__ in script.stdout


# --- what stops a command is one line and exit status 2, never a traceback ----------------------------------

# A line-protocol peer that greets, then refuses every context the way CryptAcquireContext does for a provider
# that is not installed (NTE_KEYSET_NOT_DEF).
_NO_PROVIDER_PEER = """
import sys
for line in sys.stdin:
    print("ok 1 test-platform no provider" if line.split()[0] == "hello" else "err 0x80090019", flush=True)
"""


def _cannot_run(argv: list[str], capsys) -> str:
    """Run the command line; it must answer 2 with one line on stderr (no traceback). That line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"keyhandoff {argv[0]}: error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("nosuch", "unknown target 'nosuch'; known: model, builtin"),
        ("python:no_such_module_here:make", "cannot import 'no_such_module_here'"),
        ("python:os:no_such_factory", "os has no callable 'no_such_factory'"),
        ("python:os", "a python target is written python:package.module:factory"),
        ("python:builtins:object", "object() returned a value of type object, which has no acquire, release"),
        ("line:/no/such/program", "cannot start '/no/such/program': No such file or directory"),
        ("line:'unclosed", "No closing quotation"),
        ("line:", "a line target is written line:<command and arguments>"),
        (f"line:{shlex.quote(sys.executable)} -c pass", "the peer exited"),  # not the line protocol
        (  # a Target whose capabilities() is a dict (it used to end check with a traceback, vectors too)
            "python:tests.stateful.test_check_tool:_CapabilitiesAsDict",
            "_CapabilitiesAsDict.capabilities() returned a value of type dict, not a Capabilities",
        ),
    ],
)
def test_a_target_that_cannot_be_had_is_one_line(spec: str, says: str, capsys) -> None:
    """An unknown, malformed or unstartable target spec stops check (and vectors) before any run, with a line
    saying why."""
    assert says in _cannot_run(["check", "--target", spec, "--profile", "quick"], capsys)
    assert says in _cannot_run(["vectors", "--target", spec], capsys)


def test_a_peer_without_a_context_is_no_target(tmp_path: Path, capsys) -> None:
    """A peer that answers hello but cannot acquire a context (an uninstalled provider) is reported with the
    code and its meaning, not as a crash in the middle of the capability probe."""
    peer = tmp_path / "peer.py"
    peer.write_text(_NO_PROVIDER_PEER)
    spec = f"line:{shlex.quote(sys.executable)} {shlex.quote(str(peer))}"
    line = _cannot_run(["check", "--target", spec], capsys)
    assert "error: no provider: no context can be acquired (0x80090019: NTE_KEYSET_NOT_DEF" in line
    target = load(spec)
    try:
        with pytest.raises(TargetUnavailable, match="NTE_KEYSET_NOT_DEF"):
            target.capabilities()
    finally:
        target.close()


@pytest.mark.parametrize("target", ["builtin", "builtin-processes"])
def test_an_installation_that_cannot_be_used_is_one_line(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A KEYHANDOFF_HOME that is a file, a token database that is not one, or a PKCS#11 token that is not
    configured: the built-in target cannot be had, said in one line with exit status 2 (each used to end the
    command with a traceback)."""
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("KEYHANDOFF_HOME", str(tmp_path / "file"))
    assert "file exists and is not a directory" in _cannot_run(["vectors", "--target", target], capsys)
    home = tmp_path / "home"
    load("builtin", home=str(home)).close()
    for leftover in home.glob("token.sqlite3*"):
        leftover.unlink()
    (home / "token.sqlite3").write_bytes(b"junk" * 100)
    monkeypatch.setenv("KEYHANDOFF_HOME", str(home))
    assert "token.sqlite3 cannot be used: file is not a database" in _cannot_run(
        ["vectors", "--target", target], capsys
    )
    monkeypatch.setenv("KEYHANDOFF_HOME", str(tmp_path / "other"))
    monkeypatch.setenv("KEYHANDOFF_TOKEN", "pkcs11")
    for name in ("KEYHANDOFF_PKCS11_MODULE", "KEYHANDOFF_PKCS11_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert "set KEYHANDOFF_PKCS11_MODULE" in _cannot_run(["vectors", "--target", target], capsys)
    assert _cannot_run(["demo"], capsys) == (
        "keyhandoff demo: error: set KEYHANDOFF_PKCS11_MODULE (the PKCS#11 module path) and KEYHANDOFF_PKCS11_TOKEN "
        "(the token label)"
    )
    monkeypatch.setenv("KEYHANDOFF_PKCS11_MODULE", str(tmp_path / "module.so"))
    monkeypatch.setenv("KEYHANDOFF_PKCS11_TOKEN", "label")
    monkeypatch.delenv("KEYHANDOFF_PKCS11_PIN", raising=False)
    pin_file = tmp_path / "pin"
    pin_file.write_bytes(b"\xff\xfe1234")  # not UTF-8: the decode error quoted a byte of the PIN
    monkeypatch.setenv("KEYHANDOFF_PKCS11_PIN_FILE", str(pin_file))
    assert _cannot_run(["demo"], capsys) == f"keyhandoff demo: error: the PIN file {pin_file} is not UTF-8 text"
    monkeypatch.setenv("KEYHANDOFF_TOKEN", "pkcs12")  # a typo: the demo ended in a ValueError's traceback
    said = "KEYHANDOFF_TOKEN='pkcs12' names no token kind; known: "
    assert said in _cannot_run(["demo"], capsys)
    assert said in _cannot_run(["vectors", "--target", target], capsys)


def test_unknown_specs_are_still_value_errors() -> None:
    """load has always raised ValueError for a spec that names no target; UnknownTarget keeps that."""
    with pytest.raises(ValueError, match="unknown target"):
        load("nosuch")
    with pytest.raises(TargetUnavailable):
        load("nosuch")


@pytest.mark.parametrize("argv", [["--examples", "0"], ["--steps", "-1"], ["--steps", "many"]])
def test_counts_must_be_positive(argv: list[str], capsys) -> None:
    """--examples and --steps take whole numbers from 1: argparse's usage error, status 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--target", "model", *argv])
    assert exit_info.value.code == 2
    assert f"argument {argv[0]}" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--report", "--junit", "--trace"])
def test_an_output_nowhere_is_refused_before_the_run(option: str, tmp_path: Path, capsys, monkeypatch) -> None:
    """An output file in a directory that does not exist is refused before the run, not after it has been lost."""
    import keyhandoff.check

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the run started")

    monkeypatch.setattr(keyhandoff.check, "run_check", must_not_run)
    target = tmp_path / "missing" / "out.json"
    line = _cannot_run(["check", "--target", "model", option, str(target)], capsys)
    assert f"{option} {target}: the directory {target.parent} does not exist" in line


def test_a_vector_file_that_is_not_one(tmp_path: Path, capsys) -> None:
    """vectors --file: a missing file, a file that is not JSON, a vector missing a field or naming no
    algorithm: each one line naming the file (and the vector), before any target starts."""
    missing = tmp_path / "missing.json"
    assert f"{missing}: No such file or directory" in _cannot_run(["vectors", "--file", str(missing)], capsys)
    junk = tmp_path / "junk.json"
    junk.write_text("not json")
    assert "not a vector file in the kat.json format" in _cannot_run(["vectors", "--file", str(junk)], capsys)
    shipped = json.loads((ROOT / "keyhandoff" / "data" / "kat.json").read_text())
    for broken, says in [({"key": None}, "vector 2 is malformed"), ({"alg": "__name__"}, "unknown algorithm")]:
        data = copy.deepcopy(shipped)
        data["vectors"][1].update(broken)
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(data))
        assert says in _cannot_run(["vectors", "--file", str(bad)], capsys)


def test_a_trace_that_is_not_one(tmp_path: Path, capsys) -> None:
    """replay: a missing file, JSON that is not a trace, a step the trace cannot replay: one line each."""
    missing = tmp_path / "missing.json"
    assert "No such file or directory" in _cannot_run(["replay", str(missing)], capsys)
    for text, says in [
        ("[1]", "not a keyhandoff trace (format 1)"),
        ("{", "not a keyhandoff trace"),
        ('{"format": 1, "steps": [1]}', "each with an 'op'"),
        ('{"format": 1, "target": "model", "steps": [{"op": "encrypt", "key": 0}]}', "step 1 (encrypt) cannot be"),
    ]:
        trace = tmp_path / "trace.json"
        trace.write_text(text)
        assert says in _cannot_run(["replay", str(trace)], capsys)


def test_a_demo_home_that_cannot_be_an_installation(tmp_path: Path, capsys) -> None:
    """demo --home: a regular file, or a path under one, is one line and status 2 (a missing parent is made)."""
    (tmp_path / "file").write_text("x")
    assert "exists and is not a directory" in _cannot_run(["demo", "--home", str(tmp_path / "file")], capsys)
    under = tmp_path / "file" / "home"
    assert "cannot create the installation directory" in _cannot_run(["demo", "--home", str(under)], capsys)


def test_an_interrupted_command_says_so(monkeypatch, capsys) -> None:
    """Ctrl-C ends a command with status 130 and one line, not a traceback."""
    import keyhandoff.vectors

    def interrupted(path: str | None = None) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(keyhandoff.vectors, "load_vectors", interrupted)
    assert main(["vectors"]) == 130
    assert capsys.readouterr().err.strip() == "keyhandoff vectors: interrupted"


def test_the_command_leaves_no_hypothesis_folder_where_it_runs(tmp_path: Path) -> None:
    """`keyhandoff check` keeps Hypothesis's files (its cache of literals mined from local modules: here the
    adapter's source) in a private directory, not in ./.hypothesis of the user's folder; a
    HYPOTHESIS_STORAGE_DIRECTORY the user sets is where they go instead."""
    examples = ROOT / "docs" / "examples"
    argv = [shutil.which("keyhandoff") or "keyhandoff", "check", "--target", "python:vendor_adapter:make_target"]
    argv += ["--profile", "quick", "--examples", "3", "--seed", "1"]
    env = {k: v for k, v in os.environ.items() if k != "HYPOTHESIS_STORAGE_DIRECTORY"}
    env["PYTHONPATH"] = str(examples)
    plain = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert plain.returncode == 0, plain.stdout[-1000:] + plain.stderr[-1000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    chosen = tmp_path / "mine"
    again = subprocess.run(
        argv, cwd=tmp_path, env={**env, "HYPOTHESIS_STORAGE_DIRECTORY": str(chosen)}, capture_output=True, check=False
    )
    assert again.returncode == 0
    assert any((chosen / "constants").iterdir())  # what would have been written to ./.hypothesis


def test_a_failing_check_keeps_every_trace_and_survives_an_unwritable_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Two failing runs with one seed leave two traces (the second does not overwrite the first); where no
    trace can be written, the run still reports its failure and exits 1, saying the trace was not saved."""
    argv = ["check", "--target", "mutant:foreign-blob-accepted", "--profile", "quick", "--seed", "4"]
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    assert main(argv) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keyhandoff-failure-4-2.json", "keyhandoff-failure-4.json"]
    capsys.readouterr()

    def disk_full(*args: object, **kwargs: object) -> None:  # save_trace(path, ...), write_junit(result, path)
        path = next(arg for arg in args if isinstance(arg, Path))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr("keyhandoff.traces.save_trace", disk_full)  # as root, no folder here refuses a file
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "minimal reproducer" in captured.out
    assert "keyhandoff check: trace not saved: keyhandoff-failure-4-3.json: No space left on device" in captured.err
    assert "Traceback" not in captured.err
    monkeypatch.setattr("keyhandoff.check.write_junit", disk_full)
    assert main([*argv, "--junit", "r.xml"]) == 2  # asked for, and missing: not the run's verdict
    assert "keyhandoff check: error: report not written: r.xml: No space left on device" in capsys.readouterr().err
    for option in ("--trace", "--report", "--junit"):  # a directory given as the file: refused before the run
        assert main([*argv, option, str(tmp_path)]) == 2
        assert f"{option} {tmp_path}: is a directory" in capsys.readouterr().err


def test_a_peer_that_hangs_while_probed_cannot_be_checked(tmp_path: Path) -> None:
    """A line peer that answers hello and then never answers is stopped after its timeout, and the check says
    so before any test case (TargetUnavailable: one line, exit 2), not with a PeerError traceback."""
    peer = tmp_path / "hangs.py"
    peer.write_text(
        "import sys, time\n"
        "for line in sys.stdin:\n"
        "    if line.startswith('hello'):\n"
        "        print('ok 1 a peer that hangs', flush=True)\n"
        "    else:\n"
        "        time.sleep(3600)\n"
    )

    def factory() -> LineTarget:
        return LineTarget([sys.executable, str(peer)], timeout=1.0)

    with pytest.raises(TargetUnavailable, match=r"while probing what it supports: no reply within 1 s"):
        run_check("line:hangs", factory, profile="quick", seed=1)


# A peer that greets, then answers every request outside the protocol with what could be key bytes: the reply's
# words vary with the request ("OK <hex>", a bare hex field, "i"/"b" typed values gone wrong, a crash code in hex).
_GARBLING_PEER = """
import sys
secret = "4b45592d42595445532d303132333435"
replies = {"acquire": "OK " + secret, "getparam": "ok x " + secret, "genkey": secret, "crash": "crash " + secret}
for line in sys.stdin:
    word = line.split()[0]
    print("ok 1 a garbling peer" if word == "hello" else replies[sys.argv[1]], flush=True)
"""


@pytest.mark.parametrize("mode", ["acquire", "getparam", "genkey", "crash"])
def test_a_reply_outside_the_protocol_is_said_without_its_content(tmp_path: Path, mode: str) -> None:
    """A peer's reply that breaks the protocol is said by its shape (fields, the first if it is a word), never
    quoted: its fields may be key bytes in hex (80 characters of such a reply, a PLAINTEXTKEYBLOB's, used to be
    quoted into the error and onto stderr)."""
    peer = tmp_path / "garbles.py"
    peer.write_text(_GARBLING_PEER)
    target = LineTarget([sys.executable, str(peer), mode], timeout=5.0)
    try:
        call = (lambda: target.get_key_param(1, w.KP_MODE)) if mode == "getparam" else (lambda: target.acquire())
        with pytest.raises(PeerError) as caught:
            call()
    finally:
        target.close()
    said = str(caught.value)
    assert "4b45592d" not in said, said
    expected = {
        "acquire": "not a reply of the line protocol: a line of 2 fields, the first 'OK'",
        "getparam": "not a line of 2 fields, the first 'x'",
        "genkey": "not a reply of the line protocol: a line of 1 field, the first one of 32 characters",
        "crash": "the CSP crashed (exception code unreadable)",
    }[mode]
    assert expected in said, said


def test_a_peer_that_logs_to_stderr_is_not_taken_for_a_hung_one(tmp_path: Path) -> None:
    """A peer that writes 8 KiB to stderr per request (a debug build, Wine's fixme lines) is checked like any
    other: its stderr is read as it comes. (It was read only when the peer died: the pipe filled within eight
    requests, the peer blocked in its write, and the probe reported it hung.) Its last words are still kept."""
    source = (ROOT / "docs" / "examples" / "line_peer.py").read_text()
    hook = "    for line in lines:\n"
    assert hook in source
    peer = tmp_path / "chatty.py"
    peer.write_text(source.replace(hook, hook + '        print("debug:", "x" * 8192, file=sys.stderr, flush=True)\n'))

    def factory() -> LineTarget:
        return LineTarget([sys.executable, str(peer)], timeout=5.0)

    assert run_check("line:chatty", factory, profile="quick", examples=3, seed=1).ok
    target = factory()
    target.acquire("secure")
    target.close()
    assert target._stderr_tail().endswith("x" * 100)


def test_a_peer_that_hangs_mid_probe_is_reported_as_hung(tmp_path: Path) -> None:
    """A peer that hangs on its first CryptGenKey while probed is reported as hung, not as "exited" (the probe's
    cleanup used to try to release its context on the peer it had just stopped, and that error replaced the
    hang)."""
    source = (ROOT / "docs" / "examples" / "line_peer.py").read_text()
    hook = '"genkey": lambda prov, alg, flags, hw:'
    assert hook in source
    peer = tmp_path / "hangs_on_genkey.py"
    peer.write_text(source.replace(hook, f'{hook} __import__("time").sleep(3600) or'))

    def factory() -> LineTarget:
        return LineTarget([sys.executable, str(peer)], timeout=1.0)

    with pytest.raises(TargetUnavailable, match=r"while probing what it supports: no reply within 1 s"):
        run_check("line:hangs", factory, profile="quick", seed=1)


@pytest.mark.parametrize("target", ["builtin", "builtin-processes"])
def test_a_terminated_check_cleans_up_and_says_so(tmp_path: Path, target: str) -> None:
    """SIGTERM (a CI timeout) ends a check as Ctrl-C does: status 143, one line, no traceback, no verdict, no
    app process and no temporary installation left behind. (It used to die at once, leaving every home of the
    run, secrets included, in the temporary directory; raised as SystemExit instead, Hypothesis took it for a
    failure of the CSP.)"""
    command = [sys.executable, "-c", "import sys; from keyhandoff.cli import entry; sys.exit(entry())"]
    command += ["check", "--target", target, "--profile", "thorough", "--seed", "1"]
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stderr is not None
    assert b"examples" in proc.stderr.readline()  # the run is under way
    proc.terminate()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err.decode()[-2000:]
    assert err.decode().splitlines()[-1] == "keyhandoff check: terminated"
    assert b"Traceback" not in err
    assert b"FAILED" not in out
    assert [p.name for p in tmp_path.iterdir()] == []  # homes, and Hypothesis's private directory


def test_terminated_mutant_hunts_leave_nothing_behind(tmp_path: Path) -> None:
    """SIGTERM during ``keyhandoff mutants`` reaches the hunt's child process, which removes its temporary homes
    before it ends (the parent used to kill it, and its homes stayed)."""
    command = [sys.executable, "-c", "import sys; from keyhandoff.cli import entry; sys.exit(entry())"]
    command += ["mutants", "--profile", "default", "--seed", "0"]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "TMPDIR": str(tmp_path)}
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("keyhandoff-mutant-*/home-1")):  # a hunt is under way in the child
        assert time.monotonic() < deadline, "no hunt started"
        assert proc.poll() is None
        time.sleep(0.05)
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err.decode()[-2000:]
    assert err.decode().splitlines()[-1] == "keyhandoff mutants: terminated"
    assert [p.name for p in tmp_path.iterdir()] == []


def test_a_target_that_hangs_mid_run_is_reported_at_once(tmp_path: Path) -> None:
    """A call the target never answers ends the run there: not shrunk or replayed (each replay would wait for
    the timeout again; a hanging peer once kept a quick run going for over six minutes), reported as "hung" with
    the program, whose script ends with the unanswered call."""
    source = (ROOT / "docs" / "examples" / "line_peer.py").read_text()
    hook = '"getparam": lambda key, param:'
    assert hook in source
    peer = tmp_path / "hangs_on_mode_bits.py"
    peer.write_text(
        source.replace(hook, f'{hook} __import__("time").sleep(3600) if int(param, 0) == {w.KP_MODE_BITS} else None or')
    )

    def factory() -> LineTarget:
        return LineTarget([sys.executable, str(peer)], timeout=1.0)

    started = time.monotonic()
    result = run_check("line:hangs", factory, profile="quick", seed=2)
    assert time.monotonic() - started < 20
    assert result.failure is not None
    assert result.failure.detail == "hung"
    assert result.failure.op == "get_key_param"
    assert "no reply within 1 s" in result.failure.message
    lines = result.script.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("# the target gives no answer to the next call: "))
    assert lines[at + 1] == f"csp.get_key_param({lines[at + 1].split('(')[1].split(',')[0]}, {w.KP_MODE_BITS})"
    assert all(line.endswith(".close()") for line in lines[at + 2 :]), lines[at:]  # only the closing follows
    again, _ = replay(result.steps, factory)
    assert again is not None
    assert again.detail == "hung"


def test_replay_says_when_a_recorded_failure_did_not_happen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A trace a check saved failing, replayed against a CSP that now agrees (fixed, or a peer whose answers hang on
    its history): the replay says the recorded failure did not happen (it said only that they agree)."""
    from keyhandoff.traces import Failure, save_trace

    trace = tmp_path / "trace.json"
    steps: list[dict[str, object]] = [{"op": "acquire", "side": "secure"}, {"op": "gen_key", "prov": 0, "alg": 0x660E}]
    failure = Failure(1, "gen_key", "csp.gen_key(p0, 0x660e): model a value, target 0x0000000B", "different outcome")
    save_trace(trace, steps, spec="model", failure=failure, seed=1)
    assert main(["replay", str(trace)]) == 0
    out = capsys.readouterr().out
    assert "model and target agree" in out
    assert "the trace recorded a failure at step 2 (gen_key), which did not happen this time" in out
    save_trace(trace, steps, spec="model", failure=None, seed=1)
    assert main(["replay", str(trace)]) == 0
    assert "recorded a failure" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("spec", "options", "says"),
    [
        ("builtin", {"hoem": "x"}, "load('builtin') takes durable, home, remove_home, token, not hoem"),
        ("builtin-processes", {"home": "x", "seed": 1}, "not seed"),
        ("model", {"home": "x"}, "load('model') takes seed, not home"),
        ("model", {"seed": "3"}, "the model target's seed is an int"),
        ("mutant:handles-recycled", {"hoem": "x"}, "load('mutant:') takes home, not hoem"),
        ("line:true", {"home": "x"}, "load('line:') takes no options, not home"),
    ],
)
def test_load_refuses_an_option_its_target_does_not_take(
    spec: str, options: dict[str, object], says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A misspelt option is a TypeError, before anything is opened (``hoem=`` was ignored, and the built-in target
    opened the user's own installation in their data directory)."""
    monkeypatch.setenv("KEYHANDOFF_HOME", str(tmp_path / "user"))
    with pytest.raises(TypeError, match=re.escape(says)):
        load(spec, **options)
    assert not (tmp_path / "user").exists()
