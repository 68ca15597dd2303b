"""Pydantic request/response schemas of the REST API, kept apart from the ORM models.

Two dialects share the ``/v1/convai`` paths:

* the flat spec shape (``POST /v1/convai/agents`` with ``system_prompt``, ``voice_id`` …), and
* the ElevenLabs Conversational AI shape (``conversation_config``, ``agent_id``, ``metadata`` …).

Responses are supersets that carry both, so one GET serves the web console and the official
``elevenlabs`` SDK alike. Where the two vocabularies disagree (``status`` of a conversation), the
value is this service's own and the SDK (which types it ``Literal[...] | Any``) still parses it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from config import LLMChoice, ProviderChoice
from telephony.numbers import InvalidPhoneNumber, is_phone_number, normalize

# ---------------------------------------------------------------- shared pieces

TOOL_NAME_PATTERN = r"^[a-zA-Z_][a-zA-Z0-9_]{0,63}$"

BuiltinToolName = Literal["end_call", "transfer_call", "send_sms", "book_meeting", "add_to_dnc"]
ToolKind = Literal["webhook", "end_call", "transfer_call", "send_sms", "book_meeting", "add_to_dnc"]
WebhookEventType = Literal[
    "call.started", "call.completed", "call.interrupted", "call.failed", "tool.executed", "campaign.completed"
]
ConversationStatus = Literal[
    "initiated", "ringing", "in_progress", "completed", "busy", "no_answer", "failed", "canceled"
]


def _check_e164(value: str) -> str:
    """Any international notation in, E.164 out (``+1 (415) 555-0123`` -> ``+14155550123``)."""
    try:
        return normalize(value)
    except InvalidPhoneNumber as exc:
        raise ValueError(f"invalid phone number (E.164 expected): {exc}") from None


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL")
    return value


def _unique(values: list[Any]) -> list[Any]:
    if len(set(values)) != len(values):
        raise ValueError("items must be unique")
    return values


E164 = Annotated[
    str,
    Field(
        max_length=40,
        examples=["+14155550123"],
        description="International phone number; stored in E.164 (+ country code and digits)",
    ),
    AfterValidator(_check_e164),
]
HttpUrlStr = Annotated[
    str, Field(max_length=1000, examples=["https://example.com/hook"]), AfterValidator(_check_http_url)
]
Id = Annotated[str, Field(min_length=1, max_length=40)]


class Strict(BaseModel):
    """Request bodies refuse unknown fields, so a typo is a 422 instead of a silent no-op."""

    model_config = ConfigDict(extra="forbid")


class PartialUpdate(Strict):
    """PATCH bodies: only the fields sent change; ``null`` is refused where the column is required."""

    NON_NULLABLE: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _refuse_null_for_required(self) -> PartialUpdate:
        for name in self.model_fields_set & self.NON_NULLABLE:
            if getattr(self, name) is None:
                raise ValueError(f"{name} may not be null")
        return self

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


class ErrorResponse(BaseModel):
    """Every error body: a message, or for 422 the list of invalid fields."""

    detail: str | list[dict[str, Any]] = Field(examples=["agent not found: agent_123"])


class Page(BaseModel):
    """Cursor pagination, newest first: pass ``next_cursor`` back as ``cursor`` while ``has_more``."""

    has_more: bool
    next_cursor: str | None = None


# ---------------------------------------------------------------- tools


def _check_parameters_schema(schema: dict[str, Any]) -> dict[str, Any]:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"parameters is not a valid JSON Schema: {exc.message}") from None
    if schema.get("type", "object") != "object":
        raise ValueError('parameters must be a JSON Schema of "type": "object"')
    return {"type": "object", **schema}


ParametersSchema = Annotated[
    dict[str, Any],
    Field(
        description="JSON Schema (Draft 2020-12) of the tool's arguments; an object schema.",
        examples=[{"type": "object", "properties": {"email": {"type": "string"}}, "required": ["email"]}],
    ),
    AfterValidator(_check_parameters_schema),
]


class WebhookToolConfig(Strict):
    """``config`` of a ``webhook`` tool: where and how the tool is called."""

    url: HttpUrlStr
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_sec: float = Field(default=5.0, gt=0, le=30)


def _check_tool_config(kind: str | None, config: dict[str, Any] | None) -> dict[str, Any] | None:
    if kind is None or config is None:
        return config
    if kind == "webhook":
        try:
            return WebhookToolConfig.model_validate(config).model_dump()
        except ValidationError as exc:
            problems = "; ".join(
                f"config.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise ValueError(f"invalid webhook tool config: {problems}") from None
    config = dict(config)
    for key in ("number", "to"):
        number = config.get(key)
        if number is None:
            continue
        if not isinstance(number, str) or not is_phone_number(number):
            raise ValueError(f"config.{key} must be an international phone number such as +14155550123")
        config[key] = normalize(number)
    message = config.get("message")
    if message is not None and (not isinstance(message, str) or not 0 < len(message) <= 600):
        raise ValueError("config.message must be a text of 1 to 600 characters")
    return config


class ToolCreate(Strict):
    name: str = Field(pattern=TOOL_NAME_PATTERN, examples=["lookup_account"])
    description: str = Field(default="", max_length=2000)
    kind: ToolKind = "webhook"
    parameters: ParametersSchema = Field(default_factory=lambda: {"type": "object", "properties": {}})
    config: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            'webhook: {"url", "method", "headers" (write-only: shown as ********), "timeout_sec"}; '
            'transfer_call: {"number"}; send_sms: {"number", "message" (a fixed body; may use {{variables}})}'
        ),
    )
    enabled: bool = True

    @model_validator(mode="after")
    def _config_fits_kind(self) -> ToolCreate:
        self.config = _check_tool_config(self.kind, self.config) or {}
        return self


class ToolUpdate(PartialUpdate):
    NON_NULLABLE = frozenset({"name", "description", "kind", "parameters", "config", "enabled"})

    name: str | None = Field(default=None, pattern=TOOL_NAME_PATTERN)
    description: str | None = Field(default=None, max_length=2000)
    kind: ToolKind | None = None
    parameters: ParametersSchema | None = None
    config: dict[str, Any] | None = None
    enabled: bool | None = None


class ToolResponse(BaseModel):
    id: str
    agent_id: str
    name: str
    description: str
    kind: ToolKind | str
    parameters: dict[str, Any]
    config: dict[str, Any]
    enabled: bool
    created_at: datetime
    updated_at: datetime


class ToolListResponse(BaseModel):
    tools: list[ToolResponse]


def check_tool_update(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """Re-validate a tool's config against its (possibly new) kind after a PATCH."""
    return _check_tool_config(kind, config) or {}


