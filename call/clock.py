"""A call's time base: offsets in ms since the media stream started (what turns store)."""

from __future__ import annotations

import time

from providers.base import SAMPLE_RATE


class CallClock:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def restart(self) -> None:
        """The stream starts now (after the handshake and the call's set-up)."""
        self.t0 = time.monotonic()

    def ms(self, t: float | None = None) -> float:
        """Milliseconds since the stream started, of monotonic time ``t`` (default: now)."""
        return round(((time.monotonic() if t is None else t) - self.t0) * 1000, 1)

    def sample_at(self, t: float) -> int:
        return int((t - self.t0) * SAMPLE_RATE)
