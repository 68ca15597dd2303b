"""The scripted "capable model" stand-in (bench/capable_llm.py) the SDR set benchmarks against: driven
through the real OpenAI-compatible provider and SDK, it calls the tool a good model would, with
arguments from the schema and the caller's words, and says the stage's scripted lines."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bench.capable_llm import MODEL, capable_server, parse_time
from providers.base import ChatMessage, ToolCall, ToolSpec
from providers.openai_llm import OpenAICompatLLMProvider
from tests.conftest import make_settings

SYSTEM = (
    'You are Sam, an SDR for Acme Analytics. Stage: opening. If asked what this is about, say "We help '
    'finance teams close their books two days faster, and I wanted to see if that is on your radar."'
)
BOOK = ToolSpec(
    "book_meeting",
    "Book a demo meeting",
    {"type": "object", "properties": {"start_time": {"type": "string"}, "notes": {"type": "string"},
                                      "attendee_name": {"type": "string"}}, "required": ["start_time"]},
)  # fmt: skip
GOTO = ToolSpec(
    "goto_stage",
    "Move the call to another stage of the playbook",
    {"type": "object", "properties": {"stage": {"type": "string",
     "enum": ["discovery", "objection_handling", "not_interested", "callback", "booking"]}}, "required": ["stage"]},
)  # fmt: skip
DNC = ToolSpec("add_to_dnc", "Put the caller on the do-not-call list", {"type": "object", "properties": {}})
END = ToolSpec(
    "end_call", "Hang up the call", {"type": "object", "properties": {"reason": {"type": "string"}}}
)


@pytest_asyncio.fixture
async def llm(tmp_path: Path) -> AsyncIterator[OpenAICompatLLMProvider]:
    async with capable_server(rules=[{"match": r"\bpineapple\b", "say": "Pinned line."}]) as server:
        provider = OpenAICompatLLMProvider(
            make_settings(tmp_path, llm_provider="openai", openai_base_url=server.url, openai_model=MODEL)
        )
        yield provider
        await provider.aclose()


async def turn(llm: OpenAICompatLLMProvider, caller: str, tools: list[ToolSpec], history: Any = ()) -> Any:
    messages = [ChatMessage("system", SYSTEM), *history, ChatMessage("user", caller)]
    text, calls = "", []
    async for chunk in llm.stream_chat(messages, tools=tools or None):
        text += chunk.text
        calls += chunk.tool_calls or []
    return text, [(c.name, c.arguments) for c in calls]


@pytest.mark.asyncio
async def test_it_calls_the_tool_a_capable_model_would(llm: OpenAICompatLLMProvider) -> None:
    text, calls = await turn(llm, "Sure, this is Dana. Can we do Tuesday at 3pm?", [END, GOTO, BOOK])
    [(name, args)] = calls
    assert name == "book_meeting" and not text
    when = dt.datetime.fromisoformat(args["start_time"].replace("Z", "+00:00"))
    assert when.weekday() == 1 and (when.hour, when.minute) == (15, 0)
    assert args["attendee_name"] == "Dana" and "notes" in args

    assert (await turn(llm, "Honestly we're not interested.", [GOTO, END]))[1] == [
        ("goto_stage", {"stage": "not_interested"})
    ]
    assert (await turn(llm, "We already use Salesforce for that.", [GOTO, END]))[1] == [
        ("goto_stage", {"stage": "objection_handling"})
    ]
    assert (await turn(llm, "I'm in a meeting, call me back later.", [GOTO, END]))[1] == [
        ("goto_stage", {"stage": "callback"})
    ]
    assert (await turn(llm, "Take me off your list and don't call again.", [GOTO, DNC, END]))[1] == [
        ("add_to_dnc", {})
    ]


@pytest.mark.asyncio
async def test_it_says_scripted_lines_and_is_honest_about_being_an_ai(llm: OpenAICompatLLMProvider) -> None:
    text, calls = await turn(llm, "Sure, but I only have a minute. What is this about?", [END, BOOK])
    assert not calls and text.startswith("We help finance teams close their books two days faster")
    text, _ = await turn(llm, "Wait, is this a robot?", [])
    assert text.startswith("Yes, I'm an AI assistant") and "Acme Analytics" in text
    assert (await turn(llm, "pineapple", [BOOK]))[0] == "Pinned line."  # a rule goes first


@pytest.mark.asyncio
async def test_it_words_a_tool_result(llm: OpenAICompatLLMProvider) -> None:
    call = ToolCall("book_meeting", {"start_time": "2026-12-08T15:00:00Z"}, "call_1")
    history = [
        ChatMessage("assistant", "", tool_calls=[call]),
        ChatMessage("tool", '{"booked": true}', tool_name="book_meeting"),
    ]
    messages = [ChatMessage("system", SYSTEM), ChatMessage("user", "Tuesday at 3"), *history]
    text = "".join([c.text async for c in llm.stream_chat(messages, tools=[BOOK])])
    assert text.startswith("You're all set")


def test_times_are_read_from_the_callers_words() -> None:
    monday = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)
    assert parse_time("tomorrow at 3pm", monday) == "2026-12-08T15:00:00Z"
    assert parse_time("how about Friday at 10:30", monday) == "2026-12-11T10:30:00Z"
    assert parse_time("we are 12 people", monday) is None
