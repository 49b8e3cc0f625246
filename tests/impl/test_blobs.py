"""Blob fuzzing: whatever bytes arrive, import answers a CryptError with the right code and never accepts a blob
this installation did not issue byte for byte; no error text carries key bytes."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyhandoff.impl import engines
from keyhandoff.impl.blobs import MAX_OPAQUE_BLOB, MAX_PAYLOAD, OPAQUE_PURPOSE
from keyhandoff.impl.builtin import BuiltinCsp
from keyhandoff.impl.installation import Installation
from keyhandoff.impl.rc4_state import STATE_BYTES, native_rc4
from keyhandoff.impl.xaes import Xaes256Gcm
from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError
from tests.impl.conftest import plaintext_blob, rc4_keystream
from tests.impl.test_rc4_state import rc4_state_after

SECRET_KEY = bytes.fromhex("8f1e2d3c4b5a69788796a5b4c3d2e1f0")
RC4_POSITION = 1000
SUPPORTED = {
    w.CALG_DES,
    w.CALG_3DES_112,
    w.CALG_3DES,
    w.CALG_AES_128,
    w.CALG_AES_192,
    w.CALG_AES_256,
    w.CALG_RC2,
    w.CALG_RC4,
}


class World:
    """One installation with a software key of known bytes, its opaque blob, and a hardware key's blob."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.csp = BuiltinCsp(home)
        self.prov = self.csp.acquire("secure")
        self.app = self.csp.acquire("app")
        key = self.csp.import_key(self.prov, plaintext_blob(w.CALG_AES_128, SECRET_KEY), flags=w.CRYPT_EXPORTABLE)
        self.csp.set_key_param(key, w.KP_IV, bytes(range(16)))
        self.csp.encrypt(key, bytes(48), False)
        self.key = key
        self.blob = self.csp.export_key(key, w.OPAQUEKEYBLOB)
        hard = self.csp.gen_key(self.prov, w.CALG_3DES, hardware=True)
        self.hardware_blob = self.csp.export_key(hard, w.OPAQUEKEYBLOB)
        rc4 = self.csp.import_key(self.prov, plaintext_blob(w.CALG_RC4, SECRET_KEY), flags=w.CRYPT_EXPORTABLE)
        self.csp.encrypt(rc4, bytes(RC4_POSITION), False)
        self.rc4 = rc4
        self.rc4_blob = self.csp.export_key(rc4, w.OPAQUEKEYBLOB)  # with its RC4 state where the library is
        self.sealing_key = Installation(home).key(OPAQUE_PURPOSE)

    def refused(self, blob: bytes, **kwargs: int) -> int:
        """The code importing ``blob`` answers; fails the test if it is accepted or raises anything else."""
        with pytest.raises(CryptError) as caught:
            self.csp.import_key(self.app, blob, **kwargs)  # type: ignore[arg-type]
        error = caught.value
        for text in (str(error), repr(error), str(error.args)):
            assert SECRET_KEY.hex() not in text.lower()
            assert SECRET_KEY.hex().upper() not in text
        return error.code

    def reseal(self, payload: bytes, header: bytes | None = None) -> bytes:
        """A blob sealed with this installation's key directly (the documented layout, not the CSP's code; the
        AEAD itself is checked against the C2SP vectors in test_xaes.py)."""
        header = header or self.blob[:8]
        nonce = os.urandom(24)
        return header + nonce + Xaes256Gcm(self.sealing_key).encrypt(nonce, payload, header)

    def pick(self, which: str) -> bytes:
        return {"software": self.blob, "hardware": self.hardware_blob, "rc4": self.rc4_blob}[which]

    def payload(self, blob: bytes | None = None) -> bytes:
        blob = blob or self.blob
        return Xaes256Gcm(self.sealing_key).decrypt(blob[8:32], blob[32:], blob[:8])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A module-wide installation (Hypothesis examples share it)."""
    built = World(tmp_path_factory.mktemp("blobs"))
    yield built
    built.csp.close()


def expected_header_code(blob: bytes) -> int | None:
    """The code the header checks give, in the spec's order (None: the header passes)."""
    if len(blob) < 8:
        return w.NTE_BAD_DATA
    blob_type, version, reserved, alg = struct.unpack_from("<BBHI", blob)
    if version != 2:
        return w.NTE_BAD_VER
    if reserved:
        return w.NTE_BAD_DATA
    if blob_type not in (w.PLAINTEXTKEYBLOB, w.OPAQUEKEYBLOB):
        return w.NTE_BAD_TYPE
    if alg not in SUPPORTED:
        return w.NTE_BAD_ALGID
    return None


