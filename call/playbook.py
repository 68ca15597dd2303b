"""A playbook on a call: the stage the conversation is in, where the caller's words take it, and what to say.

A playbook (stored on the agent, checked by ``call.playbook_check``) is a small graph in the shape of
ElevenLabs' agent workflows: ``nodes`` (stages: goal, instructions, scripted ``lines`` and an ``ask``,
fields to ``collect``, the ``tools`` the stage may use, a tool to ``run_tool`` on entry) and ``edges``
(``source`` → ``target`` with a ``forward_condition``: an intent, collected fields, an LLM's choice
among named exits, or unconditional). An edge whose source is ``"*"`` leaves any stage (the branches
every call meets: "is this a robot?", "what is this about?", do-not-call).

``PlaybookRun`` is the state machine of one call: each caller turn collects the stage's fields from the
words, then takes the first edge that holds — the stage's own edges before the global ones; intents,
then fields, then an unconditional edge (never on a question, small talk or "hold on": those are
answered within the stage). Entering a stage yields its scripted line (templated with
``{{variables}}``), the tool it runs, and whether the call ends; a stage that ``returns`` (a detour)
goes back to where the call was and asks that stage's question again. No edge: the caller is answered
within the stage (``Step.stay``).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from call.playbook_words import CALLBACK_CUE, extract_field, playbook_intent, spoken_value
from providers.base import ToolCall, ToolSpec
from speech.text import fill_template, template_variables

GLOBAL = "*"
STARTER_FILE = Path(__file__).with_name("starter_playbook.json")
MAX_HOPS = 4  # stages passed through on one turn (fields already collected); a loop stops here
GOTO_PREFIX = "goto_"
RECORD_FIELDS = "record_fields"
DISCLOSURE_LINE = "Just so you know, I'm an AI assistant calling for {{company}}."
SYSTEM_VARIABLES = ("agent_name", "caller_number", "call_sid", "date")
# Words that do not answer the stage's question: an unconditional edge waits for an answer.
NOT_AN_ANSWER = frozenset({"question", "small_talk", "hold"})


@cache
def _starter_text() -> str:
    return STARTER_FILE.read_text()


def starter_playbook() -> dict[str, Any]:
    """The starter B2B demo-booking playbook (a fresh copy: callers may edit it)."""
    return json.loads(_starter_text())


@dataclass(slots=True)
class Step:
    """What the agent does after a caller turn (or on entering a stage)."""

    intent: str
    lines: list[str] = field(default_factory=list)  # scripted, templated, in order
    tools: list[ToolCall] = field(default_factory=list)  # run on entering, before the lines
    ends_call: bool = False
    end_reason: str | None = None
    stay: bool = False  # no transition: answer within the stage, then ``ask``
    ask: str = ""
    entered: list[str] = field(default_factory=list)


class PlaybookRun:
    """One call's way through a playbook (validated before it was stored)."""

    def __init__(
        self,
        playbook: dict[str, Any],
        variables: dict[str, Any],
        on_change: Callable[[list[str], str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.playbook = playbook
        self.nodes: dict[str, dict[str, Any]] = playbook.get("nodes") or {}
        self.edges: list[dict[str, Any]] = list((playbook.get("edges") or {}).values())
        self.base_variables = {**(playbook.get("variables") or {}), **variables}
        self.stage = str(playbook["start"])
        self.path: list[str] = [self.stage]
        self.visits: Counter[str] = Counter({self.stage: 1})
        self.collected: dict[str, Any] = {}
        self._return_to: str | None = None
        self._on_change = on_change

    # ---------------------------------------------------------------- reading the playbook

    @property
    def node(self) -> dict[str, Any]:
        return self.nodes[self.stage]

    def field_kinds(self) -> dict[str, str]:
        return {
            f["name"]: f.get("type", "string")
            for node in self.nodes.values()
            for f in node.get("collect", [])
        }

    def variables(self, spoken: bool = True) -> dict[str, Any]:
        kinds = self.field_kinds()
        values = {
            k: spoken_value(kinds.get(k, "string"), v) if spoken else v for k, v in self.collected.items()
        }
        return {**self.base_variables, **values}

    def fill(self, text: str) -> str:
        return fill_template(text, self.variables(), strict=False).strip()

    def line_for(self, stage: str) -> str:
        """The stage's scripted line: the variants whose variables are all known, turn about by visit."""
        lines = list(self.nodes[stage].get("lines") or [])
        if not lines:
            return ""
        known = self.variables()
        ready = [
            line for line in lines if all(known.get(v) not in (None, "") for v in template_variables(line))
        ]
        pool = ready or lines
        return self.fill(pool[(self.visits[stage] - 1) % len(pool)])

    def ask_for(self, stage: str) -> str:
        node = self.nodes[stage]
        return self.fill(node["ask"]) if node.get("ask") else self.line_for(stage)

    def greeting(self, first_message: str) -> str:
        """The call's first line: the agent's first message, else the start stage's line; with
        ``ai_disclosure: up_front``, the AI disclosure after its first sentence."""
        line = first_message or self.line_for(self.stage)
        if self.playbook.get("ai_disclosure") != "up_front" or not line:
            return line
        disclosure = self.fill(self.playbook.get("disclosure_line") or DISCLOSURE_LINE)
        parts = re.split(r"(?<=[.!?])\s+", line, maxsplit=1)
        return f"{parts[0]} {disclosure} {parts[1]}" if len(parts) == 2 else f"{line} {disclosure}"

    def _ordered_edges(self, stage: str) -> list[dict[str, Any]]:
        own = [e for e in self.edges if e.get("source") == stage]
        order = self.nodes[stage].get("edge_order") or []
        if order:
            by_id = {eid: e for eid, e in (self.playbook.get("edges") or {}).items() if e in own}
            own = [by_id[eid] for eid in order if eid in by_id] + [e for e in own if e not in by_id.values()]
        return own + [e for e in self.edges if e.get("source") == GLOBAL]

    # ---------------------------------------------------------------- a caller turn

    def on_turn(self, text: str) -> Step:
        intent = playbook_intent(text)
        self._collect(self.stage, text)
        edge = self._choose(intent)
        if edge is None:
            self._changed()
            return Step(intent, stay=True, ask=self.ask_for(self.stage))
        return self.enter(edge["target"], text, intent)

    def _choose(self, intent: str) -> dict[str, Any] | None:
        edges = self._ordered_edges(self.stage)
        for kind in ("intent", "fields", "unconditional"):
            for edge in edges:
                condition = edge.get("forward_condition") or {"type": "unconditional"}
                if condition.get("type") != kind:
                    continue
                if kind == "intent" and intent in condition.get("intents", []):
                    return edge
                if kind == "fields" and self._have(condition.get("fields", [])):
                    return edge
                if kind == "unconditional" and intent not in NOT_AN_ANSWER and edge.get("source") != GLOBAL:
                    return edge
        return None

    def _have(self, names: list[str]) -> bool:
        return bool(names) and all(self.collected.get(n) not in (None, "") for n in names)

    def _collect(self, stage: str, text: str, entering: bool = False) -> None:
        """The stage's fields in the caller's words. On entering, only typed values (a time, an email, a
        number): the words that led here are not the answer to the stage's own question."""
        for spec in self.nodes[stage].get("collect", []):
            kind = spec.get("type", "string")
            if entering and (
                kind in ("string", "boolean") or (kind == "when" and not CALLBACK_CUE.search(text))
            ):
                continue  # "he's out today" is not a time to call back
            value = extract_field(spec.get("type", "string"), text)
            if value is not None:
                self.collected[spec["name"]] = value

    def enter(self, target: str, text: str = "", intent: str = "") -> Step:
        """Move to ``target`` (by an edge, or an LLM's exit function): its line, tools and ending."""
        step = Step(intent)
        for _ in range(MAX_HOPS):
            if self.visits[target] and (instead := self.nodes[target].get("on_revisit")):
                target = instead
            node = self.nodes[target]
            if node.get("returns") and not self.nodes[self.stage].get("returns"):
                self._return_to = self.stage
            self.stage = target
            self.path.append(target)
            self.visits[target] += 1
            step.entered.append(target)
            if text:
                self._collect(target, text, entering=True)
            if run := node.get("run_tool"):
                step.tools.append(self._tool_call(run))
            onward = next(
                (
                    e
                    for e in self._ordered_edges(target)
                    if e.get("source") == target
                    and (e.get("forward_condition") or {}).get("type") == "fields"
                    and self._have(e["forward_condition"].get("fields", []))
                ),
                None,
            )
            if onward is None or node.get("ends_call"):
                break
            target = onward["target"]  # what this stage asks for was said already: on to the next
        node = self.nodes[self.stage]
        if line := self.line_for(self.stage):
            step.lines.append(line)
        if node.get("ends_call"):
            step.ends_call = True
            step.end_reason = node.get("end_reason") or "agent_goodbye"
        elif node.get("returns") and self._return_to is not None:
            back, self._return_to = self._return_to, None
            self.stage = back
            self.path.append(back)
            if ask := self.ask_for(back):
                step.lines.append(ask)
        self._changed()
        return step

    def _tool_call(self, run: dict[str, Any]) -> ToolCall:
        raw = self.variables(spoken=False)
        arguments = {
            k: fill_template(v, raw, strict=False) if isinstance(v, str) else v
            for k, v in (run.get("arguments") or {}).items()
        }
        return ToolCall(run["name"], {k: v for k, v in arguments.items() if v not in ("", None)})

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(list(self.path), self.stage, dict(self.collected))

    # ---------------------------------------------------------------- tool-calling LLMs

    def stage_prompt(self) -> str:
        """The stage's part of the system prompt for a model that calls tools (small on purpose)."""
        node = self.node
        parts = [f"Current step of the call: {node.get('label') or self.stage}."]
        if node.get("goal"):
            parts.append(f"Goal: {self.fill(node['goal'])}")
        for key in ("instructions", "additional_prompt"):
            if node.get(key):
                parts.append(self.fill(node[key]))
        if ask := self.ask_for(self.stage):
            parts.append(f'End your reply with this question, in your own words: "{ask}"')
        if self.collected:
            parts.append(
                "Known so far: "
                + ", ".join(f"{k}={v}" for k, v in self.variables().items() if k in self.collected)
            )
        if self.exits():
            parts.append("When the caller's words fit one of the transition functions, call it.")
        if any(True for _ in self.node.get("collect", [])):
            parts.append(f"When the caller gives a value you need, call {RECORD_FIELDS}.")
        return " ".join(parts)

    def exits(self) -> list[tuple[str, str]]:
        """The LLM's named exits from this stage: (target stage, when to take it)."""
        found = []
        for edge in self._ordered_edges(self.stage):
            condition = edge.get("forward_condition") or {}
            if condition.get("type") == "llm" and edge["target"] not in {t for t, _ in found}:
                found.append((edge["target"], condition.get("condition") or condition.get("label") or ""))
        return found

    def stage_tools(self, agent_tools: list[ToolSpec]) -> list[ToolSpec]:
        """What the model may call in this stage: its tools, its exits, and a way to record its fields."""
        allowed = set(self.node.get("tools") or [])
        tools = [t for t in agent_tools if t.name in allowed]
        for target, when in self.exits():
            label = self.nodes[target].get("label") or target
            tools.append(
                ToolSpec(
                    f"{GOTO_PREFIX}{target}",
                    f"Move the call to the step '{label}'. Call this when: {when}"[:500],
                    {"type": "object", "properties": {}},
                )
            )
        fields = self.node.get("collect") or []
        if fields:
            json_types = {"number": "number", "boolean": "boolean"}
            tools.append(
                ToolSpec(
                    RECORD_FIELDS,
                    "Record what the caller said: "
                    + "; ".join(f"{f['name']}: {f.get('description', '')}" for f in fields),
                    {
                        "type": "object",
                        "properties": {
                            f["name"]: {
                                "type": json_types.get(f.get("type", "string"), "string"),
                                "description": f.get("description", ""),
                            }
                            for f in fields
                        },
                    },
                )
            )
        return tools

    def follow_fields(self) -> Step | None:
        """After a model recorded fields: the stage's transition on them, if they are all there now."""
        for edge in self._ordered_edges(self.stage):
            condition = edge.get("forward_condition") or {}
            if condition.get("type") == "fields" and self._have(condition.get("fields", [])):
                return self.enter(edge["target"], "", "fields")
        return None

    def record(self, arguments: dict[str, Any]) -> None:
        """Values a model recorded: each checked as the caller's words would be."""
        kinds = {f["name"]: f.get("type", "string") for f in self.node.get("collect", [])}
        for name, value in arguments.items():
            if name not in kinds or value in (None, ""):
                continue
            if kinds[name] in ("number", "boolean") and not isinstance(value, str):
                self.collected[name] = value
            else:
                checked = extract_field(kinds[name], str(value))
                if checked is not None:
                    self.collected[name] = checked
        self._changed()


def stage_outcome(playbook: dict[str, Any] | None, stage_path: list[str] | None) -> str | None:
    """The outcome the stages a call went through say (the last stage on the path that names one)."""
    nodes = (playbook or {}).get("nodes") or {}
    for stage in reversed(stage_path or []):
        outcome = (nodes.get(stage) or {}).get("outcome")
        if outcome:
            return str(outcome)
    return None
