"""``GET /metrics`` in Prometheus' text format, and the event-loop lag summary the load benchmark reads."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.metrics import REGISTRY

router = APIRouter(tags=["health"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus_metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


@router.get("/metrics/loop-lag", summary="Event-loop lag percentiles since the last reset")
async def loop_lag(request: Request, reset: bool = False) -> dict[str, float]:
    return request.app.state.runtime.loop_lag.snapshot(reset=reset)
