"""``load("capi")``: a real CryptoAPI CSP through the CAPI bridge (bridges/capi), under Wine off Windows.

One long-lived bridge process per target; the provider is selectable (default: the Microsoft Enhanced RSA and
AES provider, PROV_RSA_AES). Capabilities are probed, not declared: Wine's rsaenh refuses OPAQUEKEYBLOB with
NTE_BAD_TYPE, so the report says opaque handoff is unsupported there. Under Wine the target declares the
deviations of docs/findings.md (:data:`~keyhandoff.targets.wine_findings.WINE_DEVIATIONS`), so a run reports
each as a known finding and fails on anything new.
"""

from __future__ import annotations

import sys

from keyhandoff.targets.line_target import LineTarget, PeerExited
from keyhandoff.targets.wine import WinePrefix, bridge_command, build_bridge
from keyhandoff.targets.wine_findings import ADVAPI32_DEVIATIONS, WINE_DEVIATIONS

__all__ = ["CapiTarget"]


class CapiTarget(LineTarget):
    """A CryptoAPI provider behind the bridge (Target protocol; black box: no inspect)."""

    def __init__(
        self,
        provider: str | None = None,
        provider_type: int | None = None,
        *,
        prefix: WinePrefix | None = None,
        timeout: float = 60.0,
    ) -> None:
        command = bridge_command(build_bridge(), provider, provider_type)
        self._prefix: WinePrefix | None = None
        env = None
        if sys.platform != "win32":
            self._prefix = prefix or WinePrefix.default()
            self._prefix.hold()
            env = self._prefix.env()
        for attempt in (1, 2):
            try:
                super().__init__(command, env=env, timeout=timeout)
                break
            except PeerExited:
                # Wine can lose a process as it starts (seen once in CI: status 1, no output, before hello;
                # none in 300 starts on the same machine): once more, then the error stands.
                if attempt == 1:
                    continue
                self._release_prefix()
                raise
            except BaseException:
                self._release_prefix()
                raise
        self._deviations = ADVAPI32_DEVIATIONS + (WINE_DEVIATIONS if self.info.wine else ())
        self.name = f"{self.info.description} ({self.info.platform})"

    def __repr__(self) -> str:
        return f"CapiTarget({self.name!r})"

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._release_prefix()

    def _release_prefix(self) -> None:
        if self._prefix is not None:
            self._prefix.release()
            self._prefix = None
