"""ProcessCsp's calls into the app process made in C (``_frames.Route``): the usual case of import_key,
destroy_key, encrypt and decrypt goes through it, anything else through the Python methods, with the same
answers either way."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keyhandoff.impl import boundary
from keyhandoff.impl.boundary import BoundaryTimeout, ChildProcess, native_frames
from keyhandoff.impl.handles import handle_space
from keyhandoff.impl.processes import APP_HANDLE_SPACE, ProcessCsp
from keyhandoff.lockstep import plaintext_blob, test_key
from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError
from tests.impl.test_boundary import ROOT, SPEC

ROUTED = ("import_key", "destroy_key", "encrypt", "decrypt")
LOW, HIGH = APP_HANDLE_SPACE << 60, (APP_HANDLE_SPACE + 1) << 60


class _Handle(enum.IntEnum):  # an int subclass: the Python method converts it, the route hands it on
    ONE = 1


@pytest.fixture(scope="module", autouse=True)
def _needs_the_extension() -> None:
    if native_frames() is None:  # a skip, which fails the run under CI=true (tests/conftest.py)
        pytest.skip("keyhandoff.impl._frames was not built")


@pytest.fixture
def csp(tmp_path: Path) -> Iterator[ProcessCsp]:
    crossing = ProcessCsp(tmp_path / "home")
    yield crossing
    crossing.close()


def outcome(call: Any, *args: object, **kwargs: object) -> object:
    try:
        value = call(*args, **kwargs)
    except CryptError as err:
        return ("refused", err.code)
    except TypeError as err:
        return ("TypeError", str(err))
    if isinstance(value, int) and value > 1 << 32:  # a handle: which process issued it
        return ("a handle", handle_space(value))
    return ("value", value)


def test_process_csp_routes_its_handoff_calls(csp: ProcessCsp, tmp_path: Path) -> None:
    frames = native_frames()
    assert frames is not None
    assert all(type(getattr(csp, name)) is frames.Route for name in ROUTED)

    class Own(ProcessCsp):  # a subclass keeps its methods (it may override them)
        pass

    own = Own(tmp_path / "own")
    try:
        assert not any(type(getattr(own, name)) is frames.Route for name in ROUTED)
    finally:
        own.close()


def test_routed_and_python_calls_answer_alike(csp: ProcessCsp) -> None:
    """The same program through each route and through the Python method it stands for, on twin keys: the same
    answers, refusals and bytes, for the usual case and for what the route hands on."""
    secure, app = csp.acquire("secure"), csp.acquire("app")
    blob = csp.export_key(csp.import_key(secure, plaintext_blob(w.CALG_AES_128, test_key(7, 16))), w.OPAQUEKEYBLOB)
    ways: list[dict[str, Any]] = [
        {name: getattr(csp, name) for name in ROUTED},
        {name: getattr(ProcessCsp, name).__get__(csp) for name in ROUTED},
    ]
    answers: list[list[object]] = []
    for way in ways:
        seen: list[object] = []
        key = way["import_key"](app, blob)
        seen.append(outcome(lambda: key))  # noqa: B023 - called at once
        seen.append(outcome(way["import_key"], app, blob, flags=w.CRYPT_EXPORTABLE))  # keywords: the method
        seen.append(outcome(way["import_key"], secure, blob))  # a secure handle: the secure side
        seen.append(outcome(way["import_key"], app, bytearray(blob)))  # converted by the method
        seen.append(outcome(way["import_key"], app, blob[:-1]))
        seen.append(outcome(way["encrypt"], key, bytes(32), False))
        seen.append(outcome(way["decrypt"], key, bytes(32), False))
        seen.append(outcome(way["encrypt"], key, bytes(5), True))
        seen.append(outcome(way["encrypt"], key, bytes(5), 1.5))
        seen.append(outcome(way["encrypt"], key, None, False))
        seen.append(outcome(way["encrypt"], key, bytes(3), False))
        seen.append(outcome(way["encrypt"], _Handle.ONE, bytes(16), False))
        seen.append(outcome(way["encrypt"], True, bytes(16), False))
        seen.append(outcome(way["destroy_key"], key))
        seen.append(outcome(way["destroy_key"], key))
        seen.append(outcome(way["encrypt"], key, bytes(16), False))
        seen.append(outcome(way["destroy_key"], LOW))  # in the app's range, never issued
        answers.append(seen)
    assert answers[0] == answers[1]
    assert answers[0][5][0] == "value"
    assert answers[0][14] == ("refused", w.NTE_BAD_KEY)


@pytest.fixture
def echo() -> Iterator[ChildProcess]:
    child = ChildProcess([SPEC], env={"PYTHONPATH": ROOT}, timeout=10)
    assert child.native_parts is not None
    yield child
    child.close()


def route(child: ChildProcess, method: str, arity: int, answer: str, **change: Any) -> Any:
    frames = native_frames()
    assert frames is not None
    settings: dict[str, Any] = {
        "child": child,
        "parts": child.native_parts,
        "method": method,
        "arity": arity,
        "low": LOW,
        "high": HIGH,
        "answer": answer,
        "judge": lambda value: ("judged", value),
        "fallback": lambda *args, **kwargs: ("fallback", args, kwargs),
        **change,
    }
    return frames.Route(**settings)


def test_a_route_checks_its_answer_and_hands_on_the_rest(echo: ChildProcess) -> None:
    handle = LOW + 5
    assert route(echo, "echo", 1, "handle")(handle) == handle
    assert route(echo, "echo", 1, "none")(handle) is None
    assert route(echo, "echo", 1, "bytes")(handle) == ("judged", handle)  # an answer of another kind
    assert route(echo, "zeros", 1, "handle", low=1, high=100)(3) == ("judged", bytes(3))
    assert route(echo, "zeros", 1, "bytes", low=1, high=100)(3) == bytes(3)
    echoing = route(echo, "echo", 1, "handle")
    assert echoing(HIGH) == ("fallback", (HIGH,), {})  # not the app's
    assert echoing(handle, 2) == ("fallback", (handle, 2), {})  # another arity
    assert echoing(handle=handle) == ("fallback", (), {"handle": handle})
    with pytest.raises(CryptError) as refused:
        route(echo, "refuse", 1, "none", low=1, high=1 << 40)(w.NTE_BAD_KEY)
    assert refused.value.code == w.NTE_BAD_KEY


def test_a_route_reads_its_child_s_timeout_each_call(echo: ChildProcess) -> None:
    hang = route(echo, "hang", 1, "none", low=1, high=10)
    echo.timeout = 0.3
    with pytest.raises(BoundaryTimeout):
        hang(5)


def test_a_route_refuses_what_it_cannot_serve(echo: ChildProcess) -> None:
    for change in [
        {"answer": "maybe"},
        {"arity": 0},
        {"low": 0},
        {"high": LOW},
        {"judge": None},
        {"fallback": 3},
        {"parts": (1, 2)},
    ]:
        with pytest.raises((ValueError, TypeError)):
            route(echo, "echo", 1, "handle", **change)


def test_without_the_c_call_the_methods_are_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(boundary, "native_frames", lambda: None)
    crossing = ProcessCsp(tmp_path / "home")
    try:
        assert crossing._child.native_parts is None
        assert all(getattr(crossing, name).__func__ is getattr(ProcessCsp, name) for name in ROUTED)
    finally:
        crossing.close()
