"""Sales playbooks: ``/v1/convai/playbooks`` — the starter playbook a new agent can start from, and a
check of a playbook (what the console's editor asks before it saves). Playbooks live on agents
(``playbook`` of ``POST/PATCH /v1/convai/agents``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from pydantic import Field

from api.agent_service import checked_playbook
from call.playbook import PlaybookRun, starter_playbook
from call.playbook_words import FIELD_TYPES, INTENTS
from schemas import BuiltinToolName, Playbook, Strict

router = APIRouter(prefix="/convai/playbooks", tags=["playbooks"])


class PlaybookCheck(Strict):
    playbook: Playbook
    builtin_tools: list[BuiltinToolName] = Field(default_factory=list)
    tool_names: list[str] = Field(default_factory=list, max_length=100, description="The agent's own tools")


class PlaybookTry(Strict):
    playbook: Playbook
    stage: str | None = Field(
        default=None, max_length=40, description="Where to start (default: the start stage)"
    )
    say: list[str] = Field(min_length=1, max_length=20, description="Caller lines, in order")
    variables: dict[str, str] = Field(default_factory=dict, description="A call's variables (agent_name, …)")


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


@router.post(
    "/try",
    summary="Say caller lines to a playbook: where each takes the call and what the agent says (no model)",
)
async def try_lines(body: PlaybookTry) -> dict[str, Any]:
    raw = body.playbook.model_dump(mode="json", exclude_none=True)
    stage = body.stage or raw["start"]
    if stage not in raw["nodes"]:
        raise RequestValidationError(
            [{"loc": ("body", "stage"), "msg": f"unknown stage {stage!r}", "type": "value_error"}]
        )
    run = PlaybookRun({**raw, "start": stage}, {"agent_name": "the agent", **body.variables})
    greeting = run.greeting("") if stage == raw["start"] else ""
    turns = []
    for line in body.say:
        step = run.on_turn(line)
        turns.append(
            {
                "say": line,
                "intent": step.intent,
                "entered": step.entered,
                "lines": step.lines,
                "answered_within_stage": step.stay,
                "ask": step.ask if step.stay else "",
                "tools": [{"name": c.name, "arguments": c.arguments} for c in step.tools],
                "ends_call": step.ends_call,
                "stage": run.stage,
            }
        )
        if step.ends_call:
            break
    return {
        "greeting": greeting,
        "turns": turns,
        "stage_path": run.path,
        "collected": run.collected,
    }
