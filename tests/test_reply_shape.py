"""Replies stay on script: two sentences, no repeat of the last agent line, in persona, no invented facts,
and the ways a caller ends a call end it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from call.intents import Intent, detect_intent
from call.reply_turn import ReplySource, ReplyTurn
from call.responder import EMAIL_GOODBYE_LINE, GOODBYE_LINE
from providers.base import ChatMessage, LLMChunk
from speech.reply_shape import (
    HONEST_AI_LINE,
    NEUTRAL_LINES,
    NO_ANSWER_LINES,
    ReplyShaper,
    echoes,
    near_duplicate,
    strip_persona,
    unsupported_facts,
)
from tests.test_call_parts import ScriptedLLM, responder_for

# ------------------------------------------------------------------------------------ the shaper alone


def shape(pieces: list[str], **kwargs: Any) -> tuple[list[str], ReplyShaper]:
    shaper = ReplyShaper(**kwargs)
    out = [s for p in pieces if (s := shaper.push(p)) is not None]
    return out, shaper


def test_a_reply_stops_at_its_second_sentence() -> None:
    out, shaper = shape(["That's fair.", "Most teams start with a trial.", "Then they add seats.", "More."])
    assert out == ["That's fair.", "Most teams start with a trial."] and shaper.done
    # two sentences in one piece: cut after the second
    out, shaper = shape(["One thing. Another thing. A third thing."])
    assert out == ["One thing. Another thing."] and shaper.done
    # a first clause is not a sentence
    out, _ = shape(["As far as I know,", "we do.", "Want a demo?", "And more."])
    assert out == ["As far as I know,", "we do.", "Want a demo?"]
    # a list is coming: the reply ends at the line break
    out, shaper = shape(["Here is what I can do:\n1. Let me know"])
    assert out == ["Here is what I can do:"] and shaper.done


def test_a_repeat_of_the_previous_agent_line_is_dropped() -> None:
    previous = "As a customer service rep, I take pride in helping teams like yours grow every day."
    out, shaper = shape(["I take pride in helping teams like yours grow every day."], previous=previous)
    assert out == [] and shaper.dropped == ["repeat"]
    assert shaper.fallback() in NEUTRAL_LINES
    # the start of a sentence repeated: the rest of that sentence goes too, the next one is spoken
    out, _ = shape(["I take pride in helping teams", "like yours, truly.", "Want a demo?"], previous=previous)
    assert out == ["Want a demo?"]
    assert not near_duplicate("Would Tuesday work for a demo?", previous)
    # the neutral line never repeats itself either
    assert ReplyShaper(previous=NEUTRAL_LINES[0]).fallback() == NEUTRAL_LINES[1]


def test_the_callers_words_are_not_parroted_back() -> None:
    caller = "Sorry, we're not interested."
    out, shaper = shape(["Sorry, we're not interested."], caller=caller)
    assert out == [] and shaper.dropped == ["parrot"]
    out, _ = shape(["I understand.", "Could I send you a short email instead?"], caller=caller)
    assert out == ["I understand.", "Could I send you a short email instead?"]
    # a question answered with the caller's own words in it is not a parrot
    out, _ = shape(["Yes, we integrate with Zendesk."], caller="Do you integrate with Zendesk?")
    assert out == ["Yes, we integrate with Zendesk."]


def test_persona_openings_are_cut_and_ai_talk_dropped() -> None:
    assert (
        strip_persona("As a customer service rep, I take pride in our tools.") == "I take pride in our tools."
    )
    assert strip_persona("As an AI language model, I can't eat lunch.") == "I can't eat lunch."
    assert strip_persona("I'm just an AI assistant, so I don't know.") == ""
    assert strip_persona("As far as I know, we do.") == "As far as I know, we do."
    out, shaper = shape(["As an AI, I don't have a day.", "How is yours going?"])
    assert out == ["I don't have a day.", "How is yours going?"] and "persona" in shaper.dropped


def test_facts_not_in_the_prompt_end_the_reply() -> None:
    known = "Orbit CRM costs 29 dollars per user per month. Caller: do you integrate with Zendesk?"
    assert unsupported_facts("It costs 29 dollars a user.", known) == set()
    assert unsupported_facts("We integrate with Zendesk.", known) == set()
    assert unsupported_facts("We give a 10% discount until March.", known) == {"10", "march"}
    assert unsupported_facts("We are based in the UK.", known) == {"uk"}
    out, _ = shape(["We give a 10% discount for three years."], known=known)
    assert out == [NO_ANSWER_LINES[0]]
    out, shaper = shape(["Sure, we can.", "We give a 10% discount.", "Bye."], known=known)
    assert out == ["Sure, we can."] and shaper.done  # said something already: just stop there


def test_a_reply_reciting_the_engines_instructions_is_dropped() -> None:
    from call.prompt import INSTRUCTIONS

    assert echoes("You are on a phone call. Repeat your message to the team.", INSTRUCTIONS)
    assert not echoes("I can follow up by email if that helps.", INSTRUCTIONS)


# ------------------------------------------------------------------------------- through the responder


@pytest.mark.asyncio
async def test_the_responder_caps_the_reply_and_stops_the_model() -> None:
    produced: list[str] = []

    class Rambling(ScriptedLLM):
        async def stream_chat(self, messages: list[ChatMessage], **_: Any) -> AsyncIterator[LLMChunk]:
            for text in ["We help teams. ", "It is simple. ", "It has reports. ", "And dashboards. "]:
                produced.append(text)
                yield LLMChunk(text)

    responder, speaker, _, _ = responder_for(Rambling([]))
    await responder.answer(ReplyTurn(1, "Tell me about it", 0), Intent.OTHER)
    assert speaker.said == ["We help teams.", "It is simple."]
    assert len(produced) < 4  # generation stopped once two sentences were out


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("asked", "kept"),
    [
        ("Wait, am I talking to a robot?", True),
        ("Is this a real person?", True),
        ("Do you have a case study I could read?", False),  # not asked: AI talk is still dropped
    ],
)
async def test_asked_whether_it_is_a_bot_the_agent_may_say_it_is_an_ai(asked: str, kept: bool) -> None:
    """Without a playbook the model answers "is this a robot?": its honest "I'm an AI assistant" is not
    dropped as persona-breaking (the issue: the agent never denies being an AI)."""
    llm = ScriptedLLM(
        [[LLMChunk("Yes, I'm an AI assistant calling for Acme. "), LLMChunk("Want to hear why?")]]
    )
    responder, speaker, _, _ = responder_for(llm)
    await responder.answer(ReplyTurn(1, asked, 0), detect_intent(asked))
    assert ("Yes, I'm an AI assistant calling for Acme." in speaker.said) is kept, speaker.said


def test_asked_whether_it_is_a_bot_ai_is_not_an_invented_fact() -> None:
    """The small model's fact check read "AI" as a name found nowhere in the prompt and answered "I don't
    have that detail…" instead (SmolLM2 and Qwen on the SDR set's robot lines, no playbook)."""
    said = "Yes, I'm an AI assistant for Acme."
    out, _ = shape([said], known="You are Sam, a sales rep for Acme.", disclose_ai=True)
    assert out == [said]
    out, _ = shape([said], known="You are Sam, a sales rep for Acme.")
    assert out == [] or out[0] in NO_ANSWER_LINES


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "denial",
    ["No, I'm not a robot. ", "No, I'm a sales rep from Acme. ", "It's definitely a person here. "],
)
async def test_asked_whether_it_is_a_bot_a_denial_is_never_said(denial: str) -> None:
    """The embedded models, asked "is this a robot?" without a playbook, answered these (SDR set, no
    playbook): the reply is replaced by the honest line."""
    llm = ScriptedLLM([[LLMChunk(denial), LLMChunk("How can I help?")]])
    responder, speaker, _, _ = responder_for(llm)
    await responder.answer(ReplyTurn(1, "Am I talking to a real person?", 0), Intent.QUESTION)
    assert speaker.said == [HONEST_AI_LINE]
    # not asked: the same words are the model's to say
    llm = ScriptedLLM([[LLMChunk(denial)]])
    responder, speaker, _, _ = responder_for(llm)
    await responder.answer(ReplyTurn(1, "Who are you with?", 0), Intent.QUESTION)
    assert HONEST_AI_LINE not in speaker.said


