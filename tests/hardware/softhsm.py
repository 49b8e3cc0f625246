"""A fresh SoftHSM2 token for one test: a private SOFTHSM2_CONF (its own token directory, file backend) and a
token initialised with softhsm2-util. Skips (a failure under CI=true, see tests/conftest.py) when SoftHSM2 is
missing."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

MODULE = os.environ.get("KEYHANDOFF_TEST_PKCS11_MODULE", "/usr/lib/softhsm/libsofthsm2.so")
SOFTHSM2_UTIL = shutil.which("softhsm2-util")

# The variable names of keyhandoff.impl.pkcs11_token (not imported here: python-pkcs11 may be missing).
ENV_MODULE = "KEYHANDOFF_PKCS11_MODULE"
ENV_TOKEN = "KEYHANDOFF_PKCS11_TOKEN"
ENV_PIN = "KEYHANDOFF_PKCS11_PIN"


def softhsm_token(root: Path) -> dict[str, str]:
    """A fresh SoftHSM2 token under root; the environment that selects it (config, module, label, PIN)."""
    if SOFTHSM2_UTIL is None:
        pytest.skip("softhsm2-util is not installed (apt-get install softhsm2)")
    if not Path(MODULE).exists():
        pytest.skip(f"the SoftHSM2 module {MODULE} is missing")
    tokens = root / "tokens"
    tokens.mkdir(parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    label = "kh-" + secrets.token_hex(6)
    pin = secrets.token_hex(4)
    env = {"SOFTHSM2_CONF": str(conf)}
    subprocess.run(
        [SOFTHSM2_UTIL, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", secrets.token_hex(4)],
        check=True,
        capture_output=True,
        env={**os.environ, **env},
    )
    return {**env, ENV_MODULE: MODULE, ENV_TOKEN: label, ENV_PIN: pin}
