"""The two-process CSP: the secure side in this process, the application side in a spawned child process.

Both processes open the same installation (directory): its secret, hence its opaque-blob sealing key, and its
hardware token. Handles belong to the process that made them, as in Windows: a call on a key goes to the
process that owns the handle, and only blobs (bytes) cross the boundary, exactly as in the Schannel handoff.
The app process issues its handles in its own handle space (the top bits of every handle it makes), so the
router remembers nothing per handle; any other value, issued or not, is answered by the secure side
(NTE_BAD_KEY / NTE_BAD_UID).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any, Final, NoReturn

import attrs

from keyhandoff.impl.boundary import BoundaryTimeout, ChildProcess, native_frames
from keyhandoff.impl.builtin import BuiltinCsp
from keyhandoff.impl.handles import PERMUTED_BITS, handle_space
from keyhandoff.model.errors import CryptError
from keyhandoff.model.state import KeyState, Lifecycle, Location

__all__ = ["APP_HANDLE_SPACE", "AppSide", "ProcessCsp", "serve_app_side"]

APP_HANDLE_SPACE = 1  # the secure side keeps space 0


def _plain_state(state: KeyState) -> dict[str, object]:
    """A key-state record as plain values (enums by value), so it can cross the pipe."""
    out: dict[str, object] = {}
    for field in attrs.fields(KeyState):
        value = getattr(state, field.name)
        out[field.name] = value.value if isinstance(value, Lifecycle | Location) else value
    return out


def _state(plain: Mapping[str, Any]) -> KeyState:
    values = dict(plain)
    values["lifecycle"] = Lifecycle(values["lifecycle"])
    values["location"] = Location(values["location"])
    return KeyState(**values)


_SERVED_BY_THE_CSP: Final = ("import_key", "encrypt", "decrypt")
_PASSES: Final = frozenset({bytes, int, bool, str, float, type(None)})  # marshal carries these as they are
_OTHER_TRUE: Final = ("not a CryptoAPI value",)  # truthy, and neither an integer nor bytes
_OTHER_FALSE: Final = ()  # falsy, likewise


def _crossing(value: object) -> object:
    """``value`` as the app process's CSP must see it, in a form the pipe can carry.

    The CSP reads an argument in one of three ways only: as bytes (any bytes-like value), as a DWORD (an int,
    not a bool) or by its truth (Final, hardware); anything else it refuses as of the wrong type. So bytes-like
    values cross as bytes and int subclasses (an IntEnum) as int, and a value marshal cannot carry (an
    object(), a list holding one) crosses as a stand-in that is neither int nor bytes and has the same truth:
    the app process then answers exactly what this process's CSP answers for the original. Nothing is
    converted that the CSP would refuse: ``bytes(16)`` is sixteen zero bytes, never what an int 16 means."""
    if type(value) in _PASSES:
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    try:
        truth = bool(value)
    except Exception:  # a value without a truth: where the CSP does not read its truth, it refuses it all the same
        truth = True
    return _OTHER_TRUE if truth else _OTHER_FALSE


class AppSide(BuiltinCsp):
    """What the child serves: the built-in CSP, with inspect() flattened to plain values."""

    def inspect_plain(self, key: int) -> dict[str, object]:
        return _plain_state(self.inspect(key))

    def inspect_plain_many(self, keys: list[int]) -> list[dict[str, object] | int]:
        """``inspect_plain`` of each key, in one call: its record, or the code of the CryptError that refused it."""
        return [_plain_state(a) if isinstance(a, KeyState) else a.code for a in self.inspect_many(keys)]


def serve_app_side(home: str, token: str | None = None, durability: str = "durable") -> AppSide:
    """The child's factory (``python -m keyhandoff.impl.child keyhandoff.impl.processes:serve_app_side HOME
    [TOKEN [durable|scratch]]``); a PKCS#11 token's configuration comes from the inherited environment."""
    if durability not in ("durable", "scratch"):
        raise ValueError("the installation's durability is 'durable' or 'scratch'")
    side = AppSide(home, token=token, handle_space=APP_HANDLE_SPACE, durable=durability == "durable")
    # The handoff's calls are served by the CSP's own methods, which BuiltinCsp's only pass on: with the C
    # extension they are C (the import, the data path), so the C serving loop runs no Python for them.
    for name in _SERVED_BY_THE_CSP:
        setattr(side, name, getattr(side.csp, name))
    return side


