"""Suite-wide settings: Hypothesis profiles, and no silent skips under CI."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") == "true" else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Under CI=true a skipped test is a failure: a missing real component must not pass unnoticed."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which is not allowed: {report.longrepr}"


_ROOT = Path(__file__).resolve().parents[1]
_WATCHED = (_ROOT, _ROOT / "docs" / "examples")  # where a command run from the checkout writes its files
# Tools' own folders; .benchmarks is pytest-benchmark's, made in the root by any pytest run where it is installed.
_CACHES = {
    ".hypothesis",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".import_linter_cache",
    ".benchmarks",
    "build",
    ".venv",
}


def _entries() -> set[Path]:
    return {entry for folder in _WATCHED for entry in folder.iterdir()}


@pytest.fixture(autouse=True)
def _nothing_left_in_the_checkout() -> Iterator[None]:
    """A test writes under tmp_path, never into the checkout: a failure trace left in the root was once committed
    with the work (a check run from a test, in the test's working directory)."""
    before = _entries()
    yield
    left = sorted(
        str(entry.relative_to(_ROOT))
        for entry in _entries() - before
        if entry.name not in _CACHES and not entry.name.endswith(".egg-info")
    )
    assert not left, f"the test left {left} in the checkout: write under tmp_path"
