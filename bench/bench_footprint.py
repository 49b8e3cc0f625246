"""What one request costs the app process, counted rather than timed: instructions, and the code and data lines it
touches, per request, under valgrind's callgrind with caches so small that every request starts cold.

Run: python bench/bench_footprint.py [--requests 2000]   (needs valgrind; recorded in docs/benchmarks.md, section 3)

Why: on this VM the time of a round trip moves by half from run to run, and a process woken by a pipe pays for
every line of code and data its request touches. Counts do not move: the app process is run under callgrind
(collecting only inside the serving loop, `frames_serve` in impl/_frames.c), once with a few setup requests and
once with N more of one kind, and the difference is divided by N. The misses of a 2 KiB direct-mapped
instruction and data cache approximate the lines a request touches, which is what it pays for after a wake.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter

from keyhandoff.impl.boundary import ChildProcess
from keyhandoff.impl.builtin import BuiltinCsp
from keyhandoff.lockstep import plaintext_blob, test_key
from keyhandoff.model import wincrypt as w

EVENTS = ("Ir", "I1mr", "D1mr")
KINDS = ("encrypt 16 bytes", "import the opaque blob")


def run(kind: str, requests: int, workdir: str) -> dict[str, int]:
    """Totals per event of the app process's serving loop for `requests` requests of `kind` after the setup."""
    out = os.path.join(workdir, f"callgrind.{kind.split()[0]}.{requests}")
    with BuiltinCsp(os.path.join(workdir, "home")) as csp:
        installation = csp.installation
        program = [
            "valgrind",
            "--tool=callgrind",
            "--cache-sim=yes",
            "--I1=2048,1,64",
            "--D1=2048,1,64",
            "--LL=16384,1,64",
            "--toggle-collect=frames_serve",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "keyhandoff.impl.child",
        ]
        spec = "keyhandoff.impl.processes:serve_app_side"
        args = [spec, str(installation.path), installation.token_kind, "durable"]
        child = ChildProcess(args, program=program, timeout=600)
        try:
            secure = csp.acquire("secure")
            key = csp.import_key(secure, plaintext_blob(w.CALG_AES_128, test_key(3, 16)))
            blob = csp.export_key(key, w.OPAQUEKEYBLOB)
            app = child.call("acquire", "app")
            live = child.call("import_key", app, blob)
            for _ in range(requests):  # imports are kept: a destroy would be counted too
                if kind.startswith("encrypt"):
                    child.call("encrypt", live, bytes(16), False)
                else:
                    child.call("import_key", app, blob)
        finally:
            child.close()
    return totals(out)


def totals(path: str) -> dict[str, int]:
    report = subprocess.run(
        ["callgrind_annotate", "--auto=no", f"--show={','.join(EVENTS)}", path], capture_output=True, text=True
    ).stdout
    line = next(row for row in report.splitlines() if "PROGRAM TOTALS" in row)
    counts = [int(n.replace(",", "")) for n in re.findall(r"([\d,]+) \(", line)]
    return dict(zip(EVENTS, counts, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_annotate") is None:
        sys.exit("valgrind is not installed (apt install valgrind)")
    print(f"per request in the app process, {args.requests} requests (callgrind, 2 KiB caches)")
    print(f"{'':28}{'instructions':>14}{'code lines':>12}{'data lines':>12}")
    with tempfile.TemporaryDirectory() as workdir:
        for kind in KINDS:
            base = Counter(run(kind, 0, workdir))
            more = Counter(run(kind, args.requests, workdir))
            per = {event: (more[event] - base[event]) / args.requests for event in EVENTS}
            print(f"{kind:28}{per['Ir']:14.0f}{per['I1mr']:12.0f}{per['D1mr']:12.0f}")


if __name__ == "__main__":
    main()
