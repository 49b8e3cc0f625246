"""The runnable examples in docs/examples run as their docstrings say (they are not collected on their own)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from keyhandoff.model.wincrypt import describe_code

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"


def _passes(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a documented command; it must exit 0. Its output."""
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


def test_vendor_adapter_passes_under_pytest() -> None:
    """`python -m pytest docs/examples/vendor_adapter.py`: its conformance test runs and passes."""
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLES / "vendor_adapter.py")]
    assert "1 passed" in _passes(argv, ROOT)


def test_vendor_adapter_passes_keyhandoff_check(tmp_path: Path) -> None:
    """`keyhandoff check --target python:vendor_adapter:make_target` with the folder on PYTHONPATH passes."""
    argv = ["keyhandoff", "check", "--target", "python:vendor_adapter:make_target", "--profile", "quick", "--seed", "2"]
    assert "PASSED" in _passes(argv, tmp_path, {**os.environ, "PYTHONPATH": str(EXAMPLES)})


def test_a_python_target_is_found_in_the_current_directory() -> None:
    """`keyhandoff check --target python:vendor_adapter:make_target` run from the folder that holds the module
    finds it without PYTHONPATH, as `python -m` would."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    argv = ["keyhandoff", "check", "--target", "python:vendor_adapter:make_target", "--profile", "quick"]
    assert "PASSED" in _passes([*argv, "--examples", "3", "--seed", "2"], EXAMPLES, env)


def test_line_peer_passes_keyhandoff_check(tmp_path: Path) -> None:
    """`keyhandoff check --target "line:python docs/examples/line_peer.py"`: the built-in CSP behind the line
    protocol conforms, so the protocol and its adapter are checked without Wine too."""
    spec = f"line:{shlex.quote(sys.executable)} {shlex.quote(str(EXAMPLES / 'line_peer.py'))}"
    argv = ["keyhandoff", "check", "--target", spec, "--profile", "quick", "--seed", "3"]
    assert "PASSED" in _passes(argv, tmp_path)


def test_line_peer_refuses_what_is_not_the_protocol() -> None:
    """The example peer answers a request outside the protocol ERROR_BAD_FORMAT, as docs/targets.md asks."""
    requests = "hello\nfrobnicate 1\nacquire\nencrypt x 0 -\nacquire app\nquit\n"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "line_peer.py")], input=requests, capture_output=True, text=True, check=False
    )
    replies = result.stdout.splitlines()
    assert replies[0].startswith("ok 1 python ")
    assert replies[1:4] == ["err 0x0000000b"] * 3
    assert describe_code(int(replies[1].split()[1], 0)) == "ERROR_BAD_FORMAT (0x0000000B)"  # reports name it
    assert replies[4].startswith("ok ")
    assert int(replies[4].split()[1]) > 0
    assert replies[5] == "ok"


def test_a_peer_that_exits_mid_run_is_reported_with_its_exit_status(tmp_path: Path) -> None:
    """The example peer made to exit with status 3 at the program's first destroy: the failure names PeerExited
    and the status (it said only "PeerExited"), and not the peer's stderr, which may quote values."""
    import pytest

    from keyhandoff.lockstep import Divergence, Lockstep
    from keyhandoff.model import wincrypt as w
    from keyhandoff.targets import load

    script = tmp_path / "dying_peer.py"
    script.write_text(
        "import os, sys, tempfile\n"
        f"sys.path.insert(0, {str(EXAMPLES)!r})\n"
        "import line_peer\n"
        "from keyhandoff.impl.builtin import BuiltinCsp\n"
        "def lines():\n"
        "    acquired = 0\n"
        "    for line in sys.stdin:\n"
        "        acquired += line.startswith('acquire ')\n"
        "        if acquired > 1 and line.startswith('destroy '):  # the capability probe acquires once\n"
        "            sys.stderr.write('secret-looking words\\n')\n"
        "            sys.stderr.flush()\n"
        "            os._exit(3)\n"
        "        yield line\n"
        f"csp = BuiltinCsp(tempfile.mkdtemp(dir={str(tmp_path)!r}))\n"
        "line_peer.serve(csp, lines(), lambda t: print(t, flush=True))\n",
        encoding="utf-8",
    )
    target = load(f"line:{shlex.quote(sys.executable)} {shlex.quote(str(script))}")
    try:
        ls = Lockstep(target)
        ls.acquire("secure")
        key = ls.gen_key(0, w.CALG_AES_128)
        assert key == 0
        with pytest.raises(Divergence) as caught:
            ls.destroy_key(key)
        assert "PeerExited (exit status 3)" in str(caught.value)
        assert "secret-looking" not in str(caught.value)
    finally:
        target.close()


def test_the_adapter_shape_in_the_docs_names_every_target_method() -> None:
    """docs/conformance.md's adapter shape lists the Target protocol's methods, no more and no fewer (it lacked
    ``release``: an adapter copied from it was refused as NotATarget)."""
    import re

    from keyhandoff.target import missing_methods

    text = (ROOT / "docs" / "conformance.md").read_text(encoding="utf-8")
    block = text.split("class VendorTarget:", 1)[1].split("```", 1)[0]
    shown = re.findall(r"^    def (\w+)\(", block, flags=re.MULTILINE)
    assert sorted(shown) == sorted(missing_methods(object()))
