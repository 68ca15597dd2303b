"""SQLAlchemy 2 ORM models: the product's durable state.

Ids are opaque prefixed strings (``agent_…``, ``conv_…``); timestamps are UTC.
The same models run on SQLite (aiosqlite) and PostgreSQL (asyncpg).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from utils import new_id, utcnow


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as UTC; returns them aware even from SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use utils.utcnow()")
        return value.astimezone(utcnow().tzinfo)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=utcnow().tzinfo)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Agent(TimestampMixin, Base):
    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("agent"))
    name: Mapped[str] = mapped_column(String(200))
    system_prompt: Mapped[str] = mapped_column(Text, default="")
    first_message: Mapped[str] = mapped_column(Text, default="")
    voice_id: Mapped[str | None] = mapped_column(String(100))
    language: Mapped[str] = mapped_column(String(16), default="en")
    llm_model: Mapped[str | None] = mapped_column(String(200))
    temperature: Mapped[float] = mapped_column(Float, default=0.7)
    max_call_duration_sec: Mapped[int] = mapped_column(Integer, default=1800)
    silence_timeout_sec: Mapped[float] = mapped_column(Float, default=20.0)
    interrupt_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Per-agent overrides of the INTERRUPT_* / SILENCE_* settings (keys as in Settings, lower case).
    turn_settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Per-agent provider overrides: {"stt": "local", "tts": "deepgram", "llm": "ollama"}.
    providers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Built-in tools enabled for this agent, e.g. ["end_call", "book_meeting"].
    builtin_tools: Mapped[list[Any]] = mapped_column(default=list)
    transfer_number: Mapped[str | None] = mapped_column(String(32))
    # Post-call data collection: [{"name": "budget", "type": "string", "description": "…"}].
    data_collection: Mapped[list[Any]] = mapped_column(default=list)
    # Words the recogniser should expect (company and product names): Deepgram keywords, Whisper's prompt.
    stt_keywords: Mapped[list[Any]] = mapped_column(default=list)
    # Outbound calls: detect answering machines from the audio; on one, hang up or leave the message.
    voicemail_detection: Mapped[bool] = mapped_column(Boolean, default=True)
    voicemail_action: Mapped[str] = mapped_column(String(16), default="hang_up")  # hang_up | leave_message
    voicemail_message: Mapped[str] = mapped_column(Text, default="")  # may hold {{variables}}
    # Outbound calls answered by a phone menu: press keys (send_dtmf) to reach a person instead of hanging up.
    dtmf_navigation: Mapped[bool] = mapped_column(Boolean, default=False)
    # Anything of an ElevenLabs conversation_config we keep but do not interpret.
    extra_config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The sales playbook the calls follow (shapes.playbooks, checked by call.playbook_check); part of the
    # agent's config (agent versions snapshot it). Migration 0019.
    playbook: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True, default=None)

    tools: Mapped[list[AgentTool]] = relationship(
        back_populates="agent", cascade="all, delete-orphan", lazy="selectin"
    )
    documents: Mapped[list[KnowledgeDocument]] = relationship(  # attached ones (detached_at: the end)
        back_populates="agent",
        cascade="all, delete-orphan",
        lazy="selectin",
        primaryjoin="and_(Agent.id == KnowledgeDocument.agent_id, KnowledgeDocument.detached_at.is_(None))",
    )


class AgentTool(TimestampMixin, Base):
    """A tool the agent may run during a call: a built-in or an HTTP webhook."""

    __tablename__ = "agent_tools"
    __table_args__ = (UniqueConstraint("agent_id", "name", name="uq_agent_tool_name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("tool"))
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    # webhook | end_call | transfer_call | send_sms | book_meeting | add_to_dnc
    kind: Mapped[str] = mapped_column(String(32), default="webhook")
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)  # JSON schema
    # kind-specific: {"url":…, "method":…, "headers":…, "timeout_sec":…} or {"number": …}
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)

    agent: Mapped[Agent] = relationship(back_populates="tools")


class KnowledgeDocument(TimestampMixin, Base):
    """One document of an agent's knowledge base; its chunks live in ChromaDB."""

    __tablename__ = "knowledge_documents"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("doc"))
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(300))
    content_type: Mapped[str] = mapped_column(String(100), default="text/plain")
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    text: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="ready")  # pending | indexing | ready | failed
    error: Mapped[str | None] = mapped_column(String(300))  # why indexing failed (safe to show)

    agent: Mapped[Agent] = relationship(back_populates="documents")


