"""A CSP in any language, behind the keyhandoff line protocol on a subprocess's stdin/stdout (docs/targets.md).

``load("line:<command>")`` runs ``<command>`` (split like a shell would, not run by one) and speaks the protocol:
one request line, one reply line, ``ok ...`` or ``err 0x<code>``. The CAPI bridge (bridges/capi) is one such peer;
:class:`LineTarget` is the Target on this side of the pipe, and it learns the peer's capabilities by asking
(:func:`probe`), never from a declaration the peer could get wrong.

A peer that dies, hangs past the timeout, or answers outside the protocol raises :class:`PeerError` (not a
CryptError: that is a crash, and the lockstep reports it as one).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import string
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import Final

from keyhandoff.machine import DEFAULT_KEY_BYTES
from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError
from keyhandoff.target import (
    Capabilities,
    Deviation,
    TargetTimeout,
    TargetUnavailable,
    buffer_argument,
    is_dword,
)

__all__ = ["PROTOCOL_VERSION", "LineTarget", "PeerCrashed", "PeerError", "PeerInfo", "probe"]

PROTOCOL_VERSION = "1"
_BYTES_PARAMS = (w.KP_IV, w.KP_SALT, w.KP_SALT_EX)
_DWORD_PARAMS = (w.KP_PADDING, w.KP_MODE, w.KP_MODE_BITS, w.KP_PERMISSIONS, w.KP_EFFECTIVE_KEYLEN)
_STDERR_TAIL = 2000


class PeerError(RuntimeError):
    """The peer broke the protocol: it died, hung, or answered something that is not a reply."""


class PeerTimeout(PeerError, TargetTimeout):
    """The peer gave no reply within the timeout; it was stopped (a hung CSP, a deadlock)."""


class PeerExited(PeerError):
    """The peer ended (its output closed) without answering; ``exit_status`` is its status (negative: the
    signal that ended it), which a report may show (the message quotes the peer's stderr, which it may not)."""

    def __init__(self, message: str, exit_status: int | None = None) -> None:
        super().__init__(message)
        self.exit_status = exit_status


class PeerCrashed(PeerError):
    """The CSP crashed inside the call (the peer answered ``crash <exception code>`` and exited)."""

    def __init__(self, operation: str, exception: str) -> None:
        self.operation = operation
        self.exception = exception
        super().__init__(f"{operation}: the CSP crashed (exception {exception}); the peer has exited")


class PeerInfo:
    """What ``hello`` told: protocol version, platform (``wine-8.0``, ``windows 10 0``, ...), provider."""

    def __init__(self, reply: list[str]) -> None:
        if len(reply) < 2 or reply[0] != PROTOCOL_VERSION:
            raise PeerError(f"the peer speaks protocol {reply[:1]}, this side {PROTOCOL_VERSION}")
        self.version = reply[0]
        self.platform = reply[1]
        self.description = " ".join(reply[2:])

    @property
    def wine(self) -> bool:
        return self.platform.startswith("wine-")

    def __repr__(self) -> str:
        return f"PeerInfo({self.platform!r}, {self.description!r})"


class LineTarget:
    """The Target protocol over a line-protocol peer (one long-lived process per target).

    ``deviations`` are the documented differences this peer is known to have (see docs/findings.md); a run
    reports each one it meets as known rather than failing on it.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        deviations: Sequence[Deviation] = (),
    ) -> None:
        self.argv = list(argv)
        self.timeout = timeout
        self._deviations = tuple(deviations)
        self._proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            bufsize=0,
        )
        if self._proc.stdin is None or self._proc.stdout is None or self._proc.stderr is None:
            raise PeerError("the peer's pipes were not opened")
        self._stdin = self._proc.stdin
        self._out_fd = self._proc.stdout.fileno()
        self._err_fd = self._proc.stderr.fileno()
        os.set_blocking(self._err_fd, False)
        # Its stderr is read as it comes, not only when it dies: a peer that logs (Wine's fixme lines, a debug
        # build) would otherwise fill the pipe, block in its write, and look hung.
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._out_fd, selectors.EVENT_READ)
        self._selector.register(self._err_fd, selectors.EVENT_READ)
        self._pending = b""
        self._stderr = b""
        self._caps: Capabilities | None = None
        try:
            self.info = PeerInfo(self._call("hello", "hello"))
        except BaseException:
            self._kill()
            raise
        self.name = name or self.info.description or self.argv[0]

    def __repr__(self) -> str:
        return f"LineTarget({self.name!r}, {self.info.platform!r})"

    # --- the protocol -------------------------------------------------------------------------------------
    def _call(self, operation: str, *fields: object) -> list[str]:
        line = " ".join(_field(value) for value in fields).encode("ascii") + b"\n"
        if self._proc.poll() is not None:
            raise self._exited()
        try:
            self._stdin.write(line)
        except (BrokenPipeError, OSError):
            raise self._exited() from None
        reply = self._read_line().decode("ascii", "replace").split()
        if reply[:1] == ["ok"]:
            return reply[1:]
        if len(reply) == 2 and reply[0] == "err":
            try:
                code = int(reply[1], 0)
            except ValueError:
                code = -1
            if 0 <= code <= 0xFFFFFFFF:
                raise CryptError(code, operation)
        if len(reply) == 2 and reply[0] == "crash":
            self._kill()
            raise PeerCrashed(operation, reply[1] if _is_number(reply[1]) else "code unreadable")
        raise PeerError(f"{operation}: not a reply of the line protocol: {_shape(reply)}")

    def _read_line(self) -> bytes:
        deadline = time.monotonic() + self.timeout
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._kill()
                raise PeerTimeout(f"no reply within {self.timeout:g} s; the peer was stopped")
            for key, _ in self._selector.select(remaining):
                if key.fd == self._err_fd:
                    self._drain_stderr()
                    continue
                chunk = os.read(self._out_fd, 1 << 20)
                if not chunk:
                    raise self._exited()
                self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line

    def _exited(self) -> PeerExited:
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._kill()
        status = self._proc.returncode
        return PeerExited(f"the peer exited (status {status}); its last words: {self._stderr_tail()!r}", status)

    def _stderr_tail(self) -> str:
        self._drain_stderr()
        return self._stderr.decode("utf-8", "replace").strip()

    def _drain_stderr(self) -> None:
        """Read what the peer has written to stderr, keeping its last words; at its end, stop watching it."""
        try:
            while chunk := os.read(self._err_fd, 1 << 16):
                self._stderr = (self._stderr + chunk)[-_STDERR_TAIL:]
        except (BlockingIOError, OSError):
            return
        with contextlib.suppress(KeyError, ValueError):  # closed: select would report it readable forever
            self._selector.unregister(self._err_fd)

    def _kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        self._selector.close()
        for stream in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()

    # --- Target -------------------------------------------------------------------------------------------
    def acquire(self, side: str = "secure") -> int:
        if side not in ("secure", "app"):  # the protocol's two words; anything else, as the model answers it
            raise CryptError(w.ERROR_INVALID_PARAMETER, "acquire")
        return _handle(self._call("acquire", "acquire", side))

    def release(self, prov: int) -> None:
        self._call("release", "release", _handle_arg(prov))

    def gen_key(self, prov: int, alg: int, flags: int = 0, *, hardware: bool = False) -> int:
        fields = (_handle_arg(prov), _dword_arg(alg), _dword_arg(flags), int(bool(hardware)))
        return _handle(self._call("gen_key", "genkey", *fields))

    def import_key(self, prov: int, blob: bytes, *, pub_key: int = 0, flags: int = 0, hardware: bool = False) -> int:
        data = buffer_argument(blob, "import_key")
        fields = (_handle_arg(prov), _dword_arg(pub_key), _dword_arg(flags), int(bool(hardware)), data)
        return _handle(self._call("import_key", "import", *fields))

    def export_key(self, key: int, blob_type: int, *, exp_key: int = 0, flags: int = 0) -> bytes:
        fields = (_handle_arg(key), _dword_arg(exp_key), _dword_arg(blob_type), _dword_arg(flags))
        return _bytes(self._call("export_key", "export", *fields))

    def destroy_key(self, key: int) -> None:
        self._call("destroy_key", "destroy", _handle_arg(key))

    def duplicate_key(self, key: int) -> int:
        return _handle(self._call("duplicate_key", "dup", _handle_arg(key)))

    def set_key_param(self, key: int, param: int, value: bytes | int) -> None:
        # The protocol is typed (i: DWORD, b: bytes). A value whose type does not fit its parameter is not sent
        # (a C peer would read it as the other type); the peer is asked only whether the key is live, so the
        # answer ranks as the model ranks it: a dead key, then an unknown parameter, then the value's type.
        if isinstance(value, bytearray | memoryview):
            value = bytes(value)
        number = _dword_arg(param)
        if number in _BYTES_PARAMS and isinstance(value, bytes):
            self._call("set_key_param", "setparam", _handle_arg(key), number, "b", value)
        elif number not in _BYTES_PARAMS and is_dword(value):
            self._call("set_key_param", "setparam", _handle_arg(key), number, "i", _dword_arg(value))
        else:
            self._call("set_key_param", "getparam", _handle_arg(key), w.KP_ALGID)  # NTE_BAD_KEY for a dead key
            known = number in _BYTES_PARAMS or number in _DWORD_PARAMS
            raise CryptError(w.ERROR_INVALID_PARAMETER if known else w.NTE_BAD_TYPE, "set_key_param")

    def get_key_param(self, key: int, param: int) -> bytes | int:
        reply = self._call("get_key_param", "getparam", _handle_arg(key), _dword_arg(param))
        if len(reply) == 2 and reply[0] == "i":
            return _handle(reply[1:])
        if len(reply) == 2 and reply[0] == "b":
            return _bytes(reply[1:])
        raise PeerError(f"get_key_param: a value is 'i <int>' or 'b <hex>', not {_shape(reply)}")

    def encrypt(self, key: int, data: bytes, final: bool) -> bytes:
        fields = (_handle_arg(key), int(bool(final)), buffer_argument(data, "encrypt"))
        return _bytes(self._call("encrypt", "encrypt", *fields))

    def decrypt(self, key: int, data: bytes, final: bool) -> bytes:
        fields = (_handle_arg(key), int(bool(final)), buffer_argument(data, "decrypt"))
        return _bytes(self._call("decrypt", "decrypt", *fields))

    def hmac(self, key: int, hash_alg: int, data: bytes) -> bytes:
        fields = (_handle_arg(key), _dword_arg(hash_alg), buffer_argument(data, "hmac"))
        return _bytes(self._call("hmac", "hmac", *fields))

    def capabilities(self) -> Capabilities:
        if self._caps is None:
            try:
                self._caps = probe(self, self.name, self._deviations)
            except PeerError as exc:  # it hung, died or crashed while asked what it supports: it cannot be checked
                raise TargetUnavailable(f"{self.name}: while probing what it supports: {exc}") from exc
        return self._caps

    def close(self) -> None:
        """Ask the peer to quit (end of input); stop it if it does not."""
        if self._proc.poll() is None:
            try:
                self._stdin.close()
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill()


# Arguments become protocol fields here, by the Target protocol's types, so that an argument of another type is
# answered as the model answers it and never converted into a valid one: a handle that is not a non-negative int
# names no object (0); a DWORD that is not an int in 0..2**32-1 is sent as 0xFFFFFFFF, which no ALG_ID, flag
# set, blob type, KP_ parameter or hash takes; a buffer is any bytes-like value, else ERROR_INVALID_PARAMETER.
_NO_DWORD: Final = 0xFFFFFFFF


def _handle_arg(value: object) -> int:
    return value if type(value) is int and 0 <= value < 1 << 64 else 0


def _dword_arg(value: object) -> int:
    return int(value) if is_dword(value) else _NO_DWORD  # int(): an IntEnum's str() is its name, not its number


def _field(value: object) -> str:
    """One field of a request: the arguments are already of the protocol's types (see above)."""
    if isinstance(value, bytes):
        return value.hex() or "-"
    return str(value)


def _shape(reply: list[str]) -> str:
    """A reply outside the protocol, said without its content (a field may be key bytes in hex): how many fields
    it has, and the first if it is a word that cannot be hex."""
    if not reply:
        return "an empty line"
    first = reply[0]
    word = first.isalpha() and len(first) <= 16 and not all(char in string.hexdigits for char in first)
    head = repr(first) if word else f"one of {len(first)} characters"
    return f"a line of {len(reply)} field{'s' if len(reply) > 1 else ''}, the first {head}"


def _is_number(field: str) -> bool:
    try:
        return 0 <= int(field, 0) <= 0xFFFFFFFF
    except ValueError:
        return False


def _handle(reply: list[str]) -> int:
    if len(reply) != 1:
        raise PeerError(f"expected one integer, got {len(reply)} fields")
    try:
        return int(reply[0], 0)
    except ValueError:
        raise PeerError("expected an integer") from None


def _bytes(reply: list[str]) -> bytes:
    if len(reply) != 1:
        raise PeerError(f"expected one byte string, got {len(reply)} fields")
    if reply[0] == "-":
        return b""
    try:
        return bytes.fromhex(reply[0])
    except ValueError:
        raise PeerError("expected a byte string in hex") from None


# --- capabilities, learned by asking ------------------------------------------------------------------------
_CANDIDATE_ALGORITHMS = tuple(DEFAULT_KEY_BYTES)  # the session-key algorithms the machine draws from
_CANDIDATE_MODES = (w.CRYPT_MODE_CBC, w.CRYPT_MODE_ECB, w.CRYPT_MODE_CFB, w.CRYPT_MODE_OFB, w.CRYPT_MODE_CTS)
_CANDIDATE_HASHES = (w.CALG_MD5, w.CALG_SHA1, w.CALG_SHA_256)
_CANDIDATE_BLOBS = (w.PLAINTEXTKEYBLOB, w.OPAQUEKEYBLOB)


# CryptAcquireContext's own refusals (winerror.h), which the model never gives and so does not name.
_ACQUIRE_CODES: Final = {
    0x80090016: "NTE_BAD_KEYSET, the key container cannot be opened",
    0x80090017: "NTE_PROV_TYPE_NOT_DEF, no provider of that type is installed",
    0x80090019: "NTE_KEYSET_NOT_DEF, no provider of that name is installed",
    0x8009001B: "NTE_PROV_TYPE_NO_MATCH, the provider is not of that type",
}


def _works(call: object, *args: object, **kwargs: object) -> bool:
    try:
        call(*args, **kwargs)  # type: ignore[operator]
    except CryptError:
        return False
    return True


def probe(target: LineTarget, name: str, deviations: Sequence[Deviation] = ()) -> Capabilities:
    """Ask the peer what it supports: each algorithm by generating a key, each blob type by exporting an
    exportable key (NTE_BAD_TYPE: unsupported), each mode by encrypting a block in it, each HMAC hash by using
    it, duplicate and hardware by trying. Everything made here is destroyed again. A peer that cannot acquire a
    context at all is no target: :class:`TargetUnavailable`, with the code and what it means."""
    try:
        prov = target.acquire("secure")
    except CryptError as err:
        meaning = _ACQUIRE_CODES.get(err.code, "")
        raise TargetUnavailable(
            f"{name}: no context can be acquired ({w.describe_code(err.code)}{': ' + meaning if meaning else ''})"
        ) from None
    algorithms, hardware, blob_types, modes, hashes = set(), set(), set(), set(), set()
    duplicate = False
    try:
        for alg in _CANDIDATE_ALGORITHMS:
            try:
                key = target.gen_key(prov, alg, w.CRYPT_EXPORTABLE)
            except CryptError:
                continue
            algorithms.add(alg)
            target.destroy_key(key)
            try:
                pinned = target.gen_key(prov, alg, w.CRYPT_EXPORTABLE, hardware=True)
            except CryptError:
                continue
            hardware.add(alg)
            target.destroy_key(pinned)
        block_alg = next((a for a in _CANDIDATE_ALGORITHMS if a in algorithms and a != w.CALG_RC4), None)
        if block_alg is not None:
            key = target.gen_key(prov, block_alg, w.CRYPT_EXPORTABLE)
            for blob_type in _CANDIDATE_BLOBS:
                try:
                    target.export_key(key, blob_type)
                except CryptError as err:
                    if err.code != w.NTE_BAD_TYPE:  # refused for another reason: the type itself is known
                        blob_types.add(blob_type)
                else:
                    blob_types.add(blob_type)
            for mode in _CANDIDATE_MODES:
                if _works(target.set_key_param, key, w.KP_MODE, mode) and _works(target.encrypt, key, bytes(16), False):
                    modes.add(mode)
            for hash_alg in _CANDIDATE_HASHES:
                if _works(target.hmac, key, hash_alg, b"probe"):
                    hashes.add(hash_alg)
            try:
                twin = target.duplicate_key(key)
            except CryptError:
                pass
            else:
                duplicate = True
                target.destroy_key(twin)
            target.destroy_key(key)
    except BaseException:
        with contextlib.suppress(PeerError):  # a peer stopped for a hang cannot release: tell the hang, not that
            target.release(prov)
        raise
    target.release(prov)
    return Capabilities(
        name=name,
        blob_types=blob_types,
        algorithms=algorithms,
        modes=modes,
        hardware_algorithms=hardware,
        hmac_algorithms=hashes,
        duplicate=duplicate,
        separate_processes=False,
        inspect=False,
        deviations=tuple(deviations),
    )
