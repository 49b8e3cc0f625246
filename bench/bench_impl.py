"""The reference CSP's costs, each as a ratio to a baseline measured in the same run.

Run: python bench/bench_impl.py [--runs 5] [--rc4-gib 1] [--sections 12345]   (recorded in docs/benchmarks.md)

1. AES-128-CBC encrypt through the CSP vs a persistent raw `cryptography` context (goals: <= 1.10x at 64 KiB,
   <= 3x at 16 bytes), on its C data path (impl/_evp.c, when built) and, side by side, on the Python one (as
   without the extension); RC4 the same way (no goal). At 16 bytes, three floor lines: the raw call under a lock,
   a minimal Python wrapper (handle lookup, the key's lock, the call, the register kept) and the same wrapper in
   C (bench/native_hot.c, if a C compiler and Python's headers are at hand): what any CSP keeping a lock per
   key and calling `cryptography`'s update pays at least, in Python and in native code (the C data path calls
   libcrypto itself, below them).
2. OPAQUEKEYBLOB export + import in one process vs a raw AES-GCM seal + open of the same payload size.
3. Cross-process handoff of one blob vs a raw pipe round trip of the same bytes to a child process (goal <= 2x):
   the handoff is the import round trip (blob in, handle out); the destroy round trip is reported on its own
   line, and so are the boundary's own floor (the same bytes echoed through it), a raw pipe round trip followed
   by an import in this process (what the handoff costs without framing), the import back to back, and a
   minimal Python child doing the same import behind no boundary code (raw frames, no marshal). Measured
   with both processes on one core, on two cores, and as the scheduler places them (see ``placements``). If a C
   compiler and OpenSSL's headers are at hand, one more line times the same request from the boundary's real
   parent to a native child (bench/native_import.c: framing and the AES-GCM open only): what the boundary and a
   seal open cost with nothing else. Where the extensions were built, the import itself (impl/_import.c) and
   both ends of the boundary (impl/_frames.c) are C; bench/bench_cold.py shows what calls cost with cold caches.
4. An RC4 key exported at a large stream position: its blob carries the RC4 state, so the import and the first
   call cost the same at any position (with ``KEYHANDOFF_NATIVE_RC4=0``, the fallback: no state, and the
   imported key's first call replays the keystream).
5. Memory a process keeps of keys it made and destroyed (no baseline: the figure must not grow with N).

Section 1's lines take turns: 100 x N rounds (``--runs N``), each timing a millisecond's batch of every line, and
a line shows its best batch (``timing.interleaved_best``). With ``--runs N`` section 3 is measured N times, side by
side with its baselines; each line shows the median over the runs of its best-of-5 time, and the ratio is the
median of the per-run ratios. Sections 2, 4 and 5 are measured once, best of 5.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType

from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from timing import interleaved_best, machine_line, per_call, row

from keyhandoff.impl.boundary import ChildProcess
from keyhandoff.impl.builtin import BuiltinCsp
from keyhandoff.impl.evp import native_evp, python_data_path
from keyhandoff.impl.processes import ProcessCsp
from keyhandoff.impl.rc4_state import native_rc4
from keyhandoff.impl.xaes import NONCE_SIZE, Xaes256Gcm
from keyhandoff.lockstep import plaintext_blob, test_key
from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError

_ECHO = (
    "import sys\n"
    "r, o = sys.stdin.buffer, sys.stdout.buffer\n"
    "while h := r.read(4):\n"
    "    o.write(h + r.read(int.from_bytes(h, 'big'))); o.flush()\n"
)


# A minimal Python app side: the same import through the same CSP, behind no boundary code at all. Requests
# are raw frames (4-byte length, the blob), replies the 8-byte handle or 0 for a refusal; a frame of length 0
# destroys what was imported (untimed, between batches). What the handoff would cost if the boundary were free.
_LEAN_IMPORT = (
    "import os, sys\n"
    "from keyhandoff.impl.builtin import BuiltinCsp\n"
    "from keyhandoff.model.errors import CryptError\n"
    "csp = BuiltinCsp(sys.argv[1]).csp\n"
    "app, made = csp.acquire('app'), []\n"
    "while frame := os.read(0, 1 << 16):\n"
    "    if len(frame) == 4:\n"
    "        for handle in made: csp.destroy_key(handle)\n"
    "        made.clear(); os.write(1, bytes(8)); continue\n"
    "    try: made.append(csp.import_key(app, frame[4:]))\n"
    "    except CryptError: os.write(1, bytes(8)); continue\n"
    "    os.write(1, made[-1].to_bytes(8, 'little'))\n"
)


def measure_runs(runs: int, funcs: Sequence[Callable[[], float]]) -> list[tuple[float, float]]:
    """Run every measurement ``runs`` times, interleaved; funcs[0] is the baseline. For each: (median seconds,
    median of the per-run ratios to the baseline)."""
    times: list[list[float]] = [[] for _ in funcs]
    for _ in range(runs):
        for column, func in zip(times, funcs, strict=True):
            column.append(func())
    base = times[0]
    return [
        (statistics.median(column), statistics.median(t / b for t, b in zip(column, base, strict=True)))
        for column in times
    ]


def median_row(label: str, measured: tuple[float, float]) -> str:
    seconds, ratio = measured
    return row(label, seconds, seconds / ratio)


_GOALS = ((65536, 1.10), (16, 3.0))  # AES-128-CBC: bytes per call, the ratio goal


def bench_encrypt(csp: BuiltinCsp, runs: int, home: str) -> None:
    key_bytes = test_key(1, 16)
    prov = csp.acquire("secure")
    key = csp.import_key(prov, plaintext_blob(w.CALG_AES_128, key_bytes))
    live = Cipher(algorithms.AES(key_bytes), modes.CBC(bytes(16))).encryptor()
    titles = [(size, f"AES-128-CBC encrypt, {size} bytes per call (goal <= {goal:.2f}x)") for size, goal in _GOALS]
    path = "C data path" if native_evp() is not None else "Python data path: the C extension is not built"
    labels = ("raw cryptography, persistent context (baseline)", f"BuiltinCsp.encrypt ({path})")
    with python_data_path():  # the same CSP without the C extension, side by side
        python_csp = BuiltinCsp(os.path.join(home, "python-data-path"), durable=False)
        python_key = python_csp.import_key(python_csp.acquire("secure"), plaintext_blob(w.CALG_AES_128, key_bytes))
    others = [("BuiltinCsp.encrypt (Python data path)", python_csp, python_key)] if native_evp() is not None else []
    try:
        encrypt_rows(csp, key, live, runs, titles, labels, {16: floor_calls(key_bytes)}, others)
    finally:
        python_csp.close()
    bench_rc4_encrypt(csp, prov, runs)


class _Record:
    """A key as the floor lines keep it: its lock, its live context's update, its last ciphertext (the register)."""

    __slots__ = ("lock", "tail", "update")

    def __init__(self, update: Callable[[bytes], bytes]) -> None:
        self.lock = threading.Lock()
        self.update = update
        self.tail = b""


