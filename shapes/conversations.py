"""Shapes of the conversations API: transcripts, tool calls, analysis."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from shapes.common import Page

__all__ = [
    "CallTransferRecord",
    "ConversationAnalysis",
    "ConversationDetail",
    "ConversationListResponse",
    "ConversationMetadata",
    "ConversationSummary",
    "ToolCallResponse",
    "TranscriptTurn",
]


class TranscriptTurn(BaseModel):
    """One turn as heard, with its timing (ms since the media stream began) and latency breakdown.

    ``message`` and ``time_in_call_secs`` are the ElevenLabs names of ``text`` and ``start_ms``.
    """

    seq: int
    role: str
    kind: str
    text: str
    message: str
    full_text: str | None
    interrupted: bool
    intent: str | None
    start_ms: float | None
    end_ms: float | None
    time_in_call_secs: int
    user_speech_end_ms: float | None
    stt_final_ms: float | None
    llm_first_token_ms: float | None
    tts_first_audio_ms: float | None
    first_frame_sent_ms: float | None
    source: str | None = Field(
        None,
        description="agent turns: how the reply was produced (llm, knowledge, tool, fixed_line, fallback)",
    )
    retrieval_ms: float | None = Field(None, description="duration of the knowledge search")
    knowledge_answer_ms: float | None = Field(
        None, description="offset: the reply's sentence taken from the KB"
    )
    tool_result_ms: float | None = Field(None, description="offset: the tool's result came back")
    voice_to_voice_ms: float | None = Field(description="first_frame_sent_ms - user_speech_end_ms")
    created_at: datetime


class ToolCallResponse(BaseModel):
    id: str
    name: str
    arguments: dict[str, Any]
    result: dict[str, Any]
    success: bool
    error: str | None
    duration_ms: float
    created_at: datetime


class ConversationSummary(BaseModel):
    """A conversation in a list: flat fields plus ElevenLabs' ``ConversationSummaryResponseModel``."""

    id: str
    conversation_id: str = Field(description="Same as id (ElevenLabs name)")
    agent_id: str | None
    agent_name: str | None
    call_sid: str | None
    direction: str
    from_number: str | None
    to_number: str | None
    status: str = Field(description="initiated|ringing|in_progress|completed|busy|no_answer|failed|canceled")
    end_reason: str | None
    started_at: datetime | None
    ended_at: datetime | None
    duration_sec: float | None
    outcome: str | None
    summary: str | None
    created_at: datetime
    updated_at: datetime
    # ElevenLabs dialect
    start_time_unix_secs: int
    call_duration_secs: int
    message_count: int
    call_successful: Literal["success", "failure", "unknown"]
    termination_reason: str | None
    transcript_summary: str | None


class ConversationMetadata(BaseModel):
    start_time_unix_secs: int
    call_duration_secs: int
    termination_reason: str | None


class ConversationAnalysis(BaseModel):
    call_successful: Literal["success", "failure", "unknown"]
    transcript_summary: str


class CallTransferRecord(BaseModel):
    """A transfer of the call to a person: warm or cold, where to, how it went; times in ms after the
    request (``telephony.warm_transfer``)."""

    transfer_id: str
    mode: Literal["warm", "cold"]
    to: str
    requested_by: str
    result: str  # dialing | bridged | no_answer | busy | failed | caller_left (warm); dialed (cold)
    error: str | None
    summary: str | None  # what the rep heard before the bridge
    requested_at: datetime
    rep_answered_ms: float | None
    announced_ms: float | None
    bridged_ms: float | None
    ended_ms: float | None
    returned_ms: float | None  # the caller was taken back to the agent


class ConversationDetail(ConversationSummary):
    """A conversation with transcript, tool calls, results (ElevenLabs ``GetConversationResponseModel``)."""

    call_state: str
    dynamic_variables: dict[str, Any]
    collected_data: dict[str, Any]
    recording_url: str | None
    transcript: list[TranscriptTurn]
    tool_calls: list[ToolCallResponse]
    transfers: list[CallTransferRecord] = []
    # ElevenLabs dialect
    metadata: ConversationMetadata
    analysis: ConversationAnalysis
    has_audio: bool
    has_user_audio: bool
    has_response_audio: bool
    has_auxiliary_audio: bool = False


class ConversationListResponse(Page):
    conversations: list[ConversationSummary]
