"""The README's example and commands stay true."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_readme_example_runs(tmp_path: Path) -> None:
    """The README's Python example runs and prints the refusal it promises."""
    code = re.search(r"```python\n(.*?)```", README, re.S)
    assert code is not None
    result = subprocess.run([sys.executable, "-c", code.group(1)], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "encrypt: NTE_BAD_KEY (0x80090003)"


def test_readme_commands_exist() -> None:
    """The README's two commands name things that exist: the CI script and a console-script subcommand."""
    blocks = re.findall(r"```sh\n(.*?)```", README, re.S)
    assert len(blocks) == 2
    assert blocks[0].strip().endswith("keyhandoff check")
    assert blocks[1].strip() == "bash .ci/run"
    assert (ROOT / ".ci" / "run").is_file()


def _bare_install_modules() -> set[str]:
    """The top-level modules a bare ``pip install .`` brings: keyhandoff's and those of its dependencies, taken
    transitively without extras (the test setup installs more: the ``pkcs11`` extra, pytest, the linters)."""
    wanted, todo = set(), ["keyhandoff"]
    while todo:
        name = todo.pop()
        if name in wanted:
            continue
        wanted.add(name)
        for text in importlib.metadata.distribution(name).requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    by_module = importlib.metadata.packages_distributions()
    return {
        module for module, dists in by_module.items() if any(canonicalize_name(dist) in wanted for dist in dists)
    } | {"keyhandoff"}


_BARE = """
import importlib.machinery
import site
import sys

ALLOWED = set({allowed!r})
THIRD_PARTY = tuple(site.getsitepackages() + [site.getusersitepackages()])


class OnlyTheBareInstall:
    \"\"\"Refuses every installed third-party module a bare install would not have.\"\"\"

    @staticmethod
    def find_spec(name, path=None, target=None):
        if "." in name or name in ALLOWED:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        places = [spec.origin or "", *(spec.submodule_search_locations or ())] if spec is not None else []
        if any(place.startswith(THIRD_PARTY) for place in places):  # a module file, or a namespace package's
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in a bare install)", name=name)
        return None


sys.meta_path.insert(0, OnlyTheBareInstall)
"""


def test_main_command_runs_on_a_bare_install(tmp_path: Path) -> None:
    """The README's first command installs keyhandoff without extras and runs ``keyhandoff check``: it must pass
    with only those dependencies importable, in this process and in the app process it spawns (a
    ``sitecustomize`` refuses the rest in both). It once failed at its first step: every run imported the
    PKCS#11 token's module, and python-pkcs11 is an extra."""
    allowed = _bare_install_modules()
    assert "pkcs11" not in allowed  # the refusal has something to refuse
    assert "pytest" not in allowed
    assert {"cryptography", "hypothesis", "attr", "platformdirs"} <= allowed
    (tmp_path / "sitecustomize.py").write_text(_BARE.format(allowed=sorted(allowed)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    probe = subprocess.run(
        [sys.executable, "-c", "import pkcs11"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert "not in a bare install" in probe.stderr  # the sitecustomize is in force
    run = subprocess.run(
        [sys.executable, "-m", "keyhandoff.cli", "check", "--examples", "5", "--steps", "20", "--seed", "3"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "target builtin-processes" in run.stdout
    assert "PASSED" in run.stdout
