"""What the CSP's calls cost with cold caches: each call timed alone, warm (right after the one before) and cold
(right after a 16 MiB sweep of memory that evicts the caches and the TLB), median of N.

Run: python bench/bench_cold.py [--calls 300]   (recorded in docs/benchmarks.md, section 3)

Why: on this VM a round trip's import cost about 10 us more in the app process than the same import back to back
in one process, while a 16-byte encrypt cost there what it costs here. A process woken by a pipe runs with caches
another process has used, and a call then pays for the code and data it touches; this measures that share per
call, an upper bound (a real wake evicts less than the sweep does).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from timing import machine_line

from keyhandoff.impl.builtin import BuiltinCsp
from keyhandoff.impl.evp import native_evp
from keyhandoff.lockstep import plaintext_blob, test_key
from keyhandoff.model import wincrypt as w

_SWEEP = bytearray(16 << 20)
_LINE = 64


def timed(func: Callable[[], object], calls: int, *, cold: bool) -> float:
    """The median time of one call, in microseconds."""
    times = []
    zeros = bytes(len(_SWEEP) // _LINE)
    for _ in range(calls):
        if cold:
            _SWEEP[::_LINE] = zeros  # one write per cache line
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    print(machine_line())
    with tempfile.TemporaryDirectory() as home, BuiltinCsp(home) as csp:
        secure, app = csp.acquire("secure"), csp.acquire("app")
        key = csp.import_key(secure, plaintext_blob(w.CALG_AES_128, test_key(3, 16)))
        blob = csp.export_key(key, w.OPAQUEKEYBLOB)
        live = csp.import_key(app, blob)
        gcm = AESGCM(test_key(4, 32))
        sealed = gcm.encrypt(bytes(12), bytes(111), bytes(8))
        made: list[int] = []
        lines: list[tuple[str, Callable[[], object]]] = [
            ("a call that does nothing (baseline)", lambda: None),
            ("encrypt 16 bytes through the CSP", lambda: csp.encrypt(live, bytes(16), False)),
            ("import of the opaque blob through the CSP", lambda: made.append(csp.import_key(app, blob))),
            ("AES-256-GCM open of its payload (cryptography)", lambda: gcm.decrypt(bytes(12), sealed, bytes(8))),
            ("threading.Lock()", threading.Lock),
        ]
        evp = native_evp()
        if evp is not None:
            lines.append(("a C engine made (BlockCipher)", lambda: evp.BlockCipher("AES", bytes(16), bytes(16))))
        print(f"\n{'one call, median of ' + str(args.calls):48} {'warm':>10} {'cold':>10} {'cold/warm':>10}")
        for label, func in lines:
            warm, cold = timed(func, args.calls, cold=False), timed(func, args.calls, cold=True)
            print(f"{label:48} {warm:8.2f} us {cold:7.2f} us {cold / warm:9.1f}x")
        for handle in made:
            csp.destroy_key(handle)


if __name__ == "__main__":
    main()
