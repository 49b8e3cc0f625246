"""Hardware-pinned keys on a PKCS#11 token (SoftHSM2), each figure a ratio to a software key measured in the same run.

Run: python bench/bench_hardware.py [--runs 5]   (figures recorded in docs/benchmarks.md; needs softhsm2 and
python-pkcs11)

A fresh SoftHSM2 token is made for the run (a private SOFTHSM2_CONF and token directory in a temporary directory,
softhsm2-util --init-token; the PIN in a 0600 file), selected through the KEYHANDOFF_PKCS11_* variables that the
app-side child process inherits.

1. AES-128-CBC encrypt (16 bytes and 64 KiB per call) with a key pinned on the token vs the same key as a software
   key of the same BuiltinCsp (token="pkcs11"); and the parts of the pinned call: Pkcs11Token.cipher and the bare
   python-pkcs11 encrypt; and Pkcs11Token.exists, which the CSP asks only on the calls that do not reach the token
   (refusals, empty data): a call that does costs no exists() round trip since the token answers NTE_NOT_FOUND
   itself.
2. Opaque handoff to the app side in a child process (ProcessCsp, token="pkcs11"): a pinned key vs a software key.

Every row is the median over --runs runs of a best-of-5 time (bench/timing.py); the ratio is taken within each run.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

from timing import fmt, machine_line, per_call

from keyhandoff.impl.builtin import BuiltinCsp
from keyhandoff.impl.pkcs11_token import ENV_MODULE, ENV_PIN, ENV_PIN_FILE, ENV_TOKEN, Pkcs11Token
from keyhandoff.impl.processes import ProcessCsp
from keyhandoff.lockstep import plaintext_blob, test_key
from keyhandoff.model import wincrypt as w

MODULE = os.environ.get("KEYHANDOFF_TEST_PKCS11_MODULE", "/usr/lib/softhsm/libsofthsm2.so")

Rows = dict[str, list[tuple[float, float]]]  # label -> [(seconds, ratio to the run's baseline)] over the runs


def fresh_softhsm_token(root: Path) -> None:
    """A fresh SoftHSM2 token under root, selected through this process's environment (children inherit it)."""
    util = shutil.which("softhsm2-util")
    if util is None or not Path(MODULE).exists():
        sys.exit("needs SoftHSM2: apt-get install softhsm2 (softhsm2-util and " + MODULE + ")")
    tokens = root / "tokens"
    tokens.mkdir(mode=0o700)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    label, pin = "kh-bench-" + secrets.token_hex(4), secrets.token_hex(8)
    pin_file = root / "pin"
    fd = os.open(pin_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(pin + "\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        [util, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", secrets.token_hex(8)],
        check=True,
        capture_output=True,
    )
    os.environ.pop(ENV_PIN, None)
    os.environ.update({ENV_MODULE: MODULE, ENV_TOKEN: label, ENV_PIN_FILE: str(pin_file)})


def measure(rows: Rows, cases: list[tuple[str, Callable[[], object]]]) -> None:
    """Time each case in this run; the first is the baseline of the others."""
    times = [(label, per_call(func)) for label, func in cases]
    base = times[0][1]
    for label, seconds in times:
        rows.setdefault(label, []).append((seconds, seconds / base))


def report(title: str, rows: Rows) -> None:
    print(f"\n{title}")
    for label, runs in rows.items():
        seconds = statistics.median(s for s, _ in runs)
        ratio = statistics.median(r for _, r in runs)
        print(f"{label:<58} {fmt(seconds)}   {ratio:7.2f}x")


