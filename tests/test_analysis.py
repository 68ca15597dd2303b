"""Post-call analysis keeps a model's summary only when it is about the call."""

from __future__ import annotations

import json
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


# ---------------------------------------------------------------- outcomes are facts first

GREETING = ("agent", "Hi Dana, this is Sam from Acme.")
TALKED = [GREETING, ("user", "Hello?"), ("agent", "Do you have a minute?"), ("user", "What is this about?")]
BOOKED = [{"name": "book_meeting", "arguments": {"start_time": "2026-12-01T10:00:00"}, "success": True}]


class Says:
    """An LLM that answers with one fixed outcome, whatever the schema it is given allows."""

    name = "says"

    def __init__(self, outcome: str, **fields: Any) -> None:
        self.reply = json.dumps({"summary": "Dana asked what this is about.", "outcome": outcome, **fields})
        self.schemas: list[dict[str, Any]] = []
        self.prompts: list[str] = []

    async def stream_chat(self, messages: Any, **options: Any) -> AsyncIterator[LLMChunk]:
        self.schemas.append(options["json_schema"])
        self.prompts.append(messages[-1].content)
        yield LLMChunk(self.reply)


def test_the_facts_say_which_outcomes_are_possible() -> None:
    from events.analysis import CallFacts, allowed_outcomes

    def allowed(
        turns: Any, calls: Any = (), end: str | None = "caller_hung_up", by: str | None = None
    ) -> list[str]:
        return allowed_outcomes(CallFacts.of(list(turns), list(calls), end, by))

    talk = ["interested", "not_interested", "callback_requested"]
    assert allowed(TALKED) == talk  # a person who said anything: never no_answer, never voicemail
    assert allowed(TALKED, by="human") == talk
    assert allowed([GREETING, ("user", "Hello?")]) == talk
    assert allowed(TALKED, BOOKED) == ["meeting_booked"]
    failed_booking = [{**BOOKED[0], "success": False}]
    assert allowed(TALKED, failed_booking) == talk  # a booking attempt that failed books nothing
    assert allowed([GREETING]) == ["no_answer"]
    assert allowed([GREETING, ("user", "  ...  ")]) == ["no_answer"]  # no words: nobody talked
    assert allowed([GREETING], end="no_answer") == ["no_answer"]
    # A voicemail needs the machine decision: a greeting that sounds like one is not enough ...
    mailbox = [GREETING, ("user", "Please leave a message after the tone.")]
    assert allowed(mailbox) == talk
    # ... and with it, whatever the machine said, the call is a voicemail.
    assert allowed(mailbox, by="machine") == ["voicemail"]
    assert allowed([GREETING], by="machine_end_beep") == ["voicemail"]
    assert allowed(TALKED, end="stt_failed") == ["failed"]
    assert allowed([GREETING], end="failed") == ["failed"]


@pytest.mark.asyncio
async def test_the_llm_chooses_only_among_the_outcomes_the_facts_allow() -> None:
    llm = Says("no_answer")
    analysis = await analyze_conversation(TALKED, [], llm, end_reason="caller_hung_up")
    assert llm.schemas[0]["properties"]["outcome"]["enum"] == [
        "interested",
        "not_interested",
        "callback_requested",
    ]
    assert "no_answer" not in llm.prompts[0] and "voicemail" not in llm.prompts[0]
    assert analysis.outcome == "unknown"  # its answer was not allowed: no guess (and no "interested")
    assert (await analyze_conversation(TALKED, [], Says("meeting_booked"))).outcome == "unknown"
    assert (
        await analyze_conversation(TALKED, [], Says("voicemail"), answered_by="human")
    ).outcome == "unknown"
    assert (
        await analyze_conversation(TALKED, [], Says("callback_requested"))
    ).outcome == "callback_requested"
    # the facts settle it whatever the LLM says
    assert (
        await analyze_conversation(TALKED, [], Says("not_interested"), tool_calls=BOOKED)
    ).outcome == "meeting_booked"
    machine = await analyze_conversation(TALKED, [], Says("interested"), answered_by="machine")
    assert machine.outcome == "voicemail"
    assert (await analyze_conversation(TALKED, [], None)).outcome == "unknown"  # no LLM: no default


@pytest.mark.asyncio
async def test_collected_values_come_only_from_the_callers_words_for_any_llm() -> None:
    fields = [
        {"name": "budget", "type": "number", "description": "monthly budget"},
        {"name": "crm", "type": "string", "description": "the CRM they use"},
    ]
    turns = [*TALKED, ("agent", "We start at 49 dollars."), ("user", "We use HubSpot, budget about 2,000.")]
    large = Says("interested", budget=49, crm="HubSpot")  # not a small model: no extractive_knowledge
    analysis = await analyze_conversation(turns, fields, large)
    assert analysis.collected == {"budget": None, "crm": "HubSpot"}  # 49 is the agent's figure
    analysis = await analyze_conversation(turns, fields, Says("interested", budget=2000, crm="Salesforce"))
    assert analysis.collected == {"budget": 2000, "crm": None}
