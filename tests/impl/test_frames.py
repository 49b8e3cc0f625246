"""The app process's serving loop in C (impl/_frames.c) against child.py's Python loop: the same requests in the
same frames, split at random points, get the same replies from both, and both end at the same places."""

from __future__ import annotations

import marshal
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyhandoff.impl import boundary, child
from keyhandoff.impl.boundary import FrameReader, encode_frame
from keyhandoff.impl.child import _Dispatcher, native_loop
from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError
from tests.impl.boundary_fixtures import Echo


class Served(Echo):
    """Echo, and what only a loop test needs: an exception that is no call's answer, and a custom error type."""

    def interrupt(self) -> None:
        raise KeyboardInterrupt

    def custom(self) -> None:
        raise _SecretLeak("key bytes 00112233")


class _SecretLeak(ValueError):
    pass


Loop = Callable[[object, int, int], None]


def _python(target: object, in_fd: int, out_fd: int) -> None:
    child._python_loop(_Dispatcher(target), in_fd, out_fd)


def _c(target: object, in_fd: int, out_fd: int) -> None:
    loop = native_loop()
    assert loop is not None
    loop(
        in_fd, out_fd, _Dispatcher(target).method, CryptError, child._UNSERIALISABLE, child._TOO_LARGE, child.MAX_FRAME
    )


@pytest.fixture(scope="module", autouse=True)
def _needs_the_extension() -> None:
    if native_loop() is None:  # a skip, which fails the run under CI=true (tests/conftest.py)
        pytest.skip("keyhandoff.impl._frames was not built (a C compiler and Python's headers)")


def run_loop(loop: Loop, stream: bytes, chunks: list[int], target: object | None = None) -> tuple[list[object], bool]:
    """Feed ``stream`` to ``loop`` through a pipe in ``chunks`` (sizes, cycled), the replies into a file; the
    decoded replies, and whether the loop ended on its own before the writer had written everything."""
    read_end, write_end = os.pipe()
    written = threading.Event()

    def writer() -> None:
        view, i = memoryview(stream), 0
        try:
            while view:
                size = chunks[i % len(chunks)] if chunks else len(view)
                os.write(write_end, view[:size])
                view, i = view[size:], i + 1
        except BrokenPipeError:  # the loop ended and closed nothing, but the read end is closed below
            pass
        finally:
            written.set()
            os.close(write_end)

    thread = threading.Thread(target=writer, daemon=True)
    with tempfile.TemporaryFile() as out:
        thread.start()
        try:
            loop(target if target is not None else Served(), read_end, out.fileno())
        finally:
            ended_early = not written.is_set()
            os.close(read_end)
            thread.join(10)
        out.seek(0)
        reader = FrameReader(out.fileno())
        replies: list[object] = []
        while reader.fill():
            while (payload := reader.next_payload()) is not None:
                replies.append(marshal.loads(payload))
    return replies, ended_early


REQUESTS = [
    ("echo", (b"value",), {}),
    ("echo", (), {"value": (1, "two", None, {"k": 3.5})}),
    ("refuse", (w.NTE_BAD_DATA,), {}),
    ("bad_key", (), {}),
    ("crash", (), {}),
    ("custom", (), {}),
    ("echo", (), {"nope": 1}),
    ("not_plain", (), {}),
    ("zeros", (70_000,), {}),
    ("nothing_here", (), {}),
    ("_private", (), {}),
    ("__init__", (), {}),
    (5, (), {}),
    ("echo", [1], {}),
    ("echo", (1,), []),
    ("echo", (1,)),
    "not a tuple",
]


def frames_of(items: list[object]) -> bytes:
    return b"".join(encode_frame(item) for item in items)


def both(stream: bytes, chunks: list[int]) -> tuple[list[object], list[object]]:
    python, _ = run_loop(_python, stream, chunks)
    c, _ = run_loop(_c, stream, chunks)
    return python, c


