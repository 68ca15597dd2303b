"""Process metrics for Prometheus (``GET /metrics``): live calls, turn latency, event-loop lag.

The event-loop lag monitor is what tells an operator the engine is falling behind: every 20 ms frame of
every call is paced by this loop, so lag shows up as jitter on the phone line.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

CALLS_ACTIVE = Gauge("ai_sdr_calls_active", "Calls with an open media stream", registry=REGISTRY)
CALLS_TOTAL = Counter("ai_sdr_calls_total", "Media streams handled", ["end_reason"], registry=REGISTRY)
VOICE_TO_VOICE = Histogram(
    "ai_sdr_voice_to_voice_seconds",
    "Caller's end of speech to the agent's first audio frame sent",
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0),
    registry=REGISTRY,
)
BARGE_IN = Histogram(
    "ai_sdr_barge_in_seconds",
    "Caller's speech onset to Twilio `clear` sent",
    buckets=(0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0),
    registry=REGISTRY,
)
PREEMPTIVE_REPLIES = Counter(
    "ai_sdr_preemptive_replies_total",
    "Replies started before the caller's turn was confirmed: used, or dropped (the caller went on)",
    ["outcome"],
    registry=REGISTRY,
)
TURN_MODEL = Histogram(
    "ai_sdr_turn_model_seconds",
    "CPU time of one turn-end model decision (features + ONNX run, one thread)",
    buckets=(0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3, 0.4, 0.6, 1.0),
    registry=REGISTRY,
)
LOOP_LAG = Histogram(
    "ai_sdr_event_loop_lag_seconds",
    "How late the event loop woke a 20 ms timer",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
    registry=REGISTRY,
)


class LoopLagMonitor:
    """Sleeps 20 ms at a time and records how late each wake-up was; keeps recent samples for reports."""

    INTERVAL_S = 0.02

    def __init__(self, keep: int = 30_000) -> None:
        self.samples: deque[float] = deque(maxlen=keep)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop-lag-monitor")

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.INTERVAL_S)
            lag = max(0.0, time.perf_counter() - before - self.INTERVAL_S)
            self.samples.append(lag)
            LOOP_LAG.observe(lag)

    def snapshot(self, reset: bool = False) -> dict[str, float]:
        values = sorted(self.samples)
        if reset:
            self.samples.clear()
        if not values:
            return {"count": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "pid": os.getpid()}

        def pct(q: float) -> float:
            return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 2)

        return {
            "count": len(values),
            "p50_ms": pct(0.5),
            "p99_ms": pct(0.99),
            "max_ms": round(values[-1] * 1000, 2),
            "pid": os.getpid(),  # which worker answered (uvicorn --workers N: one monitor per process)
        }

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
