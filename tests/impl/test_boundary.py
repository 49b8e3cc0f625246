"""The process boundary: framed calls to a spawned child; refusals, crashes, deaths and hangs are clear."""

from __future__ import annotations

import marshal
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyhandoff.impl import boundary
from keyhandoff.impl.boundary import (
    MAX_FRAME,
    REQUEST_LIMIT,
    BoundaryTimeout,
    ChildProcess,
    FrameReader,
    FrameTooLarge,
    encode_frame,
    native_frames,
    write_all,
)
from keyhandoff.impl.child import _Dispatcher
from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError
from tests.impl.boundary_fixtures import Echo

SPEC = "tests.impl.boundary_fixtures:make_echo"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(params=["c", "python"])
def child(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[ChildProcess]:
    """An Echo child, with both ends of the round trip in C (the parent's call, the child's loop: a skip
    where impl/_frames.c was not built, a failure under CI=true) or both in Python."""
    env = {"PYTHONPATH": ROOT}
    if request.param == "c":
        if native_frames() is None:  # a skip, which fails the run under CI=true (tests/conftest.py)
            pytest.skip("keyhandoff.impl._frames was not built")
    else:
        monkeypatch.setattr(boundary, "native_frames", lambda: None)
        env["KEYHANDOFF_NATIVE_FRAMES"] = "0"
    proc = ChildProcess([SPEC], env=env, timeout=10)
    assert (proc._native_call is not None) == (request.param == "c")
    assert proc.call("serving_loop") == request.param
    yield proc
    proc.close()


def test_round_trip_in_another_process(child: ChildProcess) -> None:
    """Plain values cross intact, and the other end is really another OS process."""
    value = (1, b"\x00\xff" * 1000, "text", None, True, {"k": [1, 2]})
    assert child.call("echo", value) == value
    assert child.call("pid") != os.getpid()
    assert child.call("pid") == child.pid


def test_large_frame_crosses(child: ChildProcess) -> None:
    """A 4 MiB payload crosses in one call."""
    data = os.urandom(4 << 20)
    assert child.call("echo", data) == data


def test_a_call_too_large_for_a_frame_is_refused_and_the_child_lives_on(child: ChildProcess) -> None:
    """A request larger than a frame may be is NTE_NO_MEMORY before anything is sent, and a reply larger than a
    frame is NTE_NO_MEMORY from the child: either way the child goes on serving. (A 64 MiB request used to reach
    the child, which took it for a corrupt stream and ended, with every key it held.)"""
    with pytest.raises(CryptError) as request:
        child.call("echo", bytes(REQUEST_LIMIT))
    assert request.value.code == w.NTE_NO_MEMORY
    assert child.call("echo", b"next") == b"next"
    with pytest.raises(CryptError) as reply:
        child.call("zeros", MAX_FRAME)
    assert reply.value.code == w.NTE_NO_MEMORY
    assert child.call("echo", b"next") == b"next"
    assert len(child.call("zeros", REQUEST_LIMIT)) == REQUEST_LIMIT  # the largest request's worth fits back


def test_refusal_comes_back_as_crypt_error(child: ChildProcess) -> None:
    """A CryptError in the child is the same CryptError in the parent."""
    with pytest.raises(CryptError) as caught:
        child.call("bad_key")
    assert caught.value.code == w.NTE_BAD_KEY
    assert caught.value.operation == "encrypt"


def test_crash_reports_type_not_message(child: ChildProcess) -> None:
    """Another exception in the child is NTE_FAIL naming its type; its message never crosses."""
    with pytest.raises(CryptError) as caught:
        child.call("crash")
    assert caught.value.code == w.NTE_FAIL
    assert "RuntimeError" in str(caught.value)
    assert "secret" not in str(caught.value)
    assert child.call("echo", 5) == 5  # the child keeps serving


def test_unknown_and_private_methods_refused(child: ChildProcess) -> None:
    """Only public methods of the served object can be called."""
    for name in ("nope", "__class__", "_private"):
        with pytest.raises(CryptError) as caught:
            child.call(name)
        assert caught.value.code == w.NTE_FAIL


def test_unserialisable_reply(child: ChildProcess) -> None:
    """A reply that is not a plain value is a clear failure, and the child keeps serving."""
    with pytest.raises(CryptError):
        child.call("not_plain")
    assert child.call("echo", 1) == 1


def test_dead_child_is_a_clear_error(child: ChildProcess) -> None:
    """A child that dies mid-call gives NTE_FAIL with its exit status; later calls fail the same way."""
    with pytest.raises(CryptError, match="died") as caught:
        child.call("die")
    assert caught.value.code == w.NTE_FAIL
    with pytest.raises(CryptError, match="exited"):
        child.call("echo", 1)


def test_hung_child_times_out_and_is_killed(child: ChildProcess) -> None:
    """A child that does not answer in time is killed and the call raises BoundaryTimeout, quickly."""
    start = time.monotonic()
    with pytest.raises(BoundaryTimeout):
        child.call("hang", 30, timeout=0.5)
    assert time.monotonic() - start < 5
    assert not child.alive()


def test_close_ends_the_child(tmp_path: Path) -> None:
    """Closing the pipe makes the child exit cleanly: status 0, its exit handlers run (the child skips only the
    interpreter's teardown)."""
    proc = ChildProcess([SPEC], env={"PYTHONPATH": ROOT})
    proc.call("echo", 1)
    proc.call("at_exit", str(tmp_path / "left"))
    proc.close()
    assert not proc.alive()
    assert proc._proc.returncode == 0
    assert (tmp_path / "left").read_text() == "exit handlers ran"


def test_close_kills_a_child_that_does_not_exit() -> None:
    """A child that ignores the end of its input is killed once the close's timeout has passed."""
    proc = ChildProcess([], program=[sys.executable, "-c", "import time; time.sleep(60)"], timeout=10)
    proc.close(timeout=0.5)
    assert not proc.alive()
    assert proc._proc.returncode != 0


def test_close_drops_a_frame_nobody_asked_for() -> None:
    """A child that writes a last frame as it exits: the close reads past it to the end of the pipe."""
    server = f"import os, sys\nsys.stdin.buffer.read()\nos.write(1, bytes.fromhex('{encode_frame(('ok', 1)).hex()}'))\n"
    proc = ChildProcess([], program=[sys.executable, "-c", server], timeout=10)
    proc.close()
    assert not proc.alive()
    assert proc._proc.returncode == 0


def _call_in_flight(child: ChildProcess, *args: object) -> tuple[threading.Thread, list[object]]:
    """``child.call(*args)`` started on another thread and in flight: the thread, and the list that receives its
    answer, its refusal's code or the name of any other exception (a defect)."""
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(child.call(*args))
        except CryptError as error:
            outcome.append(error.code)
        except Exception as error:  # the defect: anything else reaching the caller
            outcome.append(type(error).__name__)

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.1)  # the call is in flight
    return thread, outcome


