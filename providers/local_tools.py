"""Tool calls from the embedded model: a cheap gate, then a grammar-constrained decision step.

A 135M model does not produce free-form tool calls, and asked to choose among all of an agent's tools it
mostly answers "none" or picks the wrong one. Two things make it usable:

1. **A gate** (microseconds, no model): a tool is a *candidate* only when the caller's words match it:
   trigger phrases for the built-ins, content words of the name and description for other tools, and
   for every required argument whose shape is known (an e-mail, an id or number) a value of that shape
   in what the caller said. Most turns have no candidate and cost nothing.
2. **A constrained step** over the candidates: the model completes ``{"tool": "`` under a GBNF grammar
   generated from the candidates' specs: ``none"}`` or one candidate's name and its JSON arguments
   (required properties, typed from the JSON schema). Arguments of a known shape may only be one of the
   values found in the caller's words (the model copies, it cannot invent an order number); free text
   (an SMS body) is generated. The prompt lists the candidates and a few worked examples.

Tools whose required arguments need a date and time are left out: a 135M model cannot turn "next Tuesday
at three" into an ISO timestamp (the engine's rule-based booking shortcut does that). Only the grammar,
the gate, the prompt and the parsing live here (pure functions, unit-tested without a model);
``providers.local_llm`` runs them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from providers.base import ChatMessage, ToolCall, ToolSpec

NONE = "none"
PREFIX = '{"tool": "'  # ends the prompt: the model only generates what follows
MAX_STRING_CHARS = 160
MAX_DECISION_TOKENS = 80

# ------------------------------------------------------------------ argument shapes

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
TOKEN_WITH_DIGIT = re.compile(r"\b[A-Za-z]{0,4}-?\d[\w-]*\b")
ID_WORDS = ("id", "number", "code", "reference", "zip", "postcode", "postal", "ref")
NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
}
COPIED_SHAPES = ("email", "id", "integer")  # a required value of these shapes must be in the words


def argument_shape(name: str, schema: dict[str, Any]) -> str:
    """``email``, ``id``, ``datetime``, ``enum``, ``integer``, ``number``, ``boolean`` or ``text``."""
    if schema.get("enum"):
        return "enum"
    kinds = schema.get("type", "string")
    kind = next((k for k in kinds if k != "null"), "string") if isinstance(kinds, list) else kinds
    if kind in ("integer", "number", "boolean"):
        return str(kind)
    words = f"{name} {schema.get('description', '')}".lower()
    if schema.get("format") == "date-time" or "iso 8601" in words or "datetime" in words:
        return "datetime"
    if schema.get("format") == "email" or "email" in words or "e-mail" in words:
        return "email"
    if any(re.search(rf"(^|[^a-z]){w}([^a-z]|$)", words) for w in ID_WORDS):
        return "id"
    return "text"


def spans_for(shape: str, texts: Sequence[str]) -> list[Any]:
    """Values of that shape in the caller's words (most recent text first), for copy-only arguments."""
    found: list[Any] = []
    for text in texts:
        cleaned = EMAIL.sub(" ", text)
        values: list[Any]
        if shape == "email":
            values = [v.rstrip(".") for v in EMAIL.findall(text)]
        elif shape == "id":
            values = TOKEN_WITH_DIGIT.findall(cleaned)
        elif shape == "integer":
            words = re.findall(r"[a-z]+|\d+", cleaned.lower())
            values = [
                int(w) if w.isdigit() else NUMBER_WORDS[w] for w in words if w.isdigit() or w in NUMBER_WORDS
            ]
        else:
            return []
        found += [v for v in values if v not in found]
    return found


def required_properties(spec: ToolSpec) -> list[tuple[str, dict[str, Any]]]:
    """The properties the decision step fills: the required ones (optional ones cost tokens and mistakes)."""
    properties = (spec.parameters or {}).get("properties") or {}
    required = (spec.parameters or {}).get("required") or []
    return [(name, properties.get(name) or {}) for name in required if isinstance(name, str)]


# ------------------------------------------------------------------ the gate

