"""The lockstep state machine: Hypothesis drives random CryptoAPI programs against the model and a target.

``machine_for(factory)`` returns a :class:`~hypothesis.stateful.RuleBasedStateMachine` class for any Target
factory (each call must return a *fresh installation*). Rules cover every operation of the Target protocol and
what users get wrong (stale handles, the other side's keys, unsupported blob types, tampered, truncated and
foreign blobs, ragged lengths, bad padding, bad parameters, unusable modes, permission violations, hardware
keys); rules a target's capabilities exclude are never drawn. After every step the outcomes agree (bytes or the
same error code), and after every rule the key states agree (full records where the target has ``inspect``)
and the hardware token has lost nothing.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import struct
import sys
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs
from hypothesis import HealthCheck, Phase, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.errors import Flaky, UnsatisfiedAssumption
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from keyhandoff.lockstep import Divergence, Lockstep, Observed, open_lockstep
from keyhandoff.model import wincrypt as w
from keyhandoff.model.wincrypt import ErrorCode
from keyhandoff.target import (
    Capabilities,
    NotATarget,
    Target,
    TargetUnavailable,
    close_target,
    declared_capabilities,
    missing_methods,
)

__all__ = [
    "DEFAULT_KEY_BYTES",
    "GETTABLE_PARAMS",
    "Coverage",
    "LockstepMachine",
    "harness_defect",
    "machine_for",
    "probed_capabilities",
    "run_machine",
]

# The default key length of each session-key algorithm, in bytes (the harness's own table: the model and impl
# each derive theirs independently).
DEFAULT_KEY_BYTES = {
    w.CALG_AES_128: 16,
    w.CALG_AES_192: 24,
    w.CALG_AES_256: 32,
    w.CALG_DES: 8,
    w.CALG_3DES_112: 16,
    w.CALG_3DES: 24,
    w.CALG_RC2: 16,
    w.CALG_RC4: 16,
}
_PARAMS_SET = [
    w.KP_IV,
    w.KP_SALT,
    w.KP_SALT_EX,
    w.KP_PADDING,
    w.KP_MODE,
    w.KP_MODE_BITS,
    w.KP_PERMISSIONS,
    w.KP_EFFECTIVE_KEYLEN,
]
GETTABLE_PARAMS = [*_PARAMS_SET, w.KP_ALGID, w.KP_BLOCKLEN, w.KP_KEYLEN]
_AT_BOUNDS = [  # (parameter, byte length or value)
    *((w.KP_SALT, n) for n in (10, 11, 12)),
    *((w.KP_SALT_EX, n) for n in (0, 24, 25)),
    *((w.KP_EFFECTIVE_KEYLEN, n) for n in (0, 1, 1024, 1025)),
]
_LENGTHS = st.sampled_from([0, 8, 16, 16, 32, 48, 64, 1, 5, 13, 24])
# Whole blocks (of 8 and of 16 bytes) ending in a pad that a check of its last byte alone takes: length 2, but the
# byte before it is not 2.
_WRONG_PAD = bytes(range(14)) + b"\x05\x02"
# ALG_IDs a CSP knows that are no session key's: a key blob naming one must be refused (NTE_BAD_ALGID) like one
# naming an ALG_ID no CSP has (0x1234).
_NOT_KEY_ALGS = (w.CALG_HMAC, w.CALG_SHA1)


def _outcome(observed: Observed) -> str:
    if observed.ok:
        return "ok"
    try:
        return ErrorCode(observed.code or 0).name
    except ValueError:
        return f"0x{observed.code or 0:08X}"


@attrs.define
class Coverage:
    """What a run exercised: operations, outcomes per operation, lifecycle transitions fired, the model's refusal
    rules that answered a step (keyhandoff.model_rules)."""

    steps: int = 0
    operations: Counter[str] = attrs.field(factory=Counter)
    outcomes: Counter[tuple[str, str]] = attrs.field(factory=Counter)
    transitions: Counter[str] = attrs.field(factory=Counter)
    deviations: Counter[str] = attrs.field(factory=Counter)  # declared deviations seen, by id
    rules: Counter[str] = attrs.field(factory=Counter)  # the model's refusal rules that answered a step, by text
    token_checked: bool = False  # whether the target reports its token's objects (token_objects), so they are counted

    def record(self, step: dict[str, object], observed: Observed, fired: list[str], rule: str = "") -> None:
        op = str(step["op"])
        self.steps += 1
        self.operations[op] += 1
        self.outcomes[(op, _outcome(observed))] += 1
        self.transitions.update(fired)
        if rule and not observed.ok:
            self.rules[rule] += 1

    def to_json(self) -> dict[str, object]:
        return {
            "steps": self.steps,
            "operations": dict(self.operations),
            "outcomes": {f"{op} -> {out}": n for (op, out), n in sorted(self.outcomes.items())},
            "transitions": dict(self.transitions),
            "known_deviations": dict(self.deviations),
            "refusal_rules": dict(self.rules),
            "token_objects_checked": self.token_checked,
        }


class LockstepMachine(RuleBasedStateMachine):
    """What every generated machine class offers the runner: the run's coverage, the latest lockstep (whose
    trace is the reproducer), the target's capabilities, and a hook called as each test case starts."""

    coverage: ClassVar[Coverage]
    last: ClassVar[Lockstep | None]
    capabilities: ClassVar[Capabilities]
    on_start: ClassVar[list[Callable[[int], None]]] = []  # each is called with the steps run so far
    # The program and message of the first test case that failed, and what keyhandoff's own code raised there
    # (harness_defect; None: the target failed). Hypothesis reports the failure of its last, shrunk, replay;
    # against a target whose answers are not reproducible that replay may pass or stop early ("Inconsistent data
    # generation"), and this is what actually failed.
    first_failure: ClassVar[tuple[list[dict[str, object]], str, str | None] | None] = None