# ---------------------------------------------------------------- agents


class TurnSettings(Strict):
    """Per-agent overrides of the service-wide INTERRUPT_* / SILENCE_THRESHOLD_SEC settings."""

    interrupt_min_energy: float | None = Field(default=None, ge=0, le=32768)
    interrupt_debounce_ms: int | None = Field(default=None, ge=0, le=5000)
    interrupt_baseline_factor: float | None = Field(default=None, gt=0, le=100)
    interrupt_min_speech_ms: int | None = Field(default=None, ge=0, le=5000)
    silence_threshold_sec: float | None = Field(default=None, gt=0, le=10)
    turn_model: Literal["off", "smart_turn"] | None = None  # "off": silence and the words alone (TURN_MODEL)


class ProviderOverrides(Strict):
    """Per-agent provider choice; unset keys follow STT_PROVIDER / TTS_PROVIDER / LLM_PROVIDER."""

    stt: ProviderChoice | None = None
    tts: ProviderChoice | None = None
    llm: LLMChoice | None = None


class DataCollectionField(Strict):
    """A value the post-call analysis extracts from the transcript."""

    name: str = Field(pattern=TOOL_NAME_PATTERN, examples=["budget"])
    type: Literal["string", "number", "boolean"] = "string"
    description: str = Field(default="", max_length=1000)


def _unique_names(fields: list[DataCollectionField]) -> list[DataCollectionField]:
    _unique([f.name for f in fields])
    return fields