class PhoneNumber(TimestampMixin, Base):
    __tablename__ = "phone_numbers"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("pn"))
    phone_number: Mapped[str] = mapped_column(String(32), unique=True)
    agent_id: Mapped[str | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"), index=True)
    label: Mapped[str] = mapped_column(String(200), default="")


class Conversation(TimestampMixin, Base):
    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_agent_created", "agent_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("conv"))
    agent_id: Mapped[str | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    call_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    direction: Mapped[str] = mapped_column(String(16), default="inbound")  # inbound|outbound|web
    from_number: Mapped[str | None] = mapped_column(String(32))
    to_number: Mapped[str | None] = mapped_column(String(32))
    # initiated | ringing | in_progress | completed | busy | no_answer | failed | canceled
    status: Mapped[str] = mapped_column(String(16), default="initiated", index=True)
    end_reason: Mapped[str | None] = mapped_column(String(64))
    call_state: Mapped[str] = mapped_column(String(16), default="CALL_START")
    started_at: Mapped[datetime | None] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()
    duration_sec: Mapped[float | None] = mapped_column(Float)
    dynamic_variables: Mapped[dict[str, Any]] = mapped_column(default=dict)
    summary: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str | None] = mapped_column(String(32), index=True)
    collected_data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    recording_url: Mapped[str | None] = mapped_column(String(500))
    # Who picked up an outbound call: human | machine | fax | unknown; how it was decided (twilio_amd, …).
    answered_by: Mapped[str | None] = mapped_column(String(16))
    answered_by_method: Mapped[str | None] = mapped_column(String(32))
    answered_by_at: Mapped[datetime | None] = mapped_column()
    # Set on the calls a campaign's dialer places.
    campaign_id: Mapped[str | None] = mapped_column(String(40), index=True)
    campaign_recipient_id: Mapped[str | None] = mapped_column(String(40), index=True)
    # The id (jti) of the stream token that opened this call's Media Stream: set once, by a conditional
    # UPDATE, so a token admits one stream and a conversation is never reopened (telephony.stream_auth).
    stream_jti: Mapped[str | None] = mapped_column(String(64))
    # When this call's once-per-call webhook events were emitted: each set once, by a conditional UPDATE
    # (events.webhooks.claim_call_event), so a replayed Twilio callback or a second instance never
    # emits the same call event twice.
    started_event_at: Mapped[datetime | None] = mapped_column()
    completed_event_at: Mapped[datetime | None] = mapped_column()
    failed_event_at: Mapped[datetime | None] = mapped_column()
    # The immutable agent version that ran this call (agent versions / experiments), the playbook stages it
    # went through in order, and the stage it ended in (analytics breaks calls down by it).
    agent_version_id: Mapped[str | None] = mapped_column(String(40), index=True)
    stage_path: Mapped[list[Any]] = mapped_column(default=list)
    ended_stage: Mapped[str | None] = mapped_column(String(64))

    turns: Mapped[list[ConversationTurn]] = relationship(
        back_populates="conversation",
        cascade="all, delete-orphan",
        order_by="ConversationTurn.seq",
        lazy="selectin",
    )
    tool_calls: Mapped[list[ToolCallRecord]] = relationship(
        back_populates="conversation",
        cascade="all, delete-orphan",
        order_by="ToolCallRecord.created_at",
        lazy="selectin",
    )


