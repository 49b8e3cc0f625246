"""The C extension only; everything else is in pyproject.toml, where setuptools still calls ext-modules
experimental. Optional: without a C compiler or OpenSSL's headers the package installs without it and the CSP
runs its Python data path (keyhandoff.impl.evp)."""

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
        Extension("keyhandoff.impl._frames", sources=["impl/_frames.c"], optional=True),
    ]
)