Language = Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$", max_length=16, examples=["en"])]
BuiltinTools = Annotated[list[BuiltinToolName], AfterValidator(_unique)]
DataCollection = Annotated[list[DataCollectionField], AfterValidator(_unique_names)]
VoicemailAction = Literal["hang_up", "leave_message"]
STTKeywords = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[^:\n]+$")]],
    Field(max_length=50, examples=[["Orbit CRM", "HubSpot"]]),
    AfterValidator(_unique),
]


class AgentFields(Strict):
    """The flat agent settings, as the spec's ``POST /v1/convai/agents`` body names them."""

    name: str = Field(min_length=1, max_length=200, examples=["Sales Bot"])
    system_prompt: str = Field(default="", max_length=100_000, examples=["You are a sales representative…"])
    first_message: str = Field(default="", max_length=5_000, examples=["Hello, how can I help?"])
    voice_id: str | None = Field(
        default=None, max_length=100, description="TTS voice; null = DEEPGRAM_VOICE / the local voice"
    )
    interrupt_enabled: bool = True
    language: Language = "en"
    llm_model: str | None = Field(default=None, max_length=200, description="null = OLLAMA_MODEL")
    temperature: float = Field(default=0.7, ge=0, le=2)
    max_call_duration_sec: int = Field(default=1800, ge=10, le=14_400)
    silence_timeout_sec: float = Field(default=20.0, ge=1, le=600)
    turn_settings: TurnSettings = Field(default_factory=TurnSettings)
    providers: ProviderOverrides = Field(default_factory=ProviderOverrides)
    builtin_tools: BuiltinTools = Field(default_factory=list)
    transfer_number: E164 | None = None
    data_collection: DataCollection = Field(default_factory=list)
    stt_keywords: STTKeywords = Field(
        default_factory=list,
        description="Names and terms the speech recogniser should expect (Deepgram keywords; the embedded "
        "Whisper is prompted with them). ElevenLabs: conversation_config.asr.keywords.",
    )
    voicemail_detection: bool = Field(
        default=True,
        description="Outbound calls: tell a person from an answering machine by the audio and words",
    )
    voicemail_action: VoicemailAction = Field(
        default="hang_up",
        description="On an answering machine: hang up, or leave voicemail_message after the beep",
    )
    voicemail_message: str = Field(
        default="", max_length=2_000, description="Said once to an answering machine ({{variables}} filled)"
    )


class AgentCreate(AgentFields):
    tools: list[ToolCreate] = Field(default_factory=list, description="Tools created with the agent")
    knowledge_base_ids: list[Id] = Field(
        default_factory=list,
        description="Ids of existing knowledge documents (of any agent) to copy into this agent's "
        "knowledge base; the copies are re-embedded by the knowledge store.",
    )


class AgentUpdate(PartialUpdate):
    """PATCH body: any flat field, and/or the ElevenLabs fields (``conversation_config`` is deep-merged)."""

    NON_NULLABLE = frozenset(
        {
            "name",
            "system_prompt",
            "first_message",
            "interrupt_enabled",
            "language",
            "temperature",
            "max_call_duration_sec",
            "silence_timeout_sec",
            "turn_settings",
            "providers",
            "builtin_tools",
            "data_collection",
            "stt_keywords",
            "voicemail_detection",
            "voicemail_action",
            "voicemail_message",
            "knowledge_base_ids",
        }
    )

    name: str | None = Field(default=None, min_length=1, max_length=200)
    system_prompt: str | None = Field(default=None, max_length=100_000)
    first_message: str | None = Field(default=None, max_length=5_000)
    voice_id: str | None = Field(default=None, max_length=100)
    interrupt_enabled: bool | None = None
    language: Language | None = None
    llm_model: str | None = Field(default=None, max_length=200)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_call_duration_sec: int | None = Field(default=None, ge=10, le=14_400)
    silence_timeout_sec: float | None = Field(default=None, ge=1, le=600)
    turn_settings: TurnSettings | None = None
    providers: ProviderOverrides | None = None
    builtin_tools: BuiltinTools | None = None
    transfer_number: E164 | None = None
    data_collection: DataCollection | None = None
    stt_keywords: STTKeywords | None = None
    voicemail_detection: bool | None = None
    voicemail_action: VoicemailAction | None = None
    voicemail_message: str | None = Field(default=None, max_length=2_000)
    knowledge_base_ids: list[Id] | None = Field(
        default=None, description="Documents to copy into this agent (ids it already owns are kept as is)."
    )
    # ElevenLabs dialect
    conversation_config: dict[str, Any] | None = None
    platform_settings: dict[str, Any] | None = None
    workflow: dict[str, Any] | None = None
    tags: list[str] | None = None
    version_description: str | None = Field(default=None, description="Accepted for compatibility; unused.")
    procedures: dict[str, Any] | None = Field(default=None, description="Accepted for compatibility; unused.")


