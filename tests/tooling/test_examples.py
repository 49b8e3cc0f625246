"""The runnable examples in docs/examples run as their docstrings say (they are not collected on their own)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"


def test_vendor_adapter_passes_under_pytest() -> None:
    """`python -m pytest docs/examples/vendor_adapter.py`: its conformance test runs and passes."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLES / "vendor_adapter.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout


def test_vendor_adapter_passes_keyhandoff_check(tmp_path: Path) -> None:
    """`keyhandoff check --target python:vendor_adapter:make_target` with the folder on PYTHONPATH passes."""
    env = {**os.environ, "PYTHONPATH": str(EXAMPLES)}
    result = subprocess.run(
        ["keyhandoff", "check", "--target", "python:vendor_adapter:make_target", "--profile", "quick", "--seed", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "PASSED" in result.stdout
