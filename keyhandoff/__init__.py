"""keyhandoff: a conformance kit for the key-lifecycle semantics of CryptoAPI CSPs.

- :mod:`keyhandoff.model`: the executable specification (pure, immutable).
- :mod:`keyhandoff.target`: the Target protocol a CSP under test implements; :func:`keyhandoff.targets.load`.
- :class:`CryptError`: the one exception a target raises for a refused call (``.code`` is the int).
"""

from pathlib import Path as _Path
from typing import TYPE_CHECKING

# In a source checkout, model/ and impl/ sit beside this folder rather than inside it (the design card's layout;
# an install maps them in via package-dir). When Python imports this folder straight from the checkout (the
# project root on sys.path), let keyhandoff.model and keyhandoff.impl resolve to those folders.
if not (_Path(__file__).parent / "model").is_dir():  # pragma: no cover - depends on how it was imported
    __path__.append(str(_Path(__file__).resolve().parent.parent))

from keyhandoff._version import __version__
from keyhandoff.model.errors import CryptError
from keyhandoff.model.wincrypt import ErrorCode
from keyhandoff.target import Capabilities, Target, TargetUnavailable

if TYPE_CHECKING:
    from keyhandoff.check import ConformanceFailure, run_conformance


def __getattr__(name: str) -> object:
    # keyhandoff.check pulls in Hypothesis: import it on first use, so a CSP process importing keyhandoff stays lean.
    if name in ("run_conformance", "ConformanceFailure"):
        from keyhandoff import check

        return getattr(check, name)
    raise AttributeError(f"module 'keyhandoff' has no attribute {name!r}")


__all__ = [
    "Capabilities",
    "ConformanceFailure",
    "CryptError",
    "ErrorCode",
    "Target",
    "TargetUnavailable",
    "__version__",
    "run_conformance",
]