def floor_calls(key_bytes: bytes) -> list[tuple[str, Callable[[bytes], object]]]:
    """The 16-byte floor lines: each one a call on its own live AES-128-CBC context under ``key_bytes``."""

    def context() -> Callable[[bytes], bytes]:
        return Cipher(algorithms.AES(key_bytes), modes.CBC(bytes(16))).encryptor().update

    lock, update = threading.Lock(), context()
    acquire, release = lock.acquire, lock.release

    def locked(data: bytes) -> bytes:
        acquire()
        try:
            return update(data)
        finally:
            release()

    handle = 0x2A5F_0C31_9D47_B1E6  # any int: a handle-table key
    table = {handle: _Record(context())}
    lookup = table.get

    def wrapper(data: bytes) -> bytes:
        record = lookup(handle)
        assert record is not None
        lock = record.lock
        lock.acquire()
        try:
            out = record.update(data)
            record.tail = out
            return out
        finally:
            lock.release()

    floors: list[tuple[str, Callable[[bytes], object]]] = [
        ("  floor: the raw call under a lock", locked),
        ("  floor: in Python (lookup, lock, call, register)", wrapper),
    ]
    native = build_native_hot()
    if native is not None:
        native_table = {handle: _Record(context())}
        # partial: a C-level call, so the line adds no Python frame of its own
        in_c = functools.partial(native.encrypt, native_table, handle)
        floors.append(("  floor: the same in C (bench/native_hot.c)", in_c))
    return floors


