"""The responder's playbook turns (``call/playbook_turns.py``) and tool turns (``call/tool_turns.py``) on
the text path, through the real ``Responder`` with the starter playbook: a stage entered is spoken (its
tool first), a turn that stays gets the small model's fixed line and the stage's question again, the
engine's own handling where no transition applies, and a tool-calling model's ``record_fields``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from call.bargein import TurnSettings
from call.intents import Intent, detect_intent
from call.playbook import starter_playbook
from call.playbook_turns import ACKNOWLEDGEMENTS, PLAYBOOK_NO_ANSWER_LINE, SMALL_TALK_LINE, TOOL_FAILED_LINE
from call.profile import AgentProfile
from call.reply_turn import ReplySource, ReplyTurn
from call.responder import HOLD_LINE, Responder
from call.transcript import CallState, CallTranscript
from providers.base import ChatMessage, LLMChunk, ToolCall, ToolSpec
from tests.test_call_parts import FakeSpeaker, ScriptedLLM, responder_for

REASON = "We help sales teams cut their weekly pipeline reporting"
EMAIL_LINE = "Perfect. What's the best email address for the calendar invite?"
HOURS_ASK = "Roughly how many hours a week does that take your team?"
DEMO_ASK = "Would Tuesday at 10 or Thursday at 2 work for a 20-minute demo?"


class Tools:
    """The runner's side a tool turn uses: each call recorded, its outcome as set."""

    def __init__(self, success: bool = True) -> None:
        self.calls: list[ToolCall] = []
        self.success = success

    def filler_for(self, name: str) -> str:
        return "One moment."

    def transfer_mode(self, agent: Any, call: ToolCall) -> str | None:
        return None

    async def execute(self, agent: Any, call: ToolCall, ctx: Any) -> Any:
        self.calls.append(call)
        say = "" if self.success else None
        error = None if self.success else "calendar down"
        return SimpleNamespace(
            success=self.success, duration_ms=1.0, say=say, result={}, error=error, ends_call=False
        )


class ToolCallingLLM(ScriptedLLM):
    """A model that takes tools (not the small embedded one): the tools it was offered are kept."""

    supports_tools = True

    def __init__(self, replies: list[list[LLMChunk]]) -> None:
        super().__init__(replies)
        self.offered: list[list[str]] = []

    async def stream_chat(self, messages: list[ChatMessage], **kwargs: Any) -> AsyncIterator[LLMChunk]:
        self.offered.append([t.name for t in kwargs.get("tools") or []])
        async for chunk in super().stream_chat(messages):
            yield chunk


def playbook_responder(llm: ScriptedLLM, tools: Tools) -> tuple[Responder, FakeSpeaker, CallTranscript]:
    agent = SimpleNamespace(id="a1", documents=[], llm_model=None, temperature=0.2)
    specs = [ToolSpec("book_meeting", "Book a demo", {"type": "object", "properties": {}})]
    profile = AgentProfile(
        agent, "You are Sam.", "", TurnSettings(), specs, {"agent_name": "Sam"}, playbook=starter_playbook()
    )
    responder, speaker, transcript, _ = responder_for(llm, profile=profile, tools=tools)
    return responder, speaker, transcript


async def say(responder: Responder, speaker: FakeSpeaker, text: str, seq: int = 1) -> ReplyTurn:
    speaker.said.clear()
    turn = ReplyTurn(seq, text, seq - 1)
    await responder.answer(turn, detect_intent(text))
    return turn


