"""What a call needs of its agent, fixed at call start (variables filled)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from call.bargein import TurnSettings
from call.playbook import PlaybookRun
from providers.base import ToolSpec
from speech.text import fill_template


@dataclass(slots=True)
class AgentProfile:
    agent: Any  # models.Agent, detached (tools and documents loaded)
    system_prompt: str
    first_message: str
    turn: TurnSettings
    tool_specs: list[ToolSpec]
    variables: dict[str, Any]
    playbook: dict[str, Any] | None = None  # the agent's sales playbook (call.playbook runs it)

    @property
    def id(self) -> str:
        return self.agent.id


def build_profile(
    agent: Any,
    dynamic: dict[str, Any],
    *,
    settings: Any,
    tool_specs: list[ToolSpec],
    caller_number: str,
    call_sid: str,
) -> AgentProfile:
    variables = {
        "agent_name": agent.name,
        "caller_number": caller_number,
        "call_sid": call_sid,
        "date": time.strftime("%A, %B %d, %Y"),
        **dynamic,
    }
    first_message = fill_template(agent.first_message or "", variables, strict=False)
    playbook = getattr(agent, "playbook", None) or None
    if playbook:  # no first message: the start stage's line (and the AI disclosure, if up front)
        first_message = PlaybookRun(playbook, variables).greeting(first_message)
    return AgentProfile(
        agent=agent,
        system_prompt=fill_template(agent.system_prompt or "", variables, strict=False),
        first_message=first_message,
        turn=TurnSettings.from_sources(settings, agent.turn_settings, agent.interrupt_enabled),
        tool_specs=tool_specs,
        variables=variables,
        playbook=playbook,
    )