def test_the_real_blobs_import(world: World) -> None:
    """The unmodified blobs import (the fuzzing below starts from accepted bytes)."""
    key = world.csp.import_key(world.app, world.blob)
    assert world.csp.inspect(key).key == SECRET_KEY
    world.csp.import_key(world.app, world.hardware_blob)
    assert len(world.blob) <= MAX_OPAQUE_BLOB
    assert len(world.payload()) <= MAX_PAYLOAD


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes(world: World, blob: bytes) -> None:
    """Random bytes: a CryptError with the header's code, else NTE_BAD_DATA (opaque: not ours; plaintext: wrong
    length)."""
    assert world.refused(blob) == (expected_header_code(blob) or w.NTE_BAD_DATA)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(SUPPORTED)), st.binary(max_size=300))
def test_random_opaque_bodies(world: World, alg: int, body: bytes) -> None:
    """A valid OPAQUEKEYBLOB header over random bytes is NTE_BAD_DATA."""
    assert world.refused(struct.pack("<BBHI", w.OPAQUEKEYBLOB, 2, 0, alg) + body) == w.NTE_BAD_DATA


@pytest.mark.parametrize("which", ["software", "hardware", "rc4"])
def test_truncation_at_every_length(world: World, which: str) -> None:
    """Every proper prefix of a real opaque blob is NTE_BAD_DATA; so is the blob with a byte appended."""
    blob = world.pick(which)
    for length in range(len(blob)):
        assert world.refused(blob[:length]) == w.NTE_BAD_DATA, length
    assert world.refused(blob + b"\x00") == w.NTE_BAD_DATA


@pytest.mark.parametrize("which", ["software", "hardware", "rc4"])
def test_every_single_bit_flip(world: World, which: str) -> None:
    """Each of the blob's bits flipped: the header's code where the header breaks, NTE_BAD_DATA elsewhere."""
    blob = world.pick(which)
    for bit in range(len(blob) * 8):
        flipped = bytearray(blob)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert world.refused(bytes(flipped)) == (expected_header_code(bytes(flipped)) or w.NTE_BAD_DATA), bit


def test_header_field_changes(world: World) -> None:
    """bVersion NTE_BAD_VER, reserved NTE_BAD_DATA, bType NTE_BAD_TYPE, aiKeyAlg NTE_BAD_ALGID or (another
    supported algorithm) NTE_BAD_DATA; hPubKey ERROR_INVALID_PARAMETER; import flags NTE_BAD_FLAGS."""
    blob = world.blob
    assert world.refused(blob[:1] + b"\x01" + blob[2:]) == w.NTE_BAD_VER
    assert world.refused(blob[:2] + b"\x00\x80" + blob[4:]) == w.NTE_BAD_DATA
    assert world.refused(b"\x01" + blob[1:]) == w.NTE_BAD_TYPE
    assert world.refused(b"\x0c" + blob[1:]) == w.NTE_BAD_TYPE
    assert world.refused(b"\x08" + blob[1:]) == w.NTE_BAD_DATA  # read as a PLAINTEXTKEYBLOB: wrong length
    assert world.refused(blob[:4] + struct.pack("<I", w.CALG_AES) + blob[8:]) == w.NTE_BAD_ALGID
    assert world.refused(blob[:4] + struct.pack("<I", w.CALG_RC4) + blob[8:]) == w.NTE_BAD_DATA
    assert world.refused(blob, pub_key=1) == w.ERROR_INVALID_PARAMETER
    assert world.refused(blob, flags=0x2) == w.NTE_BAD_FLAGS
    assert world.refused(blob, hardware=True) == w.NTE_BAD_FLAGS


def test_blob_from_another_installation(world: World, tmp_path: Path) -> None:
    """Another installation's blob (another secret) is NTE_BAD_DATA, both ways, software and hardware."""
    with BuiltinCsp(tmp_path / "other") as other:
        prov = other.acquire("app")
        with pytest.raises(CryptError) as caught:
            other.import_key(prov, world.blob)
        assert caught.value.code == w.NTE_BAD_DATA
        with pytest.raises(CryptError) as caught:
            other.import_key(prov, world.hardware_blob)
        assert caught.value.code == w.NTE_BAD_DATA
        foreign = other.export_key(other.gen_key(prov, w.CALG_AES_128), w.OPAQUEKEYBLOB)
    assert world.refused(foreign) == w.NTE_BAD_DATA


