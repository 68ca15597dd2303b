"""Shapes of the agent versions API (``/v1/convai/agents/{agent_id}/versions``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from shapes.agents import AgentResponse
from shapes.common import Page

__all__ = ["AgentVersionListResponse", "AgentVersionResponse", "AgentVersionSummary"]


class AgentVersionSummary(BaseModel):
    id: str = Field(description="The version's id (``agver_…``); conversations record it as agent_version_id")
    agent_id: str
    number: int = Field(description="1 for the agent as created, then 2, 3 … per change")
    description: str = Field(description="What changed from the version before, e.g. 'changed system_prompt'")
    config_hash: str = Field(description="SHA-256 of the configuration: equal hashes, equal configurations")
    restored_from: str | None = Field(default=None, description="The version a restore copied")
    is_current: bool = Field(
        description="The agent's latest version (what a new call runs, outside experiments)"
    )
    created_at: datetime


class AgentVersionResponse(AgentVersionSummary):
    config: AgentResponse = Field(
        description="The agent as GET /v1/convai/agents/{id} returned it at this version "
        "(tool header values masked)"
    )


class AgentVersionListResponse(Page):
    versions: list[AgentVersionSummary]