def build_native_hot() -> ModuleType | None:
    """bench/native_hot.c built and loaded; None (and the reason printed) if it cannot be built."""
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "native_hot.c")
    with tempfile.TemporaryDirectory() as workdir:
        path = os.path.join(workdir, "native_hot" + str(sysconfig.get_config_var("EXT_SUFFIX")))
        include = sysconfig.get_paths()["include"]
        command = ["cc", "-O2", "-Wall", "-Wextra", "-shared", "-fPIC", f"-I{include}", "-o", path, source]
        try:
            subprocess.run(command, check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError) as err:
            print(f"\n(the C floor line is not measured: {' '.join(command)} failed: {err})")
            return None
        spec = importlib.util.spec_from_file_location("native_hot", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # loaded now; the file may go
        return module


def bench_rc4_encrypt(csp: BuiltinCsp, prov: int, runs: int) -> None:
    """RC4 through the CSP, whose engine runs libcrypto's RC4 on a state of its own (through ctypes, so that the
    state can travel in a blob), against ``cryptography``'s ARC4 (no goal: the price of an exportable state)."""
    key_bytes = test_key(6, 16)
    key = csp.import_key(prov, plaintext_blob(w.CALG_RC4, key_bytes))
    live = Cipher(ARC4(key_bytes), mode=None).encryptor()
    engine = "libcrypto RC4, own state" if native_rc4() is not None else "cryptography ARC4 (the fallback)"
    titles = [(size, f"RC4 encrypt, {size} bytes per call (no goal)") for size in (65536, 16)]
    labels = ("raw cryptography ARC4, persistent context (baseline)", f"BuiltinCsp.encrypt ({engine})")
    encrypt_rows(csp, key, live, runs, titles, labels)


def encrypt_rows(
    csp: BuiltinCsp,
    key: int,
    live: CipherContext,
    runs: int,
    titles: Sequence[tuple[int, str]],
    labels: tuple[str, str],
    floors: Mapping[int, Sequence[tuple[str, Callable[[bytes], object]]]] | None = None,
    others: Sequence[tuple[str, BuiltinCsp, int]] = (),
) -> None:
    """Per size: the raw context (baseline), the CSP's encrypt, ``others`` (label, CSP, key: called as the CSP
    is) and that size's ``floors`` (label, call), measured in turns over 100 x ``runs`` rounds
    (``timing.interleaved_best``)."""
    for size, title in titles:
        data = os.urandom(size)
        extra = (floors or {}).get(size, ())

        def call_with(call: Callable[[bytes], object], d: bytes = data) -> Callable[[], object]:
            return lambda: call(d)

        def csp_call(csp: BuiltinCsp, key: int, d: bytes = data) -> Callable[[], object]:
            encrypt = csp.encrypt
            return lambda: encrypt(key, d, False)  # as a caller writes it

        lines = [
            call_with(live.update),
            csp_call(csp, key),
            *(csp_call(other, other_key) for _, other, other_key in others),
            *(call_with(call) for _, call in extra),
        ]
        measured = interleaved_best(lines, rounds=100 * runs)
        print(f"\n{title}")
        names = [*labels, *(label for label, _, _ in others), *(label for label, _ in extra)]
        for label, seconds in zip(names, measured, strict=True):
            print(row(label, seconds, measured[0]))


def bench_opaque(csp: BuiltinCsp) -> None:
    prov = csp.acquire("secure")
    key = csp.import_key(prov, plaintext_blob(w.CALG_AES_128, test_key(2, 16)))
    csp.encrypt(key, bytes(32), False)
    blob = csp.export_key(key, w.OPAQUEKEYBLOB)
    aead, nonce, payload = AESGCM(os.urandom(32)), os.urandom(12), os.urandom(len(blob) - 8 - NONCE_SIZE - 16)

    xaes = Xaes256Gcm(os.urandom(32))

    def raw() -> bytes:
        return aead.decrypt(nonce, aead.encrypt(nonce, payload, blob[:8]), blob[:8])

    def sealed() -> bytes:  # the AEAD the CSP seals with, a new nonce per seal as the CSP draws it
        fresh = xaes.new_nonce()
        return xaes.decrypt(fresh, xaes.encrypt(fresh, payload, blob[:8]), blob[:8])

    def ours() -> None:
        csp.destroy_key(csp.import_key(prov, csp.export_key(key, w.OPAQUEKEYBLOB)))

    base, xaes_time, measured = per_call(raw), per_call(sealed), per_call(ours)
    print(f"\nOPAQUEKEYBLOB export + import in one process ({len(blob)}-byte blob)")
    print(row("raw AES-GCM seal + open of the payload (baseline)", base, base))
    print(row("  XAES-256-GCM seal + open, as the CSP seals", xaes_time, base))
    print(row("export + import + destroy through the CSP", measured, base))


def per_item(func: Callable[[int], object], make: Callable[[], list[int]], *, repeat: int = 5) -> float:
    """Seconds per call of ``func`` over a fresh batch from ``make`` (not timed), best of ``repeat`` batches."""
    best = float("inf")
    for _ in range(repeat):
        batch = make()
        start = time.perf_counter()
        for item in batch:
            func(item)
        best = min(best, (time.perf_counter() - start) / len(batch))
    return best


def placements() -> list[tuple[str, tuple[int, int] | None]]:
    """Where the two processes run. A pipe round trip between two processes on one core is a pair of context
    switches; across two cores each direction wakes an idle core, which costs several times more on this VM. The
    scheduler picks either, so both are measured pinned (this process and its children alike: baseline and
    handoff always share a placement), and once as the scheduler leaves them."""
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        return [("as scheduled", None)]
    first, second = sorted(os.sched_getaffinity(0))[:2]
    return [("as scheduled", None), ("one core", (first, first)), ("two cores", (first, second))]


def build_native(workdir: str) -> str | None:
    """bench/native_import.c built into ``workdir``; None (and the reason printed) if it cannot be built."""
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "native_import.c")
    program = os.path.join(workdir, "native_import")
    command = ["cc", "-O2", "-Wall", "-Wextra", "-o", program, source, "-lcrypto"]
    try:
        subprocess.run(command, check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as err:
        print(f"\n(the native app side is not measured: {' '.join(command)} failed: {err})")
        return None
    return program


def seal_for_native(child: ChildProcess, like: bytes) -> bytes:
    """Key the native child and seal a blob for it: ``like``'s header and length, AES-256-GCM under a key of the
    benchmark's own (never an installation's). A tampered blob must come back NTE_BAD_DATA, so the line's
    figure is known to include the open."""
    key = AESGCM.generate_key(bit_length=256)
    child.call("setup", key)
    header, nonce = like[:8], os.urandom(12)
    blob = header + nonce + AESGCM(key).encrypt(nonce, os.urandom(len(like) - len(header) - 12 - 16), header)
    try:
        child.call("import_key", 1, blob[:-1] + bytes([blob[-1] ^ 1]))
    except CryptError as err:
        if err.code != w.NTE_BAD_DATA:
            raise
    else:
        raise AssertionError("the native child accepted a tampered blob")
    return blob


def bench_handoff(home: str, runs: int) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        program = build_native(workdir)
        for name, cores in placements():
            csp = ProcessCsp(home)
            echo = subprocess.Popen(
                [sys.executable, "-c", _ECHO], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
            )
            # The boundary's floor: a served object that does nothing (bytes().join hands the bytes back), so
            # the same bytes cross both ways through the framed, timed calls of keyhandoff.impl.boundary.
            floor = ChildProcess(["builtins:bytes"])
            lean = subprocess.Popen(
                [sys.executable, "-c", _LEAN_IMPORT, home], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
            )
            native = ChildProcess([], program=[program]) if program is not None else None
            original = os.sched_getaffinity(0) if cores is not None else None
            try:
                if cores is not None:
                    os.sched_setaffinity(0, {cores[0]})
                    children = [echo.pid, floor.pid, lean.pid, csp.app_pid] + ([native.pid] if native else [])
                    for pid in children:
                        os.sched_setaffinity(pid, {cores[1]})
                handoff_rows(csp, echo, floor, lean, native, runs, name)
            finally:
                if original is not None:
                    os.sched_setaffinity(0, original)
                for process in (echo, lean):  # end of input: each exits
                    assert process.stdin is not None  # Popen with PIPE
                    process.stdin.close()
                    process.wait()
                floor.close()
                if native is not None:
                    native.close()
                csp.close()


def handoff_rows(
    csp: ProcessCsp,
    echo: subprocess.Popen[bytes],
    floor: ChildProcess,
    lean: subprocess.Popen[bytes],
    native: ChildProcess | None,
    runs: int,
    name: str,
) -> None:
    assert echo.stdin is not None and echo.stdout is not None  # noqa: PT018 - pipes requested above
    pipe_in, pipe_out = echo.stdin, echo.stdout
    secure, app = csp.acquire("secure"), csp.acquire("app")
    key = csp.import_key(secure, plaintext_blob(w.CALG_AES_128, test_key(3, 16)))
    blob = csp.export_key(key, w.OPAQUEKEYBLOB)
    frame = len(blob).to_bytes(4, "big") + blob
    local = csp.secure.csp  # the same installation in this process: the import without a boundary
    local_app = local.acquire("app")
    batch = 2000

    def raw_pipe() -> bytes:
        pipe_in.write(frame)
        return pipe_out.read(len(frame))

    def import_round_trip() -> float:  # the keys are destroyed afterwards, untimed
        made: list[int] = []
        seconds = per_item(lambda _: made.append(csp.import_key(app, blob)), lambda: list(range(batch)))
        for handle in made:
            csp.destroy_key(handle)
        return seconds

    def destroy_round_trip() -> float:  # each batch of keys imported beforehand, untimed
        return per_item(csp.destroy_key, lambda: [csp.import_key(app, blob) for _ in range(batch)])

    def import_here(after_pipe: bool) -> float:
        made: list[int] = []

        def one(_: int) -> None:
            if after_pipe:
                raw_pipe()
            made.append(local.import_key(local_app, blob))

        seconds = per_item(one, lambda: list(range(batch)))
        for handle in made:
            local.destroy_key(handle)
        return seconds

    assert lean.stdin is not None and lean.stdout is not None  # noqa: PT018 - pipes requested above
    lean_in, lean_out = lean.stdin.fileno(), lean.stdout.fileno()

    def lean_import(_: int) -> None:
        os.write(lean_in, frame)
        if not int.from_bytes(os.read(lean_out, 8), "little"):
            raise AssertionError("the minimal child refused the blob")

    def lean_destroy() -> list[int]:  # between batches, untimed
        os.write(lean_in, bytes(4))
        os.read(lean_out, 8)
        return list(range(batch))

    def full_cycle() -> None:
        csp.destroy_key(csp.import_key(app, csp.export_key(key, w.OPAQUEKEYBLOB)))

    measured: list[Callable[[], float]] = [
        lambda: per_call(raw_pipe),
        lambda: per_call(lambda: floor.call("join", (blob,))),
        lambda: import_here(after_pipe=True),
        import_round_trip,
        destroy_round_trip,
        lambda: per_call(full_cycle),
        lambda: import_here(after_pipe=False),
        lambda: per_item(lean_import, lean_destroy),
    ]
    if native is not None:
        native_blob = seal_for_native(native, blob)
        measured.append(lambda: per_call(lambda: native.call("import_key", app, native_blob)))
    figures = measure_runs(runs, measured)
    print(f"\nCross-process handoff of one {len(blob)}-byte blob, processes {name} (goal <= 2x a raw pipe round trip)")
    labels = [
        "raw pipe round trip of the same bytes (baseline)",
        "the same bytes echoed through the boundary (floor)",
        "raw pipe round trip, then an import here (no framing)",
        "handoff: import in the app process (1 round trip)",
        "destroy in the app process (1 round trip)",
        "export here + import there + destroy (2 round trips)",
        "import in one process, back to back (no boundary)",
        "minimal Python child: raw frames, the same import",
        "native child: frames + AES-GCM open only (C)",
    ]
    for label, figure in zip(labels, figures, strict=False):  # the native line only if it was measured
        print(median_row(label, figure))


def best_of(func: Callable[[], object], repeat: int) -> float:
    """The best time of ``repeat`` single calls."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def bench_rc4_position(csp: BuiltinCsp, gib: float) -> None:
    native = native_rc4() is not None
    prov = csp.acquire("secure")
    key = csp.import_key(prov, plaintext_blob(w.CALG_RC4, test_key(4, 16)))
    chunk = bytes(1 << 20)
    start = time.perf_counter()
    for _ in range(int(gib * 1024)):
        csp.encrypt(key, chunk, False)
    advance = time.perf_counter() - start
    # Each single operation timed on its own, best of 5 (of 1 for the fallback, whose first calls take seconds).
    repeat = 5 if native else 1
    exported = best_of(lambda: csp.export_key(key, w.OPAQUEKEYBLOB), repeat)
    blob = csp.export_key(key, w.OPAQUEKEYBLOB)
    moved: list[int] = []
    imported = best_of(lambda: moved.append(csp.import_key(prov, blob)), repeat)
    continued: list[bytes] = []
    first_call = best_of(lambda: continued.append(csp.encrypt(moved.pop(), bytes(16), False)), repeat)
    twins: list[bytes] = []
    duplicated = best_of(lambda: twins.append(csp.encrypt(csp.duplicate_key(key), bytes(16), False)), repeat)
    small = csp.import_key(prov, plaintext_blob(w.CALG_RC4, test_key(5, 16)))
    fresh = per_call(lambda: csp.destroy_key(csp.import_key(prov, csp.export_key(small, w.OPAQUEKEYBLOB))))
    same = set(continued) == set(twins) == {csp.encrypt(key, bytes(16), False)}
    how = "its state in the blob (libcrypto RC4)" if native else "no state, replayed (the fallback)"
    print(f"\nRC4 key at stream position {gib:g} GiB, {how}; continuations identical: {same}")
    print(row("export + import at position 0 (baseline)", fresh, fresh))
    print(row(f"reaching the position ({gib:g} GiB of keystream)", advance, fresh))
    print(row(f"export at {gib:g} GiB ({len(blob)}-byte blob)", exported, fresh))
    print(row(f"import at {gib:g} GiB", imported, fresh))
    print(row("its first encrypt (16 bytes)", first_call, fresh))
    print(row("duplicate + its first encrypt (16 bytes)", duplicated, fresh))


def bench_memory(home: str) -> None:
    """What a long-lived process keeps of the keys it made and destroyed: traced allocations still held after
    N import + destroy cycles, for two N (a bounded figure stays flat; a leak grows with N)."""
    csp = BuiltinCsp(home)
    try:
        prov = csp.acquire("app")
        blob = csp.export_key(csp.import_key(prov, plaintext_blob(w.CALG_AES_128, test_key(6, 16))), w.OPAQUEKEYBLOB)
        print("\nMemory kept after N import + destroy cycles (traced allocations still held)")
        for cycles in (10_000, 50_000):
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(cycles):
                csp.destroy_key(csp.import_key(prov, blob))
            held = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
            print(f"{f'N = {cycles:,}':<52} {held / 1e6:10.2f} MB   {held / cycles:7.0f} B per key")
    finally:
        csp.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rc4-gib", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=1, help="section 1: 100 x N rounds; section 3: N runs, medians")
    parser.add_argument("--sections", default="12345", help="the sections to run, e.g. 4 or 13 (default: all)")
    args = parser.parse_args()
    print(machine_line() + "; best times (see bench/timing.py)")
    with tempfile.TemporaryDirectory() as home:
        csp = BuiltinCsp(home)
        try:
            if "1" in args.sections:
                bench_encrypt(csp, args.runs, home)
            if "2" in args.sections:
                bench_opaque(csp)
            if "3" in args.sections:
                bench_handoff(home, args.runs)
            if "4" in args.sections:
                bench_rc4_position(csp, args.rc4_gib)
        finally:
            csp.close()
        if "5" in args.sections:
            bench_memory(home)


if __name__ == "__main__":
    main()