def test_payload_versions(world: World) -> None:
    """A payload sealed with the right key but claiming a newer format is NTE_BAD_VER; version 0 and a
    malformed or trailing-byte payload are NTE_BAD_DATA; the re-sealed original imports."""
    payload = world.payload()
    assert payload[0] == 2
    world.csp.import_key(world.app, world.reseal(payload))
    world.csp.import_key(world.app, world.reseal(b"\x01" + payload[1:]))  # version 1: the same, no RC4 state
    for newer in (3, 7, 255):
        assert world.refused(world.reseal(bytes([newer]) + payload[1:])) == w.NTE_BAD_VER
    assert world.refused(world.reseal(bytes([0]) + payload[1:])) == w.NTE_BAD_DATA
    assert world.refused(world.reseal(payload + b"\x00")) == w.NTE_BAD_DATA
    assert world.refused(world.reseal(payload[:-1])) == w.NTE_BAD_DATA
    assert world.refused(world.reseal(b"")) == w.NTE_BAD_DATA
    other_header = struct.pack("<BBHI", w.OPAQUEKEYBLOB, 2, 0, w.CALG_AES_256)
    assert world.refused(world.reseal(payload, other_header)) == w.NTE_BAD_DATA  # alg disagrees with header


def test_payload_flag_salt_not_reported(world: World) -> None:
    """Flags bit 1 marks a salt set by KP_SALT (11 bytes, not reported); a payload with it clear (as sealed before
    the bit existed) imports as before, the salt reported; the bit over a salt of another length, or an unknown
    bit, is NTE_BAD_DATA."""
    salt = bytes(range(0x61, 0x6C))
    key = world.csp.import_key(world.prov, plaintext_blob(w.CALG_RC4, SECRET_KEY[:5]))
    world.csp.set_key_param(key, w.KP_SALT, salt)
    blob = world.csp.export_key(key, w.OPAQUEKEYBLOB)
    payload = world.payload(blob)
    assert payload[3] == 0x02
    assert payload[42 : 42 + 12] == bytes([11]) + salt  # iv and register empty for RC4: the salt at offset 42
    moved = world.csp.import_key(world.app, blob)
    assert world.csp.get_key_param(moved, w.KP_SALT) == b""
    old = world.csp.import_key(world.app, world.reseal(payload[:3] + b"\x00" + payload[4:], blob[:8]))
    assert world.csp.get_key_param(old, w.KP_SALT) == salt
    assert world.csp.encrypt(old, bytes(16), False) == world.csp.encrypt(moved, bytes(16), False)
    aes = world.payload()
    assert aes[3] == 0
    assert world.refused(world.reseal(aes[:3] + b"\x02" + aes[4:])) == w.NTE_BAD_DATA  # no salt, yet unreported
    for bit in (0x08, 0x80):
        assert world.refused(world.reseal(payload[:3] + bytes([0x02 | bit]) + payload[4:], blob[:8])) == w.NTE_BAD_DATA


def rc4_parts(payload: bytes) -> tuple[bytes, bytes, bytes]:
    """The RC4 payload around its state: (before, state, after). RC4 has no IV, register or salt here, so the
    salt's length byte is at 42 and the state follows it."""
    assert payload[40:43] == bytes(3)
    return payload[:43], payload[43 : 43 + STATE_BYTES], payload[43 + STATE_BYTES :]


def with_position(payload: bytes, position: int) -> bytes:
    return payload[:32] + struct.pack("<Q", position) + payload[40:]


