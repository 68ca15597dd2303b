"""Post-call analysis: a summary, an outcome and the agent's data-collection fields, from the transcript.

Rules decide wherever the facts are certain (a meeting was booked, nobody answered, the caller said
"not interested"); the LLM writes the summary and extracts the fields, asked for JSON constrained by a
schema where the provider supports it, parsed leniently, validated field by field. If the LLM output is
unusable the call still gets a summary built from the transcript.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from call.intents import Intent, detect_intent
from providers.base import ChatMessage

log = logging.getLogger(__name__)

OUTCOMES = (
    "meeting_booked",
    "interested",
    "not_interested",
    "callback_requested",
    "voicemail",
    "screened",  # a call screener answered; nobody picked up (set by the engine: end reason)
    "ivr",  # a phone menu answered and was not navigated (set by the engine: end reason)
    "no_answer",
    "failed",
)
ENGINE_OUTCOMES = {"screened", "ivr"}  # end reasons that are the outcome
NO_ANSWER_REASONS = {"no_answer", "no-answer", "busy", "canceled"}
FAILED_REASONS = {"failed", "stt_failed", "error"}
VOICEMAIL = re.compile(
    r"\b(leave (me |us )?a message|after the (tone|beep)|voicemail|not available right now)\b", re.I
)


@dataclass(slots=True)
class Analysis:
    summary: str
    outcome: str
    collected: dict[str, Any] = field(default_factory=dict)


def rule_outcome(
    turns: list[tuple[str, str]], tool_calls: list[dict[str, Any]], end_reason: str | None
) -> str | None:
    """The outcome when the facts settle it, else None (the LLM or the fallback decides)."""
    if any(c.get("name") == "book_meeting" and c.get("success") for c in tool_calls):
        return "meeting_booked"
    if end_reason in NO_ANSWER_REASONS:
        return "no_answer"
    if end_reason in ENGINE_OUTCOMES:
        return end_reason
    user_lines = [text for role, text in turns if role == "user" and text]
    if not user_lines:
        return "no_answer" if end_reason not in FAILED_REASONS else "failed"
    if end_reason in FAILED_REASONS:
        return "failed"
    if any(VOICEMAIL.search(line) for line in user_lines[:2]):
        return "voicemail"
    intents = [detect_intent(line) for line in user_lines]
    if Intent.NOT_INTERESTED in intents or Intent.DO_NOT_CALL in intents:
        return "not_interested"
    if Intent.CALLBACK_LATER in intents:
        return "callback_requested"
    return None


_ECHOES = re.compile(r"\bjson\b|one or two sentences|\bnull if\b|summari[sz]e sales calls", re.IGNORECASE)
_CONTENT_WORD = re.compile(r"[a-z0-9']{4,}")
_COMMON = frozenset(
    "this that with from have will would could about your they their there what when which were been "
    "caller agent call calls thanks thank okay yeah sure just like know".split()
)


def grounded(summary: str, transcript: str) -> bool:
    """A summary that echoes no instructions and shares at least two content words with the call."""
    if not summary or _ECHOES.search(summary):
        return False
    said = set(_CONTENT_WORD.findall(transcript.lower())) - _COMMON
    return len(set(_CONTENT_WORD.findall(summary.lower())) & said) >= 2


def said_by_caller(value: Any, caller_said: str) -> bool:
    """A collected value the caller's own words support: its number, or most of its content words."""
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int | float):
        return any(
            float(n) == float(value) for n in re.findall(r"\d+(?:\.\d+)?", caller_said.replace(",", ""))
        )
    numbers = re.findall(r"\d+", str(value).replace(",", ""))
    if any(n not in caller_said.replace(",", "") for n in numbers):  # a figure the caller never said
        return False
    words = set(_CONTENT_WORD.findall(str(value).lower())) - _COMMON
    if not words:
        return str(value).lower() in caller_said
    return len(words & set(_CONTENT_WORD.findall(caller_said))) * 2 >= len(words)


