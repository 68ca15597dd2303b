"""Shapes of the agent tests API: scenario tests and their runs (``simulator.scenario``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shapes.common import Id, PartialUpdate, Strict
from simulator.scenario import CallerStep, Criteria, ScenarioSpec

__all__ = [
    "AgentTestCreate",
    "AgentTestList",
    "AgentTestResponse",
    "AgentTestRunCreate",
    "AgentTestRunList",
    "AgentTestRunResponse",
    "AgentTestScenarioSummary",
    "AgentTestStarterPack",
    "AgentTestStarterPackAdded",
    "AgentTestUpdate",
    "CallerStep",
    "Criteria",
    "ScenarioSpec",
]


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
    version_id: Id | None = Field(
        default=None,
        description="Run this version of the agent (e.g. an experiment's variant before it takes traffic); "
        "default: the agent's latest",
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


class AgentTestStarterPack(BaseModel):
    """The SDR starter pack: its scenarios, and the sample agent and knowledge they were written for."""

    agent: dict[str, Any] | None
    knowledge: list[dict[str, str]]
    scenarios: list[ScenarioSpec]


class AgentTestStarterPackAdded(BaseModel):
    added: list[AgentTestResponse] = Field(description="Tests created on the agent")
    skipped: list[str] = Field(description="Scenarios not added: the agent has a test of that name already")