def test_rc4_state_in_the_payload(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """An RC4 key past position 0 carries its state (flags bit 2); the import continues from it without
    replaying, at any position; the same payload without the state imports too (it replays)."""
    if native_rc4() is None:
        pytest.skip("libcrypto's RC4 is not usable here")
    payload = world.payload(world.rc4_blob)
    header = world.rc4_blob[:8]
    before, state, after = rc4_parts(payload)
    assert payload[3] == 0x04
    assert struct.unpack_from("<Q", payload, 32)[0] == RC4_POSITION
    assert state == rc4_state_after(SECRET_KEY, RC4_POSITION)
    assert after == struct.pack("<I", 16) + SECRET_KEY
    expected = rc4_keystream(SECRET_KEY, RC4_POSITION + 32)[RC4_POSITION:]
    stateless = world.reseal(before[:3] + b"\x00" + before[4:] + after, header)
    assert world.csp.encrypt(world.csp.import_key(world.app, stateless), bytes(32), False) == expected

    def refuse(keystream: object, count: int) -> None:
        if count:
            raise AssertionError(f"replayed {count} keystream bytes")

    monkeypatch.setattr(engines, "_replay", refuse)
    assert world.csp.encrypt(world.csp.import_key(world.app, world.rc4_blob), bytes(32), False) == expected
    # A position no replay could reach: the state decides the keystream, the position is carried and reported.
    far = (1 << 40) + (RC4_POSITION & 0xFF)
    moved = world.csp.import_key(world.app, world.reseal(with_position(payload, far), header))
    assert world.csp.encrypt(moved, bytes(32), False) == expected
    assert world.csp.inspect(moved).stream_pos == far + 32


def test_rc4_state_must_fit_its_key(world: World) -> None:
    """A state that is not a permutation, whose i is not the position modulo 256, at position 0, in a version 1
    payload, or on a key that is not software RC4 is NTE_BAD_DATA."""
    if native_rc4() is None:
        pytest.skip("libcrypto's RC4 is not usable here")
    payload = world.payload(world.rc4_blob)
    header = world.rc4_blob[:8]
    before, state, after = rc4_parts(payload)

    def refused(changed: bytes, on: bytes = header) -> int:
        return world.refused(world.reseal(changed, on))

    assert refused(before + state[:3] + state[2:3] + state[4:] + after) == w.NTE_BAD_DATA  # an entry twice
    assert refused(before + bytes([state[0] ^ 1]) + state[1:] + after) == w.NTE_BAD_DATA  # i off the position
    at_zero = with_position(before, 0) + bytes([0]) + state[1:] + after
    assert refused(at_zero) == w.NTE_BAD_DATA
    assert refused(b"\x01" + payload[1:]) == w.NTE_BAD_DATA  # version 1 has no bit 2
    assert refused(before + state[:-1] + after) == w.NTE_BAD_DATA  # one byte short
    aes = world.payload()
    salt_end = 40 + 17 + 17 + 1  # AES: IV and register of 16 bytes, no salt
    assert (aes[40], aes[57], aes[74]) == (16, 16, 0)
    aes_with_state = aes[:3] + b"\x04" + aes[4:salt_end] + state + aes[salt_end:]
    assert refused(with_position(aes_with_state, RC4_POSITION), world.blob[:8]) == w.NTE_BAD_DATA


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_resealed_payload_mutations(world: World, data: st.DataObject) -> None:
    """Authentic seals over mutated payloads: accepted only as a state the CSP can run, else NTE_BAD_DATA or
    NTE_BAD_VER; never another exception."""
    payload = bytearray(world.payload(data.draw(st.sampled_from([world.blob, world.hardware_blob, world.rc4_blob]))))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(payload) - 1))
        payload[index] = data.draw(st.integers(0, 255))
    import_codes: list[int] = []
    use_codes: list[int] = []
    try:
        key = world.csp.import_key(world.app, world.reseal(bytes(payload)))
    except CryptError as error:
        import_codes.append(error.code)
        assert SECRET_KEY.hex() not in str(error)  # noqa: PT017
    else:
        try:  # a consistent state runs, or refuses at use (a mode byte changed to OFB, say) with a CryptError
            world.csp.encrypt(key, bytes(16), True)
            world.csp.decrypt(key, bytes(16), False)
        except CryptError as error:
            use_codes.append(error.code)
    assert set(import_codes) <= {w.NTE_BAD_DATA, w.NTE_BAD_VER, w.NTE_NOT_FOUND}
    assert set(use_codes) <= {w.NTE_BAD_ALGID}


def test_plaintext_blob_errors_carry_no_key_bytes(world: World) -> None:
    """Refused PLAINTEXTKEYBLOBs carrying the secret never echo it."""
    for blob in (
        plaintext_blob(w.CALG_AES_128, SECRET_KEY, trailing=b"\x00"),
        plaintext_blob(w.CALG_AES_128, SECRET_KEY, length=17),
        plaintext_blob(w.CALG_DES, SECRET_KEY),
    ):
        assert world.refused(blob) == w.NTE_BAD_DATA
