"""Tools an agent runs during a call: built-ins and per-agent tools, each execution stored and announced.

(First cut: built-in end_call and book_meeting; webhook/transfer/SMS tools extend ``ToolRunner``.)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from models import Meeting, ToolCallRecord
from providers.base import ToolCall, ToolSpec

if TYPE_CHECKING:
    from runtime import Runtime

log = logging.getLogger(__name__)

BUILTIN_SPECS: dict[str, ToolSpec] = {
    "end_call": ToolSpec(
        "end_call", "End the phone call politely when the conversation is over.",
        {"type": "object", "properties": {"reason": {"type": "string"}}, "required": []},
    ),
    "book_meeting": ToolSpec(
        "book_meeting", "Book a meeting with the caller at an agreed date and time.",
        {
            "type": "object",
            "properties": {
                "start_time": {"type": "string", "description": "ISO 8601 start time"},
                "attendee_name": {"type": "string"},
                "attendee_contact": {"type": "string"},
                "notes": {"type": "string"},
            },
            "required": ["start_time"],
        },
    ),
}


@dataclass(slots=True)
class ToolContext:
    conversation_id: str
    call_sid: str
    caller_number: str | None
    agent_number: str | None
    dynamic_variables: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ToolOutcome:
    success: bool
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    duration_ms: float = 0.0
    say: str | None = None
    ends_call: bool = False
    transferred: bool = False


class ToolRunner:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def specs_for(self, agent: Any) -> list[ToolSpec]:
        specs = [BUILTIN_SPECS[name] for name in (agent.builtin_tools or []) if name in BUILTIN_SPECS]
        for tool in agent.tools or []:
            if tool.enabled:
                specs.append(ToolSpec(tool.name, tool.description, tool.parameters or {"type": "object"}))
        return specs

    def filler_for(self, name: str) -> str:
        return "One moment while I check that." if name != "book_meeting" else "One moment, let me book that."

    async def execute(self, agent: Any, call: ToolCall, ctx: ToolContext) -> ToolOutcome:
        started = time.perf_counter()
        try:
            outcome = await self._run(agent, call, ctx)
        except Exception as exc:
            log.warning("tool failed", extra={"fields": {"tool": call.name, "error": type(exc).__name__}})
            outcome = ToolOutcome(False, error=f"{type(exc).__name__}: {str(exc)[:200]}")
        outcome.duration_ms = (time.perf_counter() - started) * 1000
        await self._record(call, ctx, outcome)
        return outcome

    async def _run(self, agent: Any, call: ToolCall, ctx: ToolContext) -> ToolOutcome:
        if call.name == "end_call":
            return ToolOutcome(True, {"ended": True}, ends_call=True)
        if call.name == "book_meeting":
            return await self._book_meeting(agent, call.arguments, ctx)
        return ToolOutcome(False, error=f"unknown tool {call.name!r}")

    async def _book_meeting(self, agent: Any, args: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
        start = datetime.fromisoformat(str(args["start_time"]))
        async with self.runtime.db.session() as session:
            meeting = Meeting(
                conversation_id=ctx.conversation_id, agent_id=agent.id,
                attendee_name=str(args.get("attendee_name") or ""),
                attendee_contact=str(args.get("attendee_contact") or ctx.caller_number or ""),
                start_time=start, notes=str(args.get("notes") or ""),
            )
            session.add(meeting)
            await session.flush()
            meeting_id = meeting.id
        when = start.strftime("%A, %B %-d at %-I:%M %p").replace(":00 ", " ")
        return ToolOutcome(
            True, {"meeting_id": meeting_id, "start_time": start.isoformat()},
            say=f"You're booked for {when}. You'll get a confirmation shortly.",
        )

    async def _record(self, call: ToolCall, ctx: ToolContext, outcome: ToolOutcome) -> None:
        async with self.runtime.db.session() as session:
            session.add(ToolCallRecord(
                conversation_id=ctx.conversation_id, name=call.name, arguments=call.arguments,
                result=outcome.result, success=outcome.success, error=outcome.error,
                duration_ms=outcome.duration_ms,
            ))
            emit = getattr(self.runtime.webhooks, "emit", None)
            if emit is not None:
                await emit(
                    session, "tool.executed",
                    {"conversation_id": ctx.conversation_id, "name": call.name, "arguments": call.arguments,
                     "result": outcome.result, "success": outcome.success, "error": outcome.error,
                     "duration_ms": round(outcome.duration_ms, 1)},
                    agent_id=None, conversation_id=ctx.conversation_id,
                )