def harness_defect(exc: BaseException) -> str | None:
    """What keyhandoff's own code raised, if ``exc`` is no failure of the target's, said by its type and the
    innermost line of keyhandoff it passed (never its message, which may quote a value). Every failure of the
    target's is a Divergence: a different answer, a crash inside a call on it, an answer of the wrong type; a
    hang or a lost installation is a BaseException of its own. Flaky (the same program failing one way and then
    another) says nothing by itself: what it wraps does."""
    if not isinstance(exc, Exception) or isinstance(exc, (Divergence, Flaky)):
        return None
    where = ""  # the innermost frame in a keyhandoff module
    for frame, line in traceback.walk_tb(exc.__traceback__):
        module = str(frame.f_globals.get("__name__", ""))
        if module.startswith("keyhandoff."):
            where = f" in {module}.{frame.f_code.co_name}, line {line}"
    return type(exc).__name__ + where


_run_as_test: Callable[..., None] = run_state_machine_as_test  # Hypothesis leaves it unannotated


@functools.cache
def _load_every_module() -> None:
    """Import all of keyhandoff. Hypothesis draws, now and then, a constant found in the source of the local
    modules loaded so far (keyhandoff's, when it is installed from a checkout), so a seed's programs depended on
    which of them a process had imported (a test suite, or one command, or a bridge loaded mid-run). With all of
    them loaded before any draw, a seed makes the same programs wherever keyhandoff is installed the same way (the
    same extras too) and the same adapter is loaded.

    A module needing an optional dependency that is not installed (``keyhandoff.impl.pkcs11_token`` without the
    ``pkcs11`` extra) is left out: a bare install must run, and its programs then lack that module's constants."""
    for name in _PACKAGES:
        folder = Path(importlib.import_module(name).__file__ or "").parent  # its own folder: keyhandoff's __path__
        for module in pkgutil.iter_modules([str(folder)]):  # also holds a checkout's root (see keyhandoff/__init__)
            if not module.ispkg:
                try:
                    importlib.import_module(f"{name}.{module.name}")
                except ModuleNotFoundError as missing:
                    if (missing.name or "keyhandoff").partition(".")[0] == "keyhandoff":
                        raise  # one of ours is missing: a broken install, not an optional extra


_PACKAGES = ("keyhandoff", "keyhandoff.targets", "keyhandoff.model", "keyhandoff.impl")  # those holding code


def run_machine(
    machine: type[LockstepMachine], *, examples: int, steps: int, seed: int, phases: Sequence[Phase]
) -> None:
    """Run ``machine`` as keyhandoff runs every machine: from ``seed``, with no example database (a run is its
    seed; a failure is kept as a trace), no deadline (a target may be slow), no health checks (a slow or
    filtering target is not the user's test to fix) and one failure reported."""
    _load_every_module()
    hypothesis_seed(seed)(machine)
    config = settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        print_blob=False,
        phases=phases,
    )
    _run_as_test(machine, settings=config)


def probed_capabilities(factory: Callable[[], Target]) -> Capabilities:
    """The capabilities of a first installation ``factory`` makes (then closed), once it is checked to be a
    Target: what is missing is said before any test case, rather than at the first method a run calls."""
    probe = factory()
    missing = missing_methods(probe)
    if missing:
        raise NotATarget(
            f"the factory returned a value of type {type(probe).__name__}, not a Target: it has no "
            f"{', '.join(missing)} (see keyhandoff.target.Target and docs/conformance.md)"
        )
    try:
        return declared_capabilities(probe)
    except TargetUnavailable:  # NotATarget, or a target that says why it cannot be used
        raise
    except Exception as exc:  # the run cannot start: no verdict, not the CSP's failure (status 2, not 1)
        raise TargetUnavailable(
            f"{type(probe).__name__}.capabilities() raised {type(exc).__name__}: {exc}; this is no verdict on the CSP"
        ) from exc
    finally:
        close_target(probe)


def machine_for(
    factory: Callable[[], Target], *, name: str = "Target", misshapen_plaintext: bool = False
) -> type[LockstepMachine]:
    """A lockstep state machine class for targets made by ``factory`` (one fresh installation per call).

    ``misshapen_plaintext`` adds a rule importing PLAINTEXTKEYBLOBs with a right header and something else
    wrong (the thorough profile's): more error paths, at a cost measured on the fault catalog (the default
    profile needed 2.3 times the test cases to catch all 24 mutants of the time with it), so not in every run."""
    _load_every_module()  # here too, before any run: a module that cannot load is the tool's error, not a verdict
    caps = probed_capabilities(factory)
    if not caps.algorithms & set(DEFAULT_KEY_BYTES):  # every key-making rule draws one: there is no program
        raise TargetUnavailable(
            f"{caps.name or name} supports none of the model's session-key algorithms (its capabilities list "
            f"{', '.join(f'{alg:#x}' for alg in sorted(caps.algorithms)) or 'none'}): there is nothing to check"
        )
    return _build(factory, caps, name, misshapen_plaintext)


