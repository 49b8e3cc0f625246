"""A real process boundary: a spawned child process serving method calls over a framed pipe.

The parent starts ``python -m keyhandoff.impl.child`` (a fresh interpreter: spawned, never forked, so no
parent state leaks into it) and talks to it over the child's stdin/stdout. Each frame is a 4-byte big-endian
length and a ``marshal``-encoded tuple of plain values (ints, bytes, str, bool, None, tuples, dicts): marshal is
C-speed, both ends are the same interpreter, and nothing decoded is ever executed.

Requests: ``(method, args, kwargs)``. Replies: ``("ok", value)``, ``("err", code, operation)`` for a refusal
(re-raised as :class:`CryptError`), or ``("crash", type_name)`` for anything else. A child that dies answers
``CryptError(NTE_FAIL)`` with its exit status; a child that does not answer within the timeout is killed and
the call raises :class:`BoundaryTimeout`. Neither ever hangs the parent.
"""

from __future__ import annotations

import contextlib
import marshal
import math
import os
import select
import selectors
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import IO, Any

from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError

__all__ = [
    "MAX_FRAME",
    "REQUEST_LIMIT",
    "BoundaryTimeout",
    "ChildProcess",
    "FrameReader",
    "FrameTooLarge",
    "encode_frame",
    "native_frames",
    "write_all",
]

MAX_FRAME = 64 << 20  # refuse absurd lengths instead of allocating them
# The largest request sent: a reply may be a little longer than its request (a block of padding, the framing),
# and must fit in a frame too.
REQUEST_LIMIT = MAX_FRAME - (1 << 16)
_LEN = struct.Struct(">I")


class BoundaryTimeout(TimeoutError):
    """The child did not answer in time; it has been killed."""


def native_frames() -> ModuleType | None:
    """``keyhandoff.impl._frames`` (both ends of a round trip in C: the child's serving loop, the parent's
    call), or None when it was not built (optional at install) or ``KEYHANDOFF_NATIVE_FRAMES=0``."""
    if os.environ.get("KEYHANDOFF_NATIVE_FRAMES") == "0":
        return None
    try:
        from keyhandoff.impl import _frames
    except ImportError:
        return None
    return _frames


def encode_frame(value: object) -> bytes:
    """The frame of a plain value; ValueError for a value marshal cannot encode."""
    payload = marshal.dumps(value)  # type: ignore[arg-type]  # ValueError for anything not plain
    return _LEN.pack(len(payload)) + payload


def write_all(fd: int, data: bytes) -> None:
    """One ``write(2)`` in the usual case; a blocking pipe may still take a large frame in parts."""
    written = os.write(fd, data)
    if written < len(data):
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view) :]


class FrameTooLarge(ValueError):
    """A frame header announced more than :data:`MAX_FRAME` bytes."""


class FrameReader:
    """Frames from a file descriptor, read straight with ``os.read`` (no buffered stream in between): one read
    may hold part of a frame or several. The usual reply takes one read and no buffer of its own."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        # Bytes read that no frame has taken yet. The native call (impl/_frames.c) reads it, and leaves there what
        # it read past a reply.
        self._data: bytes | bytearray = b""

    def next_payload(self) -> bytes | bytearray | None:
        """The next complete frame's payload, or None until more bytes are read; FrameTooLarge for an absurd
        length."""
        data = self._data
        if len(data) < _LEN.size:
            return None
        (size,) = _LEN.unpack_from(data)
        if size > MAX_FRAME:
            raise FrameTooLarge("frame too large")
        end = _LEN.size + size
        if len(data) < end:
            return None
        self._data = data[end:]
        return data[_LEN.size : end]

    def fill(self) -> bool:
        """Read what the pipe holds (blocking if it is empty); False at end of input."""
        chunk = os.read(self.fd, 1 << 16)
        if not chunk:
            return False
        if not self._data:
            self._data = chunk
        else:  # part of a frame is waiting: accumulate in place (amortised, so a large frame stays linear)
            if not isinstance(self._data, bytearray):
                self._data = bytearray(self._data)
            self._data += chunk
        return True


# The native call's outcomes (impl/_frames.c), the cases ChildProcess._outcome answers.
_TIMED_OUT, _DIED, _OVERSIZED, _GONE, _REQUEST_TOO_LARGE, _EXITED, _PENDING, _REPLY = range(1, 9)


def _decoded(payload: bytes | bytearray) -> object:
    """A reply's value; None (answered as a malformed reply) for bytes marshal cannot read."""
    try:
        return marshal.loads(payload)
    except (EOFError, ValueError, TypeError):
        return None


