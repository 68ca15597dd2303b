"""Shapes of the agents API, in both dialects (the flat spec shape and ElevenLabs')."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidatorFunctionWrapHandler, WrapValidator

from config import LLMChoice, ProviderChoice
from shapes.common import E164, TOOL_NAME_PATTERN, BuiltinToolName, Id, Page, PartialUpdate, Strict, _unique
from shapes.playbooks import Playbook
from shapes.tools import ToolCreate, ToolResponse

__all__ = [
    "AccessInfo",
    "AgentCreate",
    "AgentFields",
    "AgentListResponse",
    "AgentMetadata",
    "AgentResponse",
    "AgentUpdate",
    "BuiltinTools",
    "DataCollection",
    "DataCollectionField",
    "ElevenLabsAgentCreate",
    "ElevenLabsAgentCreated",
    "Language",
    "PlaybookOrStarter",
    "ProviderOverrides",
    "STTKeywords",
    "TurnSettings",
    "VoicemailAction",
]


class TurnSettings(Strict):
    """Per-agent overrides of the service-wide INTERRUPT_* / SILENCE_THRESHOLD_SEC settings."""

    interrupt_min_energy: float | None = Field(default=None, ge=0, le=32768)
    interrupt_debounce_ms: int | None = Field(default=None, ge=0, le=5000)
    interrupt_baseline_factor: float | None = Field(default=None, gt=0, le=100)
    interrupt_min_speech_ms: int | None = Field(default=None, ge=0, le=5000)
    silence_threshold_sec: float | None = Field(default=None, gt=0, le=10)
    turn_model: Literal["off", "smart_turn"] | None = None  # "off": silence and the words alone (TURN_MODEL)
    # How soon a pause after finished-sounding words ends the turn (TURN_EAGERNESS; ElevenLabs' name)
    turn_eagerness: Literal["eager", "normal", "patient"] | None = None


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
    qualifies: bool = Field(
        default=False,
        description="Analytics: a call is qualified when every field marked so was collected (none marked: "
        "every field)",
    )


def _unique_names(fields: list[DataCollectionField]) -> list[DataCollectionField]:
    _unique([f.name for f in fields])
    return fields


def _starter_or_playbook(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """``"starter"`` passes as is (the API copies the starter playbook); anything else is a playbook,
    its errors located inside it (no union member in the path)."""
    return value if value == "starter" else handler(value)


PlaybookOrStarter = Annotated[Playbook | None, WrapValidator(_starter_or_playbook)]
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
    llm_model: str | None = Field(
        default=None, max_length=200, description="null = the provider's default (OLLAMA_MODEL, OPENAI_MODEL)"
    )
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
    dtmf_navigation: bool = Field(
        default=False,
        description="Outbound calls answered by a phone menu: press the keys (send_dtmf) that reach a "
        "person, sales or the named contact, instead of ending the call as outcome ivr",
    )
    playbook: PlaybookOrStarter = Field(
        default=None,
        description='The sales playbook the calls follow (docs/playbooks.md); "starter": a copy of the '
        "starter B2B demo-booking playbook (GET /v1/convai/playbooks/starter), with the tools it uses",
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
            "dtmf_navigation",
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
    dtmf_navigation: bool | None = None
    playbook: PlaybookOrStarter = Field(
        default=None,
        description='A playbook, "starter" (a copy of the starter playbook), or null to remove it',
    )
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
    playbook: dict[str, Any] | Literal["starter"] | None = Field(
        default=None, description="The sales playbook (as in POST /v1/convai/agents)"
    )


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
    dtmf_navigation: bool
    playbook: dict[str, Any] | None = None
    tools: list[ToolResponse]
    knowledge_base_ids: list[str]
    created_at: datetime
    updated_at: datetime
    # ElevenLabs dialect
    conversation_config: dict[str, Any]
    metadata: AgentMetadata
    platform_settings: dict[str, Any] | None = None
    workflow: dict[str, Any] | None = Field(
        default=None,
        description="ElevenLabs name: the playbook (its extra fields ride along), or a workflow sent as is",
    )
    tags: list[str]
    access_info: AccessInfo
    created_at_unix_secs: int
    updated_at_unix_secs: int


class AgentListResponse(Page):
    agents: list[AgentResponse]
