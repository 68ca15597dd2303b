"""Tool turns (``call/tool_turns.py``) on their own: a filler line for a slow tool, a result the LLM words
(or a fixed line when it cannot), and a transfer's line heard and stored before the transfer starts, the
call going on with the agent when it does not."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from call.bargein import TurnSettings
from call.clock import CallClock
from call.profile import AgentProfile
from call.reply_turn import ReplySource, ReplyTurn
from call.tool_turns import TRANSFER_FAILED_LINE, ToolTurns
from call.transcript import CallState, CallTranscript
from providers.base import ChatMessage, LLMChunk, ToolCall
from telephony.warm_transfer import COLD_LINE, WARM_HANDOVER, WARM_LINE
from tests.test_call_parts import FakeSpeaker, RecordingSink, ScriptedLLM
from tools.runner import ToolError


class Tools:
    """The runner's side a tool turn uses: each call recorded, the outcome as set, after ``delay_s``."""

    def __init__(self, outcome: dict[str, Any], *, mode: str | None = None, delay_s: float = 0.0) -> None:
        self.outcome = {"success": True, "duration_ms": 1.0, "say": None, "result": {}, "error": None}
        self.outcome |= {"ends_call": False, "transferred": False, "handed_over": False, **outcome}
        self.mode, self.delay_s = mode, delay_s
        self.calls: list[ToolCall] = []
        self.transfers: list[dict[str, Any]] = []
        self.woken = 0  # the webhook worker woken after a tool ran

    def wake(self) -> None:
        self.woken += 1

    def filler_for(self, name: str) -> str:
        return f"One moment while I {name}."

    def transfer_mode(self, agent: Any, call: ToolCall) -> str | None:
        return self.mode if call.name == "transfer_call" else None

    async def execute(self, agent: Any, call: ToolCall, ctx: Any) -> Any:
        self.calls.append(call)
        await asyncio.sleep(self.delay_s)
        return SimpleNamespace(**self.outcome)

    async def transfer(self, agent: Any, ctx: Any, **kwargs: Any) -> Any:
        self.transfers.append(kwargs)
        if kwargs["number"] is None:
            raise ToolError("no number to transfer to")
        return SimpleNamespace(**self.outcome)


class PlayingSpeaker(FakeSpeaker):
    """What the caller had heard whole each time the part waited for it."""

    def __init__(self) -> None:
        super().__init__()
        self.played: list[list[str]] = []

    async def wait_played(self, turn: ReplyTurn) -> None:
        self.played.append(list(turn.planned))


def tool_turns(
    tools: Tools, llm: ScriptedLLM | None = None
) -> tuple[ToolTurns, PlayingSpeaker, RecordingSink]:
    agent = SimpleNamespace(id="a1", documents=[], llm_model=None, temperature=0.2)
    profile = AgentProfile(agent, "You are Ava.", "Hi!", TurnSettings(), [], {})
    speaker, sink = PlayingSpeaker(), RecordingSink()
    transcript = CallTranscript(sink, CallClock().ms)
    transcript.set_state(CallState.ACTIVE)
    settings = SimpleNamespace(llm_timeout_sec=5.0, llm_first_token_timeout_sec=3.0, llm_max_tokens=100)
    part = ToolTurns(
        profile=profile, llm=llm or ScriptedLLM([]), speaker=speaker, transcript=transcript,  # type: ignore[arg-type]
        tool_runner=tools, tool_context=None, settings=settings, ms=CallClock().ms,  # type: ignore[arg-type]
        after_tool=tools.wake,
    )  # fmt: skip
    return part, speaker, sink


@pytest.mark.asyncio
async def test_a_slow_tool_gets_a_filler_and_the_llm_words_its_result() -> None:
    llm = ScriptedLLM([[LLMChunk("You're booked for "), LLMChunk("Thursday at 2.")]])
    tools = Tools({"result": {"start": "Thursday 14:00"}}, delay_s=1.0)
    part, speaker, _ = tool_turns(tools, llm)
    turn = ReplyTurn(1, "Thursday at 2 works", 0)
    call = ToolCall("book_meeting", {"start_time": "Thursday 14:00"})
    outcome = await part.run(turn, call)
    assert outcome.success and tools.calls == [call] and turn.source is ReplySource.TOOL
    assert speaker.said == ["One moment while I book_meeting.", "You're booked for Thursday at 2."]
    assert "tool_result_ms" in turn.timings and tools.woken == 1
    # one round: the call, then its result as a tool message
    assert llm.seen[0][-2] == ChatMessage("assistant", "", tool_calls=[call])
    assert llm.seen[0][-1].role == "tool" and "Thursday 14:00" in llm.seen[0][-1].content

    # a quick tool that failed, and a model with nothing to say: a fixed line, no filler
    tools = Tools({"success": False, "error": "calendar down"})
    part, speaker, _ = tool_turns(tools, ScriptedLLM([[LLMChunk("")]]))
    await part.run(ReplyTurn(2, "Friday then", 1), ToolCall("book_meeting", {}))
    assert speaker.said == ["Sorry, I couldn't do that just now."]


@pytest.mark.asyncio
async def test_a_transfer_line_is_heard_and_stored_before_the_transfer() -> None:
    tools = Tools({"handed_over": True, "say": ""}, mode="warm")
    part, speaker, sink = tool_turns(tools)
    turn = ReplyTurn(1, "Can I talk to a person?", 0)
    await part.run(turn, ToolCall("transfer_call", {"reason": "asked"}))
    assert speaker.said == [WARM_LINE] and speaker.played == [[WARM_LINE]]
    assert turn.saved and sink.turns[-1].text == WARM_LINE
    assert turn.end_reason == WARM_HANDOVER and turn.hang_up_after is None

    # the transfer did not start: the agent goes on, and what it says next is a turn of its own
    tools = Tools({"say": "Sorry, nobody is free right now."}, mode="cold")
    part, speaker, sink = tool_turns(tools)
    turn = ReplyTurn(2, "Transfer me please", 1)
    await part.run(turn, ToolCall("transfer_call", {}))
    assert sink.turns[-1].text == COLD_LINE and turn.end_reason is None and not turn.saved
    assert turn.planned == ["Sorry, nobody is free right now."]

    # a supervisor's transfer: the same line first; one that cannot start says so
    tools = Tools({"transferred": True})
    part, speaker, sink = tool_turns(tools)
    turn = ReplyTurn(3, "", 2)
    assert await part.transfer(turn, "+15550100", "cold") is not None
    assert turn.end_reason == "transferred" and speaker.said == [COLD_LINE]
    assert tools.transfers == [{"number": "+15550100", "mode": "cold", "requested_by": "supervisor"}]
    turn = ReplyTurn(4, "", 3)
    assert await part.transfer(turn, None, "warm", "console") is None
    assert speaker.said[-2:] == [WARM_LINE, TRANSFER_FAILED_LINE] and turn.end_reason is None
    assert turn.planned == [TRANSFER_FAILED_LINE] and not turn.saved
