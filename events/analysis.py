"""Post-call analysis: a summary, an outcome and the agent's data-collection fields, from the transcript.

Facts first, for every LLM: the facts of the call (a booking that succeeded, the other party's words,
the answering-machine decision, how it ended) give the outcomes allowed (``ALLOWED_WHEN``); a single one
is the outcome, otherwise the caller's plain words ("not interested") or the LLM choose among them only.
The LLM writes the summary and extracts the fields, asked for JSON constrained by a schema where the
provider supports it, parsed leniently, validated field by field; a value the caller never said is
dropped. If the LLM output is unusable the call still gets a summary built from the transcript, and an
outcome from the facts (or ``unknown``, never a guess such as ``interested``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from call.intents import Intent, detect_intent
from providers.base import ChatMessage

log = logging.getLogger(__name__)

# Neither the facts nor the LLM settled it (a person talked; the LLM gave nothing usable). Never offered
# to the LLM: it is the honest "we do not know", not a claim about the lead.
UNDECIDED = "unknown"
UNANSWERED = {"screener", "ivr"}  # answered_by values where no person came on the line
NO_ANSWER_REASONS = {"no_answer", "no-answer", "busy", "canceled"}
FAILED_REASONS = {"failed", "stt_failed", "error"}
_A_WORD = re.compile(r"\w")


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What is known about a call without asking a model."""

    booked: bool  # a book_meeting tool call succeeded
    spoke: bool  # the other party has a turn with words in it
    machine: bool  # answering-machine detection (ours or Twilio's) decided: a machine
    failed: bool  # the call ended on a failure (ours or the carrier's)
    unreached: bool  # the carrier says nobody picked up (no-answer, busy, canceled)
    transferred: bool = False  # the call was handed to a person (a cold transfer, or a bridged warm one)
    answered_by: str | None = None  # as recorded (human, machine…, fax, unknown): for outcomes to come

    @property
    def unanswered(self) -> bool:
        """A screener or a phone menu held the call and no person came on (the engine's decision)."""
        return self.answered_by in UNANSWERED

    @property
    def person_talked(self) -> bool:
        return self.spoke and not self.machine and not self.unreached and not self.unanswered

    @classmethod
    def of(
        cls,
        turns: list[tuple[str, str]],
        tool_calls: list[dict[str, Any]],
        end_reason: str | None,
        answered_by: str | None = None,
    ) -> CallFacts:
        return cls(
            booked=any(c.get("name") == "book_meeting" and c.get("success") for c in tool_calls),
            spoke=any(role == "user" and text and _A_WORD.search(text) for role, text in turns),
            machine=(answered_by or "").startswith("machine"),
            failed=end_reason in FAILED_REASONS,
            unreached=end_reason in NO_ANSWER_REASONS,
            transferred=end_reason == "transferred",
            answered_by=answered_by,
        )


def _talk(f: CallFacts) -> bool:
    return f.person_talked and not f.booked and not f.failed and not f.transferred


# Which facts allow each outcome. An outcome the facts do not allow is never given, whatever a model says;
# a new outcome is added here with the facts it needs.
ALLOWED_WHEN: dict[str, Callable[[CallFacts], bool]] = {
    "meeting_booked": lambda f: f.booked,
    "transferred": lambda f: f.transferred and not f.booked,  # a person took the call over
    "interested": _talk,
    "not_interested": _talk,
    "callback_requested": _talk,
    "voicemail": lambda f: f.machine and not f.booked,
    "no_answer": lambda f: not (f.spoke or f.machine or f.booked or f.failed or f.transferred),
    "failed": lambda f: f.failed and not f.booked and not f.machine,
    "screened": lambda f: f.answered_by == "screener" and not f.booked,  # nobody picked up after it
    "ivr": lambda f: f.answered_by == "ivr" and not f.booked,  # a phone menu, not navigated
}
OUTCOMES = tuple(ALLOWED_WHEN)


