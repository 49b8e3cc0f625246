"""The built-in CSP as one object: both sides of the handoff in one process, over one installation.

:class:`BuiltinCsp` implements every method of the tool's Target protocol (``keyhandoff.target``) plus the white
box (``inspect``, ``token_objects``, ``delete_token_object``), but imports nothing from the tool: it describes
what it supports as plain data (:meth:`BuiltinCsp.capabilities_data`) and ``keyhandoff.targets.builtin_target``
turns that into the tool's ``Capabilities``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from keyhandoff.impl.algorithms import ALGORITHMS, HMAC_HASHES, USABLE_MODES
from keyhandoff.impl.csp import Csp
from keyhandoff.impl.installation import Installation
from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError
from keyhandoff.model.state import KeyState

__all__ = ["BuiltinCsp"]


class BuiltinCsp:
    """An installation (``home``: a directory; None: ``KEYHANDOFF_HOME`` or the user data dir) and one Csp;
    ``token`` chooses the installation's token (``"sqlite"``, ``"pkcs11"``; None: ``KEYHANDOFF_TOKEN`` or sqlite);
    ``handle_space`` (0..3) is carried by every handle it issues (see ``keyhandoff.impl.handles``); ``durable=False``
    makes a scratch installation, nothing fsynced (see ``keyhandoff.impl.installation``)."""

    name = "builtin"

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        *,
        token: str | None = None,
        handle_space: int = 0,
        durable: bool = True,
    ) -> None:
        self._installation = Installation(home, token=token, durable=durable)
        try:
            self._csp = Csp(self._installation, handle_space=handle_space)
        except BaseException:
            self._installation.close()
            raise

    def __repr__(self) -> str:
        if self._installation.token_kind == "sqlite":
            return f"BuiltinCsp({str(self._installation.path)!r})"
        return f"BuiltinCsp({str(self._installation.path)!r}, token={self._installation.token_kind!r})"

    @property
    def installation(self) -> Installation:
        return self._installation

    @property
    def csp(self) -> Csp:
        return self._csp

    # --- the Target protocol ------------------------------------------------------------------------------

    def acquire(self, side: str = "secure") -> int:
        return self._csp.acquire(side)

    def release(self, prov: int) -> None:
        self._csp.release(prov)

    def gen_key(self, prov: int, alg: int, flags: int = 0, *, hardware: bool = False) -> int:
        return self._csp.gen_key(prov, alg, flags, hardware=hardware)

    def import_key(self, prov: int, blob: bytes, *, pub_key: int = 0, flags: int = 0, hardware: bool = False) -> int:
        return self._csp.import_key(prov, blob, pub_key=pub_key, flags=flags, hardware=hardware)

    def export_key(self, key: int, blob_type: int, *, exp_key: int = 0, flags: int = 0) -> bytes:
        return self._csp.export_key(key, blob_type, exp_key=exp_key, flags=flags)

    def destroy_key(self, key: int) -> None:
        self._csp.destroy_key(key)

    def duplicate_key(self, key: int) -> int:
        return self._csp.duplicate_key(key)

    def set_key_param(self, key: int, param: int, value: bytes | int) -> None:
        self._csp.set_key_param(key, param, value)

    def get_key_param(self, key: int, param: int) -> bytes | int:
        return self._csp.get_key_param(key, param)

    def encrypt(self, key: int, data: bytes, final: bool) -> bytes:
        return self._csp.encrypt(key, data, final)

    def decrypt(self, key: int, data: bytes, final: bool) -> bytes:
        return self._csp.decrypt(key, data, final)

    def hmac(self, key: int, hash_alg: int, data: bytes) -> bytes:
        return self._csp.hmac(key, hash_alg, data)

    def capabilities_data(self) -> dict[str, Any]:
        """What this CSP supports, as plain data (the tool's ``Capabilities`` fields)."""
        return {
            "name": self.name,
            "blob_types": frozenset({w.PLAINTEXTKEYBLOB, w.OPAQUEKEYBLOB}),
            "algorithms": frozenset(ALGORITHMS),
            "modes": USABLE_MODES,
            "hardware_algorithms": self._csp.hardware_algorithms,
            "hmac_algorithms": frozenset(HMAC_HASHES),
            "duplicate": True,
            "separate_processes": False,
            "inspect": True,
            "concurrent": True,  # handle tables and keys are locked; the boundary takes one call at a time
        }

    def close(self) -> None:
        """End every context (software material wiped), then close the token."""
        try:
            self._csp.close()
        finally:
            self._installation.close()

    def __enter__(self) -> BuiltinCsp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- white box ----------------------------------------------------------------------------------------

    def inspect(self, key: int) -> KeyState:
        return self._csp.inspect(key)

    def inspect_many(self, keys: Sequence[int]) -> list[KeyState | CryptError]:
        """``inspect`` of each key, in one call: its state, or the CryptError that refused it."""
        answers: list[KeyState | CryptError] = []
        for key in keys:
            try:
                answers.append(self._csp.inspect(key))
            except CryptError as err:
                answers.append(err.with_traceback(None))  # kept as an answer: its frames are not needed
        return answers

    def token_objects(self) -> Mapping[int, int]:
        """Every token object's id and ALG_ID (never the material)."""
        return dict(self._csp.token.objects())

    def delete_token_object(self, obj: int) -> None:
        """Token administration (not CryptoAPI): remove an object; NTE_NOT_FOUND if there is none."""
        self._csp.token.delete(obj)
