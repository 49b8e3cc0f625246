"""The project's own bars, run as tests: ruff, mypy --strict, the import-linter layering, fresh generated docs."""

from __future__ import annotations

import pkgutil
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import keyhandoff.model
from keyhandoff.docgen import _finding
from keyhandoff.model import wincrypt as w
from keyhandoff.target import Deviation

ROOT = Path(__file__).resolve().parents[2]
VOCABULARY = {"wincrypt", "errors", "state", "rc2"}


def _run(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600, env=env, check=False)


def _tool(name: str) -> str:
    """The tool installed beside this interpreter (the project's environment), else the one on PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def test_ruff_clean() -> None:
    """ruff finds nothing and the tree is formatted."""
    check = _run(_tool("ruff"), "check", ".")
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = _run(_tool("ruff"), "format", "--check", ".")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy_strict(tmp_path: Path) -> None:
    """mypy --strict passes on the installed package (model and impl included), run away from the checkout."""
    result = _run(sys.executable, "-m", "mypy", "--strict", "-p", "keyhandoff", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "keyhandoff/model"
        in _run(sys.executable, "-m", "mypy", "--strict", "-v", "-p", "keyhandoff", cwd=tmp_path).stderr
    )


def test_layering_contracts_hold(tmp_path: Path) -> None:
    """The model imports neither impl nor the tool; impl imports only the model's vocabulary."""
    result = _run(_tool("lint-imports"), str(ROOT / "pyproject.toml"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_contract_forbids_every_model_module_but_the_vocabulary() -> None:
    """A model module added later is forbidden to impl unless it is declared vocabulary."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contract = config["tool"]["importlinter"]["contracts"][1]
    forbidden = {m.removeprefix("keyhandoff.model.") for m in contract["forbidden_modules"] if ".model." in m}
    modules = {info.name for info in pkgutil.iter_modules(keyhandoff.model.__path__)}
    assert forbidden == modules - VOCABULARY


def test_layering_contract_catches_a_planted_violation(tmp_path: Path) -> None:
    """An impl module importing model logic breaks the contract (the check can fail)."""
    pkg = tmp_path / "keyhandoff"
    shutil.copytree(ROOT / "keyhandoff", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "model", pkg / "model", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "impl", pkg / "impl", ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "impl" / "planted.py").write_text("from keyhandoff.model import crypt\n")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = _run(_tool("lint-imports"), str(ROOT / "pyproject.toml"), "--no-cache", cwd=tmp_path, env=env)
    assert result.returncode != 0
    assert "keyhandoff.impl.planted -> keyhandoff.model.crypt" in result.stdout


@pytest.mark.parametrize("doc", ["docs/model.md", "docs/findings.md"])
def test_generated_doc_is_fresh(doc: str) -> None:
    """docs/model.md holds the diagram, table and rules generated from the model as it is; docs/findings.md the
    capi target's declared deviations and their reproducers."""
    result = _run(sys.executable, "-m", "keyhandoff.docgen", doc, "--check")
    assert result.returncode == 0, result.stderr


def test_stale_doc_is_detected(tmp_path: Path) -> None:
    """The freshness check fails on a doc whose generated diagram was edited by hand."""
    stale = tmp_path / "model.md"
    text = (ROOT / "docs" / "model.md").read_text()
    stale.write_text(text.replace("IMPORTED --> EXPORTED", "IMPORTED --> CREATED", 1))
    result = _run(sys.executable, "-m", "keyhandoff.docgen", str(stale), "--check")
    assert result.returncode == 1


@pytest.mark.parametrize(
    ("operation", "says"),
    [
        ("import_key", "(retired: a key only the target made is destroyed; one only the model made goes on alone)"),
        ("gen_key,duplicate_key", "(retired: a key only the target made is destroyed"),
        ("encrypt", "(retired: the key is detached and the model goes on alone)"),
        ("import_key,encrypt", "(retired: the key is detached and the model goes on alone)"),
    ],
)
def test_a_retired_finding_says_what_retiring_does_to_its_operation(operation: str, says: str) -> None:
    """On a call that makes a key, retiring destroys what only the target made; on any other, the key named is
    detached (keyhandoff.lockstep._retire)."""
    text = _finding(Deviation("some-id", operation, w.NTE_BAD_DATA, None, "some difference", retire=True))
    assert says in text
