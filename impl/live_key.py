"""One session key as the CSP holds it: its parameters, its material buffer and its live engine.

A :class:`LiveKey` is mutable and guarded by its own lock (the CSP takes it for every operation on the key).
The material is a ``bytearray`` so that destroying the key can overwrite the one canonical copy with zeros in
place (``wipe``); a hardware key holds no material, only the token object id. When the key dies its final state
(material and salt emptied) is frozen into ``tombstone`` for ``inspect``, and the engine is dropped.
"""

from __future__ import annotations

import threading

import attrs

from keyhandoff.impl.algorithms import ALGORITHMS
from keyhandoff.impl.engines import Engine
from keyhandoff.model.state import KeyState, Lifecycle, Location

__all__ = ["LiveKey"]


@attrs.define(eq=False)
class LiveKey:
    """A key handle's record. Every field is read and written with ``lock`` held."""

    provider: int
    alg: int
    location: Location
    material: bytearray = attrs.field(repr=lambda v: f"<{len(v)} bytes>")  # software; empty for hardware
    salt: bytes = attrs.field(repr=lambda v: f"<{len(v)} bytes>")
    key_bits: int
    effective_keylen: int
    mode: int
    mode_bits: int
    padding: int
    iv: bytes
    permissions: int
    lifecycle: Lifecycle
    engine: Engine | None  # None for an HMAC-only key and for a dead one
    hmac_only: bool = False
    token_object: int = 0  # hardware
    salt_reported: bool = True  # False after KP_SALT: the salt keys the cipher but KP_SALT reads back empty
    lock: threading.Lock = attrs.field(factory=threading.Lock, repr=False)
    tombstone: KeyState | None = None  # the final state once the handle is dead
    # The CSP's per-call fast path (non-Final encrypt/decrypt): the block length in bytes (0: the stream cipher)
    # for a cipher key, software or hardware, -1 for a key the fast path leaves to the full rules (HMAC-only).
    # Derived from fields a key never changes (alg, hmac_only); recomputed by attrs.evolve.
    fast_block: int = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.fast_block = ALGORITHMS[self.alg].block if not self.hmac_only and self.alg in ALGORITHMS else -1

    @property
    def alive(self) -> bool:
        return self.tombstone is None

    @property
    def register(self) -> bytes:
        return self.engine.register if self.engine is not None else self.iv

    @property
    def stream_pos(self) -> int:
        return self.engine.stream_pos if self.engine is not None else 0

    @property
    def stream_state(self) -> bytes:
        """RC4's exportable state (secret), or b"" (see ``Engine.stream_state``)."""
        return self.engine.stream_state if self.engine is not None else b""

    def state(self) -> KeyState:
        """The full state record (``inspect``): key bytes for a live software key, b"" for a hardware one."""
        if self.tombstone is not None:
            return self.tombstone
        return self._record(self.lifecycle, bytes(self.material), self.salt)

    def _record(self, lifecycle: Lifecycle, key: bytes, salt: bytes) -> KeyState:
        return KeyState(
            lifecycle=lifecycle,
            location=self.location,
            alg=self.alg,
            key=key,
            salt=salt,
            key_bits=self.key_bits,
            effective_keylen=self.effective_keylen,
            mode=self.mode,
            mode_bits=self.mode_bits,
            padding=self.padding,
            iv=self.iv,
            register=self.register,
            stream_pos=self.stream_pos,
            permissions=self.permissions,
            hmac_only=self.hmac_only,
            salt_reported=self.salt_reported,
        )

    def kill(self) -> None:
        """End the handle: software material (and an RC4 state) overwritten with zeros in place, hardware object
        left alone."""
        if self.tombstone is not None:
            return
        end = Lifecycle.HARDWARE_PINNED if self.location is Location.HARDWARE else Lifecycle.DESTROYED
        final = self._record(end, b"", b"")  # the final state, key and salt emptied
        self.material[:] = bytes(len(self.material))  # the same buffer, zeroed (a white-box test holds it)
        self.salt = b""
        self.lifecycle = end
        if self.engine is not None:
            self.engine.wipe()
        self.engine = None
        self.tombstone = final
