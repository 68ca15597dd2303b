"""Playbook turns: a caller's turn in an agent's playbook (``call/playbook.py`` ``PlaybookRun``).

A transition enters its stage: the stage's tool runs (through ``ToolTurns``), its scripted lines are
said, and the call ends if the stage ends it. A turn that stays in the stage is the responder's to answer:
a model that calls tools talks within the stage and moves the call on with the stage's transition
functions (the Pipecat Flows pattern, ``model_tool``); the small embedded model gets an acknowledgement
(or a knowledge sentence the responder found) and the stage's question again (``within_stage``).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from call.intents import CONVERSATIONAL, Intent
from call.playbook import GOTO_PREFIX, RECORD_FIELDS, PlaybookRun, Step
from call.profile import AgentProfile
from call.reply_turn import ReplySource, ReplyTurn
from call.speaker import Speaker
from call.tool_turns import ToolTurns
from call.transcript import CallState, CallTranscript
from providers.base import LLMProvider, ToolCall, ToolSpec
from speech.reply_shape import fresh_line

log = logging.getLogger("ai_sdr.call")

# Within a stage on the small embedded model: a short acknowledgement (or an honest "I don't know" to a
# question the knowledge base does not answer), then the stage's question again.
ACKNOWLEDGEMENTS = ("Got it.", "I hear you.", "Understood.", "Okay, thanks.")
SMALL_TALK = re.compile(r"\b(how are you|how's it going|how are things|how's your day)\b", re.IGNORECASE)
SMALL_TALK_LINE = "I'm doing well, thanks for asking."
PLAYBOOK_NO_ANSWER_LINE = "Good question. I don't want to guess, so I'll make sure you get the exact answer."
TOOL_FAILED_LINE = "Sorry, that didn't go through just now; someone from our team will follow up."


class PlaybookTurns:
    def __init__(
        self,
        *,
        profile: AgentProfile,
        llm: LLMProvider,  # whether it talks within a stage
        speaker: Speaker,
        transcript: CallTranscript,
        tool_turns: ToolTurns,
        log_fields: dict[str, Any] | None = None,
    ) -> None:
        assert profile.playbook
        self.profile = profile
        self.llm = llm
        self.speaker = speaker
        self.transcript = transcript
        self.tool_turns = tool_turns
        self._log_fields = log_fields or {}
        self.run = PlaybookRun(profile.playbook, profile.variables, on_change=transcript.save_stages)
        self.run.record({})  # the start stage, where the greeting was said

    @property
    def stage_model(self) -> bool:
        """A model that calls tools and is not the small embedded one: it talks within the stage and
        moves the call on with the stage's transition functions (the Pipecat Flows pattern)."""
        return bool(getattr(self.llm, "supports_tools", False)) and not getattr(
            self.llm, "extractive_knowledge", False
        )

    def stage_tools(self) -> list[ToolSpec]:
        """The stage's transitions as functions, with the agent's tools, for the stage model."""
        return self.run.stage_tools(self.profile.tool_specs)

    def stage_prompt(self) -> str:
        return self.run.stage_prompt()

    async def on_turn(self, turn: ReplyTurn) -> Step:
        """The caller's turn in the current stage. A transition: the stage entered is spoken (its tool,
        its lines); ``step.stay``: the turn stays in the stage, and what is said is the caller's."""
        step = self.run.on_turn(turn.user_text)
        self._log("playbook turn", intent=step.intent, stage=self.run.stage, entered=",".join(step.entered))
        if not step.stay:
            await self.speak_step(turn, step)
        return step

    async def within_stage(self, turn: ReplyTurn, intent: Intent, step: Step, *, answered: bool) -> None:
        """The small model's turn in a stage: the knowledge answer (``answered``: said already) or an
        acknowledgement, then the ask."""
        if not answered:
            turn.source = ReplySource.PLAYBOOK
            previous = self.transcript.last_agent_line()
            if SMALL_TALK.search(turn.user_text):
                line = SMALL_TALK_LINE
            elif intent == Intent.QUESTION and not CONVERSATIONAL.search(turn.user_text):
                line = PLAYBOOK_NO_ANSWER_LINE
            else:
                line = ACKNOWLEDGEMENTS[len(self.transcript.history) // 2 % len(ACKNOWLEDGEMENTS)]
                line = fresh_line((line, *ACKNOWLEDGEMENTS), previous)
            await self.speaker.say(turn, [line])
        if step.ask:
            await self.speaker.say(turn, [step.ask])

    async def speak_step(self, turn: ReplyTurn, step: Step) -> None:
        """A stage entered: its tool, then its scripted lines; the call ends if the stage ends it."""
        turn.source = ReplySource.PLAYBOOK
        for call in step.tools:
            outcome = await self.tool_turns.run(turn, call, word_result=False)
            if outcome.ends_call or turn.hang_up_after:
                return  # the tool said its last line (do-not-call)
            if not outcome.success:
                await self.speaker.say(turn, [TOOL_FAILED_LINE])
        if step.lines:
            await self.speaker.say(turn, step.lines)
        if step.ends_call:
            self.transcript.set_state(CallState.COMPLETION)
            turn.hang_up_after = step.end_reason or "agent_goodbye"

    async def model_tool(self, turn: ReplyTurn, call: ToolCall) -> bool:
        """A model's call of a stage's transition or of ``record_fields``; False: an ordinary tool."""
        if call.name == RECORD_FIELDS:
            self.run.record(call.arguments or {})
            if (step := self.run.follow_fields()) is not None:
                await turn.go.wait()
                await self.speak_step(turn, step)
            return True
        target = call.name.removeprefix(GOTO_PREFIX)
        if not call.name.startswith(GOTO_PREFIX) or target not in {t for t, _ in self.run.exits()}:
            return False
        await turn.go.wait()
        await self.speak_step(turn, self.run.enter(target, turn.user_text, "llm"))
        return True

    def _log(self, msg: str, level: int = logging.INFO, **fields: Any) -> None:
        log.log(level, msg, extra={"fields": {**self._log_fields, **fields}})
