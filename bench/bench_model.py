"""The model's cost per encrypt, as a ratio to raw `cryptography` calls measured in the same run.

Run: python bench/bench_model.py   (figures recorded in docs/benchmarks.md)

Baselines: a one-shot `cryptography` call (new context + update: what the model does per call) and a
persistent context's update (what a live CSP does). The model's call includes looking up the key, the
one-shot cipher call, and building the new immutable world.
"""

from __future__ import annotations

import os
import platform

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from timing import per_call, row  # bench/ is on sys.path when a script in it runs

from keyhandoff import model
from keyhandoff.model import wincrypt as w
from keyhandoff.model.state import Side


def main() -> None:
    key_bytes = bytes(range(16))
    world = model.empty_world()
    step = model.acquire(world, Side.SECURE)
    world, prov = step.world, step.outcome.value  # type: ignore[union-attr]
    step = model.gen_key(world, prov, w.CALG_AES_128, 0, hardware=False, entropy=key_bytes * 2)
    world, key = step.world, step.outcome.value  # type: ignore[union-attr]
    live = Cipher(algorithms.AES(key_bytes), modes.CBC(bytes(16))).encryptor()
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores")
    for size in (16, 65536):
        data = os.urandom(size)
        one_shot = per_call(
            lambda d=data: Cipher(algorithms.AES(key_bytes), modes.CBC(bytes(16))).encryptor().update(d)
        )
        persistent = per_call(lambda d=data: live.update(d))
        modelled = per_call(lambda d=data: model.encrypt(world, key, d, False))
        print(f"\nAES-128-CBC encrypt, {size} bytes per call")
        print(row("raw cryptography, one-shot (baseline)", one_shot, one_shot))
        print(row("raw cryptography, persistent context", persistent, one_shot))
        print(row("model.encrypt (pure, new world per call)", modelled, one_shot))
        print(f"{'  model / persistent context':<52} {'':13}   {modelled / persistent:7.2f}x")


if __name__ == "__main__":
    main()
