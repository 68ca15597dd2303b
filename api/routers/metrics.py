"""``GET /metrics`` in Prometheus' text format, and the event-loop lag summary the load benchmark reads.

Both sit behind the API key (``xi-api-key`` or a Bearer token, like ``/v1``): they say how busy the
service is and how it is used. A GET never changes state: resetting the lag window is a POST.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.auth import require_auth
from core.metrics import REGISTRY

router = APIRouter(tags=["health"], dependencies=[Depends(require_auth)])


@router.get("/metrics", summary="Prometheus metrics (needs the API key)", response_class=Response)
async def prometheus_metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


@router.get("/metrics/loop-lag", summary="Event-loop lag percentiles since the last reset (read-only)")
async def loop_lag(request: Request) -> dict[str, float]:
    if "reset" in request.query_params:
        raise HTTPException(400, detail="a GET does not reset: POST /metrics/loop-lag/reset")
    return request.app.state.runtime.loop_lag.snapshot(reset=False)


@router.post("/metrics/loop-lag/reset", summary="Event-loop lag percentiles, then start a new window")
async def reset_loop_lag(request: Request) -> dict[str, float]:
    return request.app.state.runtime.loop_lag.snapshot(reset=True)
