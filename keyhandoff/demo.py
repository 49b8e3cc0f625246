"""``keyhandoff demo``: the Schannel handoff, for real, across two OS processes.

The secure process creates a bulk-encryption key (AES-128, CBC chained across records as in TLS 1.0), a MAC key
(HMAC-SHA1) and a hardware-pinned AES key; it protects the first records, exports each key as an OPAQUEKEYBLOB
and destroys it. A spawned application process imports the blobs and protects the next records. Twins made
with CryptDuplicateKey before the export continue the same stream in one process: the two streams must be
byte-identical, and the hardware key's token object must outlive its destroy.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable

from keyhandoff.impl.builtin import BuiltinCsp
from keyhandoff.impl.processes import ProcessCsp
from keyhandoff.model import wincrypt as w

__all__ = ["run_demo"]

RECORDS = [f"record {n}: application data that must stay in sequence".encode() for n in range(6)]
HANDOFF_AT = 3


def _pad(record: bytes) -> bytes:
    """TLS-style block padding, so every record is a whole number of blocks (non-final CBC calls)."""
    pad = 16 - (len(record) + 1) % 16
    return record + bytes([pad]) * (pad + 1)


def _protect(csp: BuiltinCsp | ProcessCsp, bulk: int, mac: int, pinned: int, seq: int, record: bytes) -> bytes:
    tag = csp.hmac(mac, w.CALG_SHA1, seq.to_bytes(8, "big") + record)
    body = csp.encrypt(bulk, _pad(record + tag), False)
    return body + csp.encrypt(pinned, _pad(b"pinned"), False)


def run_demo(home: str | None = None, say: Callable[[str], None] = print) -> bool:
    """Run the handoff; True when the cross-process stream equals the single-process one."""
    own_home = home is None
    home = home or tempfile.mkdtemp(prefix="keyhandoff-demo-")
    try:
        csp = ProcessCsp(home)
        try:
            return _run(csp, say)
        finally:
            csp.close()
    finally:
        if own_home:
            shutil.rmtree(home, ignore_errors=True)


def _run(csp: ProcessCsp, say: Callable[[str], None]) -> bool:
    secure = csp.acquire("secure")
    bulk = csp.gen_key(secure, w.CALG_AES_128)
    mac = csp.gen_key(secure, w.CALG_RC4)  # the MAC key: HMAC uses its key bytes
    before = set(csp.token_objects())
    pinned = csp.gen_key(secure, w.CALG_AES_256, hardware=True)
    new = set(csp.token_objects()) - before  # the pinned key's token object (unless another process made one)
    made = new.pop() if len(new) == 1 else None
    try:
        return _hand_off(csp, secure, bulk, mac, pinned, made, say)
    finally:  # a home the user keeps must not collect one object per demo
        if made is not None and made in csp.token_objects():
            csp.delete_token_object(made)
            say(f"token administration: deleted the demo's object {made:#x} ({len(before)} left, as before)")


def _hand_off(
    csp: ProcessCsp, secure: int, bulk: int, mac: int, pinned: int, made: int | None, say: Callable[[str], None]
) -> bool:
    named = f" {made:#x}" if made is not None else ""
    say(f"secure process {os.getpid()}: generated bulk AES-128, MAC key, hardware-pinned AES-256 (token object{named})")
    stream = [_protect(csp, bulk, mac, pinned, n, r) for n, r in enumerate(RECORDS[:HANDOFF_AT])]
    say(f"secure process: protected records 0-{HANDOFF_AT - 1} (CBC register now mid-stream)")

    twins = [csp.duplicate_key(k) for k in (bulk, mac, pinned)]  # the single-process reference
    blobs = [csp.export_key(k, w.OPAQUEKEYBLOB) for k in (bulk, mac, pinned)]
    objects_before = dict(csp.token_objects())
    for key in (bulk, mac, pinned):
        csp.destroy_key(key)
    survived = dict(csp.token_objects()) == objects_before
    say(
        f"secure process: exported 3 OPAQUEKEYBLOBs ({', '.join(str(len(b)) for b in blobs)} bytes), destroyed "
        f"the handles; hardware token object{named} {'kept' if survived else 'LOST'}"
    )

    app = csp.acquire("app")
    moved = [csp.import_key(app, blob) for blob in blobs]
    say(f"application process {csp.app_pid}: imported the 3 blobs")
    later = [(n, r) for n, r in enumerate(RECORDS) if n >= HANDOFF_AT]
    continued = [_protect(csp, moved[0], moved[1], moved[2], n, r) for n, r in later]
    reference = [_protect(csp, twins[0], twins[1], twins[2], n, r) for n, r in later]
    say(f"application process: protected records {HANDOFF_AT}-{len(RECORDS) - 1}")

    digest = hashlib.sha256(b"".join(stream + continued)).hexdigest()[:16]
    same = continued == reference
    say(
        f"stream across processes {'==' if same else '!='} stream in one process "
        f"({sum(map(len, stream + continued))} bytes, sha256 {digest})"
    )
    return same and survived


def main_demo(home: str | None) -> int:
    ok = run_demo(home)
    print("handoff OK: the imported keys continued exactly where the exported ones stopped" if ok else "handoff FAILED")
    return 0 if ok else 1
