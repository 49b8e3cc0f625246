"""The C data path and import (``impl/_evp.c``, ``impl/_import.c``), when they were built: block-cipher engines,
the CSP's per-call fast path and its import of its own opaque blobs, on libcrypto's EVP.

The extension is optional at install: without a C compiler or OpenSSL's headers the package installs without
it, and the CSP runs its pure-Python engines, fast path and import, which give the same bytes, states and
refusals, only slower (docs/benchmarks.md). ``KEYHANDOFF_NATIVE_EVP=0`` turns it off for a process (read once,
at first use); :func:`python_data_path` turns it off for what is made inside it, as the tests and benchmarks do
to run both paths side by side.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from types import ModuleType

__all__ = ["native_evp", "python_data_path"]

_turned_off = False  # inside python_data_path()


def native_evp() -> ModuleType | None:
    """``keyhandoff.impl._evp``, or None when it was not built, cannot load, ``KEYHANDOFF_NATIVE_EVP=0``, or
    inside :func:`python_data_path`."""
    return None if _turned_off else _loaded()


@functools.cache
def _loaded() -> ModuleType | None:
    if os.environ.get("KEYHANDOFF_NATIVE_EVP") == "0":
        return None
    try:
        from keyhandoff.impl import _evp
    except ImportError:  # not built (optional at install), or libcrypto lacks a cipher it needs
        return None
    return _evp


@contextlib.contextmanager
def python_data_path() -> Iterator[None]:
    """CSPs and engines made inside run on the pure-Python engines, fast path and import, as without the
    extension (those made before keep what they have). Not for threads that make CSPs meanwhile."""
    global _turned_off
    previous, _turned_off = _turned_off, True
    try:
        yield
    finally:
        _turned_off = previous
