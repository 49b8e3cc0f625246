"""The two-process CSP: the app side really is another OS process, and the handoff across it is exact."""

from __future__ import annotations

import enum
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import keyhandoff.impl.processes as processes_module
from keyhandoff.cli import main
from keyhandoff.demo import _run
from keyhandoff.impl.builtin import BuiltinCsp
from keyhandoff.impl.handles import handle_space
from keyhandoff.impl.processes import APP_HANDLE_SPACE, ProcessCsp, serve_app_side
from keyhandoff.impl.rc4_state import native_rc4
from keyhandoff.lockstep import plaintext_blob, test_key
from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError
from keyhandoff.model.state import KeyState, Lifecycle, Location
from keyhandoff.target import TargetTimeout
from keyhandoff.targets import load
from keyhandoff.targets.fresh import fresh_factory, release_spare
from keyhandoff.vectors import load_vectors, matches, run_stream
from tests.impl.conftest import rc4_keystream

VECTORS = [v for v in load_vectors() if len(v.plaintext) >= 2 * max(v.block, 1)]


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory):
    t = load("builtin-processes", home=tmp_path_factory.mktemp("home"))
    yield t
    t.close()


@pytest.fixture
def csp(tmp_path: Path):
    c = ProcessCsp(tmp_path / "home")
    yield c
    c.close()


def test_an_encrypt_too_large_for_the_boundary_loses_nothing(csp: ProcessCsp) -> None:
    """A 64 MiB CryptEncrypt on an app-side key is NTE_NO_MEMORY, and the key goes on exactly where it was, as
    the same key in this process does (the request used to end the app process, and every app key with it)."""
    app, secure = csp.acquire("app"), csp.acquire("secure")
    blob = plaintext_blob(w.CALG_AES_128, test_key(5, 16))
    there, here = csp.import_key(app, blob), csp.import_key(secure, blob)
    assert csp.encrypt(there, bytes(32), False) == csp.encrypt(here, bytes(32), False)
    with pytest.raises(CryptError) as caught:
        csp.encrypt(there, bytes(64 << 20), False)
    assert caught.value.code == w.NTE_NO_MEMORY
    assert csp.encrypt(there, b"after the refusal", True) == csp.encrypt(here, b"after the refusal", True)
    assert csp.inspect(there).lifecycle is Lifecycle.IMPORTED  # alive, in the app process that made it


def test_app_side_is_another_process(csp: ProcessCsp) -> None:
    """Keys of the app side live in a child process, not in this one."""
    assert csp.app_pid != os.getpid()
    app = csp.acquire("app")
    key = csp.import_key(app, plaintext_blob(w.CALG_AES_128, test_key(1, 16)))
    assert csp.get_key_param(key, w.KP_ALGID) == w.CALG_AES_128
    assert key not in {csp.secure.acquire("secure")}