def _build(
    factory: Callable[[], Target], caps: Capabilities, name: str, misshapen_plaintext: bool
) -> type[LockstepMachine]:
    algs = sorted(caps.algorithms & set(DEFAULT_KEY_BYTES))
    hw_algs = sorted(caps.hardware_algorithms & set(DEFAULT_KEY_BYTES))
    opaque = caps.opaque
    hashes = sorted(caps.hmac_algorithms)
    # The mid-stream handoff draws an opaque handoff, the seed's, twice as often as a plaintext one.
    handoff_types = [t for t in (w.OPAQUEKEYBLOB, w.OPAQUEKEYBLOB, w.PLAINTEXTKEYBLOB) if t in caps.blob_types]
    forged_algs = [*algs, 0x1234, *_NOT_KEY_ALGS]  # what a forged key blob names: right, unknown, no key's
    salted = [alg for alg in algs if alg in (w.CALG_RC2, w.CALG_RC4)]  # the algorithms that take a salt

    class KeyhandoffMachine(LockstepMachine):
        """Lockstep of the model and one target installation."""

        coverage = Coverage()
        last = None
        first_failure = None
        capabilities = caps
        on_start: ClassVar[list[Callable[[int], None]]] = []

        providers = Bundle("providers")
        keys = Bundle("keys")
        blobs = Bundle("blobs")

        def __init__(self) -> None:
            super().__init__()
            self.ls = open_lockstep(factory)
            self.target = self.ls.target
            self.ls.on_step = self._covered
            if self.ls.inspector is not None:
                type(self).coverage.token_checked = True
            self._seen_fired = 0
            type(self).last = self.ls
            for hook in self.on_start:
                hook(type(self).coverage.steps)

        def _covered(self, step: dict[str, object], observed: Observed) -> None:
            fired = self.ls.model.fired[self._seen_fired :]
            self._seen_fired = len(self.ls.model.fired)
            type(self).coverage.record(step, observed, [row.label for row in fired], self.ls.model.last_rule)

        def teardown(self) -> None:
            # Hypothesis calls teardown in a finally clause: the exception ending the test case, if any, is
            # visible here (its own control flow is BaseException, not Exception; an unmet assumption is none).
            failed = sys.exc_info()[1]
            unmet = isinstance(failed, UnsatisfiedAssumption)
            if isinstance(failed, Exception) and not unmet and type(self).first_failure is None:
                type(self).first_failure = (list(self.ls.trace), str(failed), harness_defect(failed))
            type(self).coverage.deviations.update(self.ls.deviations)
            self.ls.close()
            close_target(self.target)

        # --- contexts -----------------------------------------------------------------------------------
        @initialize(target=providers)
        def both_sides(self) -> Any:
            return multiple(self.ls.acquire("secure"), self.ls.acquire("app"))

        @rule(target=providers, side=st.sampled_from(["secure", "app"]))
        def acquire(self, side: str) -> int:
            return self.ls.acquire(side)

        @precondition(lambda self: len(self.ls.providers) > 2)
        @rule(prov=providers)
        def release(self, prov: int) -> None:
            if prov >= 2:  # keep one context per side alive so the machine can go on
                self.ls.release(prov)

        # --- key creation -------------------------------------------------------------------------------
        @rule(
            target=keys,
            prov=providers,
            alg=st.sampled_from(algs),
            seed=st.integers(0, 1 << 16),
            flags=st.sampled_from([0, w.CRYPT_EXPORTABLE, w.CRYPT_EXPORTABLE, w.CRYPT_NO_SALT]),
            hardware=st.booleans() if hw_algs else st.just(False),
            forty=st.booleans(),
        )
        def import_known_key(self, prov: int, alg: int, seed: int, flags: int, hardware: bool, forty: bool) -> Any:
            size = 5 if forty and alg in (w.CALG_RC2, w.CALG_RC4) else DEFAULT_KEY_BYTES[alg]
            hardware = hardware and alg in hw_algs
            return self._key(self.ls.import_plaintext(prov, alg, seed, size, flags, hardware))

        @rule(
            target=keys,
            prov=providers,
            alg=st.sampled_from([*algs, w.CALG_AES, 0x1234]),
            flags=st.sampled_from(
                [
                    0,
                    w.CRYPT_EXPORTABLE,
                    w.CRYPT_CREATE_SALT,
                    w.CRYPT_NO_SALT,
                    40 << 16,
                    56 << 16,
                    64 << 16,
                    128 << 16,
                    192 << 16,
                    0x20,
                    0x8000,
                ]
            ),
            hardware=st.booleans() if hw_algs else st.just(False),
        )
        def gen_key(self, prov: int, alg: int, flags: int, hardware: bool) -> Any:
            return self._key(self.ls.gen_key(prov, alg, flags, hardware))

        @rule(
            target=keys,
            prov=providers,
            blob=st.one_of(
                st.binary(max_size=40),
                st.builds(
                    _forged,
                    st.sampled_from(forged_algs),
                    # a key blob's type and version often enough that the checks after them are reached
                    st.one_of(st.sampled_from([w.PLAINTEXTKEYBLOB, w.OPAQUEKEYBLOB]), st.integers(0, 0xFF)),
                    st.one_of(st.just(w.CUR_BLOB_VERSION), st.integers(0, 3)),
                    st.integers(0, 40),
                    st.integers(-2, 2),
                ),
                # a PLAINTEXTKEYBLOB header cut before its length field ends
                st.builds(
                    lambda alg, cut: _forged(alg, w.PLAINTEXTKEYBLOB, w.CUR_BLOB_VERSION, 0, 0)[:cut],
                    st.sampled_from(forged_algs),
                    st.integers(8, 11),
                ),
            ),
            flags=st.sampled_from([0, w.CRYPT_EXPORTABLE, w.CRYPT_IPSEC_HMAC_KEY, 0x8000]),
            pub_key=st.sampled_from([0, 0, 0, 7]),
        )
        def import_malformed(self, prov: int, blob: bytes, flags: int, pub_key: int) -> Any:
            return self._key(self.ls.import_bytes(prov, blob, flags, False, pub_key))

        @rule(
            target=keys,
            prov=providers,
            alg=st.sampled_from(algs),
            defect=st.sampled_from(_NEAR_MISSES),
            pick=st.integers(0, 255),
        )
        def import_near_miss(self, prov: int, alg: int, defect: str, pick: int) -> Any:
            """A PLAINTEXTKEYBLOB import with exactly one thing wrong, each the subject of one refusal rule of the
            model. import_malformed's random bytes, forged headers and random flags reached some of those rules
            (a reserved header field, hPubKey, a body short of its length field, a bad key length) once in a few
            runs, and Hypothesis tends to draw the same flags with the same shape."""
            flags = 0x8000 if defect == "flag" else 0
            pub_key = 7 if defect == "hPubKey" else 0
            return self._key(self.ls.import_bytes(prov, _near_miss(alg, defect, pick), flags, False, pub_key))

        if misshapen_plaintext:  # defined only when asked for: other machines draw exactly as without it

            @rule(
                target=keys,
                prov=providers,
                alg=st.sampled_from(forged_algs),
                size=st.sampled_from([0, 1, 5, 7, 8, 16, 24, 32, 65]),
                delta=st.sampled_from([0, 0, -1, 1]),
                flags=st.sampled_from([0, 0, w.CRYPT_IPSEC_HMAC_KEY, 0x8000]),
            )
            def import_misshapen_plaintext(self, prov: int, alg: int, size: int, delta: int, flags: int) -> Any:
                """A PLAINTEXTKEYBLOB with a right header and something else wrong, or not: the algorithm, the key
                length, a body longer or shorter than its length field, a flag (import_malformed's random bytes
                seldom make a right header)."""
                blob = _forged(alg, w.PLAINTEXTKEYBLOB, w.CUR_BLOB_VERSION, size, delta)
                return self._key(self.ls.import_bytes(prov, blob, flags, False, 0))

        @precondition(lambda self: bool(hashes))
        @rule(
            target=keys,
            prov=providers,
            alg=st.sampled_from([w.CALG_RC2, w.CALG_RC4]),
            seed=st.integers(0, 1 << 16),
            size=st.integers(1, 200),  # a cipher key's length too: CRYPT_IPSEC_HMAC_KEY lifts the limit only
        )
        def import_long_hmac_key(self, prov: int, alg: int, seed: int, size: int) -> Any:
            return self._key(self.ls.import_plaintext(prov, alg, seed, size, w.CRYPT_IPSEC_HMAC_KEY))

        @precondition(lambda self: caps.duplicate)
        @rule(target=keys, key=keys)
        def duplicate_key(self, key: int) -> Any:
            twin = self.ls.duplicate_key(key)
            self._read_back(twin)  # a black box's duplicate is what its parameters say (a salt left behind)
            return self._key(twin)

        def _key(self, result: int | Observed) -> Any:
            return result if isinstance(result, int) else multiple()

        def _read_back(self, key: object) -> None:
            """After a handoff or a duplicate, a black box's key state is what its parameters say: read every one
            (a target with ``inspect`` has its full record compared after every step instead)."""
            if isinstance(key, int) and not self.ls.inspectable:
                for param in GETTABLE_PARAMS:
                    self.ls.get_key_param(key, param)

        # --- blobs --------------------------------------------------------------------------------------
        @rule(
            target=blobs,
            key=keys,
            # Mostly a type the target exports and no bad flag: this rule alone fills the blobs bundle, and when it
            # drew each type alike one export in ten succeeded, so the rules importing a kept blob (with flags, a
            # hardware request, an edit anywhere) almost never ran.
            blob_type=st.sampled_from([*sorted(caps.blob_types) * 3, w.SIMPLEBLOB, w.KEYSTATEBLOB, 0x55]),
            flags=st.sampled_from([0, 0, 0, w.CRYPT_DESTROYKEY, 0x100]),
        )
        def export_key(self, key: int, blob_type: int, flags: int) -> Any:
            if blob_type == w.SIMPLEBLOB and w.SIMPLEBLOB in caps.blob_types:
                return multiple()
            result = self.ls.export_key(key, blob_type, flags)
            return result if isinstance(result, int) else multiple()

        @precondition(lambda self: opaque)
        @rule(target=keys, key=keys, to=providers, destroy_flag=st.booleans(), probe=st.integers(1, 4))
        def handoff(self, key: int, to: int, destroy_flag: bool, probe: int) -> Any:
            """The seed's sequence: export OPAQUEKEYBLOB, destroy (or CRYPT_DESTROYKEY), import, continue."""
            twin = None
            if not self.ls.keys[key].known and caps.duplicate:
                made = self.ls.duplicate_key(key)  # a twin, to check a continuation the model cannot predict
                twin = made if isinstance(made, int) else None
            blob = self.ls.export_key(key, w.OPAQUEKEYBLOB, w.CRYPT_DESTROYKEY if destroy_flag else 0)
            if not isinstance(blob, int):
                return multiple()
            if not destroy_flag:
                self.ls.destroy_key(key)
            moved = self.ls.import_blob(to, blob)
            if not isinstance(moved, int):
                return multiple()
            self._read_back(moved)
            if twin is not None:
                self.ls.compare_twins(moved, twin, bytes(16 * probe))
                self.ls.destroy_key(twin)
            return moved

        @rule(
            target=keys,
            # One to three keys a firing, each drawn whole: a run replays and varies a few drawn programs, and with
            # one key a firing whole quick runs went without a salted RC2 or RC4 key handed off opaquely.
            scenarios=st.lists(
                st.tuples(
                    st.sampled_from(algs + salted * 2),  # a quarter each for RC2 and RC4: they carry most state
                    st.integers(0, 1 << 16),  # the key's seed
                    st.booleans(),  # 40 bits (RC2 and RC4)
                    st.sampled_from([w.CRYPT_MODE_CBC, w.CRYPT_MODE_CFB]),  # set on the key under way
                    st.integers(1, 4),  # blocks before and after the handoff
                    st.sampled_from(handoff_types),
                    st.booleans() if hw_algs else st.just(False),  # in hardware
                ),
                min_size=1,
                max_size=3,
            ),
        )
        def handoff_mid_stream(self, scenarios: list[tuple[int, int, bool, int, int, int, bool]]) -> Any:
            """The seed's scenario with a live state worth carrying, for each key drawn (:meth:`_mid_stream`)."""
            moved = [self._mid_stream(*scenario) for scenario in scenarios]
            return multiple(*(key for key in moved if key is not None))

        def _mid_stream(
            self, alg: int, seed: int, forty: bool, mode: int, blocks: int, blob_type: int, hardware: bool
        ) -> int | None:
            """A key (salted 40-bit RC2/RC4 too) under way, then given every parameter it takes (mode, mode bits,
            permissions, effective length, salt, IV), advanced further, exported (opaque: exactly this state, and
            never in plaintext, lacking CRYPT_EXPORT; plaintext: a fresh key), destroyed, imported twice on the app
            side and continued (a record encrypted with one import is decrypted with the other), then handed a
            record whose pad is wrong though its last byte is a length (a Final bad pad is NTE_BAD_DATA and resets
            the key; RC4 has no pad). Its first import, if any."""
            size = 5 if forty and alg in (w.CALG_RC2, w.CALG_RC4) else DEFAULT_KEY_BYTES[alg]
            hardware = hardware and alg in hw_algs
            # Exportable only where the blob type needs it: an opaque source without CRYPT_EXPORT lets a later
            # import show whether flags can add a permission.
            exportable = w.CRYPT_EXPORTABLE if blob_type == w.PLAINTEXTKEYBLOB else 0
            made = self.ls.import_plaintext(0, alg, seed, size, exportable, hardware)
            if not isinstance(made, int):
                return None
            block = 16 if alg in (w.CALG_AES_128, w.CALG_AES_192, w.CALG_AES_256) else 8
            # Every parameter the key takes is set, each on a key under way: a blob must carry each, and whether a set
            # resets the register or the stream (KP_EFFECTIVE_KEYLEN, KP_SALT and KP_IV do; KP_MODE, KP_MODE_BITS and
            # KP_PERMISSIONS do not) shows only on a key whose register has moved. Drawn as a subset on a fresh key,
            # whole quick runs went without one of them; the step-deleting minimiser keeps a reproducer to the sets
            # it needs.
            under_way = bytes(range(block))
            self.ls.encrypt(made, under_way, False)
            self.ls.set_key_param(made, w.KP_MODE, mode)  # RC4 stores it and ignores it
            self.ls.set_key_param(made, w.KP_MODE_BITS, 64)
            self.ls.set_key_param(made, w.KP_PERMISSIONS, 0)  # CRYPT_EXPORT stays where the key has it, the rest goes
            # On from the register those sets left, before the next reset hides a reset they must not make (states
            # are compared after each rule, not each call).
            self.ls.encrypt(made, under_way, False)
            for param, value, applies in (
                (w.KP_EFFECTIVE_KEYLEN, 64, alg == w.CALG_RC2),
                (w.KP_SALT, bytes(range(1, 12)), alg in (w.CALG_RC2, w.CALG_RC4)),
                (w.KP_IV, bytes(range(block)), alg != w.CALG_RC4),
            ):
                if applies:
                    self.ls.set_key_param(made, param, value)  # a reset
                    self.ls.encrypt(made, under_way, False)  # under way again
            self.ls.encrypt(made, bytes(range(block)) * blocks, False)
            if blob_type == w.OPAQUEKEYBLOB and w.PLAINTEXTKEYBLOB in caps.blob_types:
                # A session key without CRYPT_EXPORT leaves only as an opaque blob: never in plaintext (the
                # generic export rule seldom draws this pair).
                self.ls.export_key(made, w.PLAINTEXTKEYBLOB)
            blob = self.ls.export_key(made, blob_type)
            self.ls.destroy_key(made)
            if not isinstance(blob, int):
                return None
            for edit in (("flip", -1), ("append", "00")):  # a changed or extended copy must be refused
                self.ls.import_blob(1, blob, edit=edit)
            moved = self.ls.import_blob(1, blob, w.CRYPT_EXPORTABLE if blob_type == w.PLAINTEXTKEYBLOB else 0)
            again = self.ls.import_blob(1, blob, w.CRYPT_EXPORTABLE)  # a second, independent import
            self._read_back(moved)
            if isinstance(moved, int) and isinstance(again, int):
                # Continued in step: a record encrypted with one import is decrypted with the other (a decrypt in
                # the key's mode, CFB-8 too, moves the register as the encrypt does).
                self.ls.round_trip(moved, again, bytes(block) * blocks, False)
            elif isinstance(moved, int):
                self.ls.encrypt(moved, bytes(block) * blocks, False)
            if isinstance(moved, int) and isinstance(again, int) and alg != w.CALG_RC4:
                # A record whose pad is wrong though its last byte is a length (encrypted without Final on the
                # second import, in step with the first by construction): NTE_BAD_DATA, and the key resets.
                self.ls.round_trip(again, moved, _WRONG_PAD, True, encrypt_final=False)
            elif isinstance(moved, int):  # a record that does not decrypt (a bad pad, nearly always): the key resets
                self.ls.decrypt(moved, bytes(block), True)
            return moved if isinstance(moved, int) else None

        @precondition(lambda self: opaque)
        @rule(
            target=keys,
            prov=providers,
            blob=blobs,
            flags=st.sampled_from([0, 0, w.CRYPT_EXPORTABLE, 0x8000]),
            hardware=st.sampled_from([False, False, True]),
        )
        def import_blob(self, prov: int, blob: int, flags: int, hardware: bool) -> Any:
            return self._key(self.ls.import_blob(prov, blob, flags, hardware))

        @rule(
            target=keys,
            prov=providers,
            blob=blobs,
            edit=st.one_of(
                st.tuples(st.just("truncate"), st.integers(0, 200)),
                st.tuples(st.just("flip"), st.integers(0, 200)),
                st.tuples(st.just("append"), st.sampled_from(["00", "ff00"])),
                st.tuples(st.just("header"), st.integers(0, 7), st.integers(0, 255)),
            ),
        )
        def import_tampered_blob(self, prov: int, blob: int, edit: tuple[str | int, ...]) -> Any:
            return self._key(self.ls.import_blob(prov, blob, edit=edit))

        @precondition(lambda self: opaque)
        @rule(prov=providers, alg=st.sampled_from(algs), seed=st.integers(0, 1 << 16))
        def import_foreign_blob(self, prov: int, alg: int, seed: int) -> None:
            """An OPAQUEKEYBLOB from another installation is refused (NTE_BAD_DATA)."""
            self.ls.import_foreign(prov, alg, seed, DEFAULT_KEY_BYTES[alg])

        # --- use ----------------------------------------------------------------------------------------
        @rule(key=keys)
        def destroy_key(self, key: int) -> None:
            self.ls.destroy_key(key)

        @rule(
            key=keys,
            param=st.sampled_from([*_PARAMS_SET, w.KP_ALGID, 77]),
            number=st.sampled_from(
                [
                    w.CRYPT_MODE_CBC,
                    w.CRYPT_MODE_ECB,
                    w.CRYPT_MODE_CFB,
                    w.CRYPT_MODE_OFB,
                    w.CRYPT_MODE_CTS,
                    0,
                    1,
                    40,
                    128,
                    1025,
                    0x3B,
                    0x3F,
                    w.CRYPT_EXPORT,
                ]
            ),
            raw=st.binary(max_size=26),
            whole_block=st.booleans(),
            salt_of_11=st.sampled_from([True, True, True, False]),
        )
        def set_key_param(
            self, key: int, param: int, number: int, raw: bytes, whole_block: bool, salt_of_11: bool
        ) -> None:
            """KP_IV is often exactly one block, KP_SALT mostly exactly 11 bytes (the only length it takes; the
            rest keeps its refusal covered); KP_SALT_EX any length up to 26 (24 is its bound)."""
            value: bytes | int = number
            if param in (w.KP_IV, w.KP_SALT, w.KP_SALT_EX):
                value = raw
                if param == w.KP_IV and whole_block:
                    value = raw.ljust(16, b"\0")[: len(self.ls.model.inspect(self.ls.keys[key].model).iv)]
                elif param == w.KP_SALT and salt_of_11:
                    value = raw.ljust(11, b"\0")[:11]
            # Read before and after: a CSP that keeps a value it once answered, and misses the change, is caught
            # (random programs almost never read, set and read one parameter of one key).
            readable = param in GETTABLE_PARAMS
            if readable:
                self.ls.get_key_param(key, param)
            self.ls.set_key_param(key, param, value)
            if readable:
                self.ls.get_key_param(key, param)

        @precondition(lambda self: bool(salted))
        @rule(
            prov=providers,
            alg=st.sampled_from(salted or [0]),
            seed=st.integers(0, 1 << 16),
            edge=st.sampled_from(_AT_BOUNDS),
        )
        def set_key_param_at_its_bound(self, prov: int, alg: int, seed: int, edge: tuple[int, int]) -> None:
            """What RC2 and RC4 keys take, at and just past its bounds, on a key of its own: KP_SALT (exactly 11
            bytes), KP_SALT_EX (up to 24 bytes) and RC2's KP_EFFECTIVE_KEYLEN (1 to 1024 bits); then a block
            under the key (what it was set to keys the cipher). misuse_parameters sends the values past the
            bounds to a key of the bundle, mostly of another algorithm, which refuses them before their own
            checks: those were reached once in a few runs."""
            key = self.ls.import_plaintext(prov, alg, seed, DEFAULT_KEY_BYTES[alg], 0)
            if isinstance(key, int):
                param, size = edge
                self.ls.set_key_param(key, param, size if param == w.KP_EFFECTIVE_KEYLEN else bytes(range(size)))
                self.ls.encrypt(key, bytes(16), False)
                self.ls.destroy_key(key)

        @rule(key=keys, param=st.sampled_from([*GETTABLE_PARAMS, 77]))
        def get_key_param(self, key: int, param: int) -> None:
            self.ls.get_key_param(key, param)

        @rule(key=keys, size=_LENGTHS, final=st.booleans(), fill=st.integers(0, 255))
        def encrypt(self, key: int, size: int, final: bool, fill: int) -> None:
            self.ls.encrypt(key, bytes([fill]) * size, final)

        @rule(key=keys, size=_LENGTHS, final=st.booleans(), data=st.binary(min_size=64, max_size=64))
        def decrypt(self, key: int, size: int, final: bool, data: bytes) -> None:
            self.ls.decrypt(key, data[:size], final)

        @rule(key=keys, size=st.integers(1, 3), final=st.booleans())
        def round_trip(self, key: int, size: int, final: bool) -> None:
            """Encrypt on a duplicate, decrypt the ciphertext on the original: the shared register at work. A
            Final one is followed by a Final decrypt of a pad that is wrong though its last byte is a length (on
            a new duplicate: in step by construction), which a check of the last byte alone takes: random
            ciphertext seldom decrypts to one (only the thorough profile caught that defect)."""
            twin = self.ls.duplicate_key(key) if caps.duplicate else None
            if isinstance(twin, int):
                self.ls.round_trip(twin, key, bytes(range(16)) * size, final)
                self.ls.destroy_key(twin)
                if final and isinstance(forger := self.ls.duplicate_key(key), int):
                    self.ls.round_trip(forger, key, _WRONG_PAD, True, encrypt_final=False)
                    self.ls.destroy_key(forger)

        @precondition(lambda self: bool(hashes))
        @rule(key=keys, hash_alg=st.sampled_from([*hashes, w.CALG_MAC]), data=st.binary(max_size=40))
        def hmac(self, key: int, hash_alg: int, data: bytes) -> None:
            self.ls.hmac(key, hash_alg, data)

        # --- targeted walks: every lifecycle row and every parameter refusal, not left to chance -------
        @rule(
            side=st.sampled_from(["secure", "app"]),
            alg=st.sampled_from(hw_algs or algs),
            seed=st.integers(0, 1 << 16),
            exports=st.integers(0, 2),
            end=st.sampled_from(["destroy", "export_destroy", "release"]),
        )
        def lifecycle_walk(self, side: str, alg: int, seed: int, exports: int, end: str) -> None:
            """Generated and imported keys, in software and (where the target has a token) in hardware, in a
            context of their own, exported 0-2 times, then all ended by destroy, CRYPT_DESTROYKEY or release;
            each handle is then used once more (it must be dead)."""
            prov = self.ls.acquire(side)
            if prov < 0:
                return
            made: list[int | Observed] = []
            for hardware in (False, True) if alg in hw_algs else (False,):
                made.append(self.ls.gen_key(prov, alg, w.CRYPT_EXPORTABLE, hardware))
                size = DEFAULT_KEY_BYTES[alg]
                made.append(self.ls.import_plaintext(prov, alg, seed, size, w.CRYPT_EXPORTABLE, hardware))
            keys = [key for key in made if isinstance(key, int)]
            blob_type = w.OPAQUEKEYBLOB if opaque else w.PLAINTEXTKEYBLOB
            for key in keys:
                for _ in range(exports):
                    blob = self.ls.export_key(key, blob_type)
                    if isinstance(blob, int):  # a copy with its last byte changed must be refused
                        self.ls.import_blob(prov, blob, edit=("flip", 10_000))
                if end == "destroy":
                    self.ls.destroy_key(key)
                elif end == "export_destroy":
                    self.ls.export_key(key, blob_type, w.CRYPT_DESTROYKEY)
            if end == "release":
                self.ls.release(prov)
            for key in keys:
                self.ls.encrypt(key, bytes(16), False)
                self.ls.destroy_key(key)

        @rule(
            key=keys,
            mode=st.sampled_from([w.CRYPT_MODE_OFB, w.CRYPT_MODE_CTS, 9]),
            bad=st.sampled_from(
                [
                    (w.KP_PADDING, 2),
                    (w.KP_EFFECTIVE_KEYLEN, 0),
                    (w.KP_EFFECTIVE_KEYLEN, 1025),
                    (w.KP_SALT, b"x" * 12),
                    (w.KP_SALT_EX, b"x" * 25),
                    (w.KP_PERMISSIONS, 0x3F),
                    (w.KP_KEYLEN, 128),
                    (w.KP_ALGID, 1),
                    (77, 0),
                    (w.KP_IV, b"short"),
                ]
            ),
            get=st.sampled_from([77, 0, 1000]),
        )
        def misuse_parameters(self, key: int, mode: int, bad: tuple[int, bytes | int], get: int) -> None:
            """An unusable mode is accepted and refused at use; bad values and read-only or unknown parameters
            are refused with their codes; the key's state must not change through any of it."""
            before = self.ls.get_key_param(key, w.KP_MODE)
            self.ls.set_key_param(key, bad[0], bad[1])
            self.ls.get_key_param(key, get)
            self.ls.decrypt(key, b"", True)
            self.ls.encrypt(key, bytes(13), False)  # ragged for every block cipher
            self.ls.decrypt(key, bytes(13), False)
            self.ls.export_key(key, 0x55)
            self.ls.export_key(key, w.OPAQUEKEYBLOB if opaque else w.PLAINTEXTKEYBLOB, 0x100)
            if before.ok and isinstance(before.value, int) and before.value:
                self.ls.set_key_param(key, w.KP_MODE, mode)
                self.ls.get_key_param(key, w.KP_MODE)  # the new mode, not the answer read before the change
                self.ls.encrypt(key, bytes(16), False)
                self.ls.set_key_param(key, w.KP_MODE, before.value)

        # --- invariants ---------------------------------------------------------------------------------
        @invariant()
        def states_agree(self) -> None:
            """Full states agree (a white box), or at least the token's object count: destroy never deletes a
            hardware object."""
            self.ls.check_invariants()

    KeyhandoffMachine.__name__ = f"{name}Machine"
    KeyhandoffMachine.__qualname__ = KeyhandoffMachine.__name__
    return KeyhandoffMachine


