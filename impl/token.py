"""The hardware token seen by the CSP: an interface, so the embedded SQLite token and a PKCS#11 token (SoftHSM2
or a real HSM) are interchangeable.

A token holds key objects that never leave it. The CSP keeps the feedback register and asks the token to run the
block cipher on whole blocks (ECB, or CBC with the register as IV); CFB-8 is built by the CSP on the token's ECB.
Object ids are unguessable positive ints, stable across processes (a blob carries the token serial and the id).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Protocol

__all__ = ["Token", "TokenMode"]

TokenMode = Literal["ecb", "cbc"]


class Token(Protocol):
    """A key store whose objects are used in place and never deleted by CryptDestroyKey."""

    @property
    def serial(self) -> str:
        """Identifies this token; an opaque blob of a hardware key names it."""
        ...

    def algorithms(self) -> frozenset[int]:
        """ALG_IDs this token can hold and run."""
        ...

    def create(self, alg: int, key: bytes) -> int:
        """Store a new object; returns its id. CryptError(NTE_BAD_ALGID) for an algorithm it cannot hold."""
        ...

    def exists(self, obj: int) -> bool: ...

    def cipher(self, obj: int, mode: TokenMode, iv: bytes, data: bytes, *, decrypt: bool) -> bytes:
        """Run the object's block cipher over whole blocks. CryptError(NTE_NOT_FOUND) if the object is gone, also
        when another process deleted it, before any other refusal: the CSP relies on it and asks :meth:`exists` only
        for calls it will not pass to the token."""
        ...

    def objects(self) -> Mapping[int, int]:
        """Administration: every object's id and ALG_ID (never the material)."""
        ...

    def delete(self, obj: int) -> None:
        """Administration (not reachable through CryptoAPI): remove an object. CryptError(NTE_NOT_FOUND)."""
        ...

    def close(self) -> None: ...
