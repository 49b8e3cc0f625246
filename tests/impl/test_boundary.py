"""The process boundary: framed calls to a spawned child; refusals, crashes, deaths and hangs are clear."""

from __future__ import annotations

import os
import time

import pytest

from keyhandoff.impl.boundary import BoundaryTimeout, ChildProcess
from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError

SPEC = "tests.impl.boundary_fixtures:make_echo"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def child():
    proc = ChildProcess([SPEC], env={"PYTHONPATH": ROOT}, timeout=10)
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


def test_close_ends_the_child() -> None:
    """Closing the pipe makes the child exit cleanly."""
    proc = ChildProcess([SPEC], env={"PYTHONPATH": ROOT})
    proc.call("echo", 1)
    proc.close()
    assert not proc.alive()
