"""Sales playbooks: ``/v1/convai/playbooks`` — the starter playbook a new agent can start from, and a
check of a playbook (what the console's editor asks before it saves). Playbooks live on agents
(``playbook`` of ``POST/PATCH /v1/convai/agents``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import Field

from api.agent_service import checked_playbook
from call.playbook import starter_playbook
from call.playbook_words import FIELD_TYPES, INTENTS
from schemas import BuiltinToolName, Playbook, Strict

router = APIRouter(prefix="/convai/playbooks", tags=["playbooks"])


class PlaybookCheck(Strict):
    playbook: Playbook
    builtin_tools: list[BuiltinToolName] = Field(default_factory=list)
    tool_names: list[str] = Field(default_factory=list, max_length=100, description="The agent's own tools")


@router.get("/starter", summary="The starter B2B demo-booking playbook")
async def get_starter() -> dict[str, Any]:
    return starter_playbook()


@router.get("/vocabulary", summary="Intents a transition may name, and the types of fields")
async def get_vocabulary() -> dict[str, Any]:
    return {"intents": sorted(INTENTS), "field_types": list(FIELD_TYPES)}


@router.post("/check", summary="Check a playbook against an agent's tools (422 with every problem's path)")
async def check(body: PlaybookCheck) -> dict[str, Any]:
    checked, _ = checked_playbook(body.playbook, list(body.builtin_tools), body.tool_names)
    return {"ok": True, "playbook": checked}
