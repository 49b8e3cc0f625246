"""``load("builtin")`` and ``load("builtin-processes")``: the reference CSP behind the Target protocol.

``builtin`` runs both sides in this process (``keyhandoff.impl.BuiltinCsp``); ``builtin-processes`` runs the
application side in a spawned child process (``keyhandoff.impl.processes.ProcessCsp``). ``token="pkcs11"`` puts
hardware keys on a PKCS#11 token configured by the ``KEYHANDOFF_PKCS11_*`` environment variables (docs/hardware.md).

The reference CSP may not import the tool, so it describes its capabilities as plain data; this thin adapter
converts them into :class:`~keyhandoff.target.Capabilities` and forwards every other call unchanged.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping, Sequence

from keyhandoff.impl.boundary import BoundaryTimeout
from keyhandoff.impl.builtin import BuiltinCsp
from keyhandoff.impl.processes import ProcessCsp
from keyhandoff.model.errors import CryptError
from keyhandoff.model.state import KeyState
from keyhandoff.target import Capabilities, TargetTimeout

__all__ = ["AppProcessTimeout", "BuiltinTarget"]


class AppProcessTimeout(BoundaryTimeout, TargetTimeout):
    """The app process did not answer a call in time (it has been killed): a hang, in the tool's terms, so a check
    stops at that call instead of taking it for a crash and replaying the program (each replay would wait again)."""


class BuiltinTarget:
    """The built-in CSP as a Target (and Inspectable), over one installation; ``processes=True`` puts the app
    side in a child process; ``remove_home=True`` removes the home directory when the target closes (a
    temporary installation that no one opens again)."""

    _home_to_remove: str | None = None  # also for subclasses that do not run __init__ (the mutants)

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        *,
        processes: bool = False,
        token: str | None = None,
        durable: bool = True,
        remove_home: bool = False,
    ) -> None:
        if remove_home and home is None:
            raise ValueError("remove_home needs the home it is to remove")
        self.csp: BuiltinCsp | ProcessCsp = (
            ProcessCsp(home, token=token, durable=durable, timeout_error=AppProcessTimeout)
            if processes
            else BuiltinCsp(home, token=token, durable=durable)
        )
        self._home_to_remove = os.fspath(home) if remove_home and home is not None else None

    def __repr__(self) -> str:
        return f"BuiltinTarget({self.csp!r})"

    def acquire(self, side: str = "secure") -> int:
        return self.csp.acquire(side)

    def release(self, prov: int) -> None:
        self.csp.release(prov)

    def gen_key(self, prov: int, alg: int, flags: int = 0, *, hardware: bool = False) -> int:
        return self.csp.gen_key(prov, alg, flags, hardware=hardware)

    def import_key(self, prov: int, blob: bytes, *, pub_key: int = 0, flags: int = 0, hardware: bool = False) -> int:
        return self.csp.import_key(prov, blob, pub_key=pub_key, flags=flags, hardware=hardware)

    def export_key(self, key: int, blob_type: int, *, exp_key: int = 0, flags: int = 0) -> bytes:
        return self.csp.export_key(key, blob_type, exp_key=exp_key, flags=flags)

    def destroy_key(self, key: int) -> None:
        self.csp.destroy_key(key)

    def duplicate_key(self, key: int) -> int:
        return self.csp.duplicate_key(key)

    def set_key_param(self, key: int, param: int, value: bytes | int) -> None:
        self.csp.set_key_param(key, param, value)

    def get_key_param(self, key: int, param: int) -> bytes | int:
        return self.csp.get_key_param(key, param)

    def encrypt(self, key: int, data: bytes, final: bool) -> bytes:
        return self.csp.encrypt(key, data, final)

    def decrypt(self, key: int, data: bytes, final: bool) -> bytes:
        return self.csp.decrypt(key, data, final)

    def hmac(self, key: int, hash_alg: int, data: bytes) -> bytes:
        return self.csp.hmac(key, hash_alg, data)

    def capabilities(self) -> Capabilities:
        data = self.csp.capabilities_data()
        return Capabilities(
            name=str(data["name"]),
            blob_types=data["blob_types"],
            algorithms=data["algorithms"],
            modes=data["modes"],
            hardware_algorithms=data["hardware_algorithms"],
            hmac_algorithms=data["hmac_algorithms"],
            duplicate=bool(data["duplicate"]),
            separate_processes=bool(data["separate_processes"]),
            inspect=bool(data["inspect"]),
            concurrent=bool(data.get("concurrent", False)),
        )

    def close(self) -> None:
        """End the installation (the app process first); a home made for this target alone is then removed, and
        so are its objects on a PKCS#11 token (which lives outside the home: a check left every test case's
        there, hundreds a run on an HSM of limited room)."""
        try:
            if self._home_to_remove is not None:
                self._delete_token_objects()
        finally:
            try:
                self.csp.close()
            finally:
                if self._home_to_remove is not None:
                    shutil.rmtree(self._home_to_remove, ignore_errors=True)

    def _delete_token_objects(self) -> None:
        csp = self.csp
        installation = csp.secure.installation if isinstance(csp, ProcessCsp) else csp.installation
        if installation.token_kind != "pkcs11":  # the SQLite token is a file in the home: it goes with it
            return
        with contextlib.suppress(CryptError):  # a token gone or refusing: the objects stay, as a destroy leaves them
            for obj in list(csp.token_objects()):
                with contextlib.suppress(CryptError):
                    csp.delete_token_object(obj)

    def inspect(self, key: int) -> KeyState:
        return self.csp.inspect(key)

    def inspect_many(self, keys: Sequence[int]) -> list[KeyState | CryptError]:
        return self.csp.inspect_many(keys)

    def token_objects(self) -> Mapping[int, int]:
        return self.csp.token_objects()

    def delete_token_object(self, obj: int) -> None:
        self.csp.delete_token_object(obj)
