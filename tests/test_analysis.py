"""Post-call analysis keeps a model's summary only when it is about the call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from events.analysis import analyze_conversation, grounded
from providers.base import LLMChunk

TURNS = [
    ("agent", "Hi, this is Ava from Orbit CRM."),
    ("user", "How much does Orbit cost per seat?"),
    ("agent", "Orbit costs 49 dollars per seat per month."),
    ("user", "Can we book a meeting tomorrow at 3 pm?"),
]


class OneReply:
    name = "one-reply"
    extractive_knowledge = True  # a small embedded model: its output is checked against the call

    def __init__(self, text: str) -> None:
        self.text = text

    async def stream_chat(self, messages: Any, **_: Any) -> AsyncIterator[LLMChunk]:
        yield LLMChunk(self.text)


def test_grounded_summaries() -> None:
    transcript = "\n".join(text for _, text in TURNS)
    assert grounded("The caller asked what Orbit costs per seat and booked a meeting.", transcript)
    assert not grounded("One or two sentences, with a JSON body that includes budget (string).", transcript)
    assert not grounded("The customer wants a refund for their broken printer.", transcript)
    assert not grounded("", transcript)


@pytest.mark.asyncio
async def test_an_off_topic_model_summary_is_replaced_by_one_from_the_transcript() -> None:
    echo = '{"summary": "One or two sentences, with a JSON body: budget (string): 49.125", "outcome": "interested"}'
    analysis = await analyze_conversation(TURNS, [], OneReply(echo))
    assert analysis.summary.startswith("The caller said: How much does Orbit cost per seat?")
    good = '{"summary": "The caller asked about Orbit pricing per seat and wants a meeting.", "outcome": "interested"}'
    analysis = await analyze_conversation(TURNS, [], OneReply(good))
    assert analysis.summary == "The caller asked about Orbit pricing per seat and wants a meeting."


def test_collected_values_must_come_from_the_caller() -> None:
    from events.analysis import said_by_caller

    caller = "sounds good, our budget is about 2,000 a month. we use hubspot today."
    assert said_by_caller(2000, caller) and not said_by_caller(49, caller)
    assert said_by_caller("HubSpot", caller) and said_by_caller("about 2000 a month budget", caller)
    assert not said_by_caller("49 dollars per seat per month on the Growth plan", caller)
    assert said_by_caller(None, caller) and said_by_caller(True, caller)


@pytest.mark.asyncio
async def test_a_small_model_inventing_a_value_gets_null() -> None:
    fields = [{"name": "budget", "type": "string", "description": "Budget the caller mentions"}]
    invented = '{"summary": "The caller asked about Orbit pricing per seat.", "outcome": "interested", "budget": "49 dollars per seat"}'
    analysis = await analyze_conversation(TURNS, fields, OneReply(invented))
    assert analysis.collected == {"budget": None}