class ConversationTurn(Base):
    """One turn of a call, written when the turn ends.

    Offsets (``*_ms``) are milliseconds since the call's media stream started, so
    a turn's latency breakdown reads off directly, e.g. voice-to-voice =
    ``first_frame_sent_ms - user_speech_end_ms`` of the agent turn.
    """

    __tablename__ = "conversation_turns"
    __table_args__ = (UniqueConstraint("conversation_id", "seq", name="uq_turn_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))  # user | agent
    # speech | dtmf | backchannel | greeting | filler | fallback
    kind: Mapped[str] = mapped_column(String(16), default="speech")
    text: Mapped[str] = mapped_column(Text, default="")  # as heard by the other side
    full_text: Mapped[str | None] = mapped_column(Text)  # agent: the whole planned reply
    interrupted: Mapped[bool] = mapped_column(Boolean, default=False)
    intent: Mapped[str | None] = mapped_column(String(32))
    start_ms: Mapped[float | None] = mapped_column(Float)
    end_ms: Mapped[float | None] = mapped_column(Float)
    # latency breakdown (agent turns), offsets in ms since stream start
    user_speech_end_ms: Mapped[float | None] = mapped_column(Float)
    stt_final_ms: Mapped[float | None] = mapped_column(Float)
    llm_first_token_ms: Mapped[float | None] = mapped_column(Float)
    tts_first_audio_ms: Mapped[float | None] = mapped_column(Float)
    first_frame_sent_ms: Mapped[float | None] = mapped_column(Float)
    # agent turns: how the reply was produced (llm | knowledge | tool | fixed_line | fallback | playbook)
    source: Mapped[str | None] = mapped_column(String(16))
    retrieval_ms: Mapped[float | None] = mapped_column(Float)  # duration of the knowledge search
    knowledge_answer_ms: Mapped[float | None] = mapped_column(Float)  # offset: sentence taken from the KB
    tool_result_ms: Mapped[float | None] = mapped_column(Float)  # offset: the tool's result came back
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    conversation: Mapped[Conversation] = relationship(back_populates="turns")


class ToolCallRecord(Base):
    __tablename__ = "tool_calls"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("tc"))
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    arguments: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    success: Mapped[bool] = mapped_column(Boolean, default=True)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    conversation: Mapped[Conversation] = relationship(back_populates="tool_calls")


class Meeting(Base):
    """A meeting booked by the built-in ``book_meeting`` tool."""

    __tablename__ = "meetings"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("mtg"))
    conversation_id: Mapped[str | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL"), index=True
    )
    agent_id: Mapped[str | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    attendee_name: Mapped[str] = mapped_column(String(200), default="")
    attendee_contact: Mapped[str] = mapped_column(String(200), default="")
    start_time: Mapped[datetime] = mapped_column()
    duration_min: Mapped[int] = mapped_column(Integer, default=30)
    notes: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookConfig(TimestampMixin, Base):
    __tablename__ = "webhook_configs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("wh"))
    url: Mapped[str] = mapped_column(String(1000))
    events: Mapped[list[Any]] = mapped_column(default=list)  # empty = all events
    secret: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    agent_id: Mapped[str | None] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), index=True
    )  # None = global