def test_close_during_a_call_waits_for_the_exit(child: ChildProcess) -> None:
    """Closing while another thread waits on a reply: the close does not read the reply pipe under that call
    (it waits for the exit instead), and the call gets its answer or a clear error, never a hang."""
    thread, outcome = _call_in_flight(child, "hang", 0.5)
    child.close()
    thread.join(10)
    assert not thread.is_alive()
    assert not child.alive()
    assert outcome in ([None], [w.NTE_FAIL])


def test_close_leaves_the_pipes_to_a_call_until_it_ends(child: ChildProcess) -> None:
    """A close while a call waits on a child that does not answer: after the close's grace the child is killed,
    and the call, however late it next reads, gets NTE_FAIL from its pipe's end. (The close used to shut the
    reply pipe under the call, which then read a closed descriptor: OSError EBADF.)"""
    real_wait = child._wait_readable

    def late(ms: int) -> object:
        time.sleep(0.4)  # the call is slow to look again: the close has killed the child by then
        return real_wait(ms)

    child._wait_readable = late
    thread, outcome = _call_in_flight(child, "hang", 30)
    child.close(timeout=0.2)
    assert outcome == [w.NTE_FAIL]  # the close waited for the call to end before closing its pipes
    thread.join(10)
    assert not child.alive()
    with pytest.raises(CryptError) as after:
        child.call("echo", 1)
    assert after.value.code == w.NTE_FAIL


