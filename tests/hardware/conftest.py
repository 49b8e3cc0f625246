"""Fixtures of the hardware tests: a fresh SoftHSM2 token per test, its configuration and a token on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hardware.softhsm import ENV_PIN, ENV_TOKEN, MODULE, softhsm_token


@pytest.fixture
def hsm_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A fresh token for this test, selected through the environment (inherited by child processes)."""
    env = softhsm_token(tmp_path / "softhsm")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("KEYHANDOFF_PKCS11_PIN_FILE", raising=False)
    monkeypatch.delenv("KEYHANDOFF_TOKEN", raising=False)
    return env


@pytest.fixture
def config(hsm_env: dict[str, str]) -> Any:
    """The Pkcs11Config of this test's token."""
    p11 = pytest.importorskip("keyhandoff.impl.pkcs11_token", reason="python-pkcs11 is not installed")
    return p11.Pkcs11Config(MODULE, hsm_env[ENV_TOKEN], hsm_env[ENV_PIN])


@pytest.fixture
def token(config: Any) -> Iterator[Any]:
    """A Pkcs11Token (namespace ns1) on this test's token."""
    p11 = pytest.importorskip("keyhandoff.impl.pkcs11_token", reason="python-pkcs11 is not installed")
    t = p11.Pkcs11Token(config, "ns1")
    yield t
    t.close()