class ProcessCsp:
    """The built-in CSP across two OS processes, with the BuiltinCsp surface (so one adapter serves both)."""

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        *,
        token: str | None = None,
        timeout: float = 60.0,
        durable: bool = True,
        timeout_error: type[BoundaryTimeout] = BoundaryTimeout,
    ) -> None:
        """``timeout`` bounds each call into the app process; one not answered by then raises ``timeout_error``
        (the process has been killed)."""
        self.secure = BuiltinCsp(home, token=token, durable=durable)
        installation = self.secure.installation
        try:
            # The token kind the secure side resolved (so KEYHANDOFF_TOKEN cannot differ between the processes).
            self._child = ChildProcess(
                [
                    "keyhandoff.impl.processes:serve_app_side",
                    str(installation.path),
                    installation.token_kind,
                    "durable" if durable else "scratch",
                ],
                timeout=timeout,
                timeout_error=timeout_error,
            )
        except BaseException:
            self.secure.close()
            raise
        self._route_natively()

    def _route_natively(self) -> None:
        """With the boundary's C ends, the handoff's and the data path's calls into the app process are made in C
        for their usual case (an app handle, arguments passed on as they are, no keywords: ``_frames.Route``),
        the methods below for the rest. Only on ProcessCsp itself: a subclass that overrides one keeps its own."""
        frames = native_frames()
        parts = self._child.native_parts
        if frames is None or parts is None or type(self) is not ProcessCsp:
            return
        low, high = APP_HANDLE_SPACE << PERMUTED_BITS, (APP_HANDLE_SPACE + 1) << PERMUTED_BITS
        for name, arity, answer, judge in (
            ("import_key", 2, "handle", self._from_child),
            ("destroy_key", 1, "none", self._from_child),  # no answer to judge
            ("encrypt", 3, "bytes", functools.partial(self._not_bytes, "encrypt")),
            ("decrypt", 3, "bytes", functools.partial(self._not_bytes, "decrypt")),
        ):
            fallback = getattr(ProcessCsp, name).__get__(self)
            setattr(self, name, frames.Route(self._child, parts, name, arity, low, high, answer, judge, fallback))

    def __repr__(self) -> str:
        return f"ProcessCsp({self.secure.installation!r}, app pid {self._child.pid})"

    @property
    def app_pid(self) -> int:
        return self._child.pid

    def _child_owns(self, handle: object) -> bool:
        return handle_space(handle) == APP_HANDLE_SPACE

    def _from_child(self, value: object) -> int:
        if handle_space(value) != APP_HANDLE_SPACE:
            raise TypeError("the app process answered a value that is not one of its handles")
        assert isinstance(value, int)  # handle_space checked it
        return value

    # --- contexts and keys: routed to the process that owns the handle ------------------------------------
    def acquire(self, side: str = "secure") -> int:
        if side == "app":
            return self._from_child(self._child.call("acquire", "app"))
        return self.secure.acquire(side)

    def release(self, prov: int) -> None:
        if self._child_owns(prov):
            self._child.call("release", prov)
        else:
            self.secure.release(prov)

    def gen_key(self, prov: int, alg: int, flags: int = 0, *, hardware: bool = False) -> int:
        if self._child_owns(prov):
            handle = self._child.call("gen_key", prov, _crossing(alg), _crossing(flags), hardware=_crossing(hardware))
            return self._from_child(handle)
        return self.secure.gen_key(prov, alg, flags, hardware=hardware)

    def import_key(self, prov: int, blob: bytes, *, pub_key: int = 0, flags: int = 0, hardware: bool = False) -> int:
        if self._child_owns(prov):
            if type(pub_key) is int and pub_key == 0 and type(flags) is int and flags == 0 and hardware is False:
                # The usual call (the defaults exactly): no keywords to encode and decode on the way.
                return self._from_child(self._child.call("import_key", prov, _crossing(blob)))
            handle = self._child.call(
                "import_key",
                prov,
                _crossing(blob),
                pub_key=_crossing(pub_key),
                flags=_crossing(flags),
                hardware=_crossing(hardware),
            )
            return self._from_child(handle)
        return self.secure.import_key(prov, blob, pub_key=pub_key, flags=flags, hardware=hardware)

    def export_key(self, key: int, blob_type: int, *, exp_key: int = 0, flags: int = 0) -> bytes:
        if self._child_owns(key):
            blob = self._child.call(
                "export_key", key, _crossing(blob_type), exp_key=_crossing(exp_key), flags=_crossing(flags)
            )
            if not isinstance(blob, bytes):
                raise TypeError("the app process answered a non-bytes blob")
            return blob
        return self.secure.export_key(key, blob_type, exp_key=exp_key, flags=flags)

    def destroy_key(self, key: int) -> None:
        if self._child_owns(key):
            self._child.call("destroy_key", key)
        else:
            self.secure.destroy_key(key)

    def duplicate_key(self, key: int) -> int:
        if self._child_owns(key):
            return self._from_child(self._child.call("duplicate_key", key))
        return self.secure.duplicate_key(key)

    def set_key_param(self, key: int, param: int, value: bytes | int) -> None:
        if self._child_owns(key):
            self._child.call("set_key_param", key, _crossing(param), _crossing(value))
        else:
            self.secure.set_key_param(key, param, value)

    def get_key_param(self, key: int, param: int) -> bytes | int:
        if self._child_owns(key):
            value = self._child.call("get_key_param", key, _crossing(param))
            if not isinstance(value, bytes | int):
                raise TypeError("the app process answered a parameter of another type")
            return value
        return self.secure.get_key_param(key, param)

    def _bytes_call(self, method: str, key: int, *args: object) -> bytes:
        value = self._child.call(method, key, *args)
        if not isinstance(value, bytes):
            self._not_bytes(method, value)
        return value

    def _not_bytes(self, method: str, value: object) -> NoReturn:
        raise TypeError(f"the app process answered {method} with a non-bytes value")

    def encrypt(self, key: int, data: bytes, final: bool) -> bytes:
        if self._child_owns(key):
            return self._bytes_call("encrypt", key, _crossing(data), _crossing(final))
        return self.secure.encrypt(key, data, final)

    def decrypt(self, key: int, data: bytes, final: bool) -> bytes:
        if self._child_owns(key):
            return self._bytes_call("decrypt", key, _crossing(data), _crossing(final))
        return self.secure.decrypt(key, data, final)

    def hmac(self, key: int, hash_alg: int, data: bytes) -> bytes:
        if self._child_owns(key):
            return self._bytes_call("hmac", key, _crossing(hash_alg), _crossing(data))
        return self.secure.hmac(key, hash_alg, data)

    # --- white box and administration ---------------------------------------------------------------------
    def capabilities_data(self) -> dict[str, Any]:
        data = self.secure.capabilities_data()
        data["name"] = "builtin-processes"
        data["separate_processes"] = True
        return data

    def inspect(self, key: int) -> KeyState:
        if self._child_owns(key):
            plain = self._child.call("inspect_plain", key)
            if not isinstance(plain, dict):
                raise TypeError("the app process answered inspect with a non-record")
            return _state(plain)
        return self.secure.inspect(key)

    def inspect_many(self, keys: Sequence[int]) -> list[KeyState | CryptError]:
        """``inspect`` of each key, its state or the CryptError that refused it: the app process's keys in one
        round trip (the lockstep inspects every key after every step)."""
        remote: list[int] = []
        local: list[int] = []
        for i, key in enumerate(keys):
            (remote if self._child_owns(key) else local).append(i)
        answers = dict(zip(local, self.secure.inspect_many([keys[i] for i in local]), strict=True))
        if remote:
            plain = self._child.call("inspect_plain_many", [keys[i] for i in remote])
            if not isinstance(plain, list) or len(plain) != len(remote):
                raise TypeError("the app process answered inspect_many with another number of records")
            for i, record in zip(remote, plain, strict=True):
                if isinstance(record, dict):
                    answers[i] = _state(record)
                elif isinstance(record, int) and not isinstance(record, bool):
                    answers[i] = CryptError(record, "inspect")
                else:
                    raise TypeError("the app process answered inspect_many with a non-record")
        return [answers[i] for i in range(len(keys))]

    def token_objects(self) -> Mapping[int, int]:
        return self.secure.token_objects()  # one token, shared by both processes

    def delete_token_object(self, obj: int) -> None:
        self.secure.delete_token_object(obj)

    def close(self) -> None:
        self._child.close()
        self.secure.close()
