"""What happens after a call ends: analysis stored on the conversation, then `call.completed`."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from sqlalchemy import select

from call.playbook import stage_outcome
from models import Conversation, Meeting
from storage.agent_versions import agent_for_call
from storage.analytics import count_ended_call


class PostCallServices(Protocol):
    """What post-call work uses of the process's services (``app_runtime.Runtime`` has them)."""

    db: Any
    providers: Any
    webhooks: Any
    settings: Any
    sandbox: Any  # core.sandbox.Sandbox: a scenario test's calls are not counted in analytics


log = logging.getLogger(__name__)

ANALYSIS_TIMEOUT_S = 60.0


def transcript_as_heard(conversation: Conversation) -> list[dict[str, Any]]:
    return [
        {
            "role": t.role,
            "text": t.text,
            "kind": t.kind,
            "interrupted": t.interrupted,
            "start_ms": t.start_ms,
            "end_ms": t.end_ms,
        }
        for t in conversation.turns
        if t.text
    ]


async def run_post_call(runtime: PostCallServices, conversation_id: str) -> None:
    from events.analysis import UNDECIDED, analyze_conversation, rule_outcome

    async with runtime.db.session() as session:
        conversation = await session.get(Conversation, conversation_id)
        if conversation is None:
            return
        agent = await agent_for_call(session, conversation)  # the version that ran the call
        transcript = transcript_as_heard(conversation)
        tool_calls = [
            {
                "name": c.name,
                "arguments": c.arguments,
                "result": c.result,
                "success": c.success,
                "duration_ms": c.duration_ms,
            }
            for c in conversation.tool_calls
        ]
        end_reason, answered_by = conversation.end_reason, conversation.answered_by
        # what the playbook recorded during the call: its stages and the fields it collected
        stage_path, ended_stage = list(conversation.stage_path or []), conversation.ended_stage
        stage_collected = {k: v for k, v in (conversation.collected_data or {}).items() if v is not None}
    data_fields = list(agent.data_collection or []) if agent is not None else []
    stages_say = stage_outcome(agent.playbook if agent is not None else None, stage_path)
    turns = [(t["role"], t["text"]) for t in transcript]
    try:
        llm = await runtime.providers.llm((agent.providers or {}).get("llm") if agent else None)
        async with asyncio.timeout(ANALYSIS_TIMEOUT_S):
            analysis = await analyze_conversation(
                turns,
                data_fields,
                llm,
                tool_calls=tool_calls,
                end_reason=end_reason,
                answered_by=answered_by,
                stage_outcome=stages_say,
            )
        summary, outcome, collected = analysis.summary, analysis.outcome, analysis.collected
    except Exception as exc:
        log.warning(
            "post-call analysis failed",
            extra={"fields": {"conversation_id": conversation_id, "error": type(exc).__name__}},
        )
        outcome = rule_outcome(turns, tool_calls, end_reason, answered_by, stages_say) or UNDECIDED
        summary, collected = None, {}
    collected = {**collected, **stage_collected}  # the playbook's values were heard, not inferred
    async with runtime.db.session() as session:
        conversation = await session.get(Conversation, conversation_id)
        if conversation is None:
            return
        if conversation.answered_by != answered_by:  # Twilio's AMD verdict came during the analysis
            outcome = (
                rule_outcome(turns, tool_calls, end_reason, conversation.answered_by, stages_say) or outcome
            )
        conversation.summary = summary
        conversation.outcome = outcome
        conversation.collected_data = collected
        meetings = (
            await session.scalars(select(Meeting).where(Meeting.conversation_id == conversation_id))
        ).all()
        await runtime.webhooks.emit(
            session,
            "call.completed",
            {
                "conversation_id": conversation.id,
                "agent_id": conversation.agent_id,
                "call_sid": conversation.call_sid,
                "direction": conversation.direction,
                "status": conversation.status,
                "end_reason": conversation.end_reason,
                "duration_sec": conversation.duration_sec,
                "started_at": conversation.started_at,
                "ended_at": conversation.ended_at,
                "transcript": transcript,
                "tool_calls": tool_calls,
                "meetings": [
                    {"id": m.id, "start_time": m.start_time, "attendee_name": m.attendee_name}
                    for m in meetings
                ],
                "summary": summary,
                "outcome": outcome,
                "collected_data": collected,
                "stage_path": stage_path,
                "ended_stage": ended_stage,
                "answered_by": conversation.answered_by,
                "campaign_id": conversation.campaign_id,
                "recording_url": (
                    runtime.settings.public_url.rstrip("/") + conversation.recording_url
                    if conversation.recording_url
                    else None
                ),
            },
            agent_id=conversation.agent_id,
            conversation_id=conversation.id,
        )
    if runtime.sandbox.of_conversation(conversation_id) is None:  # a scenario test's call is no lead's
        await count_ended_call(runtime.db, conversation_id)  # its funnel, outcome and objections
