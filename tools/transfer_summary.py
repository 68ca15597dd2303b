"""What the rep hears before a warm transfer bridges them to the caller: who, from which company, what
they want and what the call has collected — built from the call's variables and transcript with plain
rules (no model on the call path), short enough to speak in ~15 seconds."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MAX_CHARS = 420
NAME_KEYS = ("customer_name", "name", "contact_name", "first_name")
COMPANY_KEYS = ("company", "company_name", "account", "organization")
# "this is Dana from Northwind", "I'm Dana with Northwind Traders", "my name is Dana Smith"
_NAME = re.compile(r"\b(?i:my name is|this is|i am|i'm)\s+([A-Z][a-z]+(?:\s+[A-Z][a-z]+)?)")
_COMPANY = re.compile(
    r"\b(?:from|with|at|work for|calling from)\s+((?:[A-Z][\w&'.-]*)(?:\s+(?:[A-Z][\w&'.-]*|of|and|&))*)"
)
_NOT_COMPANY = {"I", "The", "A", "An", "We", "It", "You", "My", "Our", "This", "That", "Monday", "Tuesday"}
_TRANSFER_ASK = re.compile(
    r"\b(transfer|put me through|connect me|speak (to|with)|talk (to|with)|real person|representative)\b",
    re.I,
)


def _first(variables: dict[str, Any], keys: Iterable[str]) -> str:
    for key in keys:
        value = str(variables.get(key) or "").strip()
        if value:
            return value
    return ""


def _company_in(text: str) -> str:
    for match in _COMPANY.finditer(text):
        words = match.group(1).split()
        while words and words[-1] in ("of", "and", "&"):
            words.pop()
        if words and words[0] not in _NOT_COMPANY:
            return " ".join(words).rstrip(".,")
    return ""


def _sentence(text: str, limit: int = 160) -> str:
    text = " ".join(text.split()).rstrip(" —")
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


def build_summary(
    *,
    turns: list[tuple[str, str]],
    variables: dict[str, Any],
    caller_number: str | None,
    data_fields: list[dict[str, Any]] | None = None,
    reason: str = "",
    agent_name: str = "",
) -> str:
    """One short paragraph for the rep. ``turns``: (role ``user``/``assistant``, text), oldest first."""
    said = [text for role, text in turns if role == "user" and text.strip()]
    name = _first(variables, NAME_KEYS)
    company = _first(variables, COMPANY_KEYS)
    for text in said:
        if not name and (m := _NAME.search(text)):
            name = m.group(1)
        if not company:
            company = _company_in(text)
    who = name or "A caller"
    if company:
        who += f" from {company}"
    if caller_number and not name:
        who += f", calling from {' '.join(caller_number)}"
    # What they want: the model's reason, else what the caller said besides asking for a person.
    wants = [t for t in said if not _TRANSFER_ASK.search(t)] or said
    want = reason.strip() if reason.strip() and not _TRANSFER_ASK.search(reason) else ""
    want = want or " ".join(wants[-2:])
    parts = [f"Transfer from {agent_name or 'the AI agent'}. {who}."]
    if want:
        parts.append(f"They said: {_sentence(want)}.")
    collected = _collected(said, variables, data_fields or [])
    if collected:
        parts.append("Noted: " + "; ".join(f"{k}: {v}" for k, v in collected) + ".")
    parts.append("Connecting you now.")
    text = " ".join(p.replace("..", ".") for p in parts)
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 1].rsplit(" ", 1)[0] + "…"


def _collected(
    said: list[str], variables: dict[str, Any], fields: list[dict[str, Any]]
) -> list[tuple[str, str]]:
    """The agent's data-collection fields: a variable of that name, else the caller's sentence naming it."""
    found: list[tuple[str, str]] = []
    for item in fields[:6]:
        field = str(item.get("name") or "").strip()
        if not field:
            continue
        value = str(variables.get(field) or "").strip()
        if not value:
            words = [w for w in re.split(r"[_\W]+", field.lower()) if len(w) > 2]
            hit = next((t for t in reversed(said) if any(re.search(rf"\b{w}", t.lower()) for w in words)), "")
            value = _sentence(hit, 100) if hit else ""
        if value:
            found.append((field.replace("_", " "), value))
    return found