def fallback_summary(turns: list[tuple[str, str]], outcome: str) -> str:
    user_lines = [text for role, text in turns if role == "user" and text]
    if not user_lines:
        return f"No conversation took place ({outcome.replace('_', ' ')})."
    said = "; ".join(line.strip().rstrip(".") for line in user_lines[:3])
    return f"The caller said: {said[:300]}. Outcome: {outcome.replace('_', ' ')}."


def _schema(data_fields: list[dict[str, Any]]) -> dict[str, Any]:
    types = {"string": "string", "number": "number", "boolean": "boolean"}
    return {
        "type": "object",
        "properties": {
            "summary": {"type": "string"},
            "outcome": {"type": "string", "enum": list(OUTCOMES)},
            **{
                f["name"]: {"type": [types.get(f.get("type", "string"), "string"), "null"]}
                for f in data_fields
            },
        },
        "required": ["summary", "outcome"],
    }


def _parse_json(text: str) -> dict[str, Any] | None:
    match = re.search(r"\{.*\}", text, re.S)
    if not match:
        return None
    try:
        value = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _coerce(value: Any, kind: str) -> Any:
    if value is None or value == "":
        return None
    try:
        if kind == "number":
            return float(re.sub(r"[^\d.\-]", "", str(value))) if not isinstance(value, int | float) else value
        if kind == "boolean":
            return value if isinstance(value, bool) else str(value).strip().lower() in ("true", "yes", "1")
    except ValueError:
        return None
    return str(value)[:500]


async def analyze_conversation(
    turns: list[tuple[str, str]],
    data_fields: list[dict[str, Any]],
    llm: Any,
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    end_reason: str | None = None,
) -> Analysis:
    tool_calls = tool_calls or []
    ruled = rule_outcome(turns, tool_calls, end_reason)
    user_said = any(role == "user" and text for role, text in turns)
    if not user_said or llm is None:
        outcome = ruled or "interested"
        return Analysis(fallback_summary(turns, outcome), outcome, {f["name"]: None for f in data_fields})
    transcript = "\n".join(
        f"{'Caller' if role == 'user' else 'Agent'}: {text}" for role, text in turns if text
    )
    wanted = "".join(
        f'\n- "{f["name"]}" ({f.get("type", "string")}): {f.get("description", "")}' for f in data_fields
    )
    prompt = (
        "Read this sales call transcript and answer with JSON only: "
        '{"summary": one or two sentences, "outcome": one of '
        + ", ".join(OUTCOMES)
        + (", and these fields (null if not mentioned):" + wanted if data_fields else "")
        + "}\n\n"
        + transcript[-6000:]
    )
    messages = [ChatMessage("system", "You summarize sales calls as JSON."), ChatMessage("user", prompt)]
    text = ""
    try:
        async for chunk in llm.stream_chat(
            messages, temperature=0.1, max_tokens=220, json_schema=_schema(data_fields)
        ):
            text += chunk.text
    except Exception as exc:
        log.warning("analysis llm failed", extra={"fields": {"error": type(exc).__name__}})
    parsed = _parse_json(text) or {}
    outcome = ruled or (parsed.get("outcome") if parsed.get("outcome") in OUTCOMES else None) or "interested"
    summary = parsed.get("summary") if isinstance(parsed.get("summary"), str) else ""
    summary = summary.strip()[:1000]
    small_model = getattr(llm, "extractive_knowledge", False)  # the embedded model echoes and invents
    if not summary or (small_model and not grounded(summary, transcript)):
        summary = fallback_summary(turns, outcome)
    # Every field the agent asks for is present (null when not mentioned): a CRM maps fixed columns.
    collected = {f["name"]: _coerce(parsed.get(f["name"]), f.get("type", "string")) for f in data_fields}
    if small_model:  # keep only values the caller said: the agent's own words are not the caller's data
        caller_said = " ".join(text for role, text in turns if role == "user").lower()
        collected = {k: v if said_by_caller(v, caller_said) else None for k, v in collected.items()}
    return Analysis(summary, outcome, collected)