class WebhookEvent(Base):
    """Outbox row: written in the same transaction as the change it describes."""

    __tablename__ = "webhook_events"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("evt"))
    type: Mapped[str] = mapped_column(String(64), index=True)
    agent_id: Mapped[str | None] = mapped_column(String(40), index=True)
    conversation_id: Mapped[str | None] = mapped_column(String(40), index=True)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One event owed to one webhook config, and how its delivery went."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "webhook_id", name="uq_delivery_event_webhook"),
        Index("ix_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("dlv"))
    event_id: Mapped[str] = mapped_column(ForeignKey("webhook_events.id", ondelete="CASCADE"))
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhook_configs.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|delivered|dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    delivered_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """An API key generated by the service; only its SHA-256 is stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("key"))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(100), default="generated")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DncEntry(Base):
    """A number on the do-not-call list: never dialled by an outbound call or a campaign."""

    __tablename__ = "dnc_entries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("dnc"))
    phone_number: Mapped[str] = mapped_column(String(32), unique=True)  # E.164
    reason: Mapped[str] = mapped_column(String(500), default="")
    source: Mapped[str] = mapped_column(String(16), default="api")  # api | tool | csv
    conversation_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Campaign(TimestampMixin, Base):
    """A batch of outbound calls (ElevenLabs "batch calling") and how the dialer paces it."""

    __tablename__ = "campaigns"
    __table_args__ = (Index("ix_campaigns_status_scheduled", "status", "scheduled_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("btcal"))
    name: Mapped[str] = mapped_column(String(200))
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    phone_number_id: Mapped[str | None] = mapped_column(ForeignKey("phone_numbers.id", ondelete="SET NULL"))
    from_number: Mapped[str | None] = mapped_column(String(32))
    # pending (scheduled) | in_progress | paused | completed | cancelled | failed
    status: Mapped[str] = mapped_column(String(16), default="pending")
    scheduled_at: Mapped[datetime] = mapped_column(default=utcnow)
    timezone: Mapped[str | None] = mapped_column(String(64))  # for leads whose number gives no zone
    max_concurrent_calls: Mapped[int] = mapped_column(Integer, default=5)
    calls_per_minute: Mapped[int] = mapped_column(Integer, default=30)
    calling_hours_start: Mapped[str | None] = mapped_column(String(5))  # "09:00", lead's local time
    calling_hours_end: Mapped[str | None] = mapped_column(String(5))  # "17:00"
    calling_days: Mapped[list[Any]] = mapped_column(default=list)  # 0=Mon … 6=Sun; empty = every day
    retry_outcomes: Mapped[list[Any]] = mapped_column(default=list)  # e.g. ["no_answer", "busy"]
    retry_delay_sec: Mapped[int] = mapped_column(Integer, default=3600)
    max_attempts: Mapped[int] = mapped_column(Integer, default=1)
    retry_count: Mapped[int] = mapped_column(Integer, default=0)  # times POST …/retry was called
    telephony_call_config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    completed_at: Mapped[datetime | None] = mapped_column()


class CampaignRecipient(TimestampMixin, Base):
    """One lead of a campaign: its number, variables, attempts and outcome; the dialer's durable state."""

    __tablename__ = "campaign_recipients"
    __table_args__ = (Index("ix_recipients_campaign_status_due", "campaign_id", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("rcpt"))
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer, default=0)
    phone_number: Mapped[str] = mapped_column(String(64))  # E.164, or the text given when invalid
    time_zones: Mapped[list[Any]] = mapped_column(default=list)  # IANA zones for calling hours
    dynamic_variables: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # pending | dispatched | in_progress | completed | voicemail | failed | skipped | cancelled
    status: Mapped[str] = mapped_column(String(16), default="pending")
    # meeting_booked | interested | not_interested | callback_requested | voicemail | no_answer | busy
    # | failed | dnc | invalid_number | unknown
    outcome: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(String(500))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column()
    last_attempt_at: Mapped[datetime | None] = mapped_column()
    conversation_id: Mapped[str | None] = mapped_column(String(40))
    # Our failure that sent the lead back to the queue once, not counted as an attempt:
    # never_connected | server_restart | instance_lost (see telephony.dialer)
    requeued_reason: Mapped[str | None] = mapped_column(String(32))


class LiveCallRecord(Base):
    """A call in progress on one instance of the service, so every instance can list all live calls.

    Written by the instance's call registry (on register and unregister, refreshed every heartbeat);
    a row whose heartbeat is older than a few beats belongs to an instance that died and is ignored.
    """

    __tablename__ = "live_calls"

    call_sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    instance_id: Mapped[str] = mapped_column(String(100), index=True)
    # where the other instances reach that instance (INSTANCE_URL): a supervisor's listen is relayed from it
    instance_url: Mapped[str | None] = mapped_column(String(300))
    conversation_id: Mapped[str | None] = mapped_column(String(40))
    agent_id: Mapped[str | None] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(16), default="CALL_START")
    agent_speaking: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class CallCommand(Base):
    """A command addressed to one live call (``storage.commands``): Twilio's AMD verdict, a supervisor's
    action. Whichever instance holds the call's stream claims it (``consumed_at``) and acts on it."""

    __tablename__ = "call_commands"
    __table_args__ = (Index("ix_call_commands_pending", "conversation_id", "consumed_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(String(40))
    type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    consumed_at: Mapped[datetime | None] = mapped_column()
    consumed_by: Mapped[str | None] = mapped_column(String(100))  # the instance that acted on it


class AgentTest(TimestampMixin, Base):
    """A scenario test of an agent: a scripted caller and success criteria (``simulator.scenario``)."""

    __tablename__ = "agent_tests"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("test"))
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)  # ScenarioSpec as JSON


class AgentTestRun(Base):
    """One run of an agent's scenario tests: pass rate per scenario, and each call with its transcript."""

    __tablename__ = "agent_test_runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("testrun"))
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    mode: Mapped[str] = mapped_column(String(8), default="text")  # text | audio
    repeat: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), default="running")  # running | passed | failed | error
    pass_rate: Mapped[float | None] = mapped_column(Float)
    llm: Mapped[str | None] = mapped_column(String(32))
    judge: Mapped[str | None] = mapped_column(String(32))  # the LLM that judged rubrics, if any
    summary: Mapped[list[Any]] = mapped_column(default=list)
    results: Mapped[list[Any]] = mapped_column(default=list)
    error: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()


