"""The shape of a sales playbook: stages (nodes) and transitions (edges), as ElevenLabs' agent workflows.

``nodes`` and ``edges`` are maps by id like ElevenLabs' ``workflow``; an edge has ``source``,
``target`` and a ``forward_condition`` (``llm`` and ``unconditional`` as ElevenLabs names them, plus
``intent`` and ``fields``). What a stage says, collects and may use are this service's fields; the
ElevenLabs SDK carries them as extra fields. Meaning (unknown stages, tools, intents, variables) is
checked by ``call.playbook_check`` when an agent is written.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from shapes.common import Strict

__all__ = [
    "FieldsCondition",
    "IntentCondition",
    "LLMCondition",
    "Playbook",
    "PlaybookCondition",
    "PlaybookEdge",
    "PlaybookField",
    "PlaybookPosition",
    "PlaybookStage",
    "PlaybookToolRun",
    "UnconditionalCondition",
]

_StageId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$", examples=["opener"])]
_EdgeId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")]
_Line = Annotated[str, Field(min_length=1, max_length=1000)]


class PlaybookField(Strict):
    """A value the stage collects from the caller's words (or a model's ``record_fields`` call)."""

    name: str = Field(pattern=r"^[a-z_][a-z0-9_]{0,39}$", examples=["email"])
    type: Literal["string", "number", "boolean", "email", "datetime", "when", "phone"] = "string"
    description: str = Field(default="", max_length=500)


class PlaybookToolRun(Strict):
    """A tool the stage runs on entry, its arguments templated (``{"start_time": "{{meeting_time}}"}``)."""

    name: str = Field(max_length=64)
    arguments: dict[str, str | int | float | bool] = Field(default_factory=dict)


class PlaybookPosition(BaseModel):
    """Where the graph editor draws the node (layout only)."""

    model_config = ConfigDict(extra="allow")
    x: float = 0
    y: float = 0


class PlaybookStage(Strict):
    """A stage: ElevenLabs' subagent node (``override_agent``) with what it says, collects and may use."""

    type: Literal["override_agent", "stage"] = "override_agent"
    label: str = Field(default="", max_length=200)
    goal: str = Field(default="", max_length=1000)
    instructions: str = Field(default="", max_length=4000, description="For models that call tools")
    additional_prompt: str = Field(
        default="", max_length=4000, description="ElevenLabs' name: as instructions"
    )
    lines: list[_Line] = Field(
        default_factory=list,
        max_length=10,
        description="Scripted lines said on entering the stage, templated with {{variables}}; a variant "
        "whose variables are all known is chosen, turn about on each visit",
    )
    ask: str = Field(
        default="", max_length=1000, description="The stage's question, asked again after a detour"
    )
    collect: list[PlaybookField] = Field(default_factory=list, max_length=20)
    tools: list[str] = Field(default_factory=list, max_length=20, description="Tools the stage may use")
    run_tool: PlaybookToolRun | None = None
    returns: bool = Field(default=False, description="A detour: after its line, back to the stage before")
    ends_call: bool = False
    end_reason: str | None = Field(default=None, pattern=r"^[a-z_]{1,64}$")
    outcome: str | None = Field(default=None, max_length=32, description="The call's outcome once here")
    on_revisit: str | None = Field(
        default=None, max_length=40, description="Go here instead on a second visit"
    )
    edge_order: list[str] = Field(default_factory=list, max_length=50)
    position: PlaybookPosition | None = None


class IntentCondition(Strict):
    type: Literal["intent"]
    intents: list[str] = Field(min_length=1, max_length=20)
    label: str | None = Field(default=None, max_length=200)


class FieldsCondition(Strict):
    type: Literal["fields"]
    fields: list[str] = Field(min_length=1, max_length=20, description="All collected")
    label: str | None = Field(default=None, max_length=200)


class LLMCondition(Strict):
    type: Literal["llm"]
    condition: str = Field(min_length=1, max_length=1000, description="When the model should take this exit")
    label: str | None = Field(default=None, max_length=200)


class UnconditionalCondition(Strict):
    type: Literal["unconditional"]
    label: str | None = Field(default=None, max_length=200)


PlaybookCondition = Annotated[
    IntentCondition | FieldsCondition | LLMCondition | UnconditionalCondition, Field(discriminator="type")
]


class PlaybookEdge(Strict):
    source: str = Field(max_length=40, description='A stage id, or "*" for every stage')
    target: str = Field(max_length=40)
    forward_condition: PlaybookCondition = Field(
        default_factory=lambda: UnconditionalCondition(type="unconditional")
    )
    reroutes: list[PlaybookPosition] | None = None


class Playbook(Strict):
    """A sales playbook: a small graph of stages the call moves through."""

    name: str = Field(default="", max_length=200)
    description: str = Field(default="", max_length=2000)
    start: str = Field(max_length=40, description="The stage the call starts in")
    ai_disclosure: Literal["when_asked", "up_front"] = Field(
        default="when_asked",
        description="up_front: the greeting says the agent is an AI. Asked, the agent never denies it.",
    )
    disclosure_line: str | None = Field(default=None, max_length=500)
    variables: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")], str] = Field(
        default_factory=dict, description="Values of {{variables}} (a call's dynamic variables win)"
    )
    nodes: dict[_StageId, PlaybookStage] = Field(min_length=1, max_length=60)
    edges: dict[_EdgeId, PlaybookEdge] = Field(default_factory=dict, max_length=300)
