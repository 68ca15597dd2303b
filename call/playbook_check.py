"""Checks a playbook's meaning before it is stored: every problem with the path of where it is.

The shape (types, lengths, names) is checked by ``shapes.playbooks``; this checks what the shape cannot:
a transition to a stage that does not exist, an intent the engine does not know, a field nobody
collects, a tool the agent does not have, a ``{{variable}}`` nothing fills, a malformed template.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from call.playbook import GLOBAL, SYSTEM_VARIABLES
from call.playbook_words import INTENTS
from speech.text import template_variables

ALWAYS_TOOLS = frozenset({"add_to_dnc"})  # honouring "do not call me" is never a tool an agent lacks
OUTCOMES = ("meeting_booked", "interested", "not_interested", "callback_requested")
_BRACES = re.compile(r"\{\{(.*?)\}\}|\{\{|\}\}")
_NAME = re.compile(r"^\s*[A-Za-z_][A-Za-z0-9_\.]*\s*$")

Problem = tuple[tuple[str | int, ...], str]


def _template_problems(text: str, known: set[str], where: tuple[str | int, ...]) -> list[Problem]:
    problems: list[Problem] = []
    for match in _BRACES.finditer(text):
        inner = match.group(1)
        if inner is None or not _NAME.match(inner):
            problems.append((where, f"malformed template {match.group(0)!r}: use {{{{variable_name}}}}"))
    for name in sorted(template_variables(text) - known):
        problems.append(
            (
                where,
                f"unknown template variable {{{{{name}}}}}: define it in variables or collect it as a field",
            )
        )
    return problems


def check_playbook(playbook: dict[str, Any], tool_names: Iterable[str]) -> list[Problem]:
    """Every problem of a (well-shaped) playbook, each with its path inside the playbook."""
    problems: list[Problem] = []
    nodes: dict[str, Any] = playbook.get("nodes") or {}
    edges: dict[str, Any] = playbook.get("edges") or {}
    tools = set(tool_names) | ALWAYS_TOOLS
    fields: dict[str, str] = {}
    for stage, node in nodes.items():
        for i, spec in enumerate(node.get("collect") or []):
            kind = spec.get("type", "string")
            if fields.setdefault(spec["name"], kind) != kind:
                problems.append(
                    (("nodes", stage, "collect", i, "type"), f"field {spec['name']!r} is collected as "
                     f"{fields[spec['name']]} elsewhere")
                )  # fmt: skip
    known = set(playbook.get("variables") or {}) | set(SYSTEM_VARIABLES) | set(fields)
    start = playbook.get("start")
    if start not in nodes:
        problems.append((("start",), f"unknown stage {start!r}: the playbook has {_names(nodes)}"))
    if playbook.get("disclosure_line"):
        problems += _template_problems(playbook["disclosure_line"], known, ("disclosure_line",))
    for name, value in (playbook.get("variables") or {}).items():
        problems += _template_problems(str(value), set(), ("variables", name))
    for stage, node in nodes.items():
        at = ("nodes", stage)
        for key in ("goal", "instructions", "additional_prompt", "ask"):
            if node.get(key):
                problems += _template_problems(node[key], known, (*at, key))
        for i, line in enumerate(node.get("lines") or []):
            problems += _template_problems(line, known, (*at, "lines", i))
        for i, tool in enumerate(node.get("tools") or []):
            if tool not in tools:
                problems.append(((*at, "tools", i), f"unknown tool {tool!r}: the agent has {_names(tools)}"))
        if run := node.get("run_tool"):
            if run["name"] not in tools:
                problems.append(
                    (
                        (*at, "run_tool", "name"),
                        f"unknown tool {run['name']!r}: the agent has {_names(tools)}",
                    )
                )
            for key, value in (run.get("arguments") or {}).items():
                if isinstance(value, str):
                    problems += _template_problems(value, known, (*at, "run_tool", "arguments", key))
        if (revisit := node.get("on_revisit")) and revisit not in nodes:
            problems.append(((*at, "on_revisit"), f"unknown stage {revisit!r}"))
        if node.get("returns") and node.get("ends_call"):
            problems.append(((*at, "returns"), "a stage cannot both return and end the call"))
        if node.get("outcome") and node["outcome"] not in OUTCOMES:
            problems.append(
                ((*at, "outcome"), f"unknown outcome {node['outcome']!r}: one of {', '.join(OUTCOMES)}")
            )
        own = {eid for eid, e in edges.items() if e.get("source") == stage}
        for i, eid in enumerate(node.get("edge_order") or []):
            if eid not in own:
                problems.append(((*at, "edge_order", i), f"{eid!r} is not an edge leaving {stage!r}"))
        if not node.get("ends_call") and not node.get("returns") and not own and not _global_exits(edges):
            problems.append((at, "a stage that does not end the call needs a way out (an edge)"))
    for eid, edge in edges.items():
        at = ("edges", eid)
        source, target = edge.get("source"), edge.get("target")
        if source != GLOBAL and source not in nodes:
            problems.append(((*at, "source"), f"unknown stage {source!r}: the playbook has {_names(nodes)}"))
        if target not in nodes:
            problems.append(((*at, "target"), f"unknown stage {target!r}: the playbook has {_names(nodes)}"))
        condition = edge.get("forward_condition") or {"type": "unconditional"}
        kind = condition.get("type")
        if kind == "intent":
            for i, intent in enumerate(condition.get("intents") or []):
                if intent not in INTENTS:
                    where = (*at, "forward_condition", "intents", i)
                    problems.append((where, f"unknown intent {intent!r}: one of {_names(INTENTS)}"))
        elif kind == "fields":
            for i, name in enumerate(condition.get("fields") or []):
                if name not in fields:
                    where = (*at, "forward_condition", "fields", i)
                    problems.append((where, f"field {name!r} is not collected by any stage"))
        elif kind == "unconditional" and source == GLOBAL:
            problems.append(((*at, "forward_condition"), "an edge from every stage (*) needs a condition"))
    return problems


def _global_exits(edges: dict[str, Any]) -> bool:
    return any(e.get("source") == GLOBAL for e in edges.values())


def _names(values: Iterable[str]) -> str:
    names = sorted(values)
    shown = ", ".join(names[:30]) + (" …" if len(names) > 30 else "")
    return shown or "none"
