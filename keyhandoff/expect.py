"""Helpers that reproducer scripts use to state what the model expects of each call."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from keyhandoff.model.errors import CryptError
from keyhandoff.model.wincrypt import describe_code

__all__ = ["expect_refusal"]


@contextmanager
def expect_refusal(code: int) -> Iterator[None]:
    """The block must raise CryptError with ``code`` (the model's answer); anything else fails loudly."""
    try:
        yield
    except CryptError as err:
        if err.code != code:
            raise AssertionError(f"expected {describe_code(code)}, the target said {describe_code(err.code)}") from err
        return
    raise AssertionError(f"expected {describe_code(code)}, the target accepted the call")
