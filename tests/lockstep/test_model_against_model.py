"""The lockstep checker itself: silent on a correct target, loud on a planted defect."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings

from keyhandoff import model
from keyhandoff.lockstep import Divergence, Lockstep, Observed, test_key
from keyhandoff.model import wincrypt as w
from keyhandoff.targets.model_target import ModelTarget
from tests.programs import programs, run


@settings(max_examples=150)
@given(programs)
def test_model_never_diverges_from_itself(program) -> None:
    """Two independent model installations run any program identically (handles and blobs by reference)."""
    run(Lockstep(ModelTarget()), program)


class _ForgetsRegister(ModelTarget):
    """A planted defect: opaque import restores everything but the live feedback register."""

    def import_key(self, prov, blob, *, pub_key=0, flags=0, hardware=False):  # type: ignore[no-untyped-def]
        handle = super().import_key(prov, blob, pub_key=pub_key, flags=flags, hardware=hardware)
        if blob[:1] == bytes([w.OPAQUEKEYBLOB]):
            entry = self.world.keys[handle]
            entry = attrs.evolve(entry, state=attrs.evolve(entry.state, register=entry.state.iv))
            self.world = model.world.with_key(self.world, handle, entry)
        return handle


@pytest.mark.parametrize("check_state", [True, False])
def test_dropped_register_is_caught(check_state: bool) -> None:
    """Losing the CBC register in the blob is caught by state comparison, or by the next ciphertext."""
    ls = Lockstep(_ForgetsRegister(), check_state=check_state)
    secure, app = ls.acquire("secure"), ls.acquire("app")
    key = ls.import_plaintext(secure, w.CALG_AES_128, 0, 16)
    assert key == 0
    ls.encrypt(0, b"A" * 32, final=False)
    blob = ls.export_key(0, w.OPAQUEKEYBLOB)
    ls.destroy_key(0)
    assert isinstance(blob, int)

    def continue_after_handoff() -> None:
        ls.import_blob(app, blob)
        ls.check_states()
        ls.encrypt(1, b"B" * 16, final=False)

    with pytest.raises(Divergence) as caught:
        continue_after_handoff()
    assert "register" in str(caught.value) or "different bytes" in str(caught.value)


class _WrongStaleCode(ModelTarget):
    """A planted defect: a destroyed handle answers ERROR_INVALID_HANDLE instead of NTE_BAD_KEY."""

    def encrypt(self, key: int, data: bytes, final: bool) -> bytes:
        if not self.world.keys[key].state.lifecycle.alive:
            raise model.CryptError(w.ERROR_INVALID_HANDLE, "encrypt")
        return super().encrypt(key, data, final)


def test_wrong_error_code_is_caught() -> None:
    """A different error code for the same refusal is a divergence naming both codes."""
    ls = Lockstep(_WrongStaleCode())
    secure = ls.acquire("secure")
    ls.import_plaintext(secure, w.CALG_AES_128, 0, 16)
    ls.destroy_key(0)
    with pytest.raises(Divergence, match=r"NTE_BAD_KEY \(0x80090003\).*ERROR_INVALID_HANDLE"):
        ls.encrypt(0, b"x" * 16, final=False)


def test_divergence_message_has_no_key_bytes() -> None:
    """A divergence on a PLAINTEXTKEYBLOB export reports lengths and digests, never the key bytes."""
    key = test_key(7, 16)

    class _LeakyExport(ModelTarget):
        def export_key(self, k: int, blob_type: int, *, exp_key: int = 0, flags: int = 0) -> bytes:
            return super().export_key(k, blob_type, exp_key=exp_key, flags=flags)[:-1] + b"\0"

    ls = Lockstep(_LeakyExport())
    secure = ls.acquire("secure")
    ls.import_plaintext(secure, w.CALG_AES_128, 7, 16, w.CRYPT_EXPORTABLE)
    with pytest.raises(Divergence) as caught:
        ls.export_key(0, w.PLAINTEXTKEYBLOB)
    assert key.hex() not in str(caught.value)
    assert key.hex()[:8] not in str(caught.value)


@settings(max_examples=40)
@given(programs)
def test_trace_replays_identically_through_json(program) -> None:
    """A recorded trace, through JSON and back, replays to the same program on fresh installations."""
    import json

    first = Lockstep(ModelTarget())
    run(first, program)
    replay = Lockstep(ModelTarget())
    for step in json.loads(json.dumps(first.trace)):
        replay.apply(step)
    assert replay.program == first.program


class _FlipsPlaintextExport(ModelTarget):
    """A planted defect: a PLAINTEXTKEYBLOB export carries its last key byte flipped (or is refused)."""

    refuse = False

    def export_key(self, key: int, blob_type: int, *, exp_key: int = 0, flags: int = 0) -> bytes:
        blob = super().export_key(key, blob_type, exp_key=exp_key, flags=flags)
        if blob_type != w.PLAINTEXTKEYBLOB:
            return blob
        if self.refuse:
            raise model.errors.CryptError(w.NTE_BAD_KEY_STATE, "export_key")
        return blob[:-1] + bytes([blob[-1] ^ 1])


class _RefusesPlaintextExport(_FlipsPlaintextExport):
    refuse = True


@pytest.mark.parametrize("target", [_FlipsPlaintextExport, _RefusesPlaintextExport])
def test_a_differing_plaintext_export_is_told_by_length_alone(target: type[ModelTarget]) -> None:
    """The message of a difference on a PLAINTEXTKEYBLOB names neither the key bytes nor a digest of them (a
    40-bit key is found from its digest by trying every key); other bytes keep their digest."""
    ls = Lockstep(target())
    prov = ls.acquire("secure")
    ls.import_plaintext(prov, w.CALG_RC4, 3, 5, flags=w.CRYPT_EXPORTABLE)
    with pytest.raises(Divergence) as caught:
        ls.export_key(0, w.PLAINTEXTKEYBLOB)
    message = str(caught.value)
    assert "<17 bytes>" in message
    assert "sha256" not in message
    assert test_key(3, 5).hex() not in message
    assert "sha256" in Observed(value=b"\x01" * 17).describe()  # ciphertext and other bytes: told apart


def test_a_factory_giving_the_same_installation_twice_is_named_as_a_likely_cause() -> None:
    """A foreign blob that opens fails with the two likely causes: a sealing key the installations share, or a
    factory that does not make a new installation per call (the mistake an adapter is likeliest to make)."""
    target = ModelTarget()
    ls = Lockstep(target, another=lambda: target)
    prov = ls.acquire("app")
    with pytest.raises(Divergence) as caught:
        ls.import_foreign(prov, w.CALG_DES, 0, 8)
    assert "model NTE_BAD_DATA" in str(caught.value)
    assert "the factory gave the same installation twice" in caught.value.detail
