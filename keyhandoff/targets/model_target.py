"""``load("model")``: the executable specification behind the Target protocol.

It holds one :class:`~keyhandoff.model.World` and draws key material from a seeded or OS random source (the
model itself never draws randomness). Its opaque blobs are the model's own bytes, accepted only by the same
installation.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping
from typing import TypeVar

from keyhandoff import model
from keyhandoff.model import wincrypt as w
from keyhandoff.model.algorithms import ALGORITHMS, HMAC_ALGORITHMS
from keyhandoff.model.crypt import USABLE_MODES
from keyhandoff.model.errors import CryptError
from keyhandoff.model.lifecycle import Transition
from keyhandoff.model.state import KeyState, Side
from keyhandoff.model.world import Ok, Step, World
from keyhandoff.target import Capabilities, buffer_argument, is_dword

__all__ = ["ModelTarget"]

T = TypeVar("T")


# The Target protocol's types at the boundary to the model, whose functions take ints and bytes (see
# keyhandoff.target.is_dword): a handle that is not an int names no object (0 is the CryptoAPI "no handle"), and
# a DWORD argument that is not a DWORD is -1, which the model refuses in that position as it refuses any value
# it does not know.
def _handle(value: object) -> int:
    return value if type(value) is int else 0


def _dword(value: object) -> int:
    return int(value) if is_dword(value) else -1


class ModelTarget:
    """The model as a CSP: one installation, both sides in one process, white-box ``inspect``."""

    def __init__(self, *, seed: int | None = None, installation: bytes | None = None) -> None:
        rng = random.Random(seed) if seed is not None else None
        self._entropy: Callable[[int], bytes] = rng.randbytes if rng is not None else os.urandom
        self.world: World = model.empty_world(installation or self._entropy(8))
        self._queued: list[bytes] = []
        self.last_rule = ""  # the rule of the latest refusal (deviations may name it)
        self.fired: list[Transition] = []  # every lifecycle row fired, in order (coverage reads it)

    def queue_material(self, key: bytes) -> None:
        """Use ``key`` as the material of the next gen_key (lockstep with a white-box target: the model then
        predicts the ciphertext of a key the target generated)."""
        self._queued.append(bytes(key))

    def __repr__(self) -> str:
        return f"ModelTarget(keys={len(self.world.keys)}, providers={len(self.world.providers)})"

    def _run(self, step: Step[T], operation: str) -> T:
        self.world = step.world
        self.fired.extend(step.fired)
        if isinstance(step.outcome, Ok):
            return step.outcome.value
        self.last_rule = step.outcome.rule
        raise CryptError(step.outcome.code, operation)

    def acquire(self, side: str = "secure") -> int:
        try:
            parsed = Side(side)
        except ValueError:
            self.last_rule = ""  # refused here, by no rule of the model's
            raise CryptError(w.ERROR_INVALID_PARAMETER, "acquire") from None
        return self._run(model.acquire(self.world, parsed), "acquire")

    def release(self, prov: int) -> None:
        self._run(model.release(self.world, _handle(prov)), "release")

    def gen_key(self, prov: int, alg: int, flags: int = 0, *, hardware: bool = False) -> int:
        entropy = self._queued.pop(0).ljust(32, b"\0") if self._queued else self._entropy(32)
        step = model.gen_key(
            self.world, _handle(prov), _dword(alg), _dword(flags), hardware=bool(hardware), entropy=entropy
        )
        return self._run(step, "gen_key")

    def import_key(self, prov: int, blob: bytes, *, pub_key: int = 0, flags: int = 0, hardware: bool = False) -> int:
        step = model.import_key(
            self.world,
            _handle(prov),
            buffer_argument(blob, "import_key"),
            pub_key=_dword(pub_key),
            flags=_dword(flags),
            hardware=bool(hardware),
        )
        return self._run(step, "import_key")

    def export_key(self, key: int, blob_type: int, *, exp_key: int = 0, flags: int = 0) -> bytes:
        step = model.export_key(
            self.world, _handle(key), _dword(blob_type), exp_key=_dword(exp_key), flags=_dword(flags)
        )
        return self._run(step, "export_key")

    def destroy_key(self, key: int) -> None:
        self._run(model.destroy_key(self.world, _handle(key)), "destroy_key")

    def duplicate_key(self, key: int) -> int:
        return self._run(model.duplicate_key(self.world, _handle(key)), "duplicate_key")

    def set_key_param(self, key: int, param: int, value: bytes | int) -> None:
        if isinstance(value, bytearray | memoryview):  # bytes-like; any other type the model refuses itself
            value = bytes(value)
        self._run(model.set_key_param(self.world, _handle(key), _dword(param), value), "set_key_param")

    def get_key_param(self, key: int, param: int) -> bytes | int:
        return self._run(model.get_key_param(self.world, _handle(key), _dword(param)), "get_key_param")

    def encrypt(self, key: int, data: bytes, final: bool) -> bytes:
        step = model.encrypt(self.world, _handle(key), buffer_argument(data, "encrypt"), bool(final))
        return self._run(step, "encrypt")

    def decrypt(self, key: int, data: bytes, final: bool) -> bytes:
        step = model.decrypt(self.world, _handle(key), buffer_argument(data, "decrypt"), bool(final))
        return self._run(step, "decrypt")

    def hmac(self, key: int, hash_alg: int, data: bytes) -> bytes:
        return self._run(model.hmac(self.world, _handle(key), _dword(hash_alg), buffer_argument(data, "hmac")), "hmac")

    def capabilities(self) -> Capabilities:
        return Capabilities(
            name="model",
            blob_types=model.SUPPORTED_BLOBS,
            algorithms=ALGORITHMS,
            modes=USABLE_MODES,
            hardware_algorithms=(a.alg for a in ALGORITHMS.values() if a.hardware),
            hmac_algorithms=HMAC_ALGORITHMS,
            duplicate=True,
            separate_processes=False,
            inspect=True,
        )

    def close(self) -> None:
        """Nothing to free: the world is a value."""

    def inspect(self, key: int) -> KeyState:
        entry = self.world.keys.get(_handle(key))
        if entry is None:
            raise CryptError(w.NTE_BAD_KEY, "inspect")
        return entry.state

    def token_objects(self) -> Mapping[int, int]:
        return {obj: token.alg for obj, token in self.world.token.items()}

    def delete_token_object(self, obj: int) -> None:
        """Token administration: remove an object from the hardware token."""
        self._run(model.delete_token_object(self.world, _handle(obj)), "delete_token_object")