TRIGGERS: dict[str, re.Pattern[str]] = {
    "end_call": re.compile(
        r"\b(bye|goodbye|hang up|end (the|this) call|that's (all|everything)|talk (to you )?later|"
        r"have a (good|nice|great) (day|one)|have to go|got to go|gotta go|we're done)\b"
    ),
    "send_sms": re.compile(
        r"\b(text|texts|texting|sms|message me|to my (phone|cell|mobile)|by message|whatsapp)\b"
    ),
    "transfer_call": re.compile(
        r"\b(transfer|put me through|connect me|speak (to|with)|talk (to|with)|get me|give me)\b.*"
        r"\b(human|person|someone|somebody|manager|supervisor|representative|agent|operator|department|"
        r"sales|colleague|rep)\b|\b(transfer me|real person|operator|representative)\b"
    ),
    "add_to_dnc": re.compile(
        r"\b(take me off|remove (me|my number)|do not call|don't call|dont call|stop calling|never call|"
        r"no more calls|any more calls|calling list|call list|off your list)\b"
    ),
}
INFO_QUESTION = re.compile(r"^\W*(do|does|did|how|what|why|when|which|who)\b")
STOPWORDS = frozenset(
    "the a an of by for to and or in on at is are be it its their there this that these those with from "
    "when what which who how caller callers customer customers user users tool look find get check give "
    "tell about given ask asks asked they them your you our we can could would should will use using "
    "number address status details info information".split()
)


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 4 and word.endswith("s") else word


def _content_words(text: str) -> set[str]:
    words = re.findall(r"[a-z]+", text.lower().replace("_", " "))
    return {_stem(w) for w in words if len(w) >= 4 and w not in STOPWORDS}


@dataclass(slots=True)
class Candidate:
    spec: ToolSpec
    spans: dict[str, list[Any]] = field(default_factory=dict)  # copy-only argument → allowed values


def caller_texts(messages: Sequence[ChatMessage]) -> list[str]:
    """The caller's words, latest first (the turn, then up to two earlier caller turns)."""
    return [m.content for m in reversed(messages) if m.role == "user"][:3]


def last_agent_line(messages: Sequence[ChatMessage]) -> str:
    for m in reversed(messages):
        if m.role == "assistant" and m.content.strip():
            return m.content.strip()
    return ""


def candidates(specs: Sequence[ToolSpec], messages: Sequence[ChatMessage]) -> list[Candidate]:
    """The tools the caller's words point at, each with the values its copy-only arguments may take."""
    texts = caller_texts(messages)
    if not texts:
        return []
    turn = texts[0].lower()
    context = _content_words(" ".join(texts) + " " + last_agent_line(messages))
    found: list[Candidate] = []
    for spec in specs:
        props = required_properties(spec)
        if any(argument_shape(name, schema) == "datetime" for name, schema in props):
            continue  # the rule-based booking shortcut does dates
        trigger = TRIGGERS.get(spec.name)
        if trigger is not None:
            # a question about the thing ("do you send texts?") is not a request for it
            matched = bool(trigger.search(turn.replace("’", "'"))) and not INFO_QUESTION.match(turn)
        else:
            matched = bool(_content_words(f"{spec.name} {spec.description}") & context)
        if not matched:
            continue
        spans: dict[str, list[Any]] = {}
        for name, schema in props:
            shape = argument_shape(name, schema)
            if shape in COPIED_SHAPES:
                values = spans_for(shape, texts)
                if not values:
                    break  # a required value the caller has not said: the agent asks for it instead
                spans[name] = values[:6]
        else:
            found.append(Candidate(spec, spans))
    return found


# ------------------------------------------------------------------ grammar


def _literal(text: str) -> str:
    """A GBNF string literal matching ``text`` exactly."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _rule_name(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-").lower() or "x"


def _value_rule(name: str, schema: dict[str, Any], spans: list[Any] | None) -> str:
    """A GBNF expression for one JSON-schema property value."""
    if spans:
        return " | ".join(_literal(json.dumps(v)) for v in spans)
    shape = argument_shape(name, schema)
    if shape == "enum":
        return " | ".join(_literal(json.dumps(v)) for v in schema["enum"])
    if shape == "boolean":
        return '"true" | "false"'
    if shape in ("integer", "number", "datetime"):
        return shape
    return "string"  # strings, and anything nested: a string is the safe thing a tiny model can fill


def build_grammar(found: Sequence[Candidate | ToolSpec], *, allow_none: bool = True) -> str:
    """GBNF for what follows ``{"tool": "``: ``none"}`` (if allowed) or a tool's name and its arguments."""
    lines: list[str] = []
    choices = [_literal(f'{NONE}"}}')] if allow_none else []
    for item in found:
        candidate = item if isinstance(item, Candidate) else Candidate(item)
        spec = candidate.spec
        rule = f"call-{_rule_name(spec.name)}"
        choices.append(rule)
        props = required_properties(spec)
        members = [
            f"{_literal(json.dumps(name) + ': ')} ({_value_rule(name, schema, candidate.spans.get(name))})"
            for name, schema in props
        ]
        args = '"{" ' + ' ", " '.join(members) + ' "}"' if members else '"{}"'
        head = _literal(f'{spec.name}", "arguments": ')
        lines.append(f'{rule} ::= {head} {args} "}}"')
    lines.insert(0, "root ::= " + " | ".join(choices))
    lines += [
        f'string ::= "\\"" [^"\\\\\\n] [^"\\\\\\n]{{0,{MAX_STRING_CHARS}}} "\\""',
        'integer ::= "-"? [0-9]{1,12}',
        'number ::= "-"? [0-9]{1,12} ("." [0-9]{1,6})?',
        'datetime ::= "\\"" [0-9]{4} "-" [0-9]{2} "-" [0-9]{2} "T" [0-9]{2} ":" [0-9]{2} "\\""',
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ prompt

# Worked examples for the built-ins (never the benchmark's turns): caller words → arguments.
BUILTIN_EXAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "end_call": ("Okay, that's everything I needed. Bye now!", {}),
    "send_sms": (
        "Could you text me the opening hours?",
        {"message": "Here are the opening hours you asked for."},
    ),
    "transfer_call": ("Let me talk to somebody from your support team.", {}),
    "add_to_dnc": ("I don't want any more calls from you people.", {}),
}
NONE_EXAMPLES = [
    "Do you send text reminders?",
    "How much is the premium plan?",
    "My manager handles that, not me.",
    "Yeah.",
]
EXAMPLE_TEXT = "my printer keeps going offline"