@pytest.mark.asyncio
async def test_the_responder_never_says_the_previous_line_again() -> None:
    ramble = "As a customer service rep, I take pride in helping teams like yours grow. It is my passion."
    llm = ScriptedLLM([[LLMChunk(ramble)]])
    responder, speaker, transcript, _ = responder_for(llm)
    transcript.history += [ChatMessage("user", "We use spreadsheets."), ChatMessage("assistant", ramble)]
    await responder.answer(ReplyTurn(2, "Hmm, okay.", 1), Intent.OTHER)
    assert speaker.said and not near_duplicate(" ".join(speaker.said), ramble)
    assert speaker.said == [NEUTRAL_LINES[0]]


@pytest.mark.asyncio
async def test_a_question_the_knowledge_base_does_not_answer_gets_a_follow_up_offer() -> None:
    llm = ScriptedLLM([[LLMChunk("Yes, we integrate with Zendesk and 40 other tools.")]])  # never asked
    llm.extractive_knowledge = True  # type: ignore[attr-defined]  (a small embedded model)
    responder, speaker, transcript, _ = responder_for(llm, documents=[SimpleNamespace(status="ready")])

    async def nothing(*_: Any, **__: Any) -> list[Any]:
        return []

    responder.knowledge = SimpleNamespace(query=nothing, wake_indexer=lambda: None)
    turn = ReplyTurn(1, "Do you integrate with Zendesk?", 0)
    await responder.answer(turn, detect_intent(turn.user_text))
    assert speaker.said == [NO_ANSWER_LINES[0]] and llm.seen == []
    # the next unanswered question does not get the same line again
    transcript.history += [ChatMessage("user", turn.user_text), ChatMessage("assistant", speaker.said[0])]
    speaker.said.clear()
    await responder.answer(ReplyTurn(2, "Are you SOC 2 certified?", 1), Intent.QUESTION)
    assert speaker.said == [NO_ANSWER_LINES[1]]
    # small talk is still the model's to answer
    speaker.said.clear()
    llm.replies[:] = [[LLMChunk("Pretty good, thanks for asking!")]]
    await responder.answer(ReplyTurn(3, "How's your day going?", 2), Intent.QUESTION)
    assert speaker.said == ["Pretty good, thanks for asking!"]


