"""The C extensions only; everything else is in pyproject.toml, where setuptools still calls ext-modules
experimental. Both are optional: without a C compiler (or OpenSSL's headers, for _evp) the package installs
without them, and the CSP runs its Python data path and import (keyhandoff.impl.evp) and the boundary its Python
steps (keyhandoff.impl.boundary.native_frames)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "keyhandoff.impl._evp",
            sources=["impl/_evp.c", "impl/_import.c"],
            depends=["impl/_evp.h"],
            libraries=["crypto"],
            optional=True,
        ),
        Extension(
            "keyhandoff.impl._frames",
            sources=["impl/_frames.c", "impl/_codec.c"],
            depends=["impl/_codec.h"],
            optional=True,
        ),
    ]
)