def _sample(name: str, schema: dict[str, Any]) -> Any:
    shape = argument_shape(name, schema)
    if shape == "enum":
        return schema["enum"][0]
    if shape in ("integer", "number"):
        return 3
    if shape == "boolean":
        return True
    if shape == "email":
        return "alex.kim@example.com"
    if shape == "id":
        return "40571"
    return EXAMPLE_TEXT  # free text: the example shows the caller's own words copied


def example_for(spec: ToolSpec) -> tuple[str, dict[str, Any]]:
    """A worked example: the built-in's fixed one, or the tool's description as a request."""
    if spec.name in BUILTIN_EXAMPLES:
        return BUILTIN_EXAMPLES[spec.name]
    args = {name: _sample(name, schema) for name, schema in required_properties(spec)}
    ask = spec.description.strip().rstrip(".") or spec.name.replace("_", " ")
    ask = ask.replace("the caller's ", "my ").replace("the caller", "me")
    words = f"Can you {ask[0].lower()}{ask[1:]}?"
    if args:
        words += " It's " + ", ".join(str(v) for v in args.values()) + "."
    return words, args


def _answer(name: str, args: dict[str, Any]) -> str:
    return json.dumps({"tool": name, "arguments": args}) if name != NONE else json.dumps({"tool": NONE})


def _chatml(role: str, text: str) -> str:
    return f"<|im_start|>{role}\n{text}<|im_end|>\n"


def decision_prompt(found: Sequence[Candidate], messages: Sequence[ChatMessage]) -> str:
    """Candidates with descriptions, worked examples (tools and "none" alternating), then the turn."""
    specs = [c.spec for c in found]
    listing = "\n".join(f"- {s.name}: {s.description.strip()}" for s in specs)
    system = (
        "You decide if a phone agent must use a tool for what the caller just said. Tools:\n"
        f"{listing}\n- {NONE}: no tool; the agent just answers.\n"
        f"Choose a tool only when the caller asks for what it does; otherwise {NONE}."
    )
    shots: list[tuple[str, str]] = []
    for i, spec in enumerate(specs):
        words, args = example_for(spec)
        shots.append((words, _answer(spec.name, args)))
        shots.append((NONE_EXAMPLES[i % len(NONE_EXAMPLES)], _answer(NONE, {})))
    text = _chatml("system", system)
    for words, answer in shots:
        text += _chatml("user", f"Caller: {words}") + _chatml("assistant", answer)
    texts = caller_texts(messages)
    caller = texts[0].strip()[:300] if texts else ""
    said = last_agent_line(messages[:-1] if messages and messages[-1].role == "user" else messages)
    turn = f"Agent said: {said[-200:]}\nCaller: {caller}" if said else f"Caller: {caller}"
    return text + _chatml("user", turn) + "<|im_start|>assistant\n" + PREFIX


@dataclass(slots=True)
class Decision:
    call: ToolCall | None
    raw: str


def parse_decision(generated: str, specs: Sequence[ToolSpec | Candidate]) -> Decision:
    """The generated continuation of ``{"tool": "`` → a tool call, or none (also for anything malformed)."""
    raw = PREFIX + generated.strip()
    try:
        value = json.loads(raw)
    except ValueError:
        return Decision(None, raw)
    names = {(s.spec if isinstance(s, Candidate) else s).name for s in specs}
    name = value.get("tool") if isinstance(value, dict) else None
    if name not in names:
        return Decision(None, raw)
    args = value.get("arguments")
    return Decision(ToolCall(name, dict(args) if isinstance(args, dict) else {}), raw)
