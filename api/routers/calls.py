"""Calls in progress: ``GET /v1/convai/calls/live``, on every instance of the service.

Each instance keeps its calls in the shared ``live_calls`` table (``call.live_calls``); this lists them
all, with this instance's own calls taken from its registry (live duration and speaking flag), and the
count per instance (each instance enforces its own MAX_CONCURRENT_CALLS). Each call carries a cheap
estimate of the caller's sentiment from their latest turns (``call.sentiment``), for the supervisor seat.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from call.sentiment import estimate
from utils import utcnow

router = APIRouter(prefix="/convai/calls", tags=["calls"])


class LiveCall(BaseModel):
    call_sid: str
    conversation_id: str | None
    agent_id: str | None
    state: str = Field(description="The call's stage: CALL_START, DISCOVERY, ACTIVE, COMPLETION")
    duration_sec: float
    agent_speaking: bool
    instance_id: str = Field(description="The instance of the service the call is on")
    sentiment: str | None = Field(
        None, description="positive / neutral / negative from the caller's latest turns; null before any"
    )
    sentiment_score: float | None = Field(None, description="-1 (negative) to 1 (positive)")


class InstanceCalls(BaseModel):
    instance_id: str
    count: int


class LiveCalls(BaseModel):
    count: int = Field(description="Live calls on every instance")
    max_concurrent_calls: int = Field(description="Per instance: this instance's MAX_CONCURRENT_CALLS")
    instance_id: str = Field(description="The instance that answered")
    instance_count: int = Field(description="Live calls on the instance that answered")
    accepting_calls: bool = Field(description="False while the answering instance drains")
    instances: list[InstanceCalls]
    calls: list[LiveCall]


@router.get("/live", response_model=LiveCalls, summary="Open media streams now, on every instance")
async def live_calls(request: Request) -> LiveCalls:
    runtime = request.app.state.runtime
    here = runtime.instance_id
    calls = [LiveCall(**c, instance_id=here) for c in runtime.calls.snapshot()]
    local = {c.call_sid for c in calls}
    now = utcnow()
    for row in await runtime.live_calls.list_all():
        if row.instance_id == here or row.call_sid in local:
            continue  # this instance's registry is the fresher source for its own calls
        calls.append(
            LiveCall(
                call_sid=row.call_sid,
                conversation_id=row.conversation_id,
                agent_id=row.agent_id,
                state=row.state,
                duration_sec=round((now - row.started_at).total_seconds(), 1),
                agent_speaking=row.agent_speaking,
                instance_id=row.instance_id,
            )
        )
    words = await runtime.live_calls.caller_words([c.conversation_id for c in calls if c.conversation_id])
    for call in calls:
        call.sentiment, call.sentiment_score = estimate(words.get(call.conversation_id or "", []))
    per_instance: dict[str, int] = {here: 0}
    for call in calls:
        per_instance[call.instance_id] = per_instance.get(call.instance_id, 0) + 1
    return LiveCalls(
        count=len(calls),
        max_concurrent_calls=runtime.settings.max_concurrent_calls,
        instance_id=here,
        instance_count=per_instance[here],
        accepting_calls=not runtime.draining,
        instances=[InstanceCalls(instance_id=i, count=n) for i, n in sorted(per_instance.items())],
        calls=calls,
    )
