"""Who answered an outbound call, and what the agent does about it (``call.amd`` decides who).

- a person (or nobody speaking): the greeting; a person decided from a short hello who then says
  nothing after the agent has spoken is a machine after all (``call.amd``: ``silent_after_greeting``);
- a voicemail box: once its greeting and beep are over, the agent's message (played whole: the call's
  last line) or the hang-up;
- a call screener: one sentence saying who calls and why, then the person who picks up is greeted, or
  the call ends as ``screened`` after ``SCREENER_WAIT_SEC``;
- a phone menu: a polite goodbye, outcome ``ivr``; or, with the agent's ``dtmf_navigation``, the keys
  that reach a person (``call.menu``, pressed with the ``send_dtmf`` tool): Twilio plays them and
  connects a new Media Stream to the same conversation, where whoever answers is detected afresh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

from call.amd import AmdDecision, AnsweredBy, GreetingOver, answered_by_words, screener_line
from call.clock import CallClock
from call.ending import CallEnding
from call.intents import detect_intent
from call.menu import choose_digits
from call.parts import CallParts
from call.replies import Replies
from call.speaker import Speaker
from call.transcript import CallState, CallTranscript
from call.turns import CallerTurn
from providers.base import ToolCall
from speech.text import fill_template
from storage.call_store import STREAM_REDIRECTED, CallStore

log = logging.getLogger("ai_sdr.call")

IVR_GOODBYE_LINE = "Sorry, I'll try again another time. Goodbye."
UNANSWERED_OUTCOME = {AnsweredBy.SCREENER: "screened", AnsweredBy.IVR: "ivr"}  # outcome, end reason
AMD_WORDS_WAIT_S = 1.5  # before a voicemail: words of the greeting still on their way
SCREENER_QUIET_S = 0.7  # the screener's prompt is over
PERSON_QUIET_S = 0.7  # the person who took the call from the screener said hello and waits
MENU_QUIET_S = 1.0  # the menu has said its options (a pause longer than between two of them)
MENU_LLM_TIMEOUT_S = 5.0


class Answering:
    def __init__(
        self,
        parts: CallParts,
        replies: Replies,
        speaker: Speaker,
        transcript: CallTranscript,
        clock: CallClock,
        store: CallStore,
        ending: CallEnding,
        *,
        screener_wait_s: float,
        log_fields: dict[str, Any],
    ) -> None:
        self.profile, self.amd, self.turns = parts.profile, parts.amd, parts.turns
        self.replies, self.speaker, self.transcript = replies, speaker, transcript
        self.clock, self.store, self.ending = clock, store, ending
        self.screener_wait_s = screener_wait_s
        self.screening: asyncio.Task[Any] | None = None  # a call screener holds the call
        self._screener_said_at: float | None = None  # call clock ms: the agent's answer started/ended
        self._picked_up = False  # the person took the call from the screener
        self._menu_words: list[str] | None = None  # a phone menu being navigated: what it said
        self._redirected = False  # keys pressed: this stream ends, the call goes on on the next one
        self._tasks: set[asyncio.Task[Any]] = set()
        self._fields = log_fields
        if self.amd is not None:  # a short hello's "person" is confirmed by an answer to the agent's voice
            barge = parts.barge
            self.amd.agent_speaking = lambda: speaker.is_speaking or barge.is_paused

    def _start(self, job: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(job, name=f"{name}-{self._fields.get('call_sid')}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _log(self, msg: str, level: int = logging.INFO, **fields: Any) -> None:
        log.log(level, msg, extra={"fields": {**self._fields, **fields}})

    def on_amd(self, event: AmdDecision | GreetingOver) -> None:
        assert self.profile is not None and self.store is not None
        if self.ending.last_line or self.ending.closing:
            return  # the message (or the goodbye) is playing: nothing the far end says changes it
        if isinstance(event, GreetingOver):
            self._log("voicemail greeting over", why=event.reason, at_s=event.at_s)
            self._start(self._voicemail(), "voicemail")
            return
        answered_by = event.answered_by
        outcome = UNANSWERED_OUTCOME.get(answered_by)
        self.store.set_answered_by(answered_by.value, event.method, outcome=outcome)
        self._log("answered by", answered_by=answered_by.value, method=event.method, at_s=event.at_s)
        if answered_by in (AnsweredBy.HUMAN, AnsweredBy.UNKNOWN):
            self.screening = None
            if self.profile.first_message:
                self.replies.say(self.profile.first_message, kind="greeting")
            return
        self._silence_agent()  # never pitch to a machine, a screener or a menu
        if answered_by is AnsweredBy.SCREENER:
            self.screening = self._start(self._answer_screener(), "screener")
        elif answered_by is AnsweredBy.IVR and self.profile.agent.dtmf_navigation:
            self._menu_words = [self.turns.text_so_far] if self.turns is not None else []
            self._start(self._navigate_menu(), "ivr")
        elif answered_by is AnsweredBy.IVR:
            self._start(self._leave_menu(), "ivr")
        else:  # a machine: its message (or the hang-up) once its greeting is over, see GreetingOver
            self.transcript.set_state(CallState.COMPLETION)

    def _silence_agent(self) -> None:
        """Whatever the agent started saying stops, and nothing heard so far gets an answer."""
        reply = self.replies.current
        if reply is not None and reply.running:
            # the call does not open again: a machine's late words get no answer
            heard = self.replies.interrupted(reply, self.speaker.played_frame(), reopen=False)
            self._start(heard, "interrupted")
        self.replies.drop()

    def unanswered_end(self) -> str | None:
        """The far end hung up on a screener or a menu that never put us through (or, keys pressed, ended
        this stream: the call goes on on the next one)."""
        if self._redirected:
            return STREAM_REDIRECTED
        decision = self.amd.decision if self.amd is not None else None
        if decision is not None and decision.answered_by in UNANSWERED_OUTCOME:
            return UNANSWERED_OUTCOME[decision.answered_by]
        return None

    async def _voicemail(self) -> None:
        """Leave the agent's message (once, after the greeting and its beep), or hang up on the machine."""
        assert self.profile is not None and self.turns is not None
        # Words of the greeting still being transcribed may yet say "screener" or "menu": wait for them.
        await self._settle_words(AMD_WORDS_WAIT_S)
        decision = self.amd.decision if self.amd is not None else None
        if self.ending.closing or decision is None or decision.answered_by is not AnsweredBy.MACHINE:
            return
        agent = self.profile.agent
        message = ""
        if agent.voicemail_action == "leave_message":
            message = fill_template(agent.voicemail_message or "", self.profile.variables, strict=False)
        if message.strip():
            await self.ending.say_last(message.strip(), "voicemail")
        else:
            await self.ending.hang_up("voicemail")

    async def _settle_words(self, max_wait_s: float) -> None:
        assert self.turns is not None
        deadline = time.monotonic() + max_wait_s
        # polled: the words arrive on the STT task, the voice on the frame path; neither signals here
        while self.turns.words_pending and time.monotonic() < deadline and not self.ending.closing:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    async def _far_end_quiet(self, quiet_s: float, max_wait_s: float) -> None:
        """Until the far end has been quiet for ``quiet_s`` (its prompt is over), at most ``max_wait_s``."""
        assert self.turns is not None
        deadline = time.monotonic() + max_wait_s
        while time.monotonic() - self.turns.last_voice_at < quiet_s and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    async def _answer_screener(self) -> None:
        """Say who is calling and why, in one sentence, then wait for the person to pick up."""
        assert self.profile is not None
        await self._far_end_quiet(SCREENER_QUIET_S, max_wait_s=8.0)
        if self.ending.closing:
            return
        self._screener_said_at = self.clock.ms()
        self.replies.say(screener_line(self.profile.variables), kind="screener")
        if (turn := self.replies.current) is not None and turn.task is not None:
            await asyncio.gather(turn.task, return_exceptions=True)  # said, and heard
        self._screener_said_at = self.clock.ms()
        await asyncio.sleep(self.screener_wait_s)
        if self.screening is not None and not self.ending.closing:  # nobody picked up
            self._log("screener: nobody picked up", waited_s=self.screener_wait_s)
            await self.ending.hang_up("screened")

    def screener_turn(self, heard: CallerTurn) -> bool:
        """A caller turn while a screener holds the call (True; else False, not handled here): the
        screener's own words (the prompt, "please stay on the line") are recorded; words after the
        agent's answer are the person who picked up, and the greeting answers them."""
        if self._menu_words is not None:  # a menu's words: recorded, and read to choose a key
            self._record(heard)
            self._menu_words.append(heard.text)
            return True
        if self.screening is None:
            return False
        assert self.amd is not None
        self._record(heard)
        said_after = (heard.speech_start_ms or 0.0) > (self._screener_said_at or float("inf"))
        if said_after and answered_by_words(heard.text) is not AnsweredBy.SCREENER and not self._picked_up:
            self._picked_up = True
            self._start(self._person_picked_up(), "picked-up")
        return True

    def _record(self, heard: CallerTurn) -> None:
        self.transcript.save_user_turn(
            heard.text, kind="speech", intent=detect_intent(heard.text).value,
            start_ms=heard.speech_start_ms, end_ms=heard.speech_end_ms, stt_final_ms=heard.stt_final_ms,
        )  # fmt: skip

    async def _person_picked_up(self) -> None:
        """The person took the call from the screener: greeted once they pause, as any person."""
        assert self.amd is not None
        await self._far_end_quiet(PERSON_QUIET_S, max_wait_s=4.0)
        if not self.ending.closing:
            self.on_amd(self.amd.person_after_screener())

    async def _leave_menu(self) -> None:
        """A phone menu answered: the call ends politely once the menu pauses."""
        self.transcript.set_state(CallState.COMPLETION)
        await self._far_end_quiet(0.5, max_wait_s=4.0)
        if not self.ending.closing:
            await self.ending.say_last(IVR_GOODBYE_LINE, "ivr")

    async def _navigate_menu(self) -> None:
        """A phone menu answered and the agent may press keys: once the menu has said its options, the
        key that reaches a person (``call.menu``), pressed through ``send_dtmf``. Twilio then ends this
        stream and connects a new one to the same conversation; if the keys cannot be pressed, the
        call ends politely as any menu's."""
        assert self.turns is not None and self.profile is not None and self._menu_words is not None
        await self._far_end_quiet(MENU_QUIET_S, max_wait_s=10.0)
        await self._settle_words(AMD_WORDS_WAIT_S)
        if self.ending.closing:
            return
        words = [*self._menu_words, self.turns.text_so_far]
        menu = " ".join(dict.fromkeys(w.strip() for w in words if w.strip()))  # each once
        responder = self.replies.responder
        assert responder is not None
        digits, how = await choose_digits(responder.llm, self.profile, menu, timeout_s=MENU_LLM_TIMEOUT_S)
        # Twilio ends this stream as soon as the call's TwiML is replaced, maybe before its REST answer
        # is back here: the stream's end must already read as a redirect, and the tool's record survive it.
        self._redirected, self.ending.reason = True, STREAM_REDIRECTED
        press = ToolCall("send_dtmf", {"digits": digits})
        outcome = await asyncio.shield(asyncio.ensure_future(responder.tool_turns.execute(press)))
        if outcome.success and outcome.redirected:
            self._log("phone menu: keys pressed", digits=digits, chosen_by=how)
            return
        self._redirected, self.ending.reason = False, "caller_hung_up"
        self._log("phone menu: keys not pressed", logging.WARNING, error=outcome.error)
        self._menu_words = None
        await self._leave_menu()
