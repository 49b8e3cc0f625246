"""keyhandoff: a conformance kit for the key-lifecycle semantics of CryptoAPI CSPs.

- :mod:`keyhandoff.model`: the executable specification (pure, immutable).
- :mod:`keyhandoff.target`: the Target protocol a CSP under test implements; :func:`keyhandoff.targets.load`.
- :class:`CryptError`: the one exception a target raises for a refused call (``.code`` is the int).
"""

from keyhandoff._version import __version__
from keyhandoff.model.errors import CryptError
from keyhandoff.model.wincrypt import ErrorCode
from keyhandoff.target import Capabilities, Target

__all__ = ["Capabilities", "CryptError", "ErrorCode", "Target", "__version__"]