class ApiRateBucket(Base):
    """One API caller's token bucket, shared by every instance on this database (``api/rate_limit.py``).

    ``updated_at`` is Unix seconds (each instance's clock; NTP keeps them within milliseconds)."""

    __tablename__ = "api_rate_buckets"

    caller: Mapped[str] = mapped_column(String(80), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    allowed: Mapped[bool] = mapped_column(Boolean, default=True)  # the last request's verdict


class CallTransfer(Base):
    """A call handed to a person (``telephony.warm_transfer``): cold (Twilio dials the number) or warm (the
    caller waits in a conference while the rep is dialled and hears a summary, then the two are bridged).

    ``result``: ``dialing`` while it runs, then ``bridged`` | ``no_answer`` | ``busy`` | ``failed`` |
    ``caller_left`` (warm) or ``dialed`` (cold: what follows is Twilio's). ``returned_at``: the caller was
    taken back to the agent; ``resumed_at``: the agent's new Media Stream picked the call up."""

    __tablename__ = "call_transfers"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("xfer"))
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    call_sid: Mapped[str] = mapped_column(String(64))  # the caller's call
    mode: Mapped[str] = mapped_column(String(8))  # warm | cold
    to_number: Mapped[str] = mapped_column(String(32))
    from_number: Mapped[str | None] = mapped_column(String(32))
    requested_by: Mapped[str] = mapped_column(String(16), default="agent")  # agent | supervisor
    reason: Mapped[str | None] = mapped_column(String(300))
    summary: Mapped[str | None] = mapped_column(Text)  # what the rep hears before the bridge
    ring_timeout_sec: Mapped[int] = mapped_column(Integer, default=25)
    rep_call_sid: Mapped[str | None] = mapped_column(String(64))
    conference_sid: Mapped[str | None] = mapped_column(String(64))
    result: Mapped[str] = mapped_column(String(16), default="dialing")
    error: Mapped[str | None] = mapped_column(String(300))
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    rep_answered_at: Mapped[datetime | None] = mapped_column()
    announced_at: Mapped[datetime | None] = mapped_column()  # the summary started playing to the rep
    bridged_at: Mapped[datetime | None] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()  # the transfer settled (bridged or not)
    returned_at: Mapped[datetime | None] = mapped_column()
    resumed_at: Mapped[datetime | None] = mapped_column()


class ControlAction(Base):
    """A supervisor's action on a live call (``POST /v1/convai/conversations/{id}/control``): what, who
    (the credential's fingerprint, never the key), when; ``command_id``: the command that carried it."""

    __tablename__ = "control_actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    type: Mapped[str] = mapped_column(String(16))  # say | whisper | end_call | transfer | takeover | release
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    actor: Mapped[str] = mapped_column(String(80))
    command_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# ---------------------------------------------------------------- agent versions, experiments, analytics


class AgentVersion(Base):
    """An immutable snapshot of an agent's whole configuration (``storage.agent_versions``).

    ``spec`` holds what a call runs (every agent column, its tools with their real configs, the ids of
    its knowledge documents); ``spec_hash`` is its SHA-256, so a change that changes nothing makes no
    version. A conversation records the version that ran it (``conversations.agent_version_id``)."""

    __tablename__ = "agent_versions"
    __table_args__ = (
        UniqueConstraint("agent_id", "number", name="uq_agent_version_number"),
        Index("ix_agent_versions_agent_created", "agent_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("agver"))
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)  # 1, 2, … per agent
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    spec_hash: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(500), default="")
    restored_from: Mapped[str | None] = mapped_column(String(40))  # the version a restore copied
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Experiment(TimestampMixin, Base):
    """An A/B (/n) test between versions of one agent, on a campaign's calls or an inbound number's."""

    __tablename__ = "experiments"
    __table_args__ = (
        Index("ix_experiments_campaign_status", "campaign_id", "status"),
        Index("ix_experiments_number_status", "phone_number", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("exp"))
    name: Mapped[str] = mapped_column(String(200), default="")
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    campaign_id: Mapped[str | None] = mapped_column(String(40))
    phone_number: Mapped[str | None] = mapped_column(String(32))  # E.164 of an inbound number
    # [{"label": "A", "version_id": "agver_…", "weight": 50}, …] in order (the first is the control)
    variants: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(16), default="running")  # running | stopped
    stopped_at: Mapped[datetime | None] = mapped_column()


