"""The CAPI bridge against Wine's rsaenh: the line protocol, probed capabilities, and each finding of
docs/findings.md confirmed by its reproducer (met with the declarations, a divergence without its own).
Needs Wine and the mingw compiler; under CI=true a missing one fails (tests/conftest.py)."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable, Iterator

import pytest

from keyhandoff.check import render_summary, run_check
from keyhandoff.findings import check_findings
from keyhandoff.lockstep import Divergence, Lockstep, plaintext_blob, test_key
from keyhandoff.model import wincrypt as w
from keyhandoff.model.errors import CryptError
from keyhandoff.targets import TargetUnavailable, load
from keyhandoff.targets.capi_target import CapiTarget
from keyhandoff.targets.fresh import fresh_factory
from keyhandoff.targets.line_target import LineTarget, PeerCrashed, PeerExited
from keyhandoff.targets.model_target import ModelTarget
from keyhandoff.targets.wine import WinePrefix, build_bridge
from keyhandoff.targets.wine_findings import ADVAPI32_DEVIATIONS, WINE_DEVIATIONS
from keyhandoff.traces import reproducer
from tests.reproducers import run_reproducer

if shutil.which("wine") is None or shutil.which("x86_64-w64-mingw32-gcc") is None:
    pytest.skip("Wine or x86_64-w64-mingw32-gcc missing (.ci/run installs them)", allow_module_level=True)


@pytest.fixture(scope="module", autouse=True)
def _server_up() -> Iterator[None]:
    """Keep Wine's server up for the module, as a check run does: a bridge then starts in ~0.03 s."""
    prefix = WinePrefix.default()
    prefix.hold()
    yield
    prefix.release()


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


_DECLARED = ADVAPI32_DEVIATIONS + WINE_DEVIATIONS


def test_every_finding_has_a_reproducer() -> None:
    assert [d.id for d in _DECLARED if not d.reproducer] == []


@pytest.mark.parametrize("finding", [d.id for d in _DECLARED])
def test_finding_is_confirmed(finding: str) -> None:
    """Its reproducer meets it on Wine, and diverges without its declaration (keyhandoff findings)."""
    (check,) = check_findings(lambda: load("capi"), [finding])
    assert check.verdict == "confirmed", check.detail


@pytest.mark.parametrize("finding", [d.id for d in _DECLARED])
def test_finding_script_stops_at_its_last_step_on_wine(finding: str) -> None:
    """The script docs/findings.md prints for a finding, run as printed against Wine, runs every step before
    the last (its own, without the finding's step, runs through) and stops at the last one."""
    (dev,) = [d for d in _DECLARED if d.id == finding]
    steps = [dict(step) for step in dev.reproducer]
    whole = reproducer(steps, "capi", ModelTarget, None)
    before = reproducer(steps[:-1], "capi", ModelTarget, None)
    assert run_reproducer(before, "capi", lambda: load("capi")).error is None, before
    stop = run_reproducer(whole, "capi", lambda: load("capi"))
    assert stop.error is not None, f"runs through on Wine:\n{whole}"
    lines = whole.splitlines()
    opened = next(n for n, line in enumerate(lines, 1) if line.startswith("csp = "))
    last_step = opened + len(_body(before)) + 1  # its first line: after the steps the shorter script has
    assert stop.lineno >= last_step, f"stopped at line {stop.lineno} ({stop.line}), before the last step:\n{whole}"


def _body(script: str) -> list[str]:
    """The step lines of a reproducer: after ``csp = ...``, before the closing lines."""
    lines = script.splitlines()
    opened = next(n for n, line in enumerate(lines) if line.startswith("csp = "))
    return [line for line in lines[opened + 1 :] if line not in ("other.close()", "csp.close()")]


_STRONG = "capi:Microsoft Strong Cryptographic Provider:1"
_DSS = "capi:Microsoft Enhanced DSS and Diffie-Hellman Cryptographic Provider:13"


@pytest.mark.parametrize(
    "spec",
    [
        _STRONG,
        "capi:Microsoft Base Cryptographic Provider v1.0:1",
        "capi:Microsoft RSA SChannel Cryptographic Provider:12",
    ],
)
def test_rsa_full_providers_give_an_empty_hmac_sha256(spec: str) -> None:
    """docs/findings.md, Wine's other providers: HMAC-SHA-256 succeeds with a 0-byte MAC where the provider has no
    SHA-256 (MD5 and SHA-1 have their lengths); the AES provider gives 32 bytes. A fixed Wine fails this test:
    the paragraph is then stale."""
    for provider, sha256 in ((spec, 0), ("capi", 32)):
        target = load(provider)
        try:
            key = target.import_key(target.acquire("app"), plaintext_blob(w.CALG_DES, test_key(0, 8)))
            lengths = [len(target.hmac(key, alg, b"")) for alg in (w.CALG_MD5, w.CALG_SHA1, w.CALG_SHA_256)]
        finally:
            target.close()
        assert lengths == [16, 20, sha256], provider


def test_dss_provider_has_nothing_to_check() -> None:
    """docs/findings.md: Wine's DSS/Diffie-Hellman provider has no session-key algorithm of the model; the check
    refuses to start, saying so, rather than report a divergence."""
    with pytest.raises(TargetUnavailable, match="there is nothing to check"):
        run_check(_DSS, fresh_factory(_DSS), profile="quick", seed=1)


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


