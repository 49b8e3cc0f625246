"""The benchmark's floor lines and its interleaved timer do what their labels say (bench/, section 1).

A floor line stands for the least a CSP must do per call; if it skipped the cipher call, the lock or the
register, its figure would be a floor of nothing. These checks hold each one to real AES-128-CBC output, call
after call, and the timer to ordering two calls of known different cost.

They run in a child interpreter: the bench scripts are local modules, and Hypothesis draws constants from every
local module loaded, so importing them here would change what the suite's seed-fixed runs draw.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_BENCH = Path(__file__).resolve().parents[2] / "bench"

_FLOORS = """
import os
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
import bench_impl

key = os.urandom(16)
floors = dict(bench_impl.floor_calls(key))
# cc and Python's headers are part of this machine's setup (CI builds the CAPI bridge with its compiler too)
assert any("in C" in label for label in floors), "bench/native_hot.c did not build"
reference = Cipher(algorithms.AES(key), modes.CBC(bytes(16))).encryptor()
chunks = [os.urandom(16 * n) for n in (1, 1, 3, 2, 1)]
expected = [reference.update(chunk) for chunk in chunks]
for label, call in floors.items():
    assert [call(chunk) for chunk in chunks] == expected, label

native = bench_impl.build_native_hot()
record = bench_impl._Record(Cipher(algorithms.AES(key), modes.CBC(bytes(16))).encryptor().update)
table = {7: record}
out = native.encrypt(table, 7, bytes(32))
assert record.tail == out and len(out) == 32
assert not record.lock.locked()
try:
    native.encrypt(table, 8, bytes(16))
except KeyError:
    pass
else:
    raise AssertionError("an unknown handle was not refused")
try:
    native.encrypt(table, 7, "not bytes")
except TypeError:  # the cipher's own error comes through
    pass
else:
    raise AssertionError("update accepted a str")
assert not record.lock.locked(), "the lock was kept after an error"
assert record.tail == out, "a failed call moved the register"
print("ok")
"""

_TIMER = """
import time
import timing

cheap, dear = timing.interleaved_best([lambda: None, lambda: time.sleep(0.0002)], rounds=5, batch_time=2e-3)
assert 0 < cheap < 1e-5, cheap
assert dear >= 2e-4, dear
print("ok")
"""


def _run(script: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=_BENCH, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")


def test_every_floor_line_encrypts_and_keeps_the_register() -> None:
    _run(_FLOORS)


def test_interleaved_best_orders_calls_by_their_cost() -> None:
    _run(_TIMER)
