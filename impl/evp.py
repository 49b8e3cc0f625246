"""The C data path (``impl/_evp.c``), when it was built: block-cipher engines and the CSP's per-call fast path
on libcrypto's EVP.

The extension is optional at install: without a C compiler or OpenSSL's headers the package installs without
it, and the CSP runs its pure-Python engines and fast path, which give the same bytes, states and refusals,
only slower (docs/benchmarks.md). ``KEYHANDOFF_NATIVE_EVP=0`` turns it off for a process (read once, at first
use), as the tests do to run both paths.
"""

from __future__ import annotations

import functools
import os
from types import ModuleType

__all__ = ["native_evp"]


@functools.cache
def native_evp() -> ModuleType | None:
    """``keyhandoff.impl._evp``, or None when it was not built, cannot load, or ``KEYHANDOFF_NATIVE_EVP=0``."""
    if os.environ.get("KEYHANDOFF_NATIVE_EVP") == "0":
        return None
    try:
        from keyhandoff.impl import _evp
    except ImportError:  # not built (optional at install), or libcrypto lacks a cipher it needs
        return None
    return _evp