def bench_encrypt(csp: BuiltinCsp, runs: int) -> None:
    token = csp.installation.token
    assert isinstance(token, Pkcs11Token)  # the bench selects token="pkcs11"
    prov = csp.acquire("secure")
    blob = plaintext_blob(w.CALG_AES_128, test_key(1, 16))
    soft = csp.import_key(prov, blob)
    pinned = csp.import_key(prov, blob, hardware=True)
    assert csp.inspect(pinned).key == b""  # the material is on the token only
    (obj,) = token.objects()
    probe = os.urandom(48)
    if csp.encrypt(soft, probe, False) != csp.encrypt(pinned, probe, False):
        sys.exit("the pinned and the software key disagree")
    entry = token._entries[obj]  # the bare python-pkcs11 call on the same object (a white-box row)
    for size in (16, 65536):
        data = os.urandom(size)
        rows: Rows = {}
        for _ in range(runs):
            measure(
                rows,
                [
                    ("software key, BuiltinCsp.encrypt (baseline)", partial(csp.encrypt, soft, data, False)),
                    ("pinned key, BuiltinCsp.encrypt", partial(csp.encrypt, pinned, data, False)),
                    ("  Pkcs11Token.exists (no longer asked on such a call)", partial(token.exists, obj)),
                    (
                        "  of which Pkcs11Token.cipher (cbc, cached handle)",
                        partial(token.cipher, obj, "cbc", bytes(16), data, decrypt=False),
                    ),
                    (
                        "  bare python-pkcs11 C_EncryptInit + C_Encrypt",
                        partial(entry.run.encrypt, data, mechanism=entry.cbc, mechanism_param=bytes(16)),
                    ),
                ],
            )
        report(f"AES-128-CBC encrypt, {size} bytes per call", rows)
    # What exists() cost before the handle cache: a search by CKA_ID (C_FindObjects and attribute reads).
    rows = {}
    for _ in range(runs):
        measure(
            rows,
            [
                ("Pkcs11Token.exists: one attribute read (baseline)", lambda: token.exists(obj)),
                ("a search by CKA_ID (what exists did before)", lambda: token._call(lambda s: token._find(s, obj))),
            ],
        )
    report(f"exists() on a token holding {len(token.objects())} objects of this installation", rows)


def bench_handoff(home: str, runs: int) -> None:
    csp = ProcessCsp(home, token="pkcs11")
    try:
        secure, app = csp.acquire("secure"), csp.acquire("app")
        blob = plaintext_blob(w.CALG_AES_128, test_key(3, 16))
        keys = {"software": csp.import_key(secure, blob), "pinned": csp.import_key(secure, blob, hardware=True)}
        sizes = {kind: len(csp.export_key(key, w.OPAQUEKEYBLOB)) for kind, key in keys.items()}

        def handoff(key: int) -> None:
            csp.destroy_key(csp.import_key(app, csp.export_key(key, w.OPAQUEKEYBLOB)))

        def handoff_and_use(key: int) -> None:
            moved = csp.import_key(app, csp.export_key(key, w.OPAQUEKEYBLOB))
            csp.encrypt(moved, bytes(16), False)
            csp.destroy_key(moved)

        rows: Rows = {}
        for _ in range(runs):
            measure(
                rows,
                [
                    ("software key: export here, import there, destroy (baseline)", lambda: handoff(keys["software"])),
                    ("pinned key: export here, import there, destroy", lambda: handoff(keys["pinned"])),
                    ("software key: the same + one 16-byte encrypt there", lambda: handoff_and_use(keys["software"])),
                    ("pinned key: the same + one 16-byte encrypt there", lambda: handoff_and_use(keys["pinned"])),
                ],
            )
        blobs = f"{sizes['software']}-byte blob software, {sizes['pinned']}-byte pinned"
        report(f"Opaque handoff to the app process ({blobs})", rows)
    finally:
        csp.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(machine_line())
    print(f"each row the median of {args.runs} runs of a best-of-5 time (see bench/timing.py)")
    with tempfile.TemporaryDirectory() as root:
        fresh_softhsm_token(Path(root))
        version = subprocess.run(["softhsm2-util", "--version"], capture_output=True, text=True).stdout.strip()
        print(f"SoftHSM2 {version}, fresh token {os.environ[ENV_TOKEN]} (file backend)")
        csp = BuiltinCsp(Path(root) / "home", token="pkcs11")
        try:
            bench_encrypt(csp, args.runs)
        finally:
            csp.close()
        bench_handoff(str(Path(root) / "handoff"), args.runs)


if __name__ == "__main__":
    main()
