"""`keyhandoff findings`: each declared deviation's reproducer is replayed; a declaration the target no longer
needs (stale), one another declaration already covers (not needed) and one whose program meets something
undeclared (diverges) are told apart from a confirmed one. Against planted targets built on the model."""

from __future__ import annotations

import attrs
import pytest

from keyhandoff.cli import main
from keyhandoff.findings import check_findings
from keyhandoff.model import wincrypt as w
from keyhandoff.target import Capabilities, Deviation
from keyhandoff.targets.model_target import ModelTarget

_PROGRAM = (
    {"op": "acquire", "side": "app"},
    {"op": "import_plaintext", "prov": 0, "alg": w.CALG_DES, "seed": 0, "size": 8, "flags": 0},
    {"op": "get_key_param", "key": 0, "param": w.KP_MODE_BITS},
)
_ZERO = Deviation(
    "mode-bits-zero", "get_key_param", None, None, "KP_MODE_BITS reads 0", param=w.KP_MODE_BITS, reproducer=_PROGRAM
)


class ModeBitsZero(ModelTarget):
    """A planted difference: KP_MODE_BITS reads 0, declared with its reproducer."""

    declared: tuple[Deviation, ...] = (_ZERO,)

    def get_key_param(self, key: int, param: int) -> bytes | int:
        value = super().get_key_param(key, param)
        return 0 if param == w.KP_MODE_BITS else value

    def capabilities(self) -> Capabilities:
        return attrs.evolve(super().capabilities(), deviations=type(self).declared)


class Fixed(ModelTarget):
    """The same declaration on a target that no longer has the difference."""

    def capabilities(self) -> Capabilities:
        return attrs.evolve(super().capabilities(), deviations=(_ZERO,))


class Twice(ModeBitsZero):
    """Two declarations that cover the same difference: neither is needed alone."""

    declared = (_ZERO, attrs.evolve(_ZERO, id="mode-bits-again"))


class Elsewhere(ModeBitsZero):
    """A reproducer that meets an undeclared difference before its own."""

    declared = (attrs.evolve(_ZERO, reproducer=(*_PROGRAM[:2], {**_PROGRAM[2], "param": w.KP_MODE}, _PROGRAM[2])),)

    def get_key_param(self, key: int, param: int) -> bytes | int:
        return 99 if param == w.KP_MODE else super().get_key_param(key, param)


@pytest.mark.parametrize(
    ("target", "verdicts"),
    [
        (ModeBitsZero, {"mode-bits-zero": "confirmed"}),
        (Fixed, {"mode-bits-zero": "stale"}),
        (Twice, {"mode-bits-zero": "not needed", "mode-bits-again": "shadowed"}),
        (Elsewhere, {"mode-bits-zero": "diverges"}),
    ],
)
def test_verdicts(target: type[ModelTarget], verdicts: dict[str, str]) -> None:
    checks = check_findings(target)
    assert {c.id: c.verdict for c in checks} == verdicts
    assert all(c.ok == (c.verdict == "confirmed") for c in checks)


def test_confirmed_detail_names_the_divergence_without_it() -> None:
    (check,) = check_findings(ModeBitsZero)
    assert "csp.get_key_param(k0, 5): model 8, target 0" in check.detail


def test_unknown_id_is_refused() -> None:
    with pytest.raises(ValueError, match="no declared deviation nope"):
        check_findings(ModeBitsZero, ["nope"])


def test_cli_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    """0 when every finding is confirmed, 1 when one is not (the model target declares none: 0, said so)."""
    assert main(["findings", "--target", "model"]) == 0
    assert "declares no deviation" in capsys.readouterr().out
    assert main(["findings", "--target", "model", "--only", "nope"]) == 2
