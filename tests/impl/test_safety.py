"""Wiping, handles and threads: destroyed material is zeroed in place, handles are never reused, and many threads
on one provider see only the expected CryptErrors and consistent results."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable

import pytest

from keyhandoff.impl.builtin import BuiltinCsp
from keyhandoff.impl.handles import HANDLE_BITS, HandleTable
from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError
from keyhandoff.model.state import Lifecycle
from tests.impl.conftest import plaintext_blob

KEY = bytes(range(1, 17))


@pytest.mark.parametrize("how", ["destroy", "export-destroykey", "release"])
def test_destroyed_material_is_zeroed_in_place(csp: BuiltinCsp, how: str) -> None:
    """The buffer that held the key bytes is all zeros after destroy, CRYPT_DESTROYKEY or release."""
    prov = csp.acquire("secure")
    key = csp.import_key(prov, plaintext_blob(w.CALG_AES_128, KEY))
    view = csp.csp._material_view(key)
    assert bytes(view) == KEY
    if how == "destroy":
        csp.destroy_key(key)
    elif how == "export-destroykey":
        csp.export_key(key, w.OPAQUEKEYBLOB, flags=w.CRYPT_DESTROYKEY)
    else:
        csp.release(prov)
    assert view == bytearray(len(KEY))
    assert csp.csp._material_view(key) is view
    state = csp.inspect(key)
    assert (state.key, state.salt, state.lifecycle) == (b"", b"", Lifecycle.DESTROYED)


def test_handles_never_reused_across_thousands(csp: BuiltinCsp) -> None:
    """3000 create/destroy cycles give 3000 distinct nonzero 62-bit handles; every old one stays NTE_BAD_KEY."""
    prov = csp.acquire("secure")
    seen: list[int] = []
    for _ in range(3000):
        key = csp.gen_key(prov, w.CALG_RC4)
        csp.destroy_key(key)
        seen.append(key)
    assert len(set(seen)) == len(seen)
    assert all(0 < handle < 2**62 for handle in seen)
    assert prov not in seen
    for stale in seen[::100]:
        with pytest.raises(CryptError) as caught:
            csp.encrypt(stale, b"x", False)
        assert caught.value.code == w.NTE_BAD_KEY


def test_handle_table_redraws_collisions(monkeypatch: pytest.MonkeyPatch) -> None:
    """A drawn handle that was ever issued (or is 0) is drawn again: the table never hands a number out twice."""
    draws = iter([0, 5, 5, 0, 5, 6])
    table: HandleTable[str] = HandleTable()
    monkeypatch.setattr(table, "_draw", lambda: next(draws))
    assert table.issue("a") == 5
    table.replace(5, "tombstone of a")
    assert table.issue("b") == 6
    assert table.get(5) == "tombstone of a"
    assert [table.get(7), table.get("5"), table.get(True)] == [None, None, None]
    assert (len(table), sorted(table)) == (2, [5, 6])
    with pytest.raises(KeyError):
        table.replace(7, "never issued")


def test_handle_draws_span_many_pools() -> None:
    """Handles come from a pool of OS randomness refilled every 512 draws: across several refills they stay
    distinct, nonzero and inside 62 bits, and use the high bits too (a pool that stopped refilling, or a shift
    that dropped bits, would show here)."""
    table: HandleTable[int] = HandleTable()
    drawn = [table.issue(i) for i in range(2000)]
    assert len(set(drawn)) == 2000
    assert all(0 < h < 1 << HANDLE_BITS for h in drawn)
    assert max(drawn) >= 1 << (HANDLE_BITS - 4)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_forked_child_draws_other_handles() -> None:
    """A forked child does not inherit the parent's undrawn randomness: its next handle is not the parent's."""
    table: HandleTable[str] = HandleTable()
    table.issue("warm the pool")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next handle and leave without running pytest's teardown
        os.write(write_end, table.issue("child").to_bytes(8, "big"))
        os._exit(0)
    os.close(write_end)
    child_handle = int.from_bytes(os.read(read_end, 8), "big")
    os.close(read_end)
    os.waitpid(pid, 0)
    assert child_handle != table.issue("parent")


def test_threads_hammering_one_provider(csp: BuiltinCsp) -> None:
    """8 threads x mixed operations on one provider: only NTE_BAD_KEY on keys other threads destroy; round trips
    and handoffs stay exact; the shared RC4 key's position is the sum of every thread's bytes."""
    prov = csp.acquire("secure")
    app = csp.acquire("app")
    shared = csp.gen_key(prov, w.CALG_RC4)
    hardware = csp.gen_key(prov, w.CALG_AES_128, hardware=True)
    victims = [csp.gen_key(prov, w.CALG_AES_128) for _ in range(40)]
    victims_lock = threading.Lock()
    used = [0] * 8
    failures: list[BaseException] = []
    start = threading.Barrier(8)

    def roundtrip(rng: random.Random) -> None:
        alg = rng.choice([w.CALG_AES_128, w.CALG_DES, w.CALG_RC2, w.CALG_RC4, w.CALG_3DES])
        key = csp.gen_key(prov, alg)
        twin = csp.duplicate_key(key)
        data = rng.randbytes(rng.randrange(0, 40))
        assert csp.decrypt(twin, csp.encrypt(key, data, True), True) == data
        csp.destroy_key(key)
        csp.destroy_key(twin)

    def handoff(rng: random.Random) -> None:
        key = csp.gen_key(prov, rng.choice([w.CALG_AES_256, w.CALG_RC4, w.CALG_3DES_112]))
        csp.encrypt(key, bytes(16), False)
        twin = csp.duplicate_key(key)
        blob = csp.export_key(key, w.OPAQUEKEYBLOB, flags=w.CRYPT_DESTROYKEY)
        moved = csp.import_key(app, blob)
        assert csp.encrypt(moved, bytes(32), False) == csp.encrypt(twin, bytes(32), False)
        csp.destroy_key(moved)
        csp.destroy_key(twin)

    def victim(rng: random.Random) -> None:
        with victims_lock:
            handle = rng.choice(victims)
        try:
            if rng.random() < 0.3:
                csp.destroy_key(handle)
                with victims_lock:
                    victims.append(csp.gen_key(prov, w.CALG_AES_128))
            else:
                csp.encrypt(handle, bytes(16), False)
                csp.get_key_param(handle, w.KP_IV)
                csp.duplicate_key(handle)
        except CryptError as error:
            if error.code != w.NTE_BAD_KEY:  # the one expected refusal: another thread destroyed it first
                failures.append(error)

    def worker(index: int) -> None:
        rng = random.Random(index)
        start.wait()
        try:
            for _ in range(150):
                choice = rng.randrange(6)
                if choice == 0:
                    size = rng.randrange(1, 64)
                    csp.encrypt(shared, bytes(size), False)
                    used[index] += size
                elif choice == 1:
                    roundtrip(rng)
                elif choice == 2:
                    handoff(rng)
                elif choice == 3:
                    victim(rng)
                elif choice == 4:
                    csp.set_key_param(shared, w.KP_MODE_BITS, index)  # never resets the stream
                    assert len(csp.hmac(shared, w.CALG_SHA1, b"x")) == 20
                else:
                    csp.encrypt(csp.duplicate_key(hardware), bytes(16), False)
        except BaseException as error:  # any other exception fails the test
            failures.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert csp.inspect(shared).stream_pos == sum(used)
    assert csp.inspect(hardware).register == bytes(16)


def test_release_while_threads_use_its_keys(csp: BuiltinCsp) -> None:
    """Releasing a context while threads use, duplicate and create its keys: only NTE_BAD_KEY / NTE_BAD_UID, and
    afterwards every key of the context is DESTROYED with its material zeroed."""
    prov = csp.acquire("secure")
    keys = [csp.gen_key(prov, w.CALG_AES_128) for _ in range(20)]
    views = [csp.csp._material_view(key) for key in keys]
    made: list[int] = []
    failures: list[BaseException] = []
    calls: list[Callable[[int], object]] = [
        lambda key: csp.encrypt(key, bytes(16), False),
        csp.duplicate_key,
        lambda key: csp.gen_key(prov, w.CALG_RC4),
        lambda key: csp.export_key(key, w.OPAQUEKEYBLOB),
    ]
    go = threading.Event()
    busy = threading.Barrier(len(calls) + 1)

    def user(call: Callable[[int], object]) -> None:
        go.wait()
        for round_ in range(200):
            if round_ == 3:
                busy.wait()  # the release lands while every thread is mid-stream
            for key in keys:
                try:
                    result = call(key)
                    if isinstance(result, int):
                        made.append(result)
                except CryptError as error:
                    if error.code not in (w.NTE_BAD_KEY, w.NTE_BAD_UID):
                        failures.append(error)
                except BaseException as error:
                    failures.append(error)

    threads = [threading.Thread(target=user, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    go.set()
    busy.wait()
    csp.release(prov)
    for thread in threads:
        thread.join()
    assert failures == []
    for key in keys + made:
        assert csp.inspect(key).lifecycle is Lifecycle.DESTROYED
    assert all(view == bytearray(16) for view in views)