class ElevenLabsAgentCreate(BaseModel):
    """``POST /v1/convai/agents/create`` body (ElevenLabs); unknown top-level fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    conversation_config: dict[str, Any] = Field(
        examples=[
            {
                "agent": {
                    "prompt": {"prompt": "You are a helpful SDR."},
                    "first_message": "Hi!",
                    "language": "en",
                },
                "tts": {"voice_id": "aura-2-thalia-en"},
            }
        ]
    )
    platform_settings: dict[str, Any] | None = None
    workflow: dict[str, Any] | None = None
    name: str | None = Field(default=None, max_length=200)
    tags: list[str] | None = None


class ElevenLabsAgentCreated(BaseModel):
    agent_id: str


class AgentMetadata(BaseModel):
    created_at_unix_secs: int
    updated_at_unix_secs: int


class AccessInfo(BaseModel):
    """ElevenLabs' sharing info; a self-hosted service has one owner."""

    is_creator: bool = True
    creator_name: str = "local"
    creator_email: str = ""
    role: str = "admin"


class AgentResponse(BaseModel):
    """An agent: the flat fields plus the ElevenLabs ``GetAgentResponseModel`` / summary fields."""

    id: str
    agent_id: str = Field(description="Same as id (ElevenLabs name)")
    name: str
    system_prompt: str
    first_message: str
    voice_id: str | None
    interrupt_enabled: bool
    language: str
    llm_model: str | None
    temperature: float
    max_call_duration_sec: int
    silence_timeout_sec: float
    turn_settings: dict[str, Any]
    providers: dict[str, Any]
    builtin_tools: list[str]
    transfer_number: str | None
    data_collection: list[dict[str, Any]]
    stt_keywords: list[str]
    voicemail_detection: bool
    voicemail_action: str
    voicemail_message: str
    tools: list[ToolResponse]
    knowledge_base_ids: list[str]
    created_at: datetime
    updated_at: datetime
    # ElevenLabs dialect
    conversation_config: dict[str, Any]
    metadata: AgentMetadata
    platform_settings: dict[str, Any] | None = None
    tags: list[str]
    access_info: AccessInfo
    created_at_unix_secs: int
    updated_at_unix_secs: int


class AgentListResponse(Page):
    agents: list[AgentResponse]


# ---------------------------------------------------------------- conversations


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


class ConversationDetail(ConversationSummary):
    """A conversation with transcript, tool calls, results (ElevenLabs ``GetConversationResponseModel``)."""

    call_state: str
    dynamic_variables: dict[str, Any]
    collected_data: dict[str, Any]
    recording_url: str | None
    transcript: list[TranscriptTurn]
    tool_calls: list[ToolCallResponse]
    # ElevenLabs dialect
    metadata: ConversationMetadata
    analysis: ConversationAnalysis
    has_audio: bool
    has_user_audio: bool
    has_response_audio: bool
    has_auxiliary_audio: bool = False


class ConversationListResponse(Page):
    conversations: list[ConversationSummary]


# ---------------------------------------------------------------- phone numbers


class PhoneNumberCreate(Strict):
    phone_number: E164
    agent_id: Id | None = Field(default=None, description="Agent answering inbound calls to this number")
    label: str = Field(default="", max_length=200)


class PhoneNumberUpdate(PartialUpdate):
    NON_NULLABLE = frozenset({"phone_number", "label"})

    phone_number: E164 | None = None
    agent_id: Id | None = None
    label: str | None = Field(default=None, max_length=200)


class PhoneNumberResponse(BaseModel):
    id: str
    phone_number: str
    agent_id: str | None
    label: str
    created_at: datetime
    updated_at: datetime


