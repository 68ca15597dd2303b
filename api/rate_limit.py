"""Per-API-key rate limit of the REST API: a token bucket per key, in this process.

Each key may send ``API_RATE_LIMIT_PER_MIN`` requests a minute on average and bursts of up to
``API_RATE_LIMIT_BURST`` at once; past that it gets 429 with ``Retry-After`` until its bucket refills.
Only authenticated ``/v1`` and ``/metrics`` requests count (the check runs after the key is accepted,
inside ``require_auth``): Twilio's webhooks, the Media Streams socket and the health probes never
do, so an API burst cannot slow or refuse a call.

The buckets live in this process: behind a balancer, N instances allow up to N times the limit (see the
README). Why not the ``limits`` package: it offers fixed and moving windows, not a bucket with a burst
size, and this is 40 lines.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from fastapi import HTTPException, status

MAX_TRACKED = 10_000  # distinct callers (keys, bearer subjects) kept; full buckets are dropped first


class TokenBuckets:
    def __init__(self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0  # tokens a second
        self.burst = max(1, burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, when counted)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, caller: str) -> float:
        """Spend one token of ``caller``'s bucket: 0.0 if there was one, else the seconds until there is."""
        now = self._clock()
        tokens, then = self._buckets.get(caller, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        if tokens >= 1.0:
            self._buckets[caller] = (tokens - 1.0, now)
            return 0.0
        self._buckets[caller] = (tokens, now)
        if len(self._buckets) > MAX_TRACKED:
            self._forget_full(now)
        return (1.0 - tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        full = [k for k, (t, then) in self._buckets.items() if t + (now - then) * self.rate >= self.burst]
        for caller in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[caller]

    def check(self, caller: str) -> None:
        """Raise 429 (JSON ``detail``, ``Retry-After`` in whole seconds) when ``caller`` is over the limit."""
        if not self.enabled:
            return
        wait = self.take(caller)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                detail=(
                    f"rate limit exceeded for this API key: {self.per_minute:g} requests a minute "
                    f"(bursts of {self.burst}); retry after {retry_after} s"
                ),
                headers={"Retry-After": str(retry_after)},
            )
