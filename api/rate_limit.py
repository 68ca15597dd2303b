"""Per-API-key rate limit of the REST API: a token bucket per key, in this process.

Each key may send ``API_RATE_LIMIT_PER_MIN`` requests a minute on average and bursts of up to
``API_RATE_LIMIT_BURST`` at once; past that it gets 429 with ``Retry-After`` until its bucket refills.
Only authenticated ``/v1`` and ``/metrics`` requests count (the check runs after the key is accepted,
inside ``require_auth``): Twilio's webhooks, the Media Streams socket and the health probes never
do, so an API burst cannot slow or refuse a call.

One instance keeps the buckets in memory (``TokenBuckets``). Several instances (``is_multi_instance``:
PostgreSQL, ``INSTANCE_ID``) share them in the database (``SharedTokenBuckets``): one atomic upsert per
request decides, so a key gets the limit once whichever instances the balancer picks, not N times.
Why not the ``limits`` package: it offers fixed and moving windows, not a bucket with a burst size.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException, status
from sqlalchemy import case
from sqlalchemy.dialects import postgresql, sqlite

from models import ApiRateBucket

log = logging.getLogger(__name__)

MAX_TRACKED = 10_000  # distinct callers (keys, bearer subjects) kept; full buckets are dropped first


class _Buckets:
    """What both kinds share: the rate, the burst, and the 429 (JSON ``detail``, ``Retry-After``)."""

    def __init__(self, per_minute: float, burst: int, clock: Callable[[], float]) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0  # tokens a second
        self.burst = max(1, burst)
        self._clock = clock

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    async def _wait(self, caller: str) -> float:
        raise NotImplementedError

    async def check(self, caller: str) -> None:
        """Raise 429 (``Retry-After`` in whole seconds) when ``caller`` is over the limit."""
        if not self.enabled:
            return
        wait = await self._wait(caller)
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


class TokenBuckets(_Buckets):
    def __init__(self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(per_minute, burst, clock)
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, when counted)

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

    async def _wait(self, caller: str) -> float:
        return self.take(caller)


class SharedTokenBuckets(_Buckets):
    """The same buckets in the database, for several instances: one upsert per request, refilled and
    spent in the statement, so two instances counting at once cannot both spend the last token."""

    def __init__(
        self, db: Any, per_minute: float, burst: int, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(per_minute, burst, clock)
        self.db = db
        self._insert = postgresql.insert if db.url.startswith("postgresql") else sqlite.insert

    async def take(self, caller: str) -> float:
        """As ``TokenBuckets.take``, counted in the database."""
        if len(caller) > 80:
            caller = "h:" + hashlib.sha256(caller.encode()).hexdigest()
        now = self._clock()
        bucket = ApiRateBucket.__table__.c
        elapsed = case((bucket.updated_at < now, now - bucket.updated_at), else_=0.0)  # clocks may differ
        refilled = case(
            (bucket.tokens + elapsed * self.rate > self.burst, float(self.burst)),
            else_=bucket.tokens + elapsed * self.rate,
        )
        statement = (
            self._insert(ApiRateBucket.__table__)
            .values(caller=caller, tokens=self.burst - 1.0, updated_at=now, allowed=True)
            .on_conflict_do_update(
                index_elements=[bucket.caller],
                set_={
                    "tokens": case((refilled >= 1.0, refilled - 1.0), else_=refilled),
                    "updated_at": now,
                    "allowed": refilled >= 1.0,
                },
            )
            .returning(bucket.tokens, bucket.allowed)
        )
        # One statement in autocommit: no BEGIN/COMMIT round trips (the upsert is atomic on its own).
        async with self.db.engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            tokens, allowed = (await autocommit.execute(statement)).one()
        return 0.0 if allowed else (1.0 - tokens) / self.rate

    async def _wait(self, caller: str) -> float:
        try:
            return await self.take(caller)
        except Exception as exc:  # the database is what failed: let the request meet that, not a 429
            log.warning("rate limit not counted", extra={"fields": {"error": type(exc).__name__}})
            return 0.0
