"""Calls in progress: ``GET /v1/convai/calls/live`` (count, state and duration of each live call)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

router = APIRouter(prefix="/convai/calls", tags=["calls"])


class LiveCall(BaseModel):
    call_sid: str
    conversation_id: str | None
    agent_id: str | None
    state: str
    duration_sec: float
    agent_speaking: bool


class LiveCalls(BaseModel):
    count: int
    max_concurrent_calls: int
    calls: list[LiveCall]


@router.get("/live", response_model=LiveCalls, summary="Calls with an open media stream right now")
async def live_calls(request: Request) -> LiveCalls:
    runtime = request.app.state.runtime
    calls = [LiveCall(**c) for c in runtime.calls.snapshot()]
    return LiveCalls(
        count=len(calls), max_concurrent_calls=runtime.settings.max_concurrent_calls, calls=calls
    )
