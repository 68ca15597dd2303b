"""Conversations: list (cursor pagination, newest first), get with transcript, delete.

Responses carry the flat fields and ElevenLabs' ``GetConversationsPageResponseModel`` /
``GetConversationResponseModel`` fields, so the ``elevenlabs`` SDK's conversations client works too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response, status
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import noload

from api.deps import (
    PageDep,
    SessionDep,
    UnixSeconds,
    UtcDateTime,
    conflict,
    error_responses,
    not_found,
    paginate,
)
from models import Agent, CallTransfer, Conversation, ConversationTurn, ToolCallRecord
from schemas import (
    CallTransferRecord,
    ConversationAnalysis,
    ConversationDetail,
    ConversationListResponse,
    ConversationMetadata,
    ConversationStatus,
    ConversationSummary,
    ToolCallResponse,
    TranscriptTurn,
)
from telephony.call_status import FAILED_STATUSES
from telephony.warm_transfer import transfer_json

router = APIRouter(prefix="/convai/conversations", tags=["conversations"])

LIVE_STATUSES = {"initiated", "ringing", "in_progress"}


# ---------------------------------------------------------------- presenting


def call_successful(conv: Conversation) -> Literal["success", "failure", "unknown"]:
    """ElevenLabs' verdict, from the call status (the outcome vocabulary is the agent's own)."""
    if conv.status == "completed":
        return "success"
    if conv.status in FAILED_STATUSES:
        return "failure"
    return "unknown"


def _summary_fields(conv: Conversation, agent_name: str | None, message_count: int) -> dict:
    start = conv.started_at or conv.created_at
    duration = conv.duration_sec
    if duration is None and conv.started_at and conv.ended_at:
        duration = (conv.ended_at - conv.started_at).total_seconds()
    return {
        "id": conv.id,
        "conversation_id": conv.id,
        "agent_id": conv.agent_id,
        "agent_name": agent_name,
        "call_sid": conv.call_sid,
        "direction": conv.direction,
        "from_number": conv.from_number,
        "to_number": conv.to_number,
        "status": conv.status,
        "end_reason": conv.end_reason,
        "started_at": conv.started_at,
        "ended_at": conv.ended_at,
        "duration_sec": duration,
        "outcome": conv.outcome,
        "summary": conv.summary,
        "created_at": conv.created_at,
        "updated_at": conv.updated_at,
        "start_time_unix_secs": int(start.timestamp()),
        "call_duration_secs": round(duration or 0),
        "message_count": message_count,
        "call_successful": call_successful(conv),
        "termination_reason": conv.end_reason,
        "transcript_summary": conv.summary,
    }


def to_turn(turn: ConversationTurn) -> TranscriptTurn:
    v2v = None
    if turn.first_frame_sent_ms is not None and turn.user_speech_end_ms is not None:
        v2v = turn.first_frame_sent_ms - turn.user_speech_end_ms
    return TranscriptTurn(
        seq=turn.seq,
        role=turn.role,
        kind=turn.kind,
        text=turn.text,
        message=turn.text,
        full_text=turn.full_text,
        interrupted=turn.interrupted,
        intent=turn.intent,
        start_ms=turn.start_ms,
        end_ms=turn.end_ms,
        time_in_call_secs=int((turn.start_ms or 0) // 1000),
        user_speech_end_ms=turn.user_speech_end_ms,
        stt_final_ms=turn.stt_final_ms,
        llm_first_token_ms=turn.llm_first_token_ms,
        tts_first_audio_ms=turn.tts_first_audio_ms,
        first_frame_sent_ms=turn.first_frame_sent_ms,
        source=turn.source,
        retrieval_ms=turn.retrieval_ms,
        knowledge_answer_ms=turn.knowledge_answer_ms,
        tool_result_ms=turn.tool_result_ms,
        voice_to_voice_ms=v2v,
        created_at=turn.created_at,
    )


def to_tool_call(record: ToolCallRecord) -> ToolCallResponse:
    return ToolCallResponse(
        id=record.id,
        name=record.name,
        arguments=record.arguments,
        result=record.result,
        success=record.success,
        error=record.error,
        duration_ms=record.duration_ms,
        created_at=record.created_at,
    )


def to_conversation_detail(conv: Conversation, agent_name: str | None) -> ConversationDetail:
    fields = _summary_fields(conv, agent_name, len(conv.turns))
    has_audio = bool(conv.recording_url)
    return ConversationDetail(
        **fields,
        call_state=conv.call_state,
        dynamic_variables=conv.dynamic_variables,
        collected_data=conv.collected_data,
        recording_url=conv.recording_url,
        transcript=[to_turn(t) for t in conv.turns],
        tool_calls=[to_tool_call(c) for c in conv.tool_calls],
        metadata=ConversationMetadata(
            start_time_unix_secs=fields["start_time_unix_secs"],
            call_duration_secs=fields["call_duration_secs"],
            termination_reason=conv.end_reason,
        ),
        analysis=ConversationAnalysis(
            call_successful=fields["call_successful"], transcript_summary=conv.summary or ""
        ),
        has_audio=has_audio,
        has_user_audio=has_audio,
        has_response_audio=has_audio,
    )


# ---------------------------------------------------------------- routes


def _unix(value: int | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


@router.get(
    "",
    response_model=ConversationListResponse,
    responses=error_responses(400),
    summary="List conversations, newest first (cursor pagination)",
)
async def list_conversations(
    session: SessionDep,
    page: PageDep,
    agent_id: Annotated[str | None, Query(max_length=40)] = None,
    status_: Annotated[ConversationStatus | None, Query(alias="status")] = None,
    outcome: Annotated[str | None, Query(max_length=32)] = None,
    after: Annotated[UtcDateTime | None, Query(description="Created at or after (ISO 8601)")] = None,
    before: Annotated[UtcDateTime | None, Query(description="Created before (ISO 8601)")] = None,
    call_start_after_unix: Annotated[
        UnixSeconds | None, Query(description="ElevenLabs name of after (Unix seconds)")
    ] = None,
    call_start_before_unix: Annotated[
        UnixSeconds | None, Query(description="ElevenLabs name of before (Unix seconds)")
    ] = None,
) -> ConversationListResponse:
    # Turns and tool calls are not needed for the list: skip their eager loads.
    stmt = select(Conversation).options(noload(Conversation.turns), noload(Conversation.tool_calls))
    if agent_id:
        stmt = stmt.where(Conversation.agent_id == agent_id)
    if status_:
        stmt = stmt.where(Conversation.status == status_)
    if outcome:
        stmt = stmt.where(Conversation.outcome == outcome)
    for bound in (after, _unix(call_start_after_unix)):
        if bound is not None:
            stmt = stmt.where(Conversation.created_at >= bound)
    for bound in (before, _unix(call_start_before_unix)):
        if bound is not None:
            stmt = stmt.where(Conversation.created_at < bound)
    result = await paginate(session, stmt, Conversation, page)
    convs = list(result.items)
    names = await _agent_names(session, {c.agent_id for c in convs if c.agent_id})
    counts = await _turn_counts(session, [c.id for c in convs])
    return ConversationListResponse(
        conversations=[
            ConversationSummary(**_summary_fields(c, names.get(c.agent_id or ""), counts.get(c.id, 0)))
            for c in convs
        ],
        has_more=result.has_more,
        next_cursor=result.next_cursor,
    )


@router.get(
    "/{conversation_id}",
    response_model=ConversationDetail,
    responses=error_responses(404),
    summary="Get a conversation with its transcript, latencies, tool calls and results",
)
async def get_conversation(conversation_id: str, session: SessionDep) -> ConversationDetail:
    conv = await session.get(Conversation, conversation_id)
    if conv is None:
        raise not_found("conversation", conversation_id)
    names = await _agent_names(session, {conv.agent_id} if conv.agent_id else set())
    detail = to_conversation_detail(conv, names.get(conv.agent_id or ""))
    transfers = await session.scalars(
        select(CallTransfer)
        .where(CallTransfer.conversation_id == conv.id)
        .order_by(CallTransfer.requested_at)
    )
    detail.transfers = [CallTransferRecord.model_validate(transfer_json(t)) for t in transfers]
    return detail


@router.delete(
    "/{conversation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(404, 409),
    summary="Delete a finished conversation with its turns and tool calls",
)
async def delete_conversation(conversation_id: str, session: SessionDep) -> Response:
    conv = await session.get(Conversation, conversation_id)
    if conv is None:
        raise not_found("conversation", conversation_id)
    if conv.status in LIVE_STATUSES:
        raise conflict(f"conversation is still {conv.status}; delete it after the call ends")
    await session.delete(conv)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---------------------------------------------------------------- helpers


async def _agent_names(session: AsyncSession, ids: set[str]) -> dict[str, str]:
    if not ids:
        return {}
    rows = await session.execute(select(Agent.id, Agent.name).where(Agent.id.in_(ids)))
    return {agent_id: name for agent_id, name in rows.all()}


async def _turn_counts(session: AsyncSession, ids: list[str]) -> dict[str, int]:
    if not ids:
        return {}
    rows = await session.execute(
        select(ConversationTurn.conversation_id, func.count())
        .where(ConversationTurn.conversation_id.in_(ids))
        .group_by(ConversationTurn.conversation_id)
    )
    return {conv_id: count for conv_id, count in rows.all()}