def allowed_outcomes(facts: CallFacts) -> list[str]:
    """The outcomes the facts allow, in ``ALLOWED_WHEN``'s order (the LLM chooses only among these)."""
    allowed = [outcome for outcome, rule in ALLOWED_WHEN.items() if rule(facts)]
    return allowed or ["no_answer"]  # e.g. a carrier no-answer with stray words: nobody was reached


@dataclass(slots=True)
class Analysis:
    summary: str
    outcome: str
    collected: dict[str, Any] = field(default_factory=dict)


def rule_outcome(
    turns: list[tuple[str, str]],
    tool_calls: list[dict[str, Any]],
    end_reason: str | None,
    answered_by: str | None = None,
) -> str | None:
    """The outcome when the facts (and the caller's plain words) settle it, else None (the LLM chooses)."""
    allowed = allowed_outcomes(CallFacts.of(turns, tool_calls, end_reason, answered_by))
    if len(allowed) == 1:
        return allowed[0]
    intents = [detect_intent(text) for role, text in turns if role == "user" and text]
    if "not_interested" in allowed and (Intent.NOT_INTERESTED in intents or Intent.DO_NOT_CALL in intents):
        return "not_interested"
    if "callback_requested" in allowed and Intent.CALLBACK_LATER in intents:
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


def _schema(data_fields: list[dict[str, Any]], outcomes: list[str] | None = None) -> dict[str, Any]:
    types = {"string": "string", "number": "number", "boolean": "boolean"}
    return {
        "type": "object",
        "properties": {
            "summary": {"type": "string"},
            "outcome": {"type": "string", "enum": list(outcomes or OUTCOMES)},
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
    answered_by: str | None = None,
) -> Analysis:
    """Facts first: the outcome is one the facts allow (the LLM only chooses among those), and a collected
    value is kept only when the caller's own words carry it. The same for every LLM."""
    tool_calls = tool_calls or []
    allowed = allowed_outcomes(CallFacts.of(turns, tool_calls, end_reason, answered_by))
    ruled = rule_outcome(turns, tool_calls, end_reason, answered_by)
    user_said = any(role == "user" and text for role, text in turns)
    if not user_said or llm is None:
        outcome = ruled or UNDECIDED
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
        + ", ".join(allowed)
        + (", and these fields (null if the caller did not say it):" + wanted if data_fields else "")
        + "}\n\n"
        + transcript[-6000:]
    )
    messages = [ChatMessage("system", "You summarize sales calls as JSON."), ChatMessage("user", prompt)]
    text = ""
    try:
        async for chunk in llm.stream_chat(
            messages, temperature=0.1, max_tokens=220, json_schema=_schema(data_fields, allowed)
        ):
            text += chunk.text
    except Exception as exc:
        log.warning("analysis llm failed", extra={"fields": {"error": type(exc).__name__}})
    parsed = _parse_json(text) or {}
    chosen = parsed.get("outcome")
    # A model that ignores the schema (or has none) cannot step outside what the facts allow.
    outcome = ruled or (chosen if chosen in allowed else None) or UNDECIDED
    summary = parsed.get("summary") if isinstance(parsed.get("summary"), str) else ""
    summary = summary.strip()[:1000]
    small_model = getattr(llm, "extractive_knowledge", False)  # the embedded model echoes and invents
    if not summary or (small_model and not grounded(summary, transcript)):
        summary = fallback_summary(turns, outcome)
    # Every field the agent asks for is present (null when not mentioned): a CRM maps fixed columns.
    collected = {f["name"]: _coerce(parsed.get(f["name"]), f.get("type", "string")) for f in data_fields}
    # Only values the caller said, from any model: the agent's words and a model's guesses are not data.
    caller_said = " ".join(text for role, text in turns if role == "user").lower()
    collected = {k: v if said_by_caller(v, caller_said) else None for k, v in collected.items()}
    return Analysis(summary, outcome, collected)