@pytest.mark.asyncio
async def test_the_small_model_follows_the_stages_with_fixed_lines_and_the_stage_tool() -> None:
    llm = ScriptedLLM([])
    llm.extractive_knowledge = True  # type: ignore[attr-defined]  (the small embedded model)
    tools = Tools(success=False)
    responder, speaker, transcript = playbook_responder(llm, tools)
    assert responder.playbook is not None and responder.playbook.stage == "opener"

    turn = await say(responder, speaker, "Sure.")  # a transition: the stage's scripted line
    assert speaker.said[0].startswith(REASON) and turn.source is ReplySource.PLAYBOOK
    await say(responder, speaker, "Spreadsheets, mostly.")
    # a product question the knowledge base (none here) does not answer: no guess, then the question again
    turn = await say(responder, speaker, "Do you integrate with Zendesk?")
    assert speaker.said == [PLAYBOOK_NO_ANSWER_LINE, HOURS_ASK]
    assert turn.source is ReplySource.PLAYBOOK and responder.playbook.stage == "discovery"
    await say(responder, speaker, "Hmm, interesting.")
    assert responder.playbook.stage == "ask"
    await say(responder, speaker, "How are you?")
    assert speaker.said == [SMALL_TALK_LINE, DEMO_ASK]
    await say(responder, speaker, "Ten hours.")
    assert speaker.said[0] in ACKNOWLEDGEMENTS and speaker.said[1:] == [DEMO_ASK]
    # no transition for a request to wait: the engine's own line
    turn = await say(responder, speaker, "Actually, wait.")
    assert detect_intent(turn.user_text) is Intent.HOLD and speaker.said == [HOLD_LINE]
    assert turn.source is ReplySource.FIXED_LINE
    await say(responder, speaker, "Thursday at 2 works.")
    assert speaker.said == [EMAIL_LINE] and tools.calls == []
    # the booking stage runs its tool first; it failed: said so, then the stage's lines, and the call ends
    turn = await say(responder, speaker, "It's jane at acme dot com")
    assert [c.name for c in tools.calls] == ["book_meeting"]
    assert tools.calls[0].arguments["attendee_contact"] == "jane@acme.com"
    assert speaker.said[0] == TOOL_FAILED_LINE and "jane@acme.com" in speaker.said[1]
    assert turn.hang_up_after == "agent_goodbye" and transcript.state is CallState.COMPLETION
    assert turn.source is ReplySource.TOOL and "tool_result_ms" in turn.timings
    assert llm.seen == []  # the small model is never asked inside a playbook
    assert responder.playbook.path == ["opener", "reason", "discovery", "ask", "email", "booking"]


@pytest.mark.asyncio
async def test_a_tool_calling_model_talks_within_the_stage_and_moves_it_by_its_fields() -> None:
    llm = ToolCallingLLM(
        [
            [LLMChunk("Sure, Thursday works. ", tool_calls=[ToolCall("record_fields", {"meeting_time": "Thursday at 2pm"})])],
            [LLMChunk("Happy to help. ", tool_calls=[ToolCall("book_meeting", {"start_time": "Fri 3pm"})])],
        ]
    )  # fmt: skip
    tools = Tools()
    responder, speaker, _ = playbook_responder(llm, tools)
    for text in ("Sure.", "Spreadsheets, mostly.", "Hmm, interesting."):
        await say(responder, speaker, text)
    assert responder.playbook is not None and responder.playbook.stage == "ask" and llm.seen == []

    # stays in the stage: the model, with the stage's prompt and tools; its fields move the call on
    turn = await say(responder, speaker, "Let me check my calendar.")
    assert "Current step of the call: The ask." in llm.seen[0][0].content
    assert llm.offered[0] == ["book_meeting", "record_fields"]
    assert speaker.said == ["Sure, Thursday works.", EMAIL_LINE] and responder.playbook.stage == "email"
    assert responder.playbook.collected["meeting_time"].endswith("T14:00+00:00") and tools.calls == []
    # a call of an agent's tool (not a transition) runs as a tool turn
    turn = await say(responder, speaker, "Actually, can you tell me more first?")
    assert [c.name for c in tools.calls] == ["book_meeting"] and turn.source is ReplySource.TOOL
    assert llm.offered[1] == ["record_fields"]  # the email stage: its field only
