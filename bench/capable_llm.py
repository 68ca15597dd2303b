"""An OpenAI-compatible stand-in that plays a capable model's tool calls (for benchmarks, not calls).

The SDR set compares the embedded models with "a capable model on a server". None runs here, so this
plays one: ``CapableBrain`` reads each chat-completions request (the stage's system prompt, the
conversation, the tools offered) and answers as a good tool-calling model would, by rules, not by
sampling. It is served by the chat-completions stand-in of the tests (``tests/openai_standin.py``: the
real SSE wire format, tool calls as streamed deltas), so the service drives it through the real
``openai`` SDK like any server.

What it does on each request:

1. The last message is a tool result: one short line about it ("You're all set…" for a booking, "Sorry,
   that didn't go through" for an error); after a stage change (a tool whose name or description speaks
   of a stage, transition, step or exit) the new stage's first scripted line, if its prompt has one.
2. The caller spoke and tools are offered: the caller's words are matched to intents (booking, not
   interested, do-not-call, call back later, send an email, wrong person, gatekeeper, objections, "what is
   this about", "is this a robot", transfer, goodbye, interest); a tool whose name, description or enum
   values carry that intent's words is called. Its arguments are filled from the schema: an enum takes
   the value closest to the intent, a time (``start_time``, ``datetime``, ``when``…) is read from the
   caller's words ("tomorrow at 3pm", "Tuesday at 10") as ISO 8601, an email address, a name ("this is
   Dana"), a number, and any other string gets the caller's words.
3. Otherwise a line: a rule's ``say``; the first quoted line of the system prompt not said yet
   (scripted lines); for "is this a robot?" an honest "Yes, I'm an AI assistant…"; else a short
   acknowledgement that steers back to the prompt's goal.

``rules`` (a list, tried first, in order) pins exact behaviour: ``{"match": "<regex on the caller's
words>", "tool": "<name>", "arguments": {...}}`` or ``{"match": "...", "say": "..."}``.

Serve it for a manual run or another process::

    python -m bench.capable_llm --port 8011 [--rules rules.json]
    # then: LLM_PROVIDER=openai OPENAI_BASE_URL=http://127.0.0.1:8011/v1 OPENAI_MODEL=capable-standin

or in-process (a benchmark, a test)::

    from bench.capable_llm import capable_server
    async with capable_server(rules=[...]) as server:   # server.url is the base URL (…/v1)
        settings = Settings(llm_provider="openai", openai_base_url=server.url, openai_model=MODEL)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from tests.openai_standin import OpenAIStandIn, Reply, answering_caller, last_user, offered

MODEL = "capable-standin"

# intent -> (the caller's words, words a tool/enum for it carries)
INTENTS: list[tuple[str, str, tuple[str, ...]]] = [
    ("do_not_call", r"\b(don'?t|do not|never) call\b|\bremove (me|us|my number)\b|\btake (me|us) off\b|"
     r"\bdo[- ]not[- ]call\b|\bstop calling\b", ("dnc", "do_not_call", "do not call", "opt_out", "remove")),
    ("transfer", r"\b(speak|talk) (to|with) (a|an|the) (human|person|manager|someone)\b|\btransfer me\b",
     ("transfer", "human", "escalate")),
    ("book", r"\b(book|schedule|set up|put (me|us) down|calendar|invite)\b|\b(works for me|let'?s do)\b|"
     r"\b(monday|tuesday|wednesday|thursday|friday|tomorrow)\b|\b\d{1,2}(:\d\d)?\s*(am|pm)\b",
     ("book", "schedule", "meeting", "calendar", "demo", "appointment")),
    ("email", r"\b(send|shoot|drop) me (an |some )?(email|info|information|details)\b|\bemail me\b|"
     r"\bjust email\b", ("email", "send_info", "follow_up", "info")),
    ("callback", r"\b(call (me |us )?back|callback|another time|later|busy|in a meeting|bad time|"
     r"not a good time)\b", ("callback", "call_back", "later", "reschedule", "busy")),
    ("not_interested", r"\bnot interested\b|\bno,? thanks?\b|\bno thank you\b|\bnot for us\b|\bwe'?re good\b|"
     r"\bnot looking\b", ("not_interested", "not interested", "decline", "no_interest", "disqualif")),
    ("wrong_person", r"\bwrong (person|number|guy|department)\b|\bnot the right person\b|\bno longer\b|"
     r"\bdoesn'?t work here\b|\bnot (the )?(one|person) (who|that)\b",
     ("wrong_person", "wrong", "referral", "refer")),
    ("gatekeeper", r"\b(i'?m (his|her|their) (assistant|secretary)|reception|front desk|"
     r"(may|can) i ask who'?s calling|what is this regarding|is (he|she) expecting)\b",
     ("gatekeeper", "assistant", "screen")),
    ("robot", r"\b(robot|a bot|an ai|artificial|real person|recording|automated|machine)\b",
     ("robot", "ai_disclosure", "disclos", "bot")),
    ("who", r"\bwho (is this|are you)\b|\bhow did you get (my|this) (number|name)\b|\bwhere did you get\b",
     ("who", "identity", "introduc", "number_source")),
    ("what_about", r"\bwhat('?s| is) (this|it|that) (about|regarding)\b|\bwhy are you calling\b|"
     r"\bwhat do you want\b|\bwhat'?s this\b", ("reason", "about", "pitch", "purpose", "value")),
    ("objection", r"\b(already (use|have|work with)|happy with|too expensive|no budget|price|cost|"
     r"not the right time|next quarter|next year|competitor|locked in|contract)\b",
     ("objection", "competitor", "price", "timing", "budget")),
    ("goodbye", r"\b(bye|goodbye|hang up|that'?s all|gotta go|have to go)\b", ("end_call", "end", "hang", "goodbye")),
    ("interest", r"\b(tell me more|sounds (interesting|good)|go ahead|sure|okay|ok|yes|yeah|i have a minute)\b",
     ("interest", "qualif", "discovery", "next", "continue", "proceed", "pitch")),
]  # fmt: skip
STAGE_WORDS = re.compile(r"stage|transition|step|exit|node|go_?to|move_?to", re.I)
TIME_KEYS = re.compile(r"time|date|when|slot|start", re.I)
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
QUOTED = re.compile(r"[\"“]([^\"”]{12,240})[\"”]")


def caller_intents(text: str) -> list[str]:
    lowered = text.lower()
    return [name for name, pattern, _ in INTENTS if re.search(pattern, lowered)]


def _tool_text(tool: dict[str, Any]) -> str:
    params = tool.get("parameters") or {}
    enums = [str(v) for p in (params.get("properties") or {}).values() for v in p.get("enum", [])]
    return " ".join([tool.get("name", ""), tool.get("description", ""), *enums]).lower()


def _keywords(intent: str) -> tuple[str, ...]:
    return next(words for name, _, words in INTENTS if name == intent)


def _hits(text: str, intent: str) -> int:
    return sum(1 for word in _keywords(intent) if word in text)


def parse_time(text: str, now: dt.datetime | None = None) -> str | None:
    """'tomorrow at 3pm', 'Tuesday at 10', 'at 2:30 pm' -> ISO 8601 (UTC) or None."""
    now = now or dt.datetime.now(dt.UTC)
    lowered = text.lower().replace("a.m.", "am").replace("p.m.", "pm")
    clock = re.search(r"\bat (\d{1,2})(?::(\d\d))?\s*(am|pm)?\b", lowered) or re.search(
        r"\b(\d{1,2})(?::(\d\d))?\s*(am|pm)\b", lowered
    )
    named_day = re.search(r"\btomorrow\b|\b(" + "|".join(DAYS) + r")\b", lowered)
    if not clock and not named_day:
        return None
    day = now.date() + dt.timedelta(days=1)
    if named_day and named_day.group(1):
        day = now.date() + dt.timedelta(days=(DAYS.index(named_day.group(1)) - now.weekday()) % 7 or 7)
    hour, minute = 10, 0
    if clock:
        hour, minute = int(clock.group(1)) % 24, int(clock.group(2) or 0)
        suffix = clock.group(3) or ""
        if (suffix == "pm" and hour < 12) or (not suffix and 1 <= hour <= 6):
            hour += 12
    stamp = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=dt.UTC)
    return stamp.isoformat().replace("+00:00", "Z")


def _conversation_text(body: dict[str, Any]) -> str:
    return " ".join(m.get("content") or "" for m in body["messages"] if m["role"] == "user")


FREE_TEXT = re.compile(r"reason|note|summary|message|objection|detail|comment", re.I)


def fill_arguments(tool: dict[str, Any], intent: str, body: dict[str, Any]) -> dict[str, Any]:
    """Arguments for ``tool`` from its JSON schema and the conversation (see the module's docstring);
    an optional property is left out unless something fits it."""
    params = tool.get("parameters") or {}
    props: dict[str, Any] = params.get("properties") or {}
    required = set(params.get("required") or [])
    said, everything = last_user(body), _conversation_text(body)
    out: dict[str, Any] = {}
    for name, schema in props.items():
        kind = schema.get("type", "string")
        kind = next((k for k in kind if k != "null"), "string") if isinstance(kind, list) else kind
        value: Any = None
        if schema.get("enum"):
            options = [str(v) for v in schema["enum"]]
            value = max(
                options, key=lambda v: (_hits(v.lower().replace("-", "_"), intent), -options.index(v))
            )
        elif kind == "string" and TIME_KEYS.search(name):
            value = parse_time(said) or parse_time(everything)
        elif kind == "string" and "email" in name.lower():
            found = re.search(r"[\w.+-]+@[\w-]+\.[\w.]+", everything)
            value = found.group(0) if found else None
        elif kind == "string" and "name" in name.lower():
            found = re.search(r"\b(?:this is|my name is|i'?m)\s+([A-Z][a-z]+)", everything)
            value = found.group(1) if found else None
        elif kind in ("number", "integer"):
            found = re.search(r"\d+(?:\.\d+)?", said)
            value = (float if kind == "number" else int)(float(found.group(0))) if found else None
        elif kind == "boolean":
            value = True
        elif kind == "string" and (name in required or FREE_TEXT.search(name)):
            value = said[:200]
        if value is None and name in required:
            value = said[:200] if kind == "string" else None
        if value is not None:
            out[name] = value
    return out


def _scripted_lines(body: dict[str, Any]) -> list[str]:
    system = " ".join(m.get("content") or "" for m in body["messages"] if m["role"] == "system")
    return [q.strip() for q in QUOTED.findall(system)]


def _said(body: dict[str, Any]) -> set[str]:
    return {(m.get("content") or "").strip() for m in body["messages"] if m["role"] == "assistant"}


def _company(body: dict[str, Any]) -> str:
    system = " ".join(m.get("content") or "" for m in body["messages"] if m["role"] == "system")
    found = re.search(r"\b(?:for|from|at) ([A-Z][\w&]*(?: [A-Z][\w&]*)*)", system)
    return found.group(1) if found else "our team"


class CapableBrain:
    def __init__(self, rules: list[dict[str, Any]] | None = None) -> None:
        self.rules = [(re.compile(r["match"], re.I), r) for r in rules or []]

    def __call__(self, body: dict[str, Any]) -> Reply:
        fmt = body.get("response_format") or {}
        if fmt.get("type") in ("json_schema", "json_object"):
            return self._json(fmt)
        messages = body["messages"]
        if messages and messages[-1]["role"] == "tool":
            return Reply(self._after_tool(body))
        said = last_user(body)
        tools = offered(body) if answering_caller(body) else []
        for pattern, rule in self.rules:
            if pattern.search(said):
                if "tool" in rule and any(t["name"] == rule["tool"] for t in tools):
                    return Reply(tool_calls=[(rule["tool"], dict(rule.get("arguments") or {}))])
                if "say" in rule:
                    return Reply(rule["say"])
        intents = caller_intents(said)
        for intent in intents:
            scored = [(_hits(_tool_text(t), intent), -i, t) for i, t in enumerate(tools)]
            best = max(scored, default=None, key=lambda s: (s[0], s[1]))
            if best is not None and best[0] > 0:
                tool = best[2]
                return Reply(tool_calls=[(tool["name"], fill_arguments(tool, intent, body))])
        return Reply(self._line(body, intents))

    def _after_tool(self, body: dict[str, Any]) -> str:
        result = body["messages"][-1].get("content") or ""
        call_name = ""
        for m in reversed(body["messages"]):
            if m.get("tool_calls"):
                call_name = m["tool_calls"][0]["function"]["name"]
                break
        if '"error"' in result or "error" in result.lower()[:40]:
            return "Sorry, that didn't go through on my side. Can I follow up by email instead?"
        if STAGE_WORDS.search(call_name):
            fresh = [line for line in _scripted_lines(body) if line not in _said(body)]
            return fresh[0] if fresh else "Got it."
        if any(w in call_name for w in ("book", "schedule", "meeting")):
            return "You're all set, I've booked that and you'll get a calendar invite shortly."
        if any(w in call_name for w in ("dnc", "do_not_call")):
            return "Understood, I've taken you off our list. Sorry to bother you."
        return "Done, thanks."

    def _line(self, body: dict[str, Any], intents: list[str]) -> str:
        scripted = [line for line in _scripted_lines(body) if line not in _said(body)]
        company = _company(body)
        if "robot" in intents:
            return f"Yes, I'm an AI assistant calling on behalf of {company}. Happy to keep it short."
        if "what_about" in intents and scripted:
            return scripted[0]
        if "what_about" in intents:
            return (
                f"Quick reason for my call: I help teams like yours with what {company} does. Worth a minute?"
            )
        if "who" in intents:
            return f"I'm an AI assistant calling for {company}; your details came from your company's public listing."
        if "goodbye" in intents:
            return "Thanks for your time, have a great day. Goodbye."
        if scripted:
            return scripted[0]
        return "That makes sense. Would a short call next week to see if it fits be worth it?"

    @staticmethod
    def _json(fmt: dict[str, Any]) -> Reply:
        schema = (fmt.get("json_schema") or {}).get("schema") or {}
        values: dict[str, Any] = {}
        for name, prop in (schema.get("properties") or {}).items():
            if prop.get("enum"):
                values[name] = prop["enum"][0]
            else:
                kind = prop.get("type", "string")
                kind = next((k for k in kind if k != "null"), "null") if isinstance(kind, list) else kind
                values[name] = {"string": "", "number": None, "integer": None, "boolean": False}.get(kind)
        return Reply(json.dumps(values))


def capable_server(rules: list[dict[str, Any]] | None = None, port: int = 0) -> OpenAIStandIn:
    """The chat-completions stand-in answering as ``CapableBrain`` (an async context manager)."""
    return OpenAIStandIn(models=[MODEL], brain=CapableBrain(rules), port=port)


async def _serve(port: int, rules: list[dict[str, Any]]) -> None:
    async with capable_server(rules, port) as server:
        print(f"capable stand-in at {server.url} (model {MODEL!r}); Ctrl-C stops it", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--rules", type=Path, help="a JSON list of {match, tool, arguments} / {match, say}")
    args = parser.parse_args()
    rules = json.loads(args.rules.read_text()) if args.rules else []
    try:
        asyncio.run(_serve(args.port, rules))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