class ChildProcess:
    """A spawned child serving one object's methods. Thread-safe: one call at a time crosses the pipe."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        program: Sequence[str] | None = None,
        timeout_error: type[BoundaryTimeout] = BoundaryTimeout,
    ) -> None:
        """Spawn ``program`` (default: this interpreter running :mod:`keyhandoff.impl.child`) with ``args``.
        Any program that speaks the protocol can be served this way (the benchmarks time a native one).
        ``timeout_error`` is raised for a call not answered in time (a subclass lets a user of this module tell a
        hang apart in its own terms, as the tool's adapter does)."""
        self.timeout = timeout
        self._timeout_error = timeout_error
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            [*(program or [sys.executable, "-m", "keyhandoff.impl.child"]), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            bufsize=0,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None  # noqa: PT018 - Popen with PIPE
        frames = native_frames()
        # A call in one C function (encode, write, poll, read, decode) where poll exists, every case but an "ok"
        # reply answered by _outcome below; otherwise the Python steps (_python_call).
        self._native_call = frames.call if frames is not None and hasattr(select, "poll") else None
        self._stdin: IO[bytes] = self._proc.stdin
        self._stdout: IO[bytes] = self._proc.stdout
        self._stdin_fd = self._stdin.fileno()
        self._reader = FrameReader(self._stdout.fileno())
        self._wait_readable: Callable[[int], object]  # milliseconds -> truthy once the reply pipe is readable
        if hasattr(select, "poll"):  # one poll(2) per wait, straight from C
            poller = select.poll()
            poller.register(self._reader.fd, select.POLLIN)
            self._wait_readable = poller.poll
            self._selector: selectors.BaseSelector | None = None
        else:  # Windows: the selectors module
            selector = selectors.DefaultSelector()
            selector.register(self._stdout, selectors.EVENT_READ)
            self._wait_readable = lambda ms: selector.select(ms / 1000)
            self._selector = selector
        # What the native call takes each time (one tuple: no attribute lookups per call).
        self._native_parts = (
            self._lock,
            self._proc,
            self._reader,
            self._stdin_fd,
            self._reader.fd,
            self._outcome,
            MAX_FRAME,
            REQUEST_LIMIT,
        )

    @property
    def native_parts(self) -> tuple[object, ...] | None:
        """What the native call (``_frames.call``, ``_frames.Route``) takes each time, or None when calls are
        the Python steps."""
        return self._native_parts if self._native_call is not None else None

    @property
    def pid(self) -> int:
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc.poll() is None

    def call(self, method: str, *args: object, timeout: float | None = None, **kwargs: object) -> object:
        """Run ``method`` in the child; its refusals come back as CryptError. A request too large for one frame
        is NTE_NO_MEMORY, sent nowhere: the child would take it for a corrupt stream and end, and its keys with it."""
        wait = self.timeout if timeout is None else timeout
        if self._native_call is not None:
            return self._native_call(self._native_parts, method, args, kwargs, wait)
        return self._python_call(method, args, kwargs, wait)

    def _python_call(self, method: str, args: tuple[object, ...], kwargs: dict[str, object], timeout: float) -> object:
        frame = encode_frame((method, args, kwargs))
        if len(frame) > REQUEST_LIMIT:
            raise self._request_too_large(method)
        with self._lock:
            if self._proc.returncode is not None:  # reaped by an earlier call (no system call per call)
                raise self._exited(method, self._proc.returncode)
            try:
                write_all(self._stdin_fd, frame)
            except OSError:  # BrokenPipeError: the child is gone
                raise self._gone(method) from None
            reply = self._read(method, timeout)
        return self._answer(method, reply)

    def _answer(self, method: str, reply: object) -> object:
        """The value of an ("ok", value) reply; a refusal re-raised; anything else NTE_FAIL."""
        if type(reply) is tuple and len(reply) == 2 and reply[0] == "ok":
            return reply[1]
        if not isinstance(reply, tuple) or not reply:
            raise CryptError(w.NTE_FAIL, f"{method}: malformed reply from the app process")
        if reply[0] == "err" and len(reply) == 3:
            raise CryptError(int(reply[1]), str(reply[2]))
        raise CryptError(w.NTE_FAIL, f"{method}: the app process failed ({reply[1] if len(reply) > 1 else '?'})")

    def _outcome(self, kind: int, method: str, detail: Any) -> object:
        """What the native call (``_frames.call``) leaves to Python: each case answered as the Python steps do."""
        if kind == _REPLY:
            return self._answer(method, detail)
        if kind == _PENDING:  # bytes were already read: the Python steps take them first
            return self._python_call(method, *detail)
        if kind == _REQUEST_TOO_LARGE:
            raise self._request_too_large(method)
        if kind == _EXITED:
            raise self._exited(method, detail)
        if kind == _GONE:
            raise self._gone(method)
        if kind == _TIMED_OUT:
            raise self._timed_out(method, detail)
        if kind == _DIED:
            raise self._died(method)
        raise self._oversized(method)

    def _request_too_large(self, method: str) -> CryptError:
        return CryptError(w.NTE_NO_MEMORY, f"{method}: more than the app process takes in one call")

    def _exited(self, method: str, status: object) -> CryptError:
        return CryptError(w.NTE_FAIL, f"{method}: the app process has exited ({status})")

    def _gone(self, method: str) -> CryptError:
        return CryptError(w.NTE_FAIL, f"{method}: the app process is gone (exit status {self._proc.poll()})")

    def _timed_out(self, method: str, timeout: float) -> BoundaryTimeout:
        self.kill()
        return self._timeout_error(f"{method}: the app process did not answer within {timeout:.1f} s")

    def _died(self, method: str) -> CryptError:
        return CryptError(w.NTE_FAIL, f"{method}: the app process died (exit status {self._proc.wait()})")

    def _oversized(self, method: str) -> CryptError:
        self.kill()
        return CryptError(w.NTE_FAIL, f"{method}: oversized frame from the app process")

    def _read(self, method: str, timeout: float) -> object:
        """One reply: wait for the pipe (``poll``, bounded by the deadline), read what is there, repeat until a
        whole frame is in. The wait blocks in the kernel: no thread, no busy loop."""
        deadline = time.monotonic() + timeout
        reader = self._reader
        while True:
            try:
                payload = reader.next_payload()
            except FrameTooLarge:
                raise self._oversized(method) from None
            if payload is not None:
                return _decoded(payload)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timed_out(method, timeout)
            if not self._wait_readable(math.ceil(remaining * 1000)):
                continue
            if not reader.fill():
                raise self._died(method)

    def _await_end_of_replies(self, deadline: float) -> None:
        """Wait until the child's end of the reply pipe closes, which it does as it exits, or until ``deadline``.

        ``Popen.wait`` with a timeout polls with growing sleeps (subprocess.py): it overshot the child's exit by
        about 30 ms here, on every close. The pipe's end of input wakes ``poll`` the moment the child is gone."""
        while (remaining := deadline - time.monotonic()) > 0:
            if not self._wait_readable(math.ceil(remaining * 1000)):
                continue
            try:
                if not os.read(self._reader.fd, 1 << 16):  # a late frame is dropped: nobody asked for it
                    return
            except OSError:
                return

    def kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()

    def close(self, timeout: float = 5.0) -> None:
        """End of input tells the child to exit; kill it if it does not within ``timeout`` seconds.

        A call in flight on another thread is given the same ``timeout`` to finish, and is then cut short by the
        kill (its pipe ends: NTE_FAIL at once). The pipes are closed only once no call uses them: closing a
        descriptor another thread reads or writes gave it EBADF (an OSError the call did not expect), and could
        hand its number to a file opened meanwhile."""
        deadline = time.monotonic() + timeout
        if not self._lock.acquire(timeout=timeout):
            self.kill()
            if not self._lock.acquire(timeout=timeout):  # a call that outlives its child: leave it its pipes
                return
        try:
            with contextlib.suppress(OSError):
                self._stdin.close()  # end of input: a live child exits; a dead one's pipe is released
            if self._proc.poll() is None:
                self._await_end_of_replies(deadline)
                try:
                    self._proc.wait(max(deadline - time.monotonic(), 0.0))
                except subprocess.TimeoutExpired:
                    self.kill()
            if self._selector is not None:
                self._selector.close()
            self._stdout.close()
        finally:
            self._lock.release()
