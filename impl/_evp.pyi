# The C extension impl/_evp.c (see keyhandoff.impl.evp).
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

OPENSSL_VERSION: Final[str]

def feistel(start: int, count: int, rounds: Sequence[Callable[[bytes], bytes]], half: int, /) -> list[int]:
    """``HandleSequence.permute``'s Feistel network for ``count`` counters from ``start``."""

class BlockCipher:
    """A live AES or DES-EDE3 engine (``keyhandoff.impl.engines.Engine``) on libcrypto's EVP."""

    def __new__(cls, cipher: str, key: bytes, register: bytes) -> BlockCipher: ...
    @property
    def register(self) -> bytes: ...
    @property
    def stream_pos(self) -> int: ...
    @property
    def stream_state(self) -> bytes: ...
    @property
    def key_zeroed(self) -> bool: ...
    def run(self, mode: int, data: bytes, *, decrypt: bool) -> bytes: ...
    def hot(self, mode: int, data: bytes, decrypt: bool, /) -> bytes: ...
    def reset(self, iv: bytes) -> None: ...
    def wipe(self) -> None: ...
    def clone(self) -> BlockCipher: ...

class FastCrypt:
    """The CSP's non-Final encrypt and decrypt on a BlockCipher key; anything else goes to the fallbacks."""

    def __new__(
        cls,
        table: dict[int, Any],
        key_type: type,
        lock_type: type,
        encrypt: Callable[[int, bytes, bool], bytes],
        decrypt: Callable[[int, bytes, bool], bytes],
    ) -> FastCrypt: ...
    def encrypt(self, key: int, data: bytes, final: bool) -> bytes: ...
    def decrypt(self, key: int, data: bytes, final: bool) -> bytes: ...

class FastImport:
    """The CSP's import of its own OPAQUEKEYBLOB of a software AES or DES-family key; anything else goes to the
    fallback."""

    def __new__(
        cls,
        handles: Any,
        csp_lock: Any,
        provider_type: type,
        key_type: type,
        new_lock: Callable[[], Any],
        seal_key: bytes,
        ciphers: dict[int, tuple[str, int, Iterable[int], Callable[[bytes], bytes] | None]],
        software: object,
        imported: object,
        register: Callable[[Any], int],
        fallback: Callable[..., int],
    ) -> FastImport: ...
    def import_key(
        self, prov: int, blob: bytes, *, pub_key: int = 0, flags: int = 0, hardware: bool = False
    ) -> int: ...