class ExperimentAssignment(Base):
    """Which variant of which experiment a call was given (sticky per lead: a hash of its number)."""

    __tablename__ = "experiment_assignments"
    __table_args__ = (Index("ix_experiment_assignments_experiment", "experiment_id", "variant"),)

    conversation_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    experiment_id: Mapped[str] = mapped_column(String(40))
    variant: Mapped[str] = mapped_column(String(40))
    version_id: Mapped[str] = mapped_column(String(40))
    lead_key: Mapped[str] = mapped_column(String(64))  # SHA-256 prefix of the lead's number, not the number
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AnalyticsRecorded(Base):
    """The calls already counted in ``analytics_rollup``: each call is added once (a claim by primary key)."""

    __tablename__ = "analytics_recorded"

    conversation_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)


class AnalyticsRollup(Base):
    """Pre-aggregated call counts (``storage.analytics``): one UPSERT per call end adds the call to its UTC
    hour (``grain`` "h"), its UTC day ("d") and its month ("m"); the analytics API reads only this table,
    whole months from month rows and whole days from day rows. Absent dimensions are ``""`` (so the
    unique key holds on NULL-free columns); ``dim`` says what ``dim_value`` is: ``all`` (``""``),
    ``local_hour`` ("0".."23" of the lead's day), ``stage`` (the playbook stage it ended in),
    ``outcome``, ``objection``. The ``all`` rows also hold the calls' voice-to-voice latencies as a
    fixed-bucket histogram (``v2v_00`` … ``v2v_36``: turns per bin, ``storage.analytics.v2v_bin``), so a
    latency series sums the same rows as a count series, in one GROUP BY (migration 0020)."""

    __tablename__ = "analytics_rollup"
    __table_args__ = (
        UniqueConstraint(
            "grain",
            "dim",
            "bucket",
            "agent_id",
            "campaign_id",
            "version_id",
            "experiment_id",
            "dim_value",
            name="uq_analytics_rollup_key",
        ),
        Index("ix_analytics_rollup_agent", "grain", "dim", "agent_id", "bucket"),
        Index("ix_analytics_rollup_campaign", "grain", "dim", "campaign_id", "bucket"),
        Index("ix_analytics_rollup_version", "grain", "dim", "version_id", "bucket"),
        Index("ix_analytics_rollup_experiment", "experiment_id", "grain", "dim"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    grain: Mapped[str] = mapped_column(String(1))  # h: bucket is an hour; d: a day; m: a month
    dim: Mapped[str] = mapped_column(String(16))
    bucket: Mapped[datetime] = mapped_column()  # the UTC hour (or day) the call was placed in
    agent_id: Mapped[str] = mapped_column(String(40), default="")
    campaign_id: Mapped[str] = mapped_column(String(40), default="")
    version_id: Mapped[str] = mapped_column(String(40), default="")
    experiment_id: Mapped[str] = mapped_column(String(40), default="")
    dim_value: Mapped[str] = mapped_column(String(64), default="")
    calls: Mapped[int] = mapped_column(Integer, default=0)
    answered: Mapped[int] = mapped_column(Integer, default=0)
    human: Mapped[int] = mapped_column(Integer, default=0)
    conversations: Mapped[int] = mapped_column(Integer, default=0)
    qualified: Mapped[int] = mapped_column(Integer, default=0)
    booked: Mapped[int] = mapped_column(Integer, default=0)
    call_seconds: Mapped[float] = mapped_column(Float, default=0.0)


# ---------------------------------------------------------------- migration 0020 (issue 29)

V2V_BINS = 37  # voice-to-voice histogram bins of an analytics_rollup row (storage.analytics.v2v_bin)
V2V_COLUMNS = [f"v2v_{i:02d}" for i in range(V2V_BINS)]
for _column in V2V_COLUMNS:
    setattr(
        AnalyticsRollup,
        _column,
        mapped_column(_column, Integer, nullable=False, default=0, server_default="0"),
    )
# A document removed from an agent while a version still lists it is detached, not deleted: it keeps
# its text and vectors, a call of that version still retrieves from it, and restoring that version
# attaches it again (storage.agent_versions). ``Agent.documents`` holds only the attached ones.
KnowledgeDocument.detached_at = mapped_column(UTCDateTime, nullable=True, default=None)