# The one thing wrong in each near-miss import (the machine's import_near_miss), each the subject of one refusal
# rule of the model, in its order: the header, hPubKey, the flags, the algorithm, the length field, the body, the
# key's length.
_NEAR_MISSES = (
    "header cut",
    "version",
    "reserved",
    "type",
    "hPubKey",
    "flag",
    "algorithm",
    "length cut",
    "short",
    "long",
    "key length",
)


def _near_miss(alg: int, defect: str, pick: int) -> bytes:
    """A PLAINTEXTKEYBLOB of a right ``alg`` key, but for ``defect`` (the blob is right for "hPubKey" and "flag":
    the call's arguments are wrong); ``pick`` chooses among that defect's forms."""
    size = DEFAULT_KEY_BYTES[alg]
    blob_type, version, reserved, length, body = w.PLAINTEXTKEYBLOB, w.CUR_BLOB_VERSION, 0, size, size
    if defect == "version":
        version = (0, 1, 3, 0xFF)[pick % 4]
    elif defect == "reserved":
        reserved = (1, 0x100, 0xFFFF)[pick % 3]
    elif defect == "type":
        blob_type = (0, 0x55)[pick % 2]
    elif defect == "algorithm":
        alg = (0x1234, *_NOT_KEY_ALGS)[pick % 3]
    elif defect == "short":
        body = pick % size
    elif defect == "long":
        body = size + 1 + pick % 2
    elif defect == "key length":  # no session key has 0, 33 or 40 bytes (RC2 and RC4 take them for HMAC only)
        length = body = (0, 33, 40)[pick % 3]
    blob = struct.pack("<BBHII", blob_type, version, reserved, alg, length) + bytes(range(1, body + 1))
    if defect == "header cut":
        return blob[: pick % w.BLOBHEADER_SIZE]
    if defect == "length cut":
        return blob[: w.BLOBHEADER_SIZE + pick % 4]
    return blob


def _forged(alg: int, blob_type: int, version: int, length: int, delta: int) -> bytes:
    """A hand-made blob: a header with chosen type and version, a length field, and a body off by ``delta``."""
    body = bytes(max(0, length + delta))
    return struct.pack("<BBHII", blob_type, version, 0, alg, length) + body