class PhoneNumberListResponse(Page):
    phone_numbers: list[PhoneNumberResponse]


# ---------------------------------------------------------------- webhook configs

WebhookEvents = Annotated[
    list[WebhookEventType],
    Field(description="Event types to receive; empty = all"),
    AfterValidator(_unique),
]
WebhookSecret = Annotated[str, Field(min_length=16, max_length=200)]


class WebhookCreate(Strict):
    url: HttpUrlStr
    events: WebhookEvents = Field(default_factory=list)
    secret: WebhookSecret | None = Field(
        default=None, description="HMAC signing secret; generated when omitted; returned only by this call"
    )
    active: bool = True
    agent_id: Id | None = Field(default=None, description="Only this agent's events; null = all agents")


class WebhookUpdate(PartialUpdate):
    NON_NULLABLE = frozenset({"url", "events", "secret", "active"})

    url: HttpUrlStr | None = None
    events: WebhookEvents | None = None
    secret: WebhookSecret | None = Field(default=None, description="Rotate the signing secret")
    active: bool | None = None
    agent_id: Id | None = None


class WebhookResponse(BaseModel):
    id: str
    url: str
    events: list[str]
    active: bool
    agent_id: str | None
    created_at: datetime
    updated_at: datetime


class WebhookCreatedResponse(WebhookResponse):
    secret: str = Field(description="Shown once: store it to verify signatures")


class WebhookListResponse(Page):
    webhooks: list[WebhookResponse]


# ---------------------------------------------------------------- outbound calls

DynamicVariables = Annotated[
    dict[str, str | int | float | bool],
    Field(default_factory=dict, max_length=100, description="Values for {{name}} placeholders in the prompt"),
]


class OutboundCallRequest(Strict):
    agent_id: Id
    to_number: E164
    from_number: E164 | None = Field(
        default=None, description="Caller ID; defaults to the agent's number, then TWILIO_PHONE_NUMBER"
    )
    dynamic_variables: DynamicVariables


class OutboundCallResponse(BaseModel):
    conversation_id: str
    call_sid: str
    status: str


class ElevenLabsClientData(BaseModel):
    dynamic_variables: DynamicVariables


class ElevenLabsOutboundCallRequest(BaseModel):
    """ElevenLabs ``POST /v1/convai/twilio/outbound-call`` body (unknown fields are ignored, like theirs)."""

    agent_id: Id
    agent_phone_number_id: Id | None = None
    to_number: E164
    conversation_initiation_client_data: ElevenLabsClientData | None = None


class ElevenLabsOutboundCallResponse(BaseModel):
    success: bool
    message: str
    conversation_id: str | None
    callSid: str | None


# ---------------------------------------------------------------- do-not-call list


class DncCreate(Strict):
    """One number (``phone_number``) or many (``phone_numbers``); numbers already listed are kept as is."""

    phone_number: E164 | None = None
    phone_numbers: list[E164] | None = Field(default=None, min_length=1, max_length=10_000)
    reason: str = Field(default="", max_length=500, examples=["asked to be removed"])

    @model_validator(mode="after")
    def _one_or_many(self) -> DncCreate:
        if (self.phone_number is None) == (self.phone_numbers is None):
            raise ValueError("give either phone_number or phone_numbers")
        return self

    def numbers(self) -> list[str]:
        return [self.phone_number] if self.phone_number else list(self.phone_numbers or [])


class DncEntryResponse(BaseModel):
    id: str
    phone_number: str
    reason: str
    source: str = Field(description="api | tool (the agent's add_to_dnc) | csv")
    conversation_id: str | None
    created_at: datetime


class DncAddResponse(BaseModel):
    added: int = Field(description="How many numbers were not on the list before")
    entries: list[DncEntryResponse]


class DncListResponse(Page):
    entries: list[DncEntryResponse]


class DncCheckResponse(BaseModel):
    phone_number: str
    on_list: bool
    entry: DncEntryResponse | None


# ---------------------------------------------------------------- campaigns (batch calling)

