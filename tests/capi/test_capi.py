"""The CAPI bridge against Wine's rsaenh: the line protocol, probed capabilities, and each finding of
docs/findings.md reproduced as a fixed program (the deviation is met and counted, nothing undeclared differs).
Needs Wine and the mingw compiler; under CI=true a missing one fails (tests/conftest.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from keyhandoff.lockstep import Divergence, Lockstep, plaintext_blob, test_key
from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError
from keyhandoff.targets import load
from keyhandoff.targets.capi_target import CapiTarget
from keyhandoff.targets.line_target import LineTarget, PeerCrashed
from keyhandoff.targets.wine import WinePrefix, build_bridge

if shutil.which("wine") is None or shutil.which("x86_64-w64-mingw32-gcc") is None:
    pytest.skip("Wine or x86_64-w64-mingw32-gcc missing (.ci/run installs them)", allow_module_level=True)


@pytest.fixture(scope="module")
def capi() -> Iterator[CapiTarget]:
    target = load("capi")
    assert isinstance(target, CapiTarget)
    yield target
    target.close()


@pytest.fixture
def ls() -> Iterator[Lockstep]:
    """A lockstep of the model and a fresh bridge, closed even when the test fails."""
    lockstep = Lockstep(load("capi"))
    yield lockstep
    lockstep.target.close()


def test_hello_names_wine_and_the_enhanced_provider(capi: CapiTarget) -> None:
    assert capi.info.wine
    assert "Microsoft Enhanced RSA and AES Cryptographic Provider" in capi.info.description


def test_capabilities_are_probed_opaque_unsupported(capi: CapiTarget) -> None:
    caps = capi.capabilities()
    assert w.OPAQUEKEYBLOB not in caps.blob_types  # rsaenh refuses it with NTE_BAD_TYPE: reported unsupported
    assert w.PLAINTEXTKEYBLOB in caps.blob_types
    assert {w.CALG_AES_128, w.CALG_AES_256, w.CALG_3DES, w.CALG_RC2, w.CALG_RC4} <= caps.algorithms
    assert caps.modes == {w.CRYPT_MODE_CBC, w.CRYPT_MODE_ECB, w.CRYPT_MODE_CFB}
    assert caps.hmac_algorithms == {w.CALG_MD5, w.CALG_SHA1, w.CALG_SHA_256}
    assert not caps.hardware
    assert not caps.inspect
    assert caps.duplicate


def test_known_answer_through_the_bridge(capi: CapiTarget) -> None:
    """AES-128 CBC, zero IV, of the plaintext key: the bytes cryptography computes."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = test_key(7, 16)
    prov = capi.acquire()
    handle = capi.import_key(prov, plaintext_blob(w.CALG_AES_128, key))
    data = bytes(range(32))
    expected = Cipher(algorithms.AES(key), modes.CBC(bytes(16))).encryptor().update(data)
    assert capi.encrypt(handle, data, False) == expected
    capi.destroy_key(handle)
    capi.release(prov)


def test_malformed_requests_are_refused_not_crashing(capi: CapiTarget) -> None:
    target = LineTarget(capi.argv, env=WinePrefix.default().env())  # a bare line target on the same bridge
    try:
        for line in ("frobnicate", "genkey x y z 0", "encrypt 1 0 zz", "release"):
            with pytest.raises(CryptError) as err:
                target._call("raw", *line.split())
            assert err.value.code == 0x0B  # ERROR_BAD_FORMAT: never reaches the CSP
        assert target.acquire() > 0  # still serving
    finally:
        target.close()


def test_the_bridge_is_cached_by_source() -> None:
    assert build_bridge() == build_bridge()


def test_empty_final_decrypt_really_crashes_wine(capi: CapiTarget) -> None:
    """The finding behind wine-decrypt-empty-final-crash (runs do not send this call)."""
    target = load("capi")
    try:
        prov = target.acquire()
        key = target.import_key(prov, plaintext_blob(w.CALG_DES, test_key(0, 8)))
        with pytest.raises(PeerCrashed):
            target.decrypt(key, b"", True)
    finally:
        target.close()


