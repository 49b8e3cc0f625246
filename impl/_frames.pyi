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
def exchange(
    out_fd: int, in_fd: int, frame: bytes, timeout: float, max_frame: int, /
) -> tuple[int, bytes | None, bytes]: ...
