"""The Target protocol: the CryptoAPI-shaped interface every CSP under test implements.

A target is a whole installation seen from both sides of the Schannel handoff: providers are acquired on the
``"secure"`` or the ``"app"`` side, and key handles route to the side that owns them. Refusals raise
:class:`~keyhandoff.model.errors.CryptError` with the CryptoAPI code; nothing else may escape a call.
The protocol speaks at the CSP level (like rsaenh's CP* entry points): a freed key handle is NTE_BAD_KEY and
a freed provider NTE_BAD_UID, where advapi32 in front of a CSP answers ERROR_INVALID_PARAMETER.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

import attrs

from keyhandoff.model import wincrypt as w
from keyhandoff.model.state import KeyState

__all__ = ["Capabilities", "Deviation", "Inspectable", "Target"]


def _frozen(values: Iterable[int]) -> frozenset[int]:
    return frozenset(values)


@attrs.frozen
class Deviation:
    """A documented difference a target declares: for ``operation``, where the model refuses with
    ``model_code``, the target refuses with ``target_code``. Runs report it as a known deviation (never hidden,
    never a failure). Only refusal-for-refusal differences can be declared: both sides leave the state as it
    was, so the lockstep stays in step."""

    id: str
    operation: str
    model_code: int
    target_code: int
    description: str


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

    def deviation(self, operation: str, model_code: int, target_code: int) -> Deviation | None:
        for dev in self.deviations:
            if (dev.operation, dev.model_code, dev.target_code) == (operation, model_code, target_code):
                return dev
        return None

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


@runtime_checkable
class Inspectable(Protocol):
    """Optional white-box access: the full key-state record and the token's objects (id -> ALG_ID)."""

    def inspect(self, key: int) -> KeyState: ...
    def token_objects(self) -> Mapping[int, int]: ...