@given(
    st.lists(st.sampled_from(REQUESTS), max_size=12),
    st.lists(st.integers(1, 70), max_size=6),
    st.lists(st.binary(max_size=12), max_size=2),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_both_loops_answer_the_same(requests: list[object], chunks: list[int], garbage: list[bytes]) -> None:
    """Requests of every shape (answers, refusals, crashes, unknown names, malformed requests, a reply too
    plain for marshal, one over a pipe's buffer), plus payloads that are not marshal at all, split at random
    points: the same replies, in order."""
    stream = frames_of(list(requests)) + b"".join(len(g).to_bytes(4, "big") + g for g in garbage)
    python, c = both(stream, chunks)
    assert c == python
    assert len(c) == len(requests) + len(garbage)


def test_the_replies_are_the_protocol_s() -> None:
    """Not only equal to each other: each reply is the one the protocol promises (no message crosses)."""
    _, c = both(frames_of(REQUESTS[:8]), [])
    assert c == [
        ("ok", b"value"),
        ("ok", (1, "two", None, {"k": 3.5})),
        ("err", w.NTE_BAD_DATA, "refuse"),
        ("err", w.NTE_BAD_KEY, "encrypt"),
        ("crash", "RuntimeError"),
        ("crash", "_SecretLeak"),
        ("crash", "TypeError"),
        ("crash", "UnserialisableReply"),
    ]


def test_an_absurd_length_ends_both_loops() -> None:
    """A header announcing more than MAX_FRAME: serving ends there (the stream is corrupt), later frames unread."""
    stream = frames_of([("echo", (1,), {})]) + (child.MAX_FRAME + 1).to_bytes(4, "big") + frames_of(REQUESTS[:2])
    python, c = both(stream, [])
    assert c == python == [("ok", 1)]


def test_a_partial_frame_at_end_of_input_ends_both_loops() -> None:
    stream = frames_of([("echo", (2,), {})]) + encode_frame(("echo", (3,), {}))[:-1]
    python, c = both(stream, [3])
    assert c == python == [("ok", 2)]


def test_a_reply_over_the_frame_limit_is_the_too_large_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a limit lowered to 1 KiB (both loops), a 2 KiB reply becomes the NTE_NO_MEMORY reply and the loop
    goes on."""
    limit = 1024
    monkeypatch.setattr(child, "MAX_FRAME", limit)
    monkeypatch.setattr(boundary, "MAX_FRAME", limit)
    stream = frames_of([("zeros", (2048,), {}), ("echo", (4,), {})])
    python, _ = run_loop(_python, stream, [])
    loop = native_loop()
    assert loop is not None

    def small(target: object, in_fd: int, out_fd: int) -> None:
        loop(in_fd, out_fd, _Dispatcher(target).method, CryptError, child._UNSERIALISABLE, child._TOO_LARGE, limit)

    c, _ = run_loop(small, stream, [])
    assert c == python
    assert c[0] == ("err", w.NTE_NO_MEMORY, "the app process's reply: more than one frame carries")
    assert c[1] == ("ok", 4)


@pytest.mark.parametrize("loop", [_python, _c], ids=["python", "c"])
def test_an_exception_that_is_no_answer_ends_the_loop(loop: Loop) -> None:
    """KeyboardInterrupt is not a call's answer: it leaves the loop (and the child), as in child.py."""
    with pytest.raises(KeyboardInterrupt):
        run_loop(loop, frames_of([("echo", (1,), {}), ("interrupt", (), {}), ("echo", (2,), {})]), [])


def test_each_method_is_asked_for_once() -> None:
    """The C loop asks the dispatcher for a name once, then calls what it answered: the dispatcher still decides
    what may be called, and a name it refused is asked again (it answers None every time)."""
    asked: list[object] = []
    dispatcher = _Dispatcher(Served())

    def method(name: object) -> Callable[..., object] | None:
        asked.append(name)
        return dispatcher.method(name)

    loop = native_loop()
    assert loop is not None

    def counting(target: object, in_fd: int, out_fd: int) -> None:
        loop(in_fd, out_fd, method, CryptError, child._UNSERIALISABLE, child._TOO_LARGE, child.MAX_FRAME)

    replies, _ = run_loop(counting, frames_of([("echo", (i,), {}) for i in range(3)] + [("_x", (), {})] * 2), [])
    assert replies == [("ok", 0), ("ok", 1), ("ok", 2), ("crash", "NoSuchMethod"), ("crash", "NoSuchMethod")]
    assert asked == ["echo", "_x", "_x"]


def test_the_loop_refuses_bad_arguments() -> None:
    loop = native_loop()
    assert loop is not None
    with pytest.raises(TypeError):
        loop(0, 1, "not callable", CryptError, b"", b"", 1 << 20)
    with pytest.raises(TypeError):
        loop(0, 1, print, CryptError, b"", b"", 3)


def test_a_child_process_serves_with_the_c_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real app process runs the C loop unless KEYHANDOFF_NATIVE_FRAMES=0, and answers the same either way."""
    from tests.impl.test_boundary import ROOT, SPEC

    answers = []
    for setting in ("1", "0"):
        proc = boundary.ChildProcess([SPEC], env={"PYTHONPATH": ROOT, "KEYHANDOFF_NATIVE_FRAMES": setting}, timeout=10)
        try:
            answers.append([proc.call("serving_loop"), proc.call("echo", b"x"), proc.call("echo", 7)])
            with pytest.raises(CryptError) as refused:
                proc.call("refuse", w.NTE_BAD_KEY)
            assert refused.value.code == w.NTE_BAD_KEY
        finally:
            proc.close()
    assert answers == [["c", b"x", 7], ["python", b"x", 7]]


@pytest.mark.parametrize("setting", ["1", "0"], ids=["c", "python"])
def test_other_threads_run_while_a_loop_or_a_call_waits(setting: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ends keep the GIL through their system calls only while their thread is the process's only one:
    a thread started in the app process runs while its loop waits for the next request, and a thread of this
    process runs while a call waits for its reply."""
    from tests.impl.test_boundary import ROOT, SPEC

    if setting == "0":
        monkeypatch.setattr(boundary, "native_frames", lambda: None)
    proc = boundary.ChildProcess([SPEC], env={"PYTHONPATH": ROOT, "KEYHANDOFF_NATIVE_FRAMES": setting}, timeout=10)
    stamps: list[float] = []
    stop = threading.Event()

    def tick() -> None:  # a note every 10 ms, each taken with the GIL
        while not stop.wait(0.01):
            stamps.append(time.monotonic())

    try:
        assert proc.call("serving_loop") == ("c" if setting == "1" else "python")
        proc.call("start_ticker")
        start = time.monotonic()
        time.sleep(0.5)  # the app process's loop waits in read(2) meanwhile
        noted = proc.call("stamps")
        assert isinstance(noted, list)
        assert len([t for t in noted if start < t < start + 0.5]) >= 10  # about 50
        thread = threading.Thread(target=tick)
        thread.start()
        try:
            start = time.monotonic()
            proc.call("hang", 0.5)  # this process waits in poll(2) meanwhile
            assert len([t for t in stamps if start < t < start + 0.5]) >= 10
        finally:
            stop.set()
            thread.join()
    finally:
        proc.close()


# A server of its own (``program``): for each request it writes what the parent's call must cope with, in
# the pieces given (separate writes, a moment apart, so the parent reads them separately).
_ODD_SERVER = (
    "import os, sys, time\n"
    "from keyhandoff.impl.boundary import FrameReader\n"
    "reader, answers = FrameReader(0), [[bytes.fromhex(h) for h in a.split(',')] for a in sys.argv[1:]]\n"
    "while answers and reader.fill():\n"
    "    while answers and reader.next_payload() is not None:\n"
    "        for piece in answers.pop(0):\n"
    "            os.write(1, piece) if piece else None\n"
    "            time.sleep(0.01)\n"
    "sys.stdin.buffer.read()\n"
)


def odd_child(answers: list[list[bytes]], native: bool, monkeypatch: pytest.MonkeyPatch) -> boundary.ChildProcess:
    if not native:
        monkeypatch.setattr(boundary, "native_frames", lambda: None)
    args = [",".join(piece.hex() for piece in pieces) for pieces in answers]
    proc = boundary.ChildProcess(args, program=[sys.executable, "-c", _ODD_SERVER], timeout=5)
    assert (proc._native_call is not None) == native
    return proc


@pytest.mark.parametrize("native", [True, False], ids=["c", "python"])
def test_bytes_read_past_a_reply_answer_the_next_call(native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two replies in one write, then one split in three writes: each call gets its own, in order."""
    second = encode_frame(("ok", "second"))
    third = encode_frame(("ok", b"third" * 10))
    answers = [[encode_frame(("ok", "first")) + second], [b""], [third[:3], third[3:9], third[9:]]]
    proc = odd_child(answers, native, monkeypatch)
    try:
        assert proc.call("a") == "first"
        assert proc.call("b") == "second"  # already read, with the first
        assert proc.call("c") == b"third" * 10
    finally:
        proc.close()


@pytest.mark.parametrize("native", [True, False], ids=["c", "python"])
def test_an_oversized_or_malformed_reply_is_a_clear_error(native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reply that is not marshal is NTE_FAIL (malformed) and the child lives on; a header announcing more than
    MAX_FRAME is NTE_FAIL (oversized) and the child is killed."""
    garbage = b"\x00\x00\x00\x03\xff\xfe\xfd"
    proc = odd_child([[garbage], [(child.MAX_FRAME + 1).to_bytes(4, "big")]], native, monkeypatch)
    try:
        with pytest.raises(CryptError) as malformed:
            proc.call("a")
        assert malformed.value.code == w.NTE_FAIL
        assert "malformed" in str(malformed.value)
        with pytest.raises(CryptError) as oversized:
            proc.call("b")
        assert oversized.value.code == w.NTE_FAIL
        assert "oversized" in str(oversized.value)
        assert not proc.alive()
    finally:
        proc.close()
