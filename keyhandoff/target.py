"""The Target protocol: the CryptoAPI-shaped interface every CSP under test implements.

A target is a whole installation seen from both sides of the Schannel handoff: providers are acquired on the
``"secure"`` or the ``"app"`` side, and key handles route to the side that owns them. Refusals raise
:class:`~keyhandoff.model.errors.CryptError` with the CryptoAPI code; nothing else may escape a call.
The protocol speaks at the CSP level (like rsaenh's CP* entry points): a freed key handle is NTE_BAD_KEY and
a freed provider NTE_BAD_UID, where advapi32 in front of a CSP answers ERROR_INVALID_PARAMETER.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol, TypeGuard, runtime_checkable

import attrs

from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError
from keyhandoff.model.state import KeyState

__all__ = [
    "ANY_OUTCOME",
    "ANY_REFUSAL",
    "CONDITIONS",
    "Capabilities",
    "Deviation",
    "Inspectable",
    "InstallationLost",
    "InstallationMaker",
    "NotATarget",
    "RunStopped",
    "Target",
    "TargetTimeout",
    "TargetUnavailable",
    "UnknownTarget",
    "buffer_argument",
    "capabilities_of",
    "close_target",
    "declared_capabilities",
    "is_dword",
    "missing_methods",
]


class TargetUnavailable(RuntimeError):
    """No target could be had: what the spec names cannot be started here (a program that is not there or does
    not speak the protocol, a module that does not import, Wine missing). The message says which and why, in
    words a user can act on; the command line prints it without a traceback."""


class NotATarget(TargetUnavailable, TypeError):
    """What a factory made is not a Target: a method missing, or a ``capabilities()`` that is not a
    :class:`Capabilities`. A TypeError for the API's callers; a TargetUnavailable, so the commands print it as one
    line (exit status 2)."""


class TargetTimeout(Exception):
    """Raised by a target whose CSP gave no answer within its time limit (a hang, a deadlock): the check stops
    there and reports the program, instead of replaying it (each replay would wait again). The line target
    raises it (``PeerTimeout``); a Python target may too."""


class RunStopped(BaseException):
    """The run cannot go on and gives no verdict on the CSP: an installation could not be made, or a target's
    ``close()`` raised. A BaseException, so that Hypothesis stops at once instead of taking it for the program's
    failure; the commands print it as one line and exit with status 2."""


def close_target(target: Target) -> None:
    """``target.close()`` as the harness calls it: a close that raises ends the run (:class:`RunStopped`). The
    harness makes and ends an installation per test case, so it cannot go on past one it cannot end."""
    try:
        target.close()
    except Exception as exc:
        raise RunStopped(
            f"{type(target).__name__}.close() raised {type(exc).__name__}: {exc} (a Target's close must end its "
            "installation without raising); this is no verdict on the CSP"
        ) from exc


def capabilities_of(target: Target) -> Capabilities:
    """``target.capabilities()`` as the harness asks it of each new installation: one that raises (a line
    target's peer that died or hung while probed), or answers something else than a :class:`Capabilities`, ends
    the run (:class:`RunStopped`). No step has run, so there is nothing to report; raised inside Hypothesis, it
    would otherwise end a test case before its first draw and come out as "Inconsistent data generation", blamed
    on the target's answers."""
    try:
        return declared_capabilities(target)
    except NotATarget as exc:
        raise RunStopped(f"a new installation's {exc}; this is no verdict on the CSP") from exc
    except Exception as exc:
        raise RunStopped(
            f"a new installation's {type(target).__name__}.capabilities() raised {type(exc).__name__}: {exc}; "
            "this is no verdict on the CSP"
        ) from exc


def declared_capabilities(target: Target) -> Capabilities:
    """``target.capabilities()``, checked to be a :class:`Capabilities` (:class:`NotATarget` otherwise)."""
    caps = target.capabilities()
    if not isinstance(caps, Capabilities):
        raise NotATarget(
            f"{type(target).__name__}.capabilities() returned a value of type {type(caps).__name__}, not a Capabilities"
        )
    return caps


class InstallationLost(RunStopped):
    """The factory failed to make a new installation during the run. A RunStopped, so that Hypothesis stops at
    once: it would otherwise take the test case that could not start for a program that drew less than before
    and report "Inconsistent data generation", blaming the target's answers."""


class InstallationMaker:
    """A run's ``factory``, counting what it made and turning its failure into :class:`InstallationLost`."""

    def __init__(self, factory: Callable[[], Target]) -> None:
        self.factory, self.made = factory, 0

    def __call__(self) -> Target:
        try:
            target = self.factory()
        except Exception as exc:
            raise InstallationLost(
                f"making installation {self.made + 1} of the run failed ({type(exc).__name__}: {exc}); "
                "this is no verdict on the CSP"
            ) from exc
        self.made += 1
        return target


class UnknownTarget(TargetUnavailable, ValueError):
    """A spec that names no target (unknown, or malformed): also a ValueError, as load has always raised."""


def _frozen(values: Iterable[int]) -> frozenset[int]:
    return frozenset(values)


ANY_REFUSAL = -1  # as a Deviation's model_code or target_code: any refusal
ANY_OUTCOME = -2  # any outcome, success or refusal

# Conditions a deviation can be limited to (see Deviation.condition).
CONDITIONS = (
    "",
    "dead-handle",
    "handle-reused",
    "empty-input",
    "destroykey-ignored",
    "pub-key-handle",
    "ipsec-import",
    "ipsec-flag",
    "hash-alg-blob",
    "short-plaintext",
    "generated-key",
    "kp-salt-set",
    "context-released",
    "long-hmac-key-rehashed",
    "long-hmac-shared",
    "no-salt-import",
)


@attrs.frozen
class Deviation:
    """A documented difference a target declares (docs/findings.md). Runs report each one met as a known
    deviation: never hidden, never a failure; anything undeclared still fails.

    It covers a call to ``operation`` (a Target method name, several separated by commas, or ``"*"``) where the
    model answers ``model_code`` and the target ``target_code``: an error code, ``None`` (success),
    :data:`ANY_REFUSAL` or :data:`ANY_OUTCOME`; both ``None``: the same success with another value or bytes.
    ``param`` limits it to one key parameter, ``blob_type`` to one blob type, ``model_rule`` to one of the
    model's refusal rules (the text of its Refused). ``condition`` limits it to one situation (:data:`CONDITIONS`):

    - ``dead-handle``: the call names a key or context the model holds dead;
    - ``empty-input``: the blob or data passed is empty;
    - ``pub-key-handle``: an import passes an hPubKey that names no key of the program;
    - ``ipsec-import``: the key (or the one it duplicates) was imported with CRYPT_IPSEC_HMAC_KEY;
    - ``ipsec-flag``: the import being made passes CRYPT_IPSEC_HMAC_KEY;
    - ``hash-alg-blob``: the blob being imported names an ALG_ID of the hash class (CALG_HMAC, CALG_SHA1, ...);
    - ``short-plaintext``: the PLAINTEXTKEYBLOB being imported ends before its length field or its key;
    - ``generated-key``: the key (or the one it duplicates) was made by CryptGenKey;
    - ``long-hmac-key-rehashed``: an HMAC with a key longer than a hash block, whose first HMAC (by the target,
      on it or on the key it duplicates) used another hash algorithm;
    - ``long-hmac-shared``: the key was duplicated, or made by duplicating, while longer than a hash block;
    - ``kp-salt-set`` / ``no-salt-import``: the key (or the one it duplicates) was given a salt by KP_SALT /
      imported with CRYPT_NO_SALT;
    - ``context-released``: the key's context was released;
    - ``handle-reused``: the target issues a handle it issued before (calls through the stale reference, which
      would reach the new key, are then not sent);
    - ``destroykey-ignored``: an export with CRYPT_DESTROYKEY leaves the key alive (checked by destroying it).

    ``retire``: the two sides' states may part after it (one acted, one refused, or both acted differently):
    the key concerned is then detached (the model goes on with it alone; see ``KeyRef.detached``).

    ``not_sent``: the call would crash the CSP or corrupt its memory, so runs do not send it (a crash ends the
    run; after a corruption no later answer means anything). It is matched on the model's outcome alone
    (``target_code`` is not consulted) and the model's outcome stands; with ``retire``, the keys the call names
    are detached without touching the target's copies.
    """

    id: str
    operation: str
    model_code: int | None  # or ANY_REFUSAL, ANY_OUTCOME
    target_code: int | None  # or ANY_REFUSAL, ANY_OUTCOME
    description: str
    param: int | None = None
    blob_type: int | None = None
    model_rule: str | None = None
    condition: str = attrs.field(default="", validator=attrs.validators.in_(CONDITIONS))
    retire: bool = False
    not_sent: bool = False
    # A minimal program that meets it, as trace steps (keyhandoff.traces): the difference shows at the last
    # step. `keyhandoff findings` replays it to tell a deviation still there from one the target has fixed.
    reproducer: tuple[Mapping[str, object], ...] = attrs.field(default=(), eq=False, repr=False)

    def matches(
        self,
        operation: str,
        model_code: int | None,
        target_code: int | None,
        param: int | None,
        rule: str,
        blob_type: int | None = None,
    ) -> bool:
        return self.matches_call(operation, model_code, param, rule, blob_type) and _covers(
            self.target_code, target_code
        )

    def covers_operation(self, operation: str) -> bool:
        return self.operation == "*" or operation in self.operation.split(",")

    def matches_call(
        self, operation: str, model_code: int | None, param: int | None, rule: str, blob_type: int | None
    ) -> bool:
        """Whether it covers this call and the model's answer (whatever the target answers)."""
        return (
            self.covers_operation(operation)
            and self.blob_type in (None, blob_type)
            and _covers(self.model_code, model_code)
            and self.param in (None, param)
            and self.model_rule in (None, rule)
        )


def _covers(declared: int | None, seen: int | None) -> bool:
    if declared == ANY_OUTCOME:
        return True
    if declared == ANY_REFUSAL:
        return seen is not None
    return declared == seen


@attrs.frozen
class Capabilities:
    """What a target supports, so a harness asks only for what is there and reports the rest."""

    name: str
    blob_types: frozenset[int] = attrs.field(converter=_frozen)
    algorithms: frozenset[int] = attrs.field(converter=_frozen)
    modes: frozenset[int] = attrs.field(converter=_frozen)  # usable modes (others refused at use)
    hardware_algorithms: frozenset[int] = attrs.field(converter=_frozen, factory=frozenset)
    hmac_algorithms: frozenset[int] = attrs.field(converter=_frozen, factory=frozenset)
    duplicate: bool = True
    separate_processes: bool = False
    inspect: bool = False
    deviations: tuple[Deviation, ...] = ()
    # Safe to call from several threads at once, on one installation (what `keyhandoff concurrent` needs).
    concurrent: bool = False

    def deviation(
        self,
        operation: str,
        model_code: int | None,
        target_code: int | None,
        *,
        param: int | None = None,
        rule: str = "",
        blob_type: int | None = None,
        conditions: frozenset[str] = frozenset(),
    ) -> Deviation | None:
        """The declared deviation covering this difference, if any (``rule``: the model's refusal rule, if it
        refused; ``conditions``: those that hold now)."""
        return self._first(
            False, lambda dev: dev.matches(operation, model_code, target_code, param, rule, blob_type), conditions
        )

    def unsent(
        self,
        operation: str,
        model_code: int | None,
        *,
        param: int | None = None,
        rule: str = "",
        blob_type: int | None = None,
        conditions: frozenset[str] = frozenset(),
    ) -> Deviation | None:
        """The declared ``not_sent`` deviation covering this call (the model answered ``model_code``), if any."""
        return self._first(
            True, lambda dev: dev.matches_call(operation, model_code, param, rule, blob_type), conditions
        )

    def _first(
        self, not_sent: bool, covers: Callable[[Deviation], bool], conditions: frozenset[str]
    ) -> Deviation | None:
        """The first declaration of that kind that covers the call and whose condition holds."""
        return next(
            (
                dev
                for dev in self.deviations
                if dev.not_sent == not_sent and covers(dev) and (not dev.condition or dev.condition in conditions)
            ),
            None,
        )

    def declares(self, condition: str) -> Deviation | None:
        """The deviation declared for a structural ``condition`` ("handle-reused"), if any."""
        return next((dev for dev in self.deviations if dev.condition == condition), None)

    @property
    def hardware(self) -> bool:
        return bool(self.hardware_algorithms)

    @property
    def opaque(self) -> bool:
        return w.OPAQUEKEYBLOB in self.blob_types


@runtime_checkable
class Target(Protocol):
    """A CSP under test. Handles are ints; bytes in and out; refusals raise CryptError(code)."""

    def acquire(self, side: str = "secure") -> int: ...
    def release(self, prov: int) -> None: ...
    def gen_key(self, prov: int, alg: int, flags: int = 0, *, hardware: bool = False) -> int: ...
    def import_key(
        self, prov: int, blob: bytes, *, pub_key: int = 0, flags: int = 0, hardware: bool = False
    ) -> int: ...
    def export_key(self, key: int, blob_type: int, *, exp_key: int = 0, flags: int = 0) -> bytes: ...
    def destroy_key(self, key: int) -> None: ...
    def duplicate_key(self, key: int) -> int: ...
    def set_key_param(self, key: int, param: int, value: bytes | int) -> None: ...
    def get_key_param(self, key: int, param: int) -> bytes | int: ...
    def encrypt(self, key: int, data: bytes, final: bool) -> bytes: ...
    def decrypt(self, key: int, data: bytes, final: bool) -> bytes: ...
    def hmac(self, key: int, hash_alg: int, data: bytes) -> bytes: ...
    def capabilities(self) -> Capabilities: ...
    def close(self) -> None: ...


# The protocol's argument types, for adapters that hand arguments on (the model target, the line target): a
# DWORD is an int in 0..2**32-1 (not a bool), and a buffer is any bytes-like value. An argument of another type
# is refused as an invalid value of its position, never converted into a valid one (bytes(16) is 16 zero bytes).
def is_dword(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0xFFFFFFFF


def buffer_argument(value: object, operation: str) -> bytes:
    """A buffer argument as bytes; anything not bytes-like is ERROR_INVALID_PARAMETER, as a NULL buffer is."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise CryptError(w.ERROR_INVALID_PARAMETER, operation)


def missing_methods(candidate: object) -> list[str]:
    """The Target methods ``candidate`` lacks (none: it is a Target), for messages that say what to add."""
    return [name for name in _TARGET_METHODS if not callable(getattr(candidate, name, None))]


_TARGET_METHODS: tuple[str, ...] = tuple(
    name for name, value in vars(Target).items() if callable(value) and not name.startswith("_")
)


@runtime_checkable
class Inspectable(Protocol):
    """Optional white-box access: the full key-state record and the token's objects (id -> ALG_ID)."""

    def inspect(self, key: int) -> KeyState: ...
    def token_objects(self) -> Mapping[int, int]: ...
