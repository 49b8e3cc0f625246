"""keyhandoff.model: an executable specification of CryptoAPI session-key lifecycle semantics.

Pure and immutable: every operation takes a :class:`World` and its arguments and returns a :class:`Step`
(the new world, an :class:`Ok` value or a :class:`Refused` code, and the lifecycle rows it fired). No I/O,
no live cipher objects, no randomness the caller does not pass in.

Sections:
- vocabulary (importable by the reference CSP): :mod:`.wincrypt`, :mod:`.errors`, :mod:`.state`, :mod:`.rc2`
- the world and results: :mod:`.world`
- rules: :mod:`.algorithms`, :mod:`.lifecycle`, :mod:`.keys`, :mod:`.blobs`, :mod:`.params`, :mod:`.crypt`
"""

from keyhandoff.model.blobs import SUPPORTED_BLOBS, export_key, import_key
from keyhandoff.model.crypt import decrypt, encrypt, hmac
from keyhandoff.model.errors import CryptError
from keyhandoff.model.keys import acquire, delete_token_object, destroy_key, duplicate_key, gen_key, release
from keyhandoff.model.lifecycle import TRANSITIONS, Transition
from keyhandoff.model.params import get_key_param, set_key_param
from keyhandoff.model.state import KeyState, Lifecycle, Location, Side, TokenObject
from keyhandoff.model.wincrypt import ErrorCode
from keyhandoff.model.world import KeyEntry, Ok, Refused, Step, World, empty_world

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
