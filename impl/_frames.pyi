# The C extension impl/_frames.c (see keyhandoff.impl.child.native_loop).
from collections.abc import Callable

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