@pytest.mark.parametrize("seed", [1, 2])
def test_random_run_passes_with_its_findings_listed(seed: int) -> None:
    """What CI runs against Wine: a random lockstep run (quick profile) passes, its differences all declared
    and reported as known deviations; any undeclared difference fails it."""
    result = run_check("capi", fresh_factory("capi"), profile="quick", seed=seed)
    out = io.StringIO()
    render_summary(result, out)
    assert result.ok, f"{result.failure}\n{result.script}"
    known = [row for row in result.rows() if row.verdict == "known deviation"]
    assert len(known) >= 8, out.getvalue()
    assert "OPAQUEKEYBLOB" in out.getvalue() or "not supported" in out.getvalue()


def test_detached_reference_never_destroys_the_key_now_behind_its_handle(ls: Lockstep) -> None:
    """Regression (seed 26): an export with CRYPT_DESTROYKEY through a detached reference whose handle Wine had
    issued again must not destroy the new key (the check that CRYPT_DESTROYKEY was ignored skips it)."""
    prov = ls.acquire("app")
    key = ls.import_plaintext(prov, w.CALG_DES, 0, 8, w.CRYPT_EXPORTABLE)
    assert isinstance(key, int)
    twin = ls.duplicate_key(key)
    assert isinstance(twin, int)
    ls.decrypt(twin, bytes(13), False)  # wine-decrypt-ragged: retired, the target's twin destroyed
    assert ls.keys[twin].detached
    newer = ls.import_plaintext(prov, w.CALG_DES, 1, 8)  # Wine issues the twin's handle again
    assert isinstance(newer, int)
    ls.export_key(twin, w.PLAINTEXTKEYBLOB, w.CRYPT_DESTROYKEY)  # model only: must not touch `newer`
    ls.gen_key(prov, w.CALG_DES)  # a new handle, not `newer`'s
    assert ls.encrypt(newer, bytes(8), False).ok


def test_long_hmac_key_original_destroy_is_not_sent_either(ls: Lockstep) -> None:
    """Regression (seed 10 of the default profile): destroying the original of a duplicated long HMAC key also
    frees the buffer the duplicate uses; the call is not sent and the duplicate's HMAC stays right."""
    prov = ls.acquire("app")
    key = ls.import_plaintext(prov, w.CALG_RC2, 0, 65, w.CRYPT_IPSEC_HMAC_KEY)
    assert isinstance(key, int)
    twin = ls.duplicate_key(key)
    assert isinstance(twin, int)
    ls.destroy_key(key)
    assert ls.deviations["wine-hmac-long-key-shared"] == 1
    assert ls.hmac(twin, w.CALG_MD5, b"").ok  # compared byte for byte with the model's RFC 2104 value


def test_another_provider_by_spec() -> None:
    """capi:<provider>:<type> selects the provider: the type-1 Enhanced provider has DES, 3DES, RC2, RC4 and
    no AES, as probed."""
    target = load("capi:Microsoft Enhanced Cryptographic Provider v1.0:1")
    try:
        assert target.info.description.startswith("Microsoft Enhanced Cryptographic Provider v1.0")
        algorithms = target.capabilities().algorithms
        assert {w.CALG_DES, w.CALG_3DES, w.CALG_RC2, w.CALG_RC4} <= algorithms
        assert w.CALG_AES_128 not in algorithms
    finally:
        target.close()


def test_a_provider_that_is_not_installed_is_no_target() -> None:
    """capi:<a name no provider has>: the bridge starts, CryptAcquireContext answers NTE_KEYSET_NOT_DEF, and the
    probe reports that as an unavailable target (the command line's one-line error), not as a crash."""
    target = load("capi:No Such Provider")
    try:
        with pytest.raises(TargetUnavailable, match=r"0x80090019: NTE_KEYSET_NOT_DEF, no provider of that name"):
            target.capabilities()
    finally:
        target.close()


def test_reissued_context_handle_detaches_its_keys(ls: Lockstep) -> None:
    """Regression (seed 103): Wine issues a released context's handle to a later context (how soon depends on
    its heap: about 9 times in 10 at once), and the released context's keys then work again (a destroy succeeds
    where the model says NTE_BAD_KEY). Calls through them are not sent: they would reach a context that is not
    theirs."""
    ls.acquire("secure")
    for _ in range(30):
        prov = ls.acquire("secure")
        key = ls.import_plaintext(prov, w.CALG_DES, 0, 8)
        assert isinstance(key, int)
        ls.release(prov)
        again = ls.acquire("secure")
        if ls.providers[again][1] == ls.providers[prov][1]:  # the same handle, reissued
            assert ls.keys[key].detached == "wine-handle-reuse"
            assert ls.destroy_key(key).code == w.NTE_BAD_KEY  # the model's answer; not sent
            return
        ls.release(again)
    pytest.fail("Wine never issued a released context's handle again in 30 tries")


def test_a_bridge_lost_as_it_starts_is_started_once_more(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bridge that exits before its hello (Wine lost it once in CI) is started once more; lost twice, the
    error stands (TargetUnavailable, with the peer's exit)."""
    real = LineTarget.__init__
    starts: list[int] = []

    def lost(times: int) -> Callable[..., None]:
        def start(self: LineTarget, *args: object, **kwargs: object) -> None:
            starts.append(1)
            if len(starts) <= times:
                raise PeerExited("the peer exited (status 1); its last words: ''")
            real(self, *args, **kwargs)  # type: ignore[arg-type]

        return start

    monkeypatch.setattr(LineTarget, "__init__", lost(1))
    load("capi").close()
    assert len(starts) == 2
    starts.clear()
    monkeypatch.setattr(LineTarget, "__init__", lost(2))
    with pytest.raises(TargetUnavailable, match=r"the peer exited \(status 1\)"):
        load("capi")
    assert len(starts) == 2
