"""XAES-256-GCM, the AEAD of OPAQUEKEYBLOBs: the C2SP vectors, an independent derivation through CMAC, refusals."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from keyhandoff.impl import xaes
from keyhandoff.impl.xaes import NONCE_SIZE, Xaes256Gcm

# https://c2sp.org/XAES-256-GCM, "Test vectors": key byte, plaintext, associated data, ciphertext with tag.
SPEC_NONCE = b"ABCDEFGHIJKLMNOPQRSTUVWX"
SPEC_VECTORS = [
    (0x01, b"XAES-256-GCM", b"", "ce546ef63c9cc60765923609b33a9a1974e96e52daf2fcf7075e2271"),  # MSB(L) = 0
    (0x03, b"XAES-256-GCM", b"c2sp.org/XAES-256-GCM", "986ec1832593df5443a179437fd083bf3fdb41abd740a21f71eb769d"),
]
# The spec's accumulated randomized test: inputs read from SHAKE-128(""), ciphertexts hashed by another SHAKE-128.
ACCUMULATED_10K = "e6b9edf2df6cec60c8cbd864e2211b597fb69a529160cd040d56c0c210081939"


@pytest.mark.parametrize(("key_byte", "plaintext", "aad", "sealed"), SPEC_VECTORS)
def test_the_spec_vectors(key_byte: int, plaintext: bytes, aad: bytes, sealed: str) -> None:
    aead = Xaes256Gcm(bytes([key_byte]) * 32)
    assert aead.encrypt(SPEC_NONCE, plaintext, aad).hex() == sealed
    assert aead.decrypt(SPEC_NONCE, bytes.fromhex(sealed), aad) == plaintext


def test_the_specs_accumulated_randomized_test() -> None:
    """10,000 keys, nonces, plaintexts and associated data of 0 to 255 bytes (each a length byte, then bytes)."""
    stream = memoryview(hashlib.shake_128(b"").digest(10_000 * (32 + 24 + 2 * 256)))
    assert stream[:16].hex() == "7f9c2ba4e88f827d616045507605853e"  # the spec's check on the RNG
    at = 0

    def read(size: int) -> bytes:
        nonlocal at
        at += size
        return bytes(stream[at - size : at])

    digest = hashlib.shake_128()
    for _ in range(10_000):
        key, nonce = read(32), read(24)
        plaintext = read(read(1)[0])
        aad = read(read(1)[0])
        digest.update(Xaes256Gcm(key).encrypt(nonce, plaintext, aad))
    assert digest.hexdigest(32) == ACCUMULATED_10K


def _by_the_standards(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """The spec's composition spelled with library parts: the SP 800-108r1 counter KDF over CMAC-AES-256
    (label "X", context the nonce's first half, 16-bit counter), then AES-256-GCM with the second half."""
    subkey = b""
    for counter in (1, 2):
        mac = cmac.CMAC(algorithms.AES256(key))
        mac.update(counter.to_bytes(2, "big") + b"X\x00" + nonce[:12])
        subkey += mac.finalize()
    return AESGCM(subkey).encrypt(nonce[12:], plaintext, aad)


@given(
    key=st.binary(min_size=32, max_size=32),
    nonce=st.binary(min_size=24, max_size=24),
    plaintext=st.binary(max_size=80),
    aad=st.binary(max_size=16),
)
def test_agrees_with_cmac_and_gcm(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> None:
    aead = Xaes256Gcm(key)
    sealed = aead.encrypt(nonce, plaintext, aad)
    assert sealed == _by_the_standards(key, nonce, plaintext, aad)
    assert aead.decrypt(nonce, sealed, aad) == plaintext


@given(
    sealed_at=st.integers(min_value=0, max_value=12 + 16 - 1),
    bit=st.integers(min_value=0, max_value=7),
    where=st.sampled_from(["data", "nonce", "aad"]),
)
def test_any_changed_bit_is_refused(sealed_at: int, bit: int, where: str) -> None:
    aead = Xaes256Gcm(bytes(range(32)))
    nonce, aad = bytes(range(100, 124)), b"header"
    sealed = aead.encrypt(nonce, b"twelve bytes", aad)
    parts = {"data": sealed, "nonce": nonce, "aad": aad}
    changed = bytearray(parts[where])
    changed[sealed_at % len(changed)] ^= 1 << bit
    parts[where] = bytes(changed)
    with pytest.raises(InvalidTag):
        aead.decrypt(parts["nonce"], parts["data"], parts["aad"])


def test_another_key_is_refused() -> None:
    nonce = bytes(NONCE_SIZE)
    sealed = Xaes256Gcm(bytes(32)).encrypt(nonce, b"payload", None)
    with pytest.raises(InvalidTag):
        Xaes256Gcm(bytes(31) + b"\x01").decrypt(nonce, sealed, None)


@pytest.mark.parametrize("size", [0, 12, 23, 25])
def test_a_nonce_of_another_size_is_refused(size: int) -> None:
    aead = Xaes256Gcm(bytes(32))
    with pytest.raises(ValueError, match="nonce is 24 bytes"):
        aead.encrypt(bytes(size), b"", None)
    with pytest.raises(ValueError, match="nonce is 24 bytes"):
        aead.decrypt(bytes(size), bytes(16), None)


@pytest.mark.parametrize("size", [0, 16, 31, 33])
def test_a_key_of_another_size_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match="key is 32 bytes"):
        Xaes256Gcm(bytes(size))


def test_the_key_stays_out_of_its_repr() -> None:
    key = bytes(range(1, 33))
    assert repr(Xaes256Gcm(key)) == "Xaes256Gcm(<key redacted>)"


def test_threads_share_one_instance() -> None:
    """The KDF's one AES context is shared: threads sealing and opening at once all get the standards' bytes."""
    key = bytes(range(32))
    aead = Xaes256Gcm(key)
    failures: list[str] = []

    def work(seed: int) -> None:
        for index in range(300):
            nonce = hashlib.sha256(b"%d-%d" % (seed, index)).digest()[:NONCE_SIZE]
            sealed = aead.encrypt(nonce, b"data", b"")
            if sealed != _by_the_standards(key, nonce, b"data", b"") or aead.decrypt(nonce, sealed, b"") != b"data":
                failures.append(f"thread {seed}, message {index}")

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_new_nonces_share_a_first_half_for_an_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    """new_nonce keeps its first half (the subkey's) for _EPOCH_NONCES nonces, then draws another; the second
    half is new every time."""
    monkeypatch.setattr(xaes, "_EPOCH_NONCES", 3)
    aead = Xaes256Gcm(bytes(32))
    nonces = [aead.new_nonce() for _ in range(7)]
    assert all(len(nonce) == NONCE_SIZE for nonce in nonces)
    firsts = [nonce[:12] for nonce in nonces]
    assert firsts[0] == firsts[1] == firsts[2] != firsts[3] == firsts[4] == firsts[5] != firsts[6]
    assert len({nonce[12:] for nonce in nonces}) == 7


def test_a_forked_child_draws_its_own_first_half() -> None:
    aead = Xaes256Gcm(bytes(32))
    parents = aead.new_nonce()[:12]
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next nonce's first half, and leave without running pytest's exit
        os.write(writer, aead.new_nonce()[:12])
        os._exit(0)
    os.close(writer)
    childs = os.read(reader, 12)
    os.close(reader)
    os.waitpid(pid, 0)
    assert len(childs) == 12
    assert childs != parents
    assert aead.new_nonce()[:12] == parents


def test_cached_subkeys_give_the_standards_bytes_and_stay_bounded() -> None:
    """Nonces of one first half reuse its subkey; many first halves do not grow the cache past its bound. Every
    seal is the standards' bytes, whether its subkey was cached or not."""
    key = bytes(range(32))
    aead = Xaes256Gcm(key)
    for first in range(3 * xaes._CACHED_SUBKEYS):
        for second in range(3):
            nonce = first.to_bytes(12, "big") + second.to_bytes(12, "big")
            assert aead.encrypt(nonce, b"data", b"aad") == _by_the_standards(key, nonce, b"data", b"aad")
            assert len(aead._subkeys) <= xaes._CACHED_SUBKEYS
    fresh = Xaes256Gcm(key)
    for nonce in [fresh.new_nonce() for _ in range(10)]:
        assert fresh.decrypt(nonce, fresh.encrypt(nonce, b"x", None), None) == b"x"
    assert len(fresh._subkeys) == 1  # ten nonces of one epoch: one subkey
