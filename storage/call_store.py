"""Durable state of a live call: the conversation row and its turns, written as the call goes.

Writes made while the call runs go through the shared ``BatchWriter``: the engine queues them and
carries on (a turn's sequence number is assigned here, at once), and they are committed within
milliseconds, in order. Opening and closing the call wait for their writes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import noload

from models import Agent, Conversation, ConversationTurn
from storage.agent_versions import agent_for_call
from storage.batch_writer import BatchWriter
from storage.db import Database
from utils import utcnow

log = logging.getLogger(__name__)

# The end of a Media Stream that is not the end of the call: keys were pressed through a phone menu
# and the call goes on on a new stream, on the same conversation.
STREAM_REDIRECTED = "dtmf_redirect"
# Stream ends that are not the call's end: a phone-menu redirect, a warm transfer (the caller waits in a
# conference; ``telephony.warm_transfer`` closes the conversation, or a new stream takes the call back).
HANDED_OVER = frozenset({STREAM_REDIRECTED, "warm_transfer"})

# The call path reads and writes the conversation row only: without this every state change would
# re-load all of the call's turns and tool calls (``lazy="selectin"``), ~20 % of the loop at 150 calls.
CONVERSATION_ONLY = (noload(Conversation.turns), noload(Conversation.tool_calls))


@dataclass(slots=True)
class TurnRecord:
    """A finished turn as the engine hands it over for storage."""

    role: str
    text: str
    kind: str = "speech"
    full_text: str | None = None
    interrupted: bool = False
    intent: str | None = None
    start_ms: float | None = None
    end_ms: float | None = None
    user_speech_end_ms: float | None = None
    stt_final_ms: float | None = None
    llm_first_token_ms: float | None = None
    tts_first_audio_ms: float | None = None
    first_frame_sent_ms: float | None = None
    source: str | None = None
    retrieval_ms: float | None = None
    knowledge_answer_ms: float | None = None
    tool_result_ms: float | None = None
    seq: int = field(default=-1)


class CallStore:
    def __init__(
        self, db: Database, conversation_id: str, emit: Any = None, writer: BatchWriter | None = None
    ) -> None:
        self.db = db
        self.conversation_id = conversation_id
        self._next_seq = 0
        self._emit = emit  # WebhookDispatcher.emit or None
        self.writer = writer or BatchWriter(db)

    async def load(self) -> tuple[Conversation, Agent | None]:
        async with self.db.session() as session:
            conversation = await session.get(Conversation, self.conversation_id, options=CONVERSATION_ONLY)
            if conversation is None:
                raise LookupError(f"unknown conversation {self.conversation_id}")
            # the version the call was stamped with when it was created (an experiment's variant, or the
            # agent's latest then): a change to the agent during the call, or since, does not reach it
            agent = await agent_for_call(session, conversation)
            last = await session.scalar(
                select(ConversationTurn.seq)
                .where(ConversationTurn.conversation_id == self.conversation_id)
                .order_by(ConversationTurn.seq.desc())
                .limit(1)
            )
            self._next_seq = (last + 1) if last is not None else 0
            return conversation, agent

    async def mark_started(self, call_sid: str) -> None:
        async def write(session: AsyncSession) -> None:
            conversation = await session.get(Conversation, self.conversation_id, options=CONVERSATION_ONLY)
            assert conversation is not None
            conversation.status = "in_progress"
            conversation.started_at = conversation.started_at or utcnow()
            conversation.call_sid = conversation.call_sid or call_sid
            await self._emit_event(session, "call.started", conversation, {"call_sid": call_sid})

        await self.writer.submit(write)

    def save_turn(self, turn: TurnRecord) -> int:
        """Queue a turn's insert (or its update when ``turn.seq`` is set, e.g. a merged user turn)."""
        values = {
            "role": turn.role,
            "kind": turn.kind,
            "text": turn.text,
            "full_text": turn.full_text,
            "interrupted": turn.interrupted,
            "intent": turn.intent,
            "start_ms": turn.start_ms,
            "end_ms": turn.end_ms,
            "user_speech_end_ms": turn.user_speech_end_ms,
            "stt_final_ms": turn.stt_final_ms,
            "llm_first_token_ms": turn.llm_first_token_ms,
            "tts_first_audio_ms": turn.tts_first_audio_ms,
            "first_frame_sent_ms": turn.first_frame_sent_ms,
            "source": turn.source,
            "retrieval_ms": turn.retrieval_ms,
            "knowledge_answer_ms": turn.knowledge_answer_ms,
            "tool_result_ms": turn.tool_result_ms,
        }
        conversation_id = self.conversation_id
        if turn.seq >= 0:
            seq = turn.seq

            async def write(session: AsyncSession) -> None:
                await session.execute(
                    update(ConversationTurn)
                    .where(ConversationTurn.conversation_id == conversation_id, ConversationTurn.seq == seq)
                    .values(**values)
                )

        else:
            seq = turn.seq = self._next_seq
            self._next_seq += 1

            async def write(session: AsyncSession) -> None:
                session.add(ConversationTurn(conversation_id=conversation_id, seq=seq, **values))

        self.writer.submit(write)
        return seq

    def set_state(self, state: str) -> None:
        async def write(session: AsyncSession) -> None:
            await session.execute(
                update(Conversation).where(Conversation.id == self.conversation_id).values(call_state=state)
            )

        self.writer.submit(write)

    def save_stages(self, stage_path: list[str], stage: str, collected: dict[str, Any]) -> None:
        """The playbook's way so far (conversations.stage_path, ended_stage) and the fields it collected."""
        values = {"stage_path": list(stage_path), "ended_stage": stage, "collected_data": dict(collected)}

        async def write(session: AsyncSession) -> None:
            await session.execute(
                update(Conversation).where(Conversation.id == self.conversation_id).values(**values)
            )

        self.writer.submit(write)

    def set_answered_by(self, answered_by: str, method: str, outcome: str | None = None) -> None:
        """Who picked up an outbound call, how that was decided and when, and the outcome that settles
        (a machine: voicemail; a screener or a menu that never put us through: screened / ivr)."""
        values: dict[str, Any] = {
            "answered_by": answered_by,
            "answered_by_method": method,
            "answered_by_at": utcnow(),
            "outcome": "voicemail" if answered_by == "machine" else outcome,
        }

        async def write(session: AsyncSession) -> None:
            await session.execute(
                update(Conversation).where(Conversation.id == self.conversation_id).values(**values)
            )

        self.writer.submit(write)

    def emit(self, event_type: str, data: dict[str, Any]) -> None:
        """Queue a webhook event; the writer wakes the webhook worker once it is committed."""

        async def write(session: AsyncSession) -> None:
            conversation = await session.get(Conversation, self.conversation_id, options=CONVERSATION_ONLY)
            if conversation is not None:
                await self._emit_event(session, event_type, conversation, data)

        self.writer.submit(write)

    async def flush(self) -> None:
        await self.writer.flush()

    async def finish(
        self, end_reason: str, status: str = "completed", recording_url: str | None = None
    ) -> bool:
        """Close the conversation; committed after every write the call queued before it. False: the
        stream ended and the call goes on on another (``STREAM_REDIRECTED``): nothing is closed."""
        if end_reason in HANDED_OVER:
            if recording_url:  # this stream's recording (a later stream of the call saves its own over it)
                self.writer.submit(self._recording(recording_url))
            await self.flush()
            return False

        async def write(session: AsyncSession) -> None:
            conversation = await session.get(Conversation, self.conversation_id, options=CONVERSATION_ONLY)
            if conversation is None:
                return
            if recording_url:
                conversation.recording_url = recording_url
            now = utcnow()
            conversation.ended_at = now
            conversation.end_reason = conversation.end_reason or end_reason
            if conversation.status in ("initiated", "ringing", "in_progress"):
                conversation.status = status
            if conversation.started_at is not None:
                conversation.duration_sec = round((now - conversation.started_at).total_seconds(), 2)
            conversation.call_state = "ENDED"

        await self.writer.submit(write)
        return True

    def _recording(self, url: str) -> Any:
        async def write(session: AsyncSession) -> None:
            await session.execute(
                update(Conversation).where(Conversation.id == self.conversation_id).values(recording_url=url)
            )

        return write

    async def _emit_event(
        self, session: Any, event_type: str, conversation: Conversation, data: dict
    ) -> None:
        if self._emit is None:
            return
        payload = {"conversation_id": conversation.id, "agent_id": conversation.agent_id, **data}
        if conversation.campaign_id:  # a campaign's call: its events say which campaign
            payload["campaign_id"] = conversation.campaign_id
        await self._emit(
            session, event_type, payload, agent_id=conversation.agent_id, conversation_id=conversation.id
        )