# screened: a call screener answered and nobody picked up; ivr: a phone menu answered (not navigated)
RETRYABLE_OUTCOMES = ("no_answer", "busy", "voicemail", "failed", "screened", "ivr")
RetryableOutcome = Literal["no_answer", "busy", "voicemail", "failed", "screened", "ivr"]
HourMinute = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", examples=["09:00"])]


def _check_zone(value: str | None) -> str | None:
    if value is None:
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}: use an IANA name such as America/New_York") from None
    return value


TimeZoneName = Annotated[
    str, Field(max_length=64, examples=["America/New_York"]), AfterValidator(_check_zone)
]


class CallingHours(Strict):
    """When leads may be called, in each lead's own time zone (from the number or its ``timezone``)."""

    start: HourMinute = "09:00"
    end: HourMinute = "17:00"
    days: list[Annotated[int, Field(ge=0, le=6)]] = Field(
        default_factory=lambda: [0, 1, 2, 3, 4],
        description="Days of the week, 0 = Monday … 6 = Sunday; empty = every day",
    )

    @model_validator(mode="after")
    def _start_before_end(self) -> CallingHours:
        if self.start >= self.end:
            raise ValueError("calling_hours.start must be before calling_hours.end (same day)")
        return self


class RetryPolicy(Strict):
    outcomes: list[RetryableOutcome] = Field(
        default_factory=lambda: ["no_answer", "busy", "voicemail"],
        description="Outcomes after which a lead is called again",
    )
    delay_sec: int = Field(default=3600, ge=0, le=7 * 86_400, description="Wait before the next attempt")
    max_attempts: int = Field(default=3, ge=1, le=10, description="Calls per lead, the first included")


class BatchRecipientIn(BaseModel):
    """A lead: ElevenLabs ``OutboundCallRecipient`` plus an optional ``timezone``."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = Field(default=None, max_length=64)
    phone_number: str = Field(
        min_length=1, max_length=64, description="Invalid numbers end as invalid_number"
    )
    conversation_initiation_client_data: ElevenLabsClientData | None = None
    dynamic_variables: DynamicVariables
    timezone: TimeZoneName | None = None

    def variables(self) -> dict[str, Any]:
        data = self.conversation_initiation_client_data
        return {**self.dynamic_variables, **(data.dynamic_variables if data else {})}


class TelephonyCallConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    ringing_timeout_secs: int | None = Field(default=None, ge=5, le=600)


class BatchCallSubmit(BaseModel):
    """``POST /v1/convai/batch-calling/submit`` (the ElevenLabs body) plus this service's dialing rules.

    Unknown ElevenLabs fields (whatsapp_params, branch_id …) are accepted and ignored, as theirs are.
    """

    model_config = ConfigDict(extra="ignore")

    call_name: str = Field(min_length=1, max_length=200, examples=["Q4 webinar follow-up"])
    agent_id: Id
    agent_phone_number_id: Id | None = Field(default=None, description="Caller ID; else the agent's number")
    recipients: list[BatchRecipientIn] = Field(min_length=1, max_length=10_000)
    scheduled_time_unix: int | None = Field(default=None, ge=0, description="Start time; null/past = now")
    timezone: TimeZoneName | None = Field(
        default=None, description="Calling-hours zone of leads whose number gives none (default UTC)"
    )
    telephony_call_config: TelephonyCallConfig | None = None
    target_concurrency_limit: int | None = Field(default=None, ge=1, le=200, description="Concurrent calls")
    # this service's extensions
    calls_per_minute: int = Field(
        default=30, ge=1, le=6000, description="At most this many dials in any minute"
    )
    calling_hours: CallingHours | None = Field(default=None, description="null = any time")
    retry: RetryPolicy = Field(default_factory=lambda: RetryPolicy(outcomes=[], max_attempts=1))
    default_region: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z]{2}$",
        description="ISO country of numbers written without +country code, e.g. US",
    )


class BatchRecipientResponse(BaseModel):
    """ElevenLabs ``OutboundCallRecipientResponseModel`` plus outcome and attempts."""

    id: str
    phone_number: str
    status: str = Field(
        description="pending|dispatched|in_progress|completed|voicemail|failed|skipped|cancelled"
    )
    outcome: str | None = Field(
        description="meeting_booked|interested|not_interested|callback_requested|voicemail|screened|ivr|"
        "no_answer|busy|"
        "failed|dnc|invalid_number|duplicate|unknown"
    )
    error: str | None
    attempts: int
    next_attempt_unix: int | None
    time_zones: list[str]
    created_at_unix: int
    updated_at_unix: int
    conversation_id: str | None
    conversation_initiation_client_data: dict[str, Any]


class CampaignTotals(BaseModel):
    recipients: int
    dialled: int = Field(description="Leads called at least once")
    by_status: dict[str, int]
    by_outcome: dict[str, int]


class BatchCallResponse(BaseModel):
    """ElevenLabs ``BatchCallResponse`` plus the dialing rules and per-outcome totals."""

    id: str
    name: str
    agent_id: str
    agent_name: str
    phone_number_id: str | None
    phone_provider: str = "twilio"
    from_number: str | None
    status: str = Field(description="pending|in_progress|completed|cancelled|failed")
    created_at_unix: int
    scheduled_time_unix: int
    last_updated_at_unix: int
    completed_at_unix: int | None
    timezone: str | None
    total_calls_scheduled: int
    total_calls_dispatched: int
    total_calls_finished: int
    retry_count: int
    telephony_call_config: dict[str, Any]
    target_concurrency_limit: int
    calls_per_minute: int
    calling_hours: CallingHours | None
    retry: RetryPolicy
    totals: CampaignTotals


class BatchCallDetailedResponse(BatchCallResponse):
    recipients: list[BatchRecipientResponse]


class WorkspaceBatchCallsResponse(BaseModel):
    batch_calls: list[BatchCallResponse]
    next_doc: str | None = None
    has_more: bool = False


# ---------------------------------------------------------------- scenario tests (scenarios.model)

from scenarios.model import CallerStep, Criteria, ScenarioSpec  # noqa: E402


class AgentTestCreate(ScenarioSpec):
    """A scenario test: the caller's script and the criteria checked on the finished call."""


