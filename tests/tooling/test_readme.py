"""The README's example and commands stay true."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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