def test_a_timeout_raises_the_error_class_the_owner_chose() -> None:
    """``timeout_error`` names what a call not answered in time raises (the tool's adapter makes it a hang)."""

    class Hung(BoundaryTimeout):
        pass

    proc = ChildProcess([SPEC], env={"PYTHONPATH": ROOT}, timeout=0.3, timeout_error=Hung)
    try:
        with pytest.raises(Hung, match=r"hang: the app process did not answer within 0\.3 s"):
            proc.call("hang", 30)
        assert not proc.alive()
    finally:
        proc.close()


def test_stray_output_in_the_child_does_not_corrupt_frames(child: ChildProcess) -> None:
    """The served code printing to stdout (or writing to fd 1) cannot break a frame: the protocol has its own
    copy of the pipe and fd 1 is stderr."""
    assert child.call("chatty", b"value") == b"value"
    assert child.call("echo", 7) == 7


def test_frame_reader_splits_and_joins() -> None:
    """Whatever one read returns (several frames, a frame in pieces) comes out as whole payloads, in order."""
    frames = [encode_frame(("a", 1)), encode_frame(b"x" * 300_000), encode_frame(None)]
    stream = b"".join(frames)
    read_end, write_end = os.pipe()
    try:
        reader = FrameReader(read_end)
        got: list[object] = []
        for at in range(0, len(stream), 40_009):  # pieces that cut headers and payloads at odd places
            write_all(write_end, stream[at : at + 40_009])
            assert reader.fill()
            while (payload := reader.next_payload()) is not None:
                got.append(marshal.loads(payload))
        assert got == [("a", 1), b"x" * 300_000, None]
        os.close(write_end)
        write_end = -1
        assert not reader.fill()  # end of input
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def test_frame_reader_refuses_an_absurd_length() -> None:
    """A header announcing more than MAX_FRAME bytes is refused before anything is allocated."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, (MAX_FRAME + 1).to_bytes(4, "big"))
        reader = FrameReader(read_end)
        assert reader.fill()
        with pytest.raises(FrameTooLarge):
            reader.next_payload()
    finally:
        os.close(read_end)
        os.close(write_end)


@pytest.mark.parametrize(
    ("payload", "answer"),
    [
        (b"\xff\x00garbage", ("crash", "MalformedRequest")),
        (marshal.dumps(("echo", (1,))), ("crash", "MalformedRequest")),  # not (method, args, kwargs)
        (marshal.dumps(("echo", [1], {})), ("crash", "MalformedRequest")),  # args not a tuple
        (marshal.dumps(("echo", (1,), [])), ("crash", "MalformedRequest")),  # kwargs not a dict
        (marshal.dumps((5, (), {})), ("crash", "NoSuchMethod")),
        (marshal.dumps(("__init__", (), {})), ("crash", "NoSuchMethod")),
        (marshal.dumps(("echo", (b"v",), {})), ("ok", b"v")),
        (marshal.dumps(("refuse", (w.NTE_BAD_DATA,), {})), ("err", w.NTE_BAD_DATA, "refuse")),
        (marshal.dumps(("echo", (), {"nope": 1})), ("crash", "TypeError")),
    ],
)
def test_child_answers_every_request_shape(payload: bytes, answer: tuple[object, ...]) -> None:
    """The child's dispatcher answers malformed frames, unknown and private names, refusals and bad arguments
    with a reply, never an exception that would end the child."""
    assert _Dispatcher(Echo()).reply(payload) == answer


def test_any_program_speaking_the_protocol_can_serve() -> None:
    """``program`` replaces the default command: here a one-line server of its own answers every request with
    the same frame, and the parent decodes it like any reply."""
    reply = encode_frame(("ok", "served by the program")).hex()
    server = (
        "import os\n"
        "from keyhandoff.impl.boundary import FrameReader\n"
        "reader = FrameReader(0)\n"
        "while reader.fill():\n"
        "    while reader.next_payload() is not None:\n"
        f"        os.write(1, bytes.fromhex('{reply}'))\n"
    )
    proc = ChildProcess([], program=[sys.executable, "-c", server], timeout=10)
    try:
        assert proc.call("anything", 1, b"2") == "served by the program"
        assert proc.call("else") == "served by the program"
    finally:
        proc.close()