def _counted(ls: Lockstep, deviation: str) -> None:
    assert ls.deviations[deviation] >= 1, dict(ls.deviations)


def test_finding_handle_reuse(ls: Lockstep) -> None:
    prov = ls.acquire("secure")
    first = ls.import_plaintext(prov, w.CALG_DES, 0, 8)
    assert isinstance(first, int)
    ls.destroy_key(first)
    ls.import_plaintext(prov, w.CALG_DES, 1, 8)
    ls.encrypt(first, bytes(8), False)  # would reach the new key: not sent
    _counted(ls, "wine-handle-reuse")


def test_finding_destroykey_ignored_and_dead_handle(ls: Lockstep) -> None:
    prov = ls.acquire("secure")
    key = ls.import_plaintext(prov, w.CALG_DES, 0, 8, w.CRYPT_EXPORTABLE)
    assert isinstance(key, int)
    ls.export_key(key, w.PLAINTEXTKEYBLOB, w.CRYPT_DESTROYKEY)
    _counted(ls, "wine-destroykey-ignored")
    ls.encrypt(key, bytes(8), False)
    _counted(ls, "advapi32-dead-handle")


@pytest.mark.parametrize(
    ("blob", "flags", "deviation"),
    [
        (bytes.fromhex("000000000166000000000000"), 0, "wine-bad-ver"),
        (plaintext_blob(w.CALG_DES, test_key(0, 8)) + b"\0", 0, "wine-plaintext-trailing-bytes"),
        (b"", 0, "advapi32-empty-blob"),
    ],
)
def test_findings_on_import(ls: Lockstep, blob: bytes, flags: int, deviation: str) -> None:
    ls.import_bytes(ls.acquire("app"), blob, flags)
    _counted(ls, deviation)


def test_findings_on_use(ls: Lockstep) -> None:
    prov = ls.acquire("app")
    des = ls.import_plaintext(prov, w.CALG_DES, 0, 8)
    assert isinstance(des, int)
    ls.get_key_param(des, w.KP_MODE_BITS)
    _counted(ls, "wine-mode-bits-default")
    ls.get_key_param(des, w.KP_SALT)
    _counted(ls, "wine-kp-salt-block-cipher")
    ls.export_key(des, w.PLAINTEXTKEYBLOB)
    _counted(ls, "wine-plaintext-export-unchecked")
    ls.hmac(des, w.CALG_MAC, b"")
    _counted(ls, "wine-hmac-calg-mac")
    ls.decrypt(des, b"", True)  # not sent: it crashes Wine
    _counted(ls, "wine-decrypt-empty-final-crash")
    ls.decrypt(des, bytes(13), False)
    _counted(ls, "wine-decrypt-ragged")
    ls.gen_key(prov, w.CALG_DES, 0x20)
    _counted(ls, "wine-genkey-unknown-flags")


def test_finding_hmac_long_key_use_after_free(ls: Lockstep) -> None:
    prov = ls.acquire("app")
    key = ls.import_plaintext(prov, w.CALG_RC2, 0, 65, w.CRYPT_IPSEC_HMAC_KEY)
    assert isinstance(key, int)
    twin = ls.duplicate_key(key)
    assert isinstance(twin, int)
    ls.destroy_key(twin)
    ls.hmac(key, w.CALG_MD5, b"")
    _counted(ls, "wine-hmac-long-key")


def test_an_undeclared_difference_still_fails(ls: Lockstep) -> None:
    """Declared deviations are narrow: the same call on a key that is not HMAC-only must agree."""
    prov = ls.acquire("app")
    key = ls.import_plaintext(prov, w.CALG_AES_128, 3, 16)
    assert isinstance(key, int)
    ls.capabilities = type(ls.capabilities)(
        **{**{f: getattr(ls.capabilities, f) for f in ("name", "blob_types", "algorithms", "modes")}, "deviations": ()}
    )
    with pytest.raises(Divergence):
        ls.get_key_param(key, w.KP_MODE_BITS)
