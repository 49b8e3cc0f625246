"""The one exception a target raises for a refused operation (vocabulary: the reference CSP uses it too)."""

from __future__ import annotations

from keyhandoff.model.wincrypt import describe_code

__all__ = ["CryptError"]


class CryptError(Exception):
    """A CryptoAPI call refused with an error code, as ``GetLastError()`` would report it.

    The message names the code and the operation only: never key material (callers must not pass any).
    """

    code: int
    operation: str

    def __init__(self, code: int, operation: str = "") -> None:
        self.code = int(code)
        self.operation = operation
        super().__init__(self.code, operation)

    def __str__(self) -> str:
        where = f"{self.operation}: " if self.operation else ""
        return f"{where}{describe_code(self.code)}"

    def __repr__(self) -> str:
        return f"CryptError({describe_code(self.code)}{', ' + repr(self.operation) if self.operation else ''})"

    def __reduce__(self) -> tuple[type[CryptError], tuple[int, str]]:
        # Keeps the exception picklable across the process boundary.
        return (CryptError, (self.code, self.operation))
