"""keyhandoff.model: an executable specification of CryptoAPI session-key lifecycle semantics.

Pure and immutable: every operation takes a :class:`World` and its arguments and returns a :class:`Step`
(the new world, an :class:`Ok` value or a :class:`Refused` code, and the lifecycle rows it fired). No I/O,
no live cipher objects, no randomness the caller does not pass in.

Sections:
- vocabulary (importable by the reference CSP): :mod:`.wincrypt`, :mod:`.errors`, :mod:`.state`, :mod:`.rc2`
- the world and results: :mod:`.world`
- rules: :mod:`.algorithms`, :mod:`.lifecycle`, :mod:`.keys`, :mod:`.blobs`, :mod:`.params`, :mod:`.crypt`
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keyhandoff.model.blobs import SUPPORTED_BLOBS, export_key, import_key
    from keyhandoff.model.crypt import decrypt, encrypt, hmac
    from keyhandoff.model.errors import CryptError
    from keyhandoff.model.keys import acquire, delete_token_object, destroy_key, duplicate_key, gen_key, release
    from keyhandoff.model.lifecycle import TRANSITIONS, Transition
    from keyhandoff.model.params import get_key_param, set_key_param
    from keyhandoff.model.state import KeyState, Lifecycle, Location, Side, TokenObject
    from keyhandoff.model.wincrypt import ErrorCode
    from keyhandoff.model.world import KeyEntry, Ok, Refused, Step, World, empty_world

# Where each name of the package lives. The names are imported on first use (PEP 562), so that a process which
# imports only the vocabulary (the reference CSP's: keyhandoff.model.errors, .wincrypt, .state) does not load
# the rules as well (importing the reference CSP takes about half as long). The names here, the TYPE_CHECKING
# imports above and __all__ below are one list three times: tests/model/test_purity.py holds them together.
_HOMES = {
    **dict.fromkeys(("SUPPORTED_BLOBS", "export_key", "import_key"), "blobs"),
    **dict.fromkeys(("decrypt", "encrypt", "hmac"), "crypt"),
    "CryptError": "errors",
    **dict.fromkeys(("acquire", "delete_token_object", "destroy_key", "duplicate_key", "gen_key", "release"), "keys"),
    **dict.fromkeys(("TRANSITIONS", "Transition"), "lifecycle"),
    **dict.fromkeys(("get_key_param", "set_key_param"), "params"),
    **dict.fromkeys(("KeyState", "Lifecycle", "Location", "Side", "TokenObject"), "state"),
    "ErrorCode": "wincrypt",
    **dict.fromkeys(("KeyEntry", "Ok", "Refused", "Step", "World", "empty_world"), "world"),
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "SUPPORTED_BLOBS",
    "TRANSITIONS",
    "CryptError",
    "ErrorCode",
    "KeyEntry",
    "KeyState",
    "Lifecycle",
    "Location",
    "Ok",
    "Refused",
    "Side",
    "Step",
    "TokenObject",
    "Transition",
    "World",
    "acquire",
    "decrypt",
    "delete_token_object",
    "destroy_key",
    "duplicate_key",
    "empty_world",
    "encrypt",
    "export_key",
    "gen_key",
    "get_key_param",
    "hmac",
    "import_key",
    "release",
    "set_key_param",
]