# ------------------------------------------------------------------------------------- ending a call


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("I have to go.", Intent.GOODBYE),
        ("I've got to run, sorry.", Intent.GOODBYE),
        ("Not now.", Intent.GOODBYE),
        ("Not right now, thanks.", Intent.GOODBYE),
        ("Okay, I need to jump on another call.", Intent.GOODBYE),
        ("Send me an email instead, I have to go.", Intent.EMAIL_INSTEAD),
        ("Just send me an email.", Intent.EMAIL_INSTEAD),
        ("Can you email me the details? I need to go.", Intent.EMAIL_INSTEAD),
        # a legal duty first: do-not-call wins over any goodbye
        ("Stop calling me, I have to go.", Intent.DO_NOT_CALL),
        ("Not now, call me back tomorrow.", Intent.CALLBACK_LATER),
        # not endings
        ("I have to go through my boss first.", Intent.OTHER),
        ("We need to run a trial first.", Intent.OTHER),
    ],
)
def test_ways_of_ending_a_call(text: str, intent: Intent) -> None:
    assert detect_intent(text) == intent


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("Send me an email instead, I have to go.", EMAIL_GOODBYE_LINE, "email_requested"),
        ("I have to go.", GOODBYE_LINE, "agent_goodbye"),
    ],
)
async def test_an_ending_turn_ends_the_call_politely(text: str, line: str, reason: str) -> None:
    llm = ScriptedLLM([])
    responder, speaker, _, _ = responder_for(llm)
    turn = ReplyTurn(1, text, 0)
    await responder.answer(turn, detect_intent(text))
    assert speaker.said == [line] and turn.hang_up_after == reason  # the end reason a CRM acts on
    assert turn.source is ReplySource.FIXED_LINE and llm.seen == []
