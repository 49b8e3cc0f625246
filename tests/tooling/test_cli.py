"""The keyhandoff command line and the package's importability from anywhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import keyhandoff
from keyhandoff.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_version(capsys) -> None:
    """keyhandoff --version prints the package version."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert keyhandoff.__version__ in capsys.readouterr().out


def test_help_lists_commands(capsys) -> None:
    """keyhandoff --help describes the tool and its commands."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "OPAQUEKEYBLOB" in out
    assert "vectors" in out


def test_vectors_command_passes_on_the_model(capsys) -> None:
    """keyhandoff vectors runs every known-answer vector (whole, handoff, duplicate) and exits 0."""
    assert main(["vectors", "--target", "model"]) == 0
    out = capsys.readouterr().out
    assert "all vectors passed" in out
    assert "handoff" in out


def test_vectors_command_fails_on_wrong_vectors(tmp_path: Path, capsys) -> None:
    """A vector file with a wrong ciphertext makes the command fail (exit 1)."""
    text = (ROOT / "keyhandoff" / "data" / "kat.json").read_text()
    bad = tmp_path / "bad.json"
    bad.write_text(text.replace("7649abac8119b246", "7649abac8119b247", 1))
    assert main(["vectors", "--file", str(bad)]) == 1
    assert "FAIL sp800-38a-F.2.1-cbc-aes128" in capsys.readouterr().out


def test_console_script_from_another_directory(tmp_path: Path) -> None:
    """The installed console script and the subpackages import from any directory."""
    code = "import keyhandoff.model, keyhandoff.impl, keyhandoff.targets; print(keyhandoff.model.ErrorCode(0x80090003))"
    for cwd in (tmp_path, ROOT):
        result = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "NTE_BAD_KEY (0x80090003)"
    script = subprocess.run(["keyhandoff", "--version"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert script.returncode == 0
    assert keyhandoff.__version__ in script.stdout
