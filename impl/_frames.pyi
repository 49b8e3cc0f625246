# The C extension impl/_frames.c (see keyhandoff.impl.child.native_loop).
from collections.abc import Callable
from typing import Any

def serve(
    in_fd: int,
    out_fd: int,
    method: Callable[[object], Callable[..., object] | None],
    crypt_error: type[BaseException],
    unserialisable: bytes,
    too_large: bytes,
    max_frame: int,
) -> None: ...
def call(
    parts: tuple[object, ...], method: str, args: tuple[object, ...], kwargs: dict[str, object], timeout: float, /
) -> object: ...
def _codec_read(data: bytes, depth: int, /) -> tuple[bool, object]: ...
def _codec_write(value: object, depth: int, /) -> bytes | None: ...

class Route:
    """One of ProcessCsp's calls into the app process, its usual case in C; anything else to ``fallback``."""

    def __new__(
        cls,
        child: object,
        parts: tuple[object, ...],
        method: str,
        arity: int,
        low: int,
        high: int,
        answer: str,
        judge: Callable[[object], object],
        fallback: Callable[..., Any],
    ) -> Route: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
