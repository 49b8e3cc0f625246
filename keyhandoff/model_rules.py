"""The model's refusal rules, read from its source, so that a run can say which rules of the specification it
exercised and which it never did.

A rule is the text a refusal carries (``refuse(world, code, text)`` or ``Refused(code, text)`` in the model; the
model target keeps the latest as ``last_rule``). Read from the source rather than listed by hand, the catalogue
cannot fall behind the model. Some rules no program of the Target protocol can reach, and some fire only where
the target has a capability: both are named here by text, and a test checks each text is still one of the model's.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import attrs

import keyhandoff.model
from keyhandoff.target import Capabilities

__all__ = ["NEEDS", "UNREACHABLE", "RefusalRule", "reachable_rules", "refusal_rules"]


@attrs.frozen
class RefusalRule:
    """One refusal rule of the model: its text, its code's name ("varies" where the code is computed) and the
    model functions that refuse with it."""

    text: str
    code: str
    where: tuple[str, ...]


_TOKEN_ADMIN = "token administration (deleting a token object) is not part of the Target protocol"
_OWN_TYPES = "the machine passes each parameter its own type (wrong types: tests/integration/test_processes.py)"
# Rules no program of the Target protocol can reach, and why.
UNREACHABLE: dict[str, str] = {
    "hExpKey must be 0 for this blob type": "the Target protocol's export_key takes no export key",
    "this parameter takes a DWORD": _OWN_TYPES,
    "this parameter takes bytes": _OWN_TYPES,
    "no such token object": _TOKEN_ADMIN,
    "the blob's token object no longer exists": _TOKEN_ADMIN,
    "the key's token object no longer exists": _TOKEN_ADMIN,
}
# Rules that only a target with a capability can reach: hardware keys, OPAQUEKEYBLOBs, HMAC.
NEEDS: dict[str, str] = {
    "hardware key material never leaves the token": "hardware",
    "hardware keys are not used for HMAC": "hardware",
    "the token cannot hold keys of this algorithm": "hardware",
    "not an OPAQUEKEYBLOB issued by this installation": "opaque",
    "flag not accepted for OPAQUEKEYBLOB import": "opaque",
    "HMAC hash algorithm not supported": "hmac",
    "key imported for HMAC only": "hmac",
}


@functools.cache
def refusal_rules() -> tuple[RefusalRule, ...]:
    """Every refusal rule in the model's source, in the order of its modules and lines."""
    found: dict[str, RefusalRule] = {}
    folder = Path(keyhandoff.model.__file__).parent
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef):
                continue
            for call in ast.walk(function):
                rule = _rule_of(call)
                if rule is None:
                    continue
                text, code = rule
                where = f"{path.stem}.{function.name}"
                known = found.get(text)
                found[text] = RefusalRule(text, code, (*known.where, where) if known else (where,))
    return tuple(found.values())


def _rule_of(node: ast.AST) -> tuple[str, str] | None:
    """(text, code name) of a ``refuse(world, code, "text")`` or ``Refused(code, "text")`` call, else None."""
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        return None
    position = {"refuse": 1, "Refused": 0}.get(node.func.id)
    if position is None or len(node.args) < position + 2:
        return None
    code, text = node.args[position], node.args[position + 1]
    if not isinstance(text, ast.Constant) or not isinstance(text.value, str):
        return None
    if isinstance(code, ast.Attribute) and isinstance(code.value, ast.Name) and code.value.id == "ErrorCode":
        return text.value, code.attr
    return text.value, "varies"  # computed (a key length's code depends on the algorithm)


def reachable_rules(caps: Capabilities) -> list[RefusalRule]:
    """The rules a run against a target with ``caps`` can reach."""
    have = {"hardware": caps.hardware, "opaque": caps.opaque, "hmac": bool(caps.hmac_algorithms)}
    return [
        rule for rule in refusal_rules() if rule.text not in UNREACHABLE and have.get(NEEDS.get(rule.text, ""), True)
    ]
