"""The CAPI bridge's cost per operation, as ratios to baselines measured in the same run.

Run: python bench/bench_capi.py   (needs Wine and the mingw compiler; figures recorded in docs/benchmarks.md)

Every line is a full round trip through the line protocol: the request written to the bridge's stdin (under
Wine), the CryptoAPI call, the reply read back. Two baselines, measured side by side:

- a raw pipe round trip of a line of the same size to ``cat`` (a native process that echoes it): what a round
  trip between two processes costs here at the least;
- the bridge's own ``hello`` (the same round trip through Wine, answered without calling the CSP): the
  transport's floor, so the column ``vs hello`` is what the CSP call itself adds.

Steps per second of the machine against ``capi`` are in bench/bench_machine.py (``--targets capi``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable

from timing import fmt, per_call

from keyhandoff.lockstep import plaintext_blob, test_key
from keyhandoff.model import wincrypt as w
from keyhandoff.targets import load
from keyhandoff.targets.capi_target import CapiTarget
from keyhandoff.targets.wine import WinePrefix


class Echo:
    """A raw pipe round trip: a line to ``cat`` and the same line back."""

    def __init__(self) -> None:
        cat = shutil.which("cat") or "/bin/cat"
        self._proc = subprocess.Popen([cat], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._in, self._out = self._proc.stdin.fileno(), self._proc.stdout.fileno()

    def round_trip(self, line: bytes) -> None:
        os.write(self._in, line)
        got = b""
        while len(got) < len(line):
            got += os.read(self._out, 1 << 20)

    def close(self) -> None:
        self._proc.kill()
        self._proc.wait()


def _line(fields: list[object]) -> bytes:
    """The request line the bridge gets for these fields (bytes as hex), for a same-size raw baseline."""
    return " ".join(f.hex() if isinstance(f, bytes) else str(f) for f in fields).encode() + b"\n"


def main() -> None:
    prefix = WinePrefix.default()
    prefix.hold()  # as a check run does: the server stays up
    csp = load("capi")
    assert isinstance(csp, CapiTarget)
    echo = Echo()
    try:
        prov = csp.acquire()
        aes = csp.import_key(prov, plaintext_blob(w.CALG_AES_128, test_key(1, 16)), flags=w.CRYPT_EXPORTABLE)
        mac = csp.import_key(prov, plaintext_blob(w.CALG_RC2, test_key(2, 32)), flags=w.CRYPT_IPSEC_HMAC_KEY)
        small, big = bytes(16), bytes(64 * 1024)
        blob = plaintext_blob(w.CALG_AES_128, test_key(3, 16))

        def import_destroy() -> None:
            csp.destroy_key(csp.import_key(prov, blob))

        def gen_destroy() -> None:
            csp.destroy_key(csp.gen_key(prov, w.CALG_AES_128))

        def dup_destroy() -> None:
            csp.destroy_key(csp.duplicate_key(aes))

        # (label, call, request fields for the same-size raw baseline, round trips per call)
        cases: list[tuple[str, Callable[[], object], list[object], int]] = [
            ("hello (no CSP call)", lambda: csp._call("hello", "hello"), ["hello"], 1),
            ("encrypt 16 B (AES-128-CBC)", lambda: csp.encrypt(aes, small, False), ["encrypt", 1, 0, small], 1),
            ("decrypt 16 B", lambda: csp.decrypt(aes, small, False), ["decrypt", 1, 0, small], 1),
            ("encrypt 64 KiB", lambda: csp.encrypt(aes, big, False), ["encrypt", 1, 0, big], 1),
            ("get_key_param KP_IV", lambda: csp.get_key_param(aes, w.KP_IV), ["getparam", 1, 1], 1),
            ("set_key_param KP_IV", lambda: csp.set_key_param(aes, w.KP_IV, small), ["setparam", 1, 1, "b", small], 1),
            ("hmac SHA-256, 64 B", lambda: csp.hmac(mac, w.CALG_SHA_256, bytes(64)), ["hmac", 1, 1, bytes(64)], 1),
            ("export PLAINTEXTKEYBLOB", lambda: csp.export_key(aes, w.PLAINTEXTKEYBLOB), ["export", 1, 8, 0, 0], 1),
            ("import + destroy (2 calls)", import_destroy, ["import", 1, 0, 0, 0, blob], 2),
            ("gen_key + destroy (2 calls)", gen_destroy, ["genkey", 1, w.CALG_AES_128, 0, 0], 2),
            ("duplicate + destroy (2 calls)", dup_destroy, ["dup", 1], 2),
        ]
        hello = per_call(cases[0][1])
        print(f"python {sys.version.split()[0]}, {csp.info.platform}, {csp.info.description}")
        print(f"{'round trip':<34} {'per call':>13}   {'raw pipe':>13} {'vs pipe':>8} {'vs hello':>9}")
        for label, call, fields, trips in cases:
            line = _line(fields)
            raw = per_call(lambda line=line: echo.round_trip(line)) * trips  # type: ignore[misc]
            took = per_call(call)
            print(f"{label:<34} {fmt(took)}   {fmt(raw)} {took / raw:7.2f}x {took / (hello * trips):8.2f}x")
    finally:
        echo.close()
        csp.close()
        prefix.release()


if __name__ == "__main__":
    main()
