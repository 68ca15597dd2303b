"""Tool turns: the agent's tools run within a reply, and transfers to a person.

A tool runs from the caller's words (a booking with a day and a time, a transfer request), from the LLM's
call after its words, from a playbook stage, or from a supervisor's command (a transfer). A tool still
running after a moment gets a filler line; its result is said as the runner words it, or worded by the
LLM (one round); a transfer's line is heard whole and stored before Twilio may end the stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

from call.intents import Intent, extract_meeting_request
from call.profile import AgentProfile
from call.prompt import build_messages
from call.reply_turn import ReplySource, ReplyTurn
from call.speaker import Speaker
from call.transcript import CallState, CallTranscript
from providers.base import ChatMessage, LLMProvider, ProviderError, ToolCall
from telephony.warm_transfer import COLD_LINE, WARM_HANDOVER, WARM_LINE
from tools.runner import ToolContext, ToolError, ToolRunner

log = logging.getLogger("ai_sdr.call")

GOODBYE_LINE = "Thanks for your time. Goodbye!"
FAREWELL = re.compile(r"\b(good ?bye|bye|take care|have a (good|great|nice|lovely|wonderful) \w+)\b", re.I)
TRANSFER_FAILED_LINE = "Sorry, I couldn't connect you just now."
TOOL_FILLER_AFTER_S = 0.8  # a tool still running this long: say a filler line


class ToolTurns:
    def __init__(
        self,
        *,
        profile: AgentProfile,
        llm: LLMProvider,  # words a tool's result
        speaker: Speaker,
        transcript: CallTranscript,
        tool_runner: ToolRunner,
        tool_context: ToolContext,
        settings: Any,
        ms: Any,  # CallClock.ms
        after_tool: Any = None,  # called after a tool ran (wakes the webhook worker)
        log_fields: dict[str, Any] | None = None,
    ) -> None:
        self.profile = profile
        self.llm = llm
        self.speaker = speaker
        self.transcript = transcript
        self.tools = tool_runner
        self.context = tool_context
        self.settings = settings
        self._ms = ms
        self._after_tool = after_tool
        self._log_fields = log_fields or {}

    async def from_words(self, turn: ReplyTurn, intent: Intent) -> bool:
        """Run a tool straight from the caller's words, without an LLM round trip."""
        names = {spec.name for spec in self.profile.tool_specs}
        if intent == Intent.BOOK_MEETING and "book_meeting" in names:
            request = extract_meeting_request(turn.user_text)
            if request:
                args = {"attendee_name": str(self.profile.variables.get("name") or "the caller"), **request}
                await self.run(turn, ToolCall("book_meeting", args))
                return True
        if intent == Intent.TRANSFER_REQUEST and "transfer_call" in names:
            await self.run(turn, ToolCall("transfer_call", {"reason": turn.user_text[:200]}))
            return True
        return False

    async def run(self, turn: ReplyTurn, call: ToolCall, *, word_result: bool = True) -> Any:
        turn.source = ReplySource.TOOL
        if mode := self.tools.transfer_mode(self.profile.agent, call):
            await self._before_transfer(turn, mode)
        task = asyncio.create_task(self.execute(call))
        done, _ = await asyncio.wait({task}, timeout=TOOL_FILLER_AFTER_S)
        if not done:
            await self.speaker.say(turn, [self.tools.filler_for(call.name)])
        outcome = await task
        if mode and not (outcome.transferred or outcome.handed_over):
            self._not_transferred(turn)
        turn.timings["tool_result_ms"] = self._ms()
        if self._after_tool is not None:
            self._after_tool()
        self._log("tool executed", tool=call.name, success=outcome.success, ms=round(outcome.duration_ms, 1))
        self.transcript.tool_ran(call.name, outcome.success)
        if outcome.say:
            await self.speaker.say(turn, [outcome.say])
        elif outcome.say is None and not outcome.ends_call and word_result:
            await self._speak_result(turn, call, outcome)
        if outcome.ends_call:
            self.transcript.set_state(CallState.COMPLETION)
            turn.hang_up_after = "agent_ended_call"
            # One goodbye: the model usually says its own before it ends the call.
            if not outcome.say and not FAREWELL.search(" ".join(turn.planned)):
                await self.speaker.say(turn, [GOODBYE_LINE])
        if getattr(outcome, "transferred", False):
            turn.hang_up_after = None
            turn.end_reason = "transferred"
        elif getattr(outcome, "handed_over", False):
            turn.hang_up_after, turn.end_reason = None, WARM_HANDOVER
        return outcome

    async def execute(self, call: ToolCall) -> Any:
        """The tool run on its own: nothing said, nothing recorded on the turn (a phone menu's keys)."""
        return await self.tools.execute(self.profile.agent, call, self.context)

    async def transfer(
        self, turn: ReplyTurn, number: str | None, mode: str, requested_by: str = "supervisor"
    ) -> Any:
        """A transfer nobody asked the model for (a supervisor's command): the line, then the same entry
        point as the ``transfer_call`` tool (``ToolRunner.transfer``). None: it could not start."""
        turn.source = ReplySource.TOOL
        await self._before_transfer(turn, mode)
        try:
            outcome = await self.tools.transfer(
                self.profile.agent, self.context, number=number, mode=mode, requested_by=requested_by
            )
        except ToolError as exc:
            self._log("transfer failed", logging.WARNING, error=str(exc)[:200])
            self._not_transferred(turn)
            await self.speaker.say(turn, [TRANSFER_FAILED_LINE])
            return None
        turn.end_reason = "transferred" if outcome.transferred else WARM_HANDOVER
        return outcome

    def _not_transferred(self, turn: ReplyTurn) -> None:
        """The transfer did not start: the call goes on with the agent, and what it says next is a turn
        of its own (the line was stored already)."""
        turn.end_reason = None
        turn.planned.clear()
        turn.saved = False

    async def _before_transfer(self, turn: ReplyTurn, mode: str) -> None:
        """The caller hears the line first; Twilio may end this stream before the REST answer is back,
        so its end must already read as the transfer's."""
        await self.speaker.say(turn, [WARM_LINE if mode == "warm" else COLD_LINE])
        await self.speaker.wait_played(turn)
        self.transcript.save_reply(turn)  # heard whole, stored before Twilio ends the stream
        turn.end_reason = WARM_HANDOVER if mode == "warm" else "transferred"

    async def _speak_result(self, turn: ReplyTurn, call: ToolCall, outcome: Any) -> None:
        """Let the LLM word a tool's result (one round: the call, then its result as a tool message)."""
        result = outcome.result if outcome.success else {"error": outcome.error}
        messages = build_messages(
            self.profile.system_prompt,
            self.transcript.state.value,
            "",
            self.transcript.history,
            turn.user_text,
            guidance=self.transcript.guidance,
        )
        messages += [
            ChatMessage("assistant", "", tool_calls=[call]),
            ChatMessage("tool", json.dumps(result, default=str)[:2000], tool_name=call.name),
        ]
        text = ""
        try:
            async with asyncio.timeout(self.settings.llm_timeout_sec):
                async for chunk in self.llm.stream_chat(
                    messages,
                    model=self.profile.agent.llm_model,
                    temperature=self.profile.agent.temperature,
                    max_tokens=self.settings.llm_max_tokens,
                ):
                    text += chunk.text
        except (ProviderError, TimeoutError) as exc:
            self._log("llm tool follow-up failed", logging.WARNING, error=type(exc).__name__)
        if not text.strip():
            text = "Done." if outcome.success else "Sorry, I couldn't do that just now."
        await self.speaker.say(turn, [text.strip()])

    def _log(self, msg: str, level: int = logging.INFO, **fields: Any) -> None:
        log.log(level, msg, extra={"fields": {**self._log_fields, **fields}})