class AgentTestUpdate(PartialUpdate):
    NON_NULLABLE = frozenset({"name", "description", "caller", "criteria", "dynamic_variables"})

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    caller: list[CallerStep] | None = Field(default=None, min_length=1, max_length=50)
    criteria: Criteria | None = None
    dynamic_variables: dict[str, str | int | float | bool] | None = None
    caller_number: str | None = Field(default=None, pattern=r"^\+[1-9]\d{6,14}$")
    expect_on_embedded: bool | None = None


class AgentTestResponse(ScenarioSpec):
    model_config = ConfigDict(extra="ignore")

    id: str
    agent_id: str
    created_at: datetime
    updated_at: datetime


class AgentTestList(BaseModel):
    tests: list[AgentTestResponse]


class AgentTestRunCreate(Strict):
    mode: Literal["text", "audio"] = Field(
        default="text", description="text: lines go to the engine as heard words; audio: the real call path"
    )
    repeat: int = Field(default=1, ge=1, le=20, description="Runs of each scenario (models vary)")
    concurrency: int = Field(default=4, ge=1, le=16, description="Calls at once")
    test_ids: list[Id] | None = Field(
        default=None, max_length=200, description="Default: all the agent's tests"
    )
    scenarios: list[ScenarioSpec] | None = Field(
        default=None, max_length=200, description="Scenarios to run once, without storing them"
    )


class AgentTestScenarioSummary(BaseModel):
    scenario_id: str | None
    scenario: str
    runs: int
    passed: int
    pass_rate: float
    expect_on_embedded: bool
    not_judged: bool
    failures: list[str]


class AgentTestRunResponse(BaseModel):
    id: str
    agent_id: str
    status: str = Field(description="running | passed | failed | error")
    mode: str
    repeat: int
    pass_rate: float | None
    llm: str | None
    judge: str | None = Field(description="The LLM that judged rubrics; null: rubrics were not judged")
    summary: list[AgentTestScenarioSummary]
    results: list[dict[str, Any]] = Field(description="Each call: criteria results, transcript, tool calls")
    error: str | None
    created_at: datetime
    finished_at: datetime | None


class AgentTestRunList(BaseModel):
    runs: list[AgentTestRunResponse]