@settings(max_examples=25, deadline=None)
@given(vector=st.sampled_from(VECTORS), cut_blocks=st.integers(1, 3), decrypt=st.booleans())
def test_vectors_with_a_handoff_to_the_other_process(target, vector, cut_blocks: int, decrypt: bool) -> None:
    """Every vector gives its bytes when the stream is handed, mid-way, to the app process."""
    decrypt = decrypt and bool(vector.ciphertext)  # keystream vectors are checked by encrypting zeros
    size = max(vector.block, 1)
    data = vector.ciphertext if decrypt else vector.plaintext
    cut = min(cut_blocks * size, (len(data) - 1) // size * size) or size
    out = run_stream(target, vector, decrypt=decrypt, cuts=[cut], actions=["handoff"])
    assert matches(vector, out, decrypt=decrypt)


def test_hardware_key_continues_in_the_other_process(csp: ProcessCsp) -> None:
    """A pinned key's blob imports in the app process, continues the stream, and destroy kept the object."""
    secure, app = csp.acquire("secure"), csp.acquire("app")
    pinned = csp.gen_key(secure, w.CALG_AES_128, hardware=True)
    csp.encrypt(pinned, bytes(32), False)
    twin = csp.duplicate_key(pinned)
    blob = csp.export_key(pinned, w.OPAQUEKEYBLOB, flags=w.CRYPT_DESTROYKEY)
    assert len(csp.token_objects()) == 1
    moved = csp.import_key(app, blob)
    assert csp.encrypt(moved, b"x" * 48, False) == csp.encrypt(twin, b"x" * 48, False)
    assert csp.inspect(moved).key == b""


def test_handles_name_their_process(csp: ProcessCsp) -> None:
    """Every handle the app process makes carries its handle space and every secure one does not, so routing
    needs no memory per handle: a destroyed or released app handle still reaches the app process (which answers
    NTE_BAD_KEY / NTE_BAD_UID, and still reports a just-destroyed key's final state)."""
    secure, app = csp.acquire("secure"), csp.acquire("app")
    blob = plaintext_blob(w.CALG_AES_128, test_key(2, 16))
    mine = [csp.import_key(secure, blob) for _ in range(3)]
    theirs = [csp.import_key(app, blob) for _ in range(3)]
    theirs.append(csp.duplicate_key(theirs[0]))
    assert {handle_space(h) for h in [secure, *mine]} == {0}
    assert {handle_space(h) for h in [app, *theirs]} == {APP_HANDLE_SPACE}
    assert not hasattr(csp, "_in_child")
    csp.destroy_key(theirs[1])
    assert csp.inspect(theirs[1]).lifecycle is Lifecycle.DESTROYED
    for call, code in (
        (lambda: csp.encrypt(theirs[1], b"x", False), w.NTE_BAD_KEY),
        (lambda: csp.release(app), None),
        (lambda: csp.encrypt(theirs[0], b"x", False), w.NTE_BAD_KEY),
        (lambda: csp.gen_key(app, w.CALG_RC4), w.NTE_BAD_UID),
        (lambda: csp.encrypt((APP_HANDLE_SPACE << 60) | 12345, b"x", False), w.NTE_BAD_KEY),  # never issued
        (lambda: csp.encrypt(mine[0], b"x" * 16, False), None),
    ):
        if code is None:
            call()
            continue
        with pytest.raises(CryptError) as caught:
            call()
        assert caught.value.code == code


def test_dead_app_process_is_a_clear_error(csp: ProcessCsp) -> None:
    """Killing the app process turns its next call into CryptError(NTE_FAIL), never a hang."""
    app = csp.acquire("app")
    os.kill(csp.app_pid, signal.SIGKILL)
    with pytest.raises(CryptError) as caught:
        csp.gen_key(app, w.CALG_AES_128)
    assert caught.value.code == w.NTE_FAIL
    secure = csp.acquire("secure")  # the secure side carries on
    assert csp.gen_key(secure, w.CALG_AES_128)


def test_an_app_process_that_does_not_answer_is_a_hang_to_the_tool(tmp_path: Path) -> None:
    """A stopped app process: the call raises TargetTimeout, which a check reports as a hang at that call (it was
    BoundaryTimeout alone, which the check took for a crash, shrinking and replaying with a 60 s wait each time);
    the process has been killed, so what follows is NTE_FAIL."""
    target = load("builtin-processes", home=tmp_path / "home")
    try:
        app = target.acquire("app")
        target.csp._child.timeout = 0.3
        os.kill(target.csp.app_pid, signal.SIGSTOP)
        with pytest.raises(TargetTimeout, match="gen_key: the app process did not answer"):
            target.gen_key(app, w.CALG_AES_128)
        with pytest.raises(CryptError) as caught:
            target.acquire("app")
        assert caught.value.code == w.NTE_FAIL
        assert target.gen_key(target.acquire("secure"), w.CALG_AES_128)  # the secure side carries on
    finally:
        target.close()


@pytest.mark.parametrize("spec", ["builtin", "builtin-processes"])
def test_a_closed_target_refuses_every_call_with_a_code(spec: str, tmp_path: Path) -> None:
    """After close, nothing works and nothing raises anything but CryptError: no context is acquired (NTE_FAIL;
    software keys could be made after close, and hardware calls raised the closed token's ValueError), the
    secure side's handles are dead, the app side is gone (NTE_FAIL) and the token is closed (NTE_FAIL)."""
    target = load(spec, home=tmp_path / "home")
    secure, app = target.acquire("secure"), target.acquire("app")
    soft, pinned = target.gen_key(secure, w.CALG_AES_128), target.gen_key(secure, w.CALG_AES_128, hardware=True)
    moved = target.import_key(app, target.export_key(soft, w.OPAQUEKEYBLOB))
    blob = target.export_key(pinned, w.OPAQUEKEYBLOB)
    target.close()
    target.close()  # twice is harmless
    app_gone = w.NTE_FAIL if spec == "builtin-processes" else None
    expected = {
        "acquire secure": (lambda: target.acquire("secure"), w.NTE_FAIL),
        "acquire app": (lambda: target.acquire("app"), w.NTE_FAIL),
        "gen_key": (lambda: target.gen_key(secure, w.CALG_AES_128), w.NTE_BAD_UID),
        "gen_key hardware": (lambda: target.gen_key(secure, w.CALG_AES_128, hardware=True), w.NTE_BAD_UID),
        "import hardware": (lambda: target.import_key(secure, blob), w.NTE_BAD_UID),
        "encrypt": (lambda: target.encrypt(soft, bytes(16), False), w.NTE_BAD_KEY),
        "encrypt pinned": (lambda: target.encrypt(pinned, bytes(16), False), w.NTE_BAD_KEY),
        "encrypt app": (lambda: target.encrypt(moved, bytes(16), False), app_gone or w.NTE_BAD_KEY),
        "import app": (lambda: target.import_key(app, blob), app_gone or w.NTE_BAD_UID),
        "token_objects": (target.token_objects, w.NTE_FAIL),
    }
    for name, (call, code) in expected.items():
        with pytest.raises(CryptError) as caught:
            call()
        assert caught.value.code == code, name


def test_demo_proves_the_handoff(capsys, tmp_path: Path) -> None:
    """keyhandoff demo exits 0 and says the cross-process stream equals the single-process one. In a home the
    user keeps, it names its hardware key's token object, which outlives the key's destroy and is then deleted
    through the token administration API: a second run leaves the token as it found it (each run used to leave
    its object behind)."""
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "stream across processes == stream in one process" in out
    home = tmp_path / "home"
    with BuiltinCsp(home) as kept:  # an object of the user's own, which the demo must leave alone
        theirs = kept.gen_key(kept.acquire("secure"), w.CALG_AES_128, hardware=True)
        assert kept.inspect(theirs).location is Location.HARDWARE
        objects = dict(kept.token_objects())
    for _ in range(2):
        assert main(["demo", "--home", str(home)]) == 0
        out = capsys.readouterr().out
        made = re.search(r"hardware-pinned AES-256 \(token object (0x[0-9a-f]+)\)", out)
        assert made is not None, out
        assert f"hardware token object {made.group(1)} kept" in out
        assert f"deleted the demo's object {made.group(1)} (1 left, as before)" in out
        with BuiltinCsp(home) as after:
            assert dict(after.token_objects()) == objects


def test_a_command_whose_output_is_closed_ends_without_a_traceback() -> None:
    """``keyhandoff demo | head -1``: the command ends with status 141, as a shell reports a program stopped by
    SIGPIPE, and no traceback (it used to print two BrokenPipeError tracebacks)."""
    command = [sys.executable, "-c", "import sys; from keyhandoff.cli import entry; sys.exit(entry())", "demo"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None  # noqa: PT018 - both requested above
    assert proc.stdout.readline().startswith(b"secure process")
    proc.stdout.close()
    assert proc.wait(timeout=60) == 141
    assert b"Traceback" not in proc.stderr.read()
    proc.stderr.close()


def test_a_failed_check_whose_output_is_closed_still_saves_its_files(tmp_path: Path) -> None:
    """``keyhandoff check ... | head``: the reader is gone before the summary; the trace, the report and the JUnit
    file are written all the same (they were written after the summary, so a closed pipe lost them)."""
    files = {name: tmp_path / name for name in ("trace.json", "report.json", "junit.xml")}
    command = [
        *(sys.executable, "-c", "import sys; from keyhandoff.cli import entry; sys.exit(entry())", "check"),
        *("--target", "mutant:handles-recycled", "--profile", "quick", "--seed", "0"),
        *("--trace", str(files["trace.json"]), "--report", str(files["report.json"])),
        *("--junit", str(files["junit.xml"])),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    proc.stdout.close()  # before anything is printed: the first line printed meets a closed pipe
    assert proc.wait(timeout=300) == 141
    assert all(path.stat().st_size > 0 for path in files.values())
    assert '"op"' in files["trace.json"].read_text(encoding="utf-8")


class _LosesRegister(ProcessCsp):
    """A broken handoff: every import restarts the key from its IV."""

    def import_key(self, prov, blob, *, pub_key=0, flags=0, hardware=False):  # type: ignore[no-untyped-def]
        key = super().import_key(prov, blob, pub_key=pub_key, flags=flags, hardware=hardware)
        iv = self.get_key_param(key, w.KP_IV)
        if iv:
            self.set_key_param(key, w.KP_IV, iv)
        return key


def test_demo_notices_a_broken_handoff(tmp_path: Path) -> None:
    """The demo's comparison fails when the imported keys lose their live register."""
    broken = _LosesRegister(tmp_path / "home")
    try:
        assert _run(broken, lambda _line: None) is False
    finally:
        broken.close()


def test_rc4_state_crosses_between_processes_with_and_without_the_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The secure side runs RC4 on libcrypto with its state exported; the app process is started without it
    (KEYHANDOFF_NATIVE_RC4=0), so it ignores the carried state, replays, and exports none. Both ways, the
    continuation is the keystream's, byte for byte."""
    if native_rc4() is None:
        pytest.skip("libcrypto's RC4 is not usable here")
    monkeypatch.setenv("KEYHANDOFF_NATIVE_RC4", "0")  # read by the child at its first RC4 call; ours is cached
    csp = ProcessCsp(tmp_path / "home")
    try:
        secure, app = csp.acquire("secure"), csp.acquire("app")
        key_bytes = test_key(7, 16)
        stream = rc4_keystream(key_bytes, 5000)
        key = csp.import_key(secure, plaintext_blob(w.CALG_RC4, key_bytes), flags=w.CRYPT_EXPORTABLE)
        assert csp.encrypt(key, bytes(1000), False) == stream[:1000]
        with_state = csp.export_key(key, w.OPAQUEKEYBLOB, flags=w.CRYPT_DESTROYKEY)
        there = csp.import_key(app, with_state)
        assert csp.encrypt(there, bytes(1000), False) == stream[1000:2000]
        without_state = csp.export_key(there, w.OPAQUEKEYBLOB)
        assert len(without_state) == len(with_state) - 258
        back = csp.import_key(secure, without_state)
        assert csp.encrypt(back, bytes(1000), False) == stream[2000:3000]
        assert csp.inspect(back).stream_pos == 3000
    finally:
        csp.close()


class _Opaque:
    """An argument the pipe cannot carry (marshal refuses it), with a chosen truth."""

    def __init__(self, truth: bool) -> None:
        self.truth = truth

    def __bool__(self) -> bool:
        return self.truth


class _AlgId(enum.IntEnum):  # a caller's own enum of ALG_IDs: an int subclass
    AES_128 = w.CALG_AES_128


_ODD_VALUES = [
    *(None, -1, 0, 1, 16, 2**31, 2**64, 1.5, "x", "", True, False, [], {}, [_Opaque(True)]),
    *(b"", bytes(16), bytearray(16), memoryview(bytes(16)), _Opaque(True), _Opaque(False), _AlgId.AES_128),
    *(w.KP_IV, w.KP_MODE, w.KP_PADDING, w.CRYPT_MODE_ECB, w.CALG_SHA1, w.CRYPT_EXPORTABLE, w.PLAINTEXTKEYBLOB),
    plaintext_blob(w.CALG_AES_128, test_key(5, 16)),
]
_ARGUMENTS = {  # Target method -> how many arguments after the context or key handle; keyword arguments
    "gen_key": (2, ("hardware",)),
    "import_key": (1, ("pub_key", "flags", "hardware")),
    "export_key": (1, ("exp_key", "flags")),
    "set_key_param": (2, ()),
    "get_key_param": (1, ()),
    "encrypt": (2, ()),
    "decrypt": (2, ()),
    "hmac": (2, ()),
}


LINE_PEER = Path(__file__).resolve().parents[2] / "docs" / "examples" / "line_peer.py"


@pytest.fixture(scope="module")
def quartet(tmp_path_factory: pytest.TempPathFactory):
    """The app side in a child process, the same CSP in this process, the model, and the same CSP again behind
    the line protocol (docs/examples/line_peer.py), each with one app context and one AES-128 key imported from
    the same bytes."""
    crossing = ProcessCsp(tmp_path_factory.mktemp("crossing"))
    here = BuiltinCsp(tmp_path_factory.mktemp("here"))
    line = load(f"line:{shlex.quote(sys.executable)} {shlex.quote(str(LINE_PEER))}")
    sides = []
    for csp in (crossing, here, load("model", seed=0), line):
        prov = csp.acquire("app")
        key = csp.import_key(prov, plaintext_blob(w.CALG_AES_128, test_key(4, 16)), flags=w.CRYPT_EXPORTABLE)
        sides.append((csp, prov, key))
    assert handle_space(sides[0][2]) == APP_HANDLE_SPACE  # the crossing side's calls go to the child
    yield sides
    crossing.close()
    here.close()
    line.close()


def _outcome(csp: object, method: str, handle: int, args: list[object], kwargs: dict[str, object]) -> object:
    try:
        value = getattr(csp, method)(handle, *args, **kwargs)
    except CryptError as err:
        return ("refused", err.code)
    if method in ("gen_key", "import_key"):
        return ("a handle", type(value))
    if method == "export_key":
        return ("a blob", len(value))  # PLAINTEXTKEYBLOB: its length says it (no odd value is OPAQUEKEYBLOB)
    return ("value", value)


@settings(max_examples=1000, deadline=None)
@given(st.data())
def test_arguments_of_any_type_get_the_same_answer_everywhere(quartet, data: st.DataObject) -> None:
    """Any argument, of any type, gets the same answer from the app process, from the same CSP in this process,
    from the model and through the line protocol: bytes-like values and int subclasses are what they are, a
    value a pipe cannot carry crosses as one the CSP refuses alike, and nothing is converted into something a CSP
    would accept (an int 16 is not sixteen zero bytes). Only CryptError ever comes out."""
    method = data.draw(st.sampled_from(sorted(_ARGUMENTS)))
    count, keywords = _ARGUMENTS[method]
    args = [data.draw(st.sampled_from(_ODD_VALUES)) for _ in range(count)]
    kwargs = {name: data.draw(st.sampled_from(_ODD_VALUES)) for name in keywords if data.draw(st.booleans())}
    outcomes = [
        _outcome(csp, method, prov if method in ("gen_key", "import_key") else key, args, kwargs)
        for csp, prov, key in quartet
    ]
    assert outcomes[0] == outcomes[1] == outcomes[2] == outcomes[3]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
@pytest.mark.parametrize("spec", ["builtin-processes", "line"])
def test_check_runs_make_each_target_one_call_ahead(spec: str) -> None:
    """fresh_factory hands out a fresh installation per call for builtin-processes and for a line peer, the
    next one's process already started (it boots while the previous test case runs); release_spare ends that
    spare process, and the factory stays usable."""
    if spec == "line":
        spec = f"line:{shlex.quote(sys.executable)} {shlex.quote(str(LINE_PEER))}"
    factory = fresh_factory(spec)
    first = factory()
    spare = factory._next.result()  # type: ignore[attr-defined]  # white box: the target made one call ahead
    assert _alive(_pid(spare))  # started before anyone asked for it
    second = factory()
    try:
        assert second is spare
        assert second is not first
        third_pid = _pid(factory._next.result())  # type: ignore[attr-defined]
    finally:
        first.close()
        second.close()
    release_spare(factory)
    assert factory._next is None  # type: ignore[attr-defined]
    assert not _alive(third_pid)
    factory().close()  # still usable after the release
    release_spare(factory)


def _pid(target: object) -> int:
    """The process behind a builtin-processes or line target."""
    csp = getattr(target, "csp", None)
    return csp.app_pid if csp is not None else target._proc.pid  # type: ignore[attr-defined]


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (not reaped, not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] not in "ZX"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("durable", [True, False])
def test_the_app_process_is_as_durable_as_the_secure_side(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool
) -> None:
    """ProcessCsp's child opens the installation as durable as the parent's (its command line says which); a
    durability the child does not know is refused."""
    commands: list[list[str]] = []
    real = processes_module.ChildProcess

    def spawn(command: list[str], **options: object) -> object:
        commands.append(command)
        return real(command, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(processes_module, "ChildProcess", spawn)
    csp = ProcessCsp(tmp_path, durable=durable)
    try:
        assert csp.secure.installation.durable is durable
        app = serve_app_side(*commands[0][1:])  # the child's factory, as the child calls it
        assert app.installation.durable is durable
        app.close()
    finally:
        csp.close()
    with pytest.raises(ValueError, match="durable' or 'scratch'"):
        serve_app_side(str(tmp_path), "sqlite", "sometimes")


@pytest.mark.parametrize("spec", ["builtin", "builtin-processes"])
def test_a_check_makes_scratch_installations(spec: str) -> None:
    """Each test case's installation lives in a temporary home no one opens again: nothing is fsynced, and the
    home is removed when the installation closes (homes used to pile up until the process exited: a thousand in
    a thorough run, all left behind when it was killed)."""
    factory = fresh_factory(spec)
    target = factory()
    try:
        csp = target.csp  # type: ignore[attr-defined]
        installation = csp.secure.installation if isinstance(csp, ProcessCsp) else csp.installation
        assert installation.durable is False
        home = Path(installation.path)
        target.gen_key(target.acquire("app"), w.CALG_AES_128, hardware=True)  # the token's files are written
        assert (home / "secret").is_file()
    finally:
        target.close()
        release_spare(factory)
    assert not home.exists()
    with pytest.raises(ValueError, match="remove_home needs the home"):
        load(spec, remove_home=True)


def test_inspect_many_answers_as_inspect_does_in_one_round_trip(csp: ProcessCsp) -> None:
    """inspect_many gives, key by key, what inspect gives (a state, or the CryptError that refuses it): keys of
    both processes, live, destroyed and unknown, in any order; the app process's keys in one round trip."""
    app, secure = csp.acquire("app"), csp.acquire("secure")
    keys = [
        csp.gen_key(app, w.CALG_AES_128),
        csp.gen_key(secure, w.CALG_RC4),
        csp.gen_key(app, w.CALG_3DES, hardware=True),
        csp.gen_key(secure, w.CALG_AES_256),
    ]
    csp.encrypt(keys[0], b"a record of 16 b", False)
    csp.destroy_key(keys[1])
    csp.destroy_key(keys[2])
    asked = [keys[3], 12345, keys[0], keys[2], keys[1], keys[0] ^ 1]

    def one_by_one(key: int) -> object:
        try:
            return csp.inspect(key)
        except CryptError as err:
            return err.code

    calls: list[str] = []
    real_call = csp._child.call
    csp._child.call = lambda name, *a, **k: (calls.append(name), real_call(name, *a, **k))[1]  # type: ignore[method-assign]
    answers = csp.inspect_many(asked)
    assert calls == ["inspect_plain_many"]
    assert [a.code if isinstance(a, CryptError) else a for a in answers] == [one_by_one(key) for key in asked]
    states = [isinstance(a, KeyState) for a in answers]
    assert states == [True, False, True, True, True, False]  # the unknown handles refused, the dead ones not
