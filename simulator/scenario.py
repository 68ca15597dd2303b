"""What a scenario test is: a scripted caller and the success criteria checked on the finished call.

A scenario is JSON (stored per agent through ``/v1/convai/agents/{id}/tests``, or in a file for
``python -m simulator test``)::

    {"name": "books a meeting", "caller": [{"say": "Can we meet tomorrow at 3pm?"}],
     "criteria": {"tools_called": [{"name": "book_meeting",
                                    "arguments": {"start_time": {"contains": "T15:00"}}}],
                  "ended_by": "caller"}}
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Mode = Literal["text", "audio"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Noise(_Strict):
    """Background noise under the caller's words (audio mode)."""

    kind: Literal["white", "pink", "hum"] = "white"
    snr_db: float = Field(default=15.0, ge=-10, le=60)


class CallerStep(_Strict):
    """One thing the caller does: say a line, press keys, or stay silent for a while."""

    say: str | None = Field(default=None, min_length=1, max_length=1000)
    dtmf: str | None = Field(default=None, pattern=r"^[0-9*#]{1,20}$")
    silence_s: float | None = Field(
        default=None, gt=0, le=600, description="The caller says nothing for this long (the watchdog runs)"
    )
    pause_s: float = Field(default=0.0, ge=0, le=60, description="Silence before this step")
    barge_in_after_s: float | None = Field(
        default=None, ge=0, le=30, description="Audio mode: speak this long into the agent's reply, over it"
    )
    noise: Noise | None = None

    @model_validator(mode="after")
    def _one_action(self) -> CallerStep:
        given = [k for k in ("say", "dtmf", "silence_s") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("each caller step needs exactly one of say, dtmf or silence_s")
        return self


class ValueCheck(_Strict):
    """How a value (a tool argument, a collected data field) must look; every condition given must hold."""

    equals: Any = None
    contains: str | None = Field(default=None, max_length=500, description="Case-insensitive substring")
    matches: str | None = Field(default=None, max_length=500, description="Regular expression (search)")
    present: bool | None = None

    def describe(self) -> str:
        parts = []
        if self.equals is not None:
            parts.append(f"= {self.equals!r}")
        if self.contains is not None:
            parts.append(f"containing {self.contains!r}")
        if self.matches is not None:
            parts.append(f"matching /{self.matches}/")
        if self.present is not None:
            parts.append("present" if self.present else "absent")
        return " and ".join(parts) or "anything"


Check = ValueCheck | str | int | float | bool  # a bare value means equals (strings: case-insensitive)


class ToolExpectation(_Strict):
    name: str = Field(min_length=1, max_length=64)
    arguments: dict[str, Check] = Field(default_factory=dict)
    success: bool | None = Field(default=None, description="The tool must have succeeded (true) or failed")


Phrase = str | list[str]  # a list: any one of these phrases


class Criteria(_Strict):
    tools_called: list[ToolExpectation] = Field(default_factory=list, max_length=20)
    tools_not_called: list[str] = Field(default_factory=list, max_length=20)
    outcome: str | None = Field(default=None, max_length=32, description="Post-call analysis outcome")
    collected_data: dict[str, Check] = Field(default_factory=dict)
    agent_says: list[Phrase] = Field(default_factory=list, max_length=20)
    agent_never_says: list[str] = Field(default_factory=list, max_length=50)
    states_facts: list[Phrase] = Field(
        default_factory=list,
        max_length=20,
        description="Facts (from the knowledge base) the agent must state",
    )
    ended_by: Literal["agent", "caller"] | None = None
    end_reason: str | None = Field(default=None, max_length=64, description="e.g. transferred, agent_goodbye")
    on_dnc_list: bool | None = Field(
        default=None, description="The caller's number is on the do-not-call list"
    )
    stage_path: list[str] = Field(
        default_factory=list,
        max_length=30,
        description="Playbook stages the call must go through, in this order (others may come between)",
    )
    ended_stage: str | None = Field(default=None, max_length=40, description="The playbook stage it ends in")
    max_v2v_p95_ms: float | None = Field(default=None, gt=0, le=60_000)
    rubric: str | None = Field(
        default=None, max_length=2000, description="Judged by an LLM when one other than the embedded is set"
    )


class ScenarioSpec(_Strict):
    """A scenario as stored and sent over the API."""

    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    caller: list[CallerStep] = Field(min_length=1, max_length=50)
    criteria: Criteria
    dynamic_variables: dict[str, str | int | float | bool] = Field(default_factory=dict)
    caller_number: str | None = Field(default=None, pattern=r"^\+[1-9]\d{6,14}$")
    expect_on_embedded: bool = Field(
        default=True, description="Expected to pass on the embedded default models (CI gates on these)"
    )

    @model_validator(mode="after")
    def _some_criterion(self) -> ScenarioSpec:
        if not self.criteria.model_dump(exclude_defaults=True):
            raise ValueError("criteria: give at least one criterion")
        return self


class ScenarioFile(_Strict):
    """A file for ``python -m simulator test``: scenarios, and optionally the agent (and knowledge) they
    expect, created for the run and deleted after it."""

    agent: dict[str, Any] | None = None
    knowledge: list[dict[str, str]] = Field(default_factory=list)
    scenarios: list[ScenarioSpec] = Field(min_length=1, max_length=200)
