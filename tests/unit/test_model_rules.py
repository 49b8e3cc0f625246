"""The model's refusal rules, read from its source: the catalogue, what a run reports of it, and how much of it
the machine reaches."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import attrs

from keyhandoff.check import render_summary, run_check
from keyhandoff.lockstep import open_lockstep
from keyhandoff.machine import _NEAR_MISSES, DEFAULT_KEY_BYTES, _near_miss
from keyhandoff.model.wincrypt import ErrorCode
from keyhandoff.model_rules import NEEDS, UNREACHABLE, reachable_rules, refusal_rules
from keyhandoff.targets.builtin_target import BuiltinTarget
from keyhandoff.targets.model_target import ModelTarget
from keyhandoff.targets.wine_findings import WINE_DEVIATIONS


def _texts() -> set[str]:
    return {rule.text for rule in refusal_rules()}


def test_the_catalogue_holds_every_refusal_of_the_model_with_its_code_and_place() -> None:
    rules = {rule.text: rule for rule in refusal_rules()}
    assert len(rules) == len(refusal_rules()) >= 40  # one entry per text
    assert rules["key lacks CRYPT_EXPORT"].code == "NTE_BAD_KEY_STATE"
    assert rules["key lacks CRYPT_EXPORT"].where == ("blobs.export_key",)
    assert rules["bad PKCS#5 padding on final decrypt (the key resets)"].code == "NTE_BAD_DATA"
    assert rules["unknown, destroyed or released key handle"].where == ("world.live_key",)  # Refused(...) too
    assert rules["key length (upper 16 flag bits) not valid for algorithm"].code == "varies"  # computed
    assert len(rules["algorithm not supported for session keys"].where) == 3  # one text, three operations
    assert all(rule.code == "varies" or rule.code in ErrorCode.__members__ for rule in rules.values())


def test_every_rule_named_outside_the_model_is_still_one_of_its_rules() -> None:
    """Texts are the rules' names: a model edit renaming one must not leave a stale name behind (a reachability
    entry, or a deviation that would then never match)."""
    named = {*UNREACHABLE, *NEEDS, *(dev.model_rule for dev in WINE_DEVIATIONS if dev.model_rule)}
    assert named - _texts() == set()
    assert set(NEEDS.values()) == {"hardware", "opaque", "hmac"}


def test_reachable_rules_follow_the_target_capabilities() -> None:
    target = BuiltinTarget(tempfile.mkdtemp(prefix="keyhandoff-rules-"), remove_home=True)
    full = target.capabilities()
    target.close()
    bare = attrs.evolve(full, hardware_algorithms=frozenset(), hmac_algorithms=frozenset())
    reach_full = {rule.text for rule in reachable_rules(full)}
    reach_bare = {rule.text for rule in reachable_rules(bare)}
    assert reach_full == _texts() - set(UNREACHABLE)
    assert reach_full - reach_bare == {text for text, need in NEEDS.items() if need in ("hardware", "hmac")}


def test_a_run_reports_the_rules_it_met_and_those_it_did_not() -> None:
    result = run_check("model", ModelTarget, profile="quick", seed=3)
    met = set(result.coverage.rules)
    assert met <= _texts()  # every refusal counted under one of the model's own rules, none stale or invented
    assert "unknown, destroyed or released key handle" in met
    assert set(result.rules_not_fired) == {rule.text for rule in reachable_rules(result.capabilities)} - met
    report = result.to_json()
    assert report["refusal_rules_not_fired"] == result.rules_not_fired
    assert report["coverage"]["refusal_rules"] == dict(result.coverage.rules)  # type: ignore[index]
    out = io.StringIO()
    render_summary(result, out)
    reachable = len(reachable_rules(result.capabilities))
    assert f"; model refusal rules met: {reachable - len(result.rules_not_fired)}/{reachable}\n" in out.getvalue()
    assert all(f"  no step refused by: {text}\n" in out.getvalue() for text in result.rules_not_fired)


def test_the_default_profile_meets_every_reachable_rule_of_the_model(tmp_path: Path) -> None:
    """How much of the specification a run exercises, measured in its own process (what else a process has
    loaded changes a seed's programs). A rule the machine stops reaching fails here. Before the export rule drew
    mostly types the target exports, the rules importing a kept blob ran in no test case, and four rules (a
    reserved header field, a short plaintext body, a flag an opaque import refuses, ...) answered no step; before
    the near-miss imports and the parameters at their bounds, six rules reached only by a rare shape of input (a
    header or length field off in one way, a salt one byte too long) left up to two unmet per run. Now six of the
    seeds 0 to 7 meet all 39, and the other two 38 (each a different rule, drawn rarely by chance)."""
    report = tmp_path / "report.json"
    argv = ["check", "--target", "builtin", "--profile", "default", "--seed", "0", "--report", str(report)]
    subprocess.run(
        [sys.executable, "-c", "import sys; from keyhandoff.cli import main; sys.exit(main(sys.argv[1:]))", *argv],
        check=True,
        capture_output=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert json.loads(report.read_text())["refusal_rules_not_fired"] == []


# What each near-miss import of the machine (keyhandoff.machine._NEAR_MISSES) must be refused by.
_NEAR_MISS_RULES = {
    "header cut": "blob shorter than a BLOBHEADER",
    "version": "BLOBHEADER.bVersion is not CUR_BLOB_VERSION",
    "reserved": "BLOBHEADER.reserved is not 0",
    "type": "blob type not supported for session keys",
    "hPubKey": "hPubKey must be 0 for this blob type",
    "flag": "unknown CryptImportKey flag",
    "algorithm": "algorithm not supported for session keys",
    "length cut": "PLAINTEXTKEYBLOB truncated before its length field",
    "short": "PLAINTEXTKEYBLOB body shorter than its length field",
    "long": "PLAINTEXTKEYBLOB body longer than its length field",
    "key length": "key length not valid for the algorithm",
}


def test_each_near_miss_import_is_refused_by_its_own_rule_of_the_model() -> None:
    """A near miss has exactly one thing wrong, whatever the algorithm and form: the model refuses it by the one
    rule it stands for, and its blob without the defect would be imported."""
    assert set(_NEAR_MISS_RULES) == set(_NEAR_MISSES)
    assert set(_NEAR_MISS_RULES.values()) <= _texts()
    ls = open_lockstep(ModelTarget)
    try:
        prov = ls.acquire("secure")
        assert isinstance(prov, int)
        for alg in DEFAULT_KEY_BYTES:
            for defect, rule in _NEAR_MISS_RULES.items():
                for pick in range(12):
                    flags = 0x8000 if defect == "flag" else 0
                    pub_key = 7 if defect == "hPubKey" else 0
                    outcome = ls.import_bytes(prov, _near_miss(alg, defect, pick), flags, False, pub_key)
                    assert not isinstance(outcome, int), (hex(alg), defect, pick)
                    assert ls.model.last_rule == rule, (hex(alg), defect, pick, ls.model.last_rule)
            right = ls.import_bytes(prov, _near_miss(alg, "hPubKey", 0), 0, False, 0)
            assert isinstance(right, int), hex(alg)
    finally:
        ls.close()
