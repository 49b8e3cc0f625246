"""The reference CSP (``keyhandoff.impl``): live cipher contexts, sealed blobs, a hardware token.

An independent derivation of the CryptoAPI session-key semantics of ``docs/model.md``: it uses only the model's
vocabulary (``wincrypt``, ``errors``, ``state``, ``rc2``), never its rules, so checking it against the model in
lockstep compares two derivations.

* ``installation``: the installation directory, its secret and derived keys; ``sqlite_token``: the hardware
  token; ``token``: the Token protocol.
* ``handles``: unguessable, never-reused handles; ``algorithms``: the algorithm table; ``engines``: live
  ciphers; ``evp``: the C data path and import (``_evp.c``, ``_import.c``; optional at install); ``blobs``:
  PLAINTEXTKEYBLOB and the sealed OPAQUEKEYBLOB; ``live_key``: one key's record.
* ``csp``: :class:`Csp`, the CryptoAPI-shaped core; ``builtin``: :class:`BuiltinCsp`, the Target-shaped whole.
"""

from __future__ import annotations

from keyhandoff.impl.builtin import BuiltinCsp
from keyhandoff.impl.csp import Csp

__all__ = ["BuiltinCsp", "Csp"]
