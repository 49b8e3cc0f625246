"""Running the CAPI bridge: built from its shipped C source with mingw, run natively on Windows or under Wine.

The bridge is built once per source version into keyhandoff's cache (``KEYHANDOFF_CACHE``, else the platform's
user cache dir) and reused; ``KEYHANDOFF_CAPI_BRIDGE`` names a prebuilt one instead. Under Wine the bridge runs in
keyhandoff's own prefix (``KEYHANDOFF_WINEPREFIX``, else ``<cache>/wineprefix``), created once (about 700 MB, a few
seconds) and reused. Its ``wineserver`` is kept up while any target or run holds the prefix (a bridge then starts
in ~0.03 s instead of ~0.4 s) and stopped when the last one lets go.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import IO

import platformdirs

from keyhandoff.target import TargetUnavailable

if sys.platform != "win32":
    import fcntl

__all__ = ["WinePrefix", "WineUnavailable", "bridge_command", "build_bridge", "cache_dir"]

COMPILER = "x86_64-w64-mingw32-gcc"


class WineUnavailable(TargetUnavailable):
    """What running the bridge needs is not installed (Wine, or the mingw compiler); the message says what."""


def cache_dir() -> Path:
    path = Path(os.environ.get("KEYHANDOFF_CACHE") or platformdirs.user_cache_dir("keyhandoff"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (two runs may build the bridge or create the prefix at once)."""
    if sys.platform == "win32":  # no Wine to set up there; builds are rare enough to go unlocked
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_bridge() -> Path:
    """The bridge executable: ``KEYHANDOFF_CAPI_BRIDGE`` if set, else built from the shipped source (once per
    source version; concurrent builders are serialised and the result lands atomically)."""
    given = os.environ.get("KEYHANDOFF_CAPI_BRIDGE")
    if given:
        if not Path(given).is_file():
            raise WineUnavailable(f"KEYHANDOFF_CAPI_BRIDGE names {given}, which does not exist")
        return Path(given)
    source = resources.files("keyhandoff.bridges").joinpath("capi", "bridge.c").read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    cache = cache_dir()
    exe = cache / f"capi-bridge-{digest}.exe"
    if exe.is_file():
        return exe
    compiler = shutil.which(COMPILER)
    if compiler is None:
        raise WineUnavailable(f"building the CAPI bridge needs {COMPILER} (Debian: package gcc-mingw-w64-x86-64)")
    with _locked(cache / "capi-bridge.lock"):
        if exe.is_file():
            return exe
        with tempfile.TemporaryDirectory(dir=cache) as work:
            src = Path(work) / "bridge.c"
            src.write_bytes(source)
            built = Path(work) / "bridge.exe"
            result = subprocess.run(
                [compiler, "-O2", "-Wall", "-Wextra", "-o", str(built), str(src), "-ladvapi32"],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise WineUnavailable(f"building the CAPI bridge failed:\n{result.stderr.strip()}")
            os.replace(built, exe)
    return exe


def _wine() -> str:
    wine = os.environ.get("KEYHANDOFF_WINE") or shutil.which("wine")
    if wine is None:
        raise WineUnavailable(
            "running the CAPI bridge off Windows needs Wine "
            "(Debian: apt-get install --no-install-recommends wine wine64)"
        )
    return wine


class WinePrefix:
    """keyhandoff's Wine prefix and its wineserver, shared by every target of this process (see module doc)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._holders = 0
        self._lock = threading.Lock()
        self._hold_file: IO[str] | None = None  # a shared lock on it while this process holds the prefix

    @classmethod
    def default(cls) -> WinePrefix:
        path = Path(os.environ.get("KEYHANDOFF_WINEPREFIX") or cache_dir() / "wineprefix")
        with _PREFIXES_LOCK:
            return _PREFIXES.setdefault(path, cls(path))

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(WINEPREFIX=str(self.path), WINEDEBUG="-all", WINEDLLOVERRIDES="mscoree,mshtml=")
        env.pop("DISPLAY", None)  # headless: no window, even where a display exists
        return env

    def _server(self, *args: str) -> None:
        server = shutil.which("wineserver") or str(Path(_wine()).with_name("wineserver"))
        # DEVNULL, not pipes: `-p` leaves a daemon behind that would hold a pipe open.
        quiet = subprocess.DEVNULL
        subprocess.run([server, *args], env=self.env(), check=False, stdout=quiet, stderr=quiet, timeout=60)

    def hold(self) -> None:
        """Make sure the prefix exists and its server stays up until the matching :meth:`release`."""
        with self._lock:
            if self._holders == 0:
                self._create()
                # Other processes (another run, a test) may hold the same prefix: each holder keeps a shared
                # lock, and only the last one out of all of them stops the server (-k ends every client).
                self._hold_file = open(self.path.parent / f"{self.path.name}.holders", "a")  # noqa: SIM115
                fcntl.flock(self._hold_file, fcntl.LOCK_SH)
                self._server("-p")  # persistent until -k: bridges start in ~0.03 s
            self._holders += 1

    def release(self) -> None:
        with self._lock:
            if self._holders == 0:
                return
            self._holders -= 1
            if self._holders == 0 and self._hold_file is not None:
                handle, self._hold_file = self._hold_file, None
                with handle:
                    try:  # last holder of all processes: stop the server and wait until it is gone
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        return  # another process still holds the prefix: its bridges keep running
                    self._server("-k")
                    self._server("-w")

    def _create(self) -> None:
        wine = _wine()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(self.path.parent / f"{self.path.name}.lock"):
            if (self.path / "system.reg").is_file():
                return
            result = subprocess.run(
                [wine, "wineboot", "--init"], env=self.env(), capture_output=True, text=True, timeout=600, check=False
            )
            self._server("-w")  # wineboot returns before the registry is written: wait for the server to finish
            if not (self.path / "system.reg").is_file():
                raise WineUnavailable(f"creating the Wine prefix {self.path} failed: {result.stderr.strip()[-500:]}")


_PREFIXES: dict[Path, WinePrefix] = {}
_PREFIXES_LOCK = threading.Lock()


def _stop_all() -> None:
    for prefix in _PREFIXES.values():
        while prefix._holders:
            prefix.release()


atexit.register(_stop_all)


def bridge_command(exe: Path, provider: str | None = None, provider_type: int | None = None) -> list[str]:
    """The command line running the bridge here: itself on Windows, under Wine elsewhere."""
    args = [str(exe)]
    if provider is not None:
        args += ["--provider", provider]
    if provider_type is not None:
        args += ["--type", str(provider_type)]
    return args if sys.platform == "win32" else [_wine(), *args]
