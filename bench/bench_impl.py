"""The reference CSP's costs, each as a ratio to a baseline measured in the same run.

Run: python bench/bench_impl.py [--rc4-gib 1]   (figures recorded in docs/benchmarks.md)

1. AES-128-CBC encrypt through the CSP vs a persistent raw `cryptography` context (goals: <= 1.10x at 64 KiB,
   <= 3x at 16 bytes).
2. OPAQUEKEYBLOB export + import in one process vs a raw AES-GCM seal + open of the same payload size.
3. Cross-process handoff of one blob (export here, import in the app process) vs a raw pipe round trip of the
   same bytes to a child process (goal <= 2x).
4. Importing an RC4 key exported at a large stream position (OpenSSL hides the RC4 table, so import replays).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from timing import per_call, row

from keyhandoff.impl.builtin import BuiltinCsp
from keyhandoff.impl.processes import ProcessCsp
from keyhandoff.lockstep import plaintext_blob, test_key
from keyhandoff.model import wincrypt as w

_ECHO = (
    "import sys\n"
    "r, o = sys.stdin.buffer, sys.stdout.buffer\n"
    "while h := r.read(4):\n"
    "    o.write(h + r.read(int.from_bytes(h, 'big'))); o.flush()\n"
)


def bench_encrypt(csp: BuiltinCsp) -> None:
    key_bytes = test_key(1, 16)
    prov = csp.acquire("secure")
    key = csp.import_key(prov, plaintext_blob(w.CALG_AES_128, key_bytes))
    live = Cipher(algorithms.AES(key_bytes), modes.CBC(bytes(16))).encryptor()
    for size, goal in ((65536, 1.10), (16, 3.0)):
        data = os.urandom(size)
        raw = per_call(lambda d=data: live.update(d))
        ours = per_call(lambda d=data: csp.encrypt(key, d, False))
        print(f"\nAES-128-CBC encrypt, {size} bytes per call (goal <= {goal:.2f}x)")
        print(row("raw cryptography, persistent context (baseline)", raw, raw))
        print(row("BuiltinCsp.encrypt (live engine)", ours, raw))


def bench_opaque(csp: BuiltinCsp) -> None:
    prov = csp.acquire("secure")
    key = csp.import_key(prov, plaintext_blob(w.CALG_AES_128, test_key(2, 16)))
    csp.encrypt(key, bytes(32), False)
    blob = csp.export_key(key, w.OPAQUEKEYBLOB)
    aead, nonce, payload = AESGCM(os.urandom(32)), os.urandom(12), os.urandom(len(blob) - 36)

    def raw() -> bytes:
        return aead.decrypt(nonce, aead.encrypt(nonce, payload, blob[:8]), blob[:8])

    def ours() -> None:
        csp.destroy_key(csp.import_key(prov, csp.export_key(key, w.OPAQUEKEYBLOB)))

    base, measured = per_call(raw), per_call(ours)
    print(f"\nOPAQUEKEYBLOB export + import in one process ({len(blob)}-byte blob)")
    print(row("raw AES-GCM seal + open of the payload (baseline)", base, base))
    print(row("export + import + destroy through the CSP", measured, base))


def bench_handoff(home: str) -> None:
    csp = ProcessCsp(home)
    echo = subprocess.Popen([sys.executable, "-c", _ECHO], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    assert echo.stdin is not None and echo.stdout is not None  # noqa: PT018 - pipes requested above
    try:
        secure, app = csp.acquire("secure"), csp.acquire("app")
        key = csp.import_key(secure, plaintext_blob(w.CALG_AES_128, test_key(3, 16)))
        blob = csp.export_key(key, w.OPAQUEKEYBLOB)
        frame = len(blob).to_bytes(4, "big") + blob

        def raw_pipe() -> bytes:
            echo.stdin.write(frame)  # type: ignore[union-attr]
            return echo.stdout.read(len(frame))  # type: ignore[union-attr]

        def handoff() -> None:
            moved = csp.import_key(app, csp.export_key(key, w.OPAQUEKEYBLOB))
            csp.destroy_key(moved)

        def import_only() -> None:
            csp.destroy_key(csp.import_key(app, blob))

        base = per_call(raw_pipe)
        print(f"\nCross-process handoff of one {len(blob)}-byte blob (goal <= 2x a raw pipe round trip)")
        print(row("raw pipe round trip of the same bytes (baseline)", base, base))
        print(row("import in the app process (+ destroy: 2 round trips)", per_call(import_only), base))
        print(row("export here + import there (+ destroy)", per_call(handoff), base))
    finally:
        echo.stdin.close()
        echo.wait()
        csp.close()


def bench_rc4_position(csp: BuiltinCsp, gib: float) -> None:
    prov = csp.acquire("secure")
    key = csp.import_key(prov, plaintext_blob(w.CALG_RC4, test_key(4, 16)))
    chunk = bytes(1 << 20)
    start = time.perf_counter()
    for _ in range(int(gib * 1024)):
        csp.encrypt(key, chunk, False)
    advance = time.perf_counter() - start
    blob = csp.export_key(key, w.OPAQUEKEYBLOB)
    start = time.perf_counter()
    moved = csp.import_key(prov, blob)
    imported = time.perf_counter() - start
    small = csp.import_key(prov, plaintext_blob(w.CALG_RC4, test_key(5, 16)))
    fresh = per_call(lambda: csp.destroy_key(csp.import_key(prov, csp.export_key(small, w.OPAQUEKEYBLOB))))
    same = csp.encrypt(moved, bytes(16), False) == csp.encrypt(csp.duplicate_key(key), bytes(16), False)
    print(f"\nRC4 key exported at stream position {gib:g} GiB (continuation identical: {same})")
    print(row("export + import at position 0 (baseline)", fresh, fresh))
    print(row(f"reaching the position ({gib:g} GiB of keystream)", advance, fresh))
    print(row(f"import at {gib:g} GiB (replays the keystream)", imported, fresh))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rc4-gib", type=float, default=1.0)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; times are best of 5 (see bench/timing.py)")
    with tempfile.TemporaryDirectory() as home:
        csp = BuiltinCsp(home)
        try:
            bench_encrypt(csp)
            bench_opaque(csp)
            bench_handoff(home)
            bench_rc4_position(csp, args.rc4_gib)
        finally:
            csp.close()


if __name__ == "__main__":
    main()
