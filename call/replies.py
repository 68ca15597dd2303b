"""The agent's replies, one at a time: started after the one playing, preempted, merged, stored.

A reply runs the responder, waits until the caller has heard it, and is stored as heard. A preemptive
reply starts on the caller's interim words and is held (``ReplyTurn.go``) until the turn is confirmed:
then it is adopted, or dropped if the caller said something else. Replies that end the call come out
on ``endings`` for the call's owner to hang up.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from call.intents import Intent, detect_intent
from call.reply_turn import ReplySource, ReplyTurn
from call.responder import Responder, may_preempt, state_after
from call.speaker import Speaker
from call.transcript import CallState, CallTranscript
from core.metrics import PREEMPTIVE_REPLIES

log = logging.getLogger("ai_sdr.call")


def same_words(a: str, b: str) -> bool:
    """Equal up to case and punctuation (an interim and a final transcript often differ only so)."""
    return re.sub(r"[^\w\s]", "", a).lower().split() == re.sub(r"[^\w\s]", "", b).lower().split()


class Replies:
    def __init__(
        self,
        speaker: Speaker,
        transcript: CallTranscript,
        *,
        preemptive: bool = True,
        log_fields: dict[str, Any] | None = None,
    ) -> None:
        self.speaker = speaker
        self.transcript = transcript
        self.responder: Responder | None = None  # set once the call has an agent
        self.preemptive = preemptive
        self.current: ReplyTurn | None = None
        self.pending: ReplyTurn | None = None  # a reply started before the caller's turn was confirmed
        self._declined = ""  # words already judged not worth a preemptive reply
        self._ids = itertools.count(1)
        self.endings: asyncio.Queue[ReplyTurn] = asyncio.Queue()
        self._withdrawn: tuple[str, int] | None = None  # a recovery: the turn the caller's words continue
        self._log_fields = log_fields or {}
        self.held = False  # a supervisor has the call (call.supervisor): the agent starts no reply

    @property
    def busy(self) -> bool:
        return self.current is not None and self.current.running

    def new_turn(self, user_text: str = "", user_seq: int | None = None, kind: str = "speech") -> ReplyTurn:
        return ReplyTurn(next(self._ids), user_text, user_seq, kind=kind)

    # ---------------------------------------------------------------- starting replies

    def say(self, line: str, kind: str) -> None:
        """A fixed line (greeting, "are you still there?") after whatever is playing."""
        if self.held:
            return
        self._start(self.new_turn(kind=kind), line=line)

    def transfer(self, number: str | None, mode: str, requested_by: str = "supervisor") -> None:
        """Hand the call to a person (``number``; None: the agent's transfer number), ``warm`` or
        ``cold``, after whatever is playing: the path of the ``transfer_call`` tool, for a command
        (a supervisor's) rather than the model."""
        turn = self.new_turn(kind="transfer")
        assert self.responder is not None
        responder = self.responder
        self._start(turn, action=lambda t: responder.transfer(t, number, mode, requested_by))

    def answer(self, text: str, seq: int, intent: Intent, timings: dict[str, float]) -> None:
        """Answer a confirmed caller turn: adopt the preemptive reply that guessed it, or start one."""
        if self.held:  # a supervisor answers: the words join the history the agent goes on with
            self.drop()
            self.transcript.note_unanswered(text)
            return
        turn, self.pending = self.pending, None
        if turn is None or not same_words(turn.user_text, text):
            if turn is not None:
                self.drop(turn)
            turn = self.new_turn(text, seq)
            turn.timings.update(timings)
            self._start(turn, intent=intent)
            return
        turn.user_seq = seq
        turn.timings.update(timings)
        self.transcript.set_state(state_after(self.transcript.state, intent))
        self.current = turn
        turn.go.set()
        PREEMPTIVE_REPLIES.labels("used").inc()

    def preempt(self, text: str, sounds_finished: bool) -> None:
        """The caller has gone quiet with words heard: start the reply now, held until the turn is
        confirmed, so the LLM's first token and the TTS's first audio overlap the endpointing wait."""
        if not self.preemptive or self.held or not text or text == self._declined or self.pending is not None:
            return
        if self.busy or self.speaker.is_speaking or self.transcript.closing:
            return
        if self.responder is not None and self.responder.playbook is not None:
            return  # a playbook's turn moves its stages: never on a guess (its lines need no head start)
        intent = detect_intent(text)
        if not may_preempt(intent, sounds_finished):
            self._declined = text  # an action, or words that sound unfinished: wait for the turn
            return
        turn = self.pending = self.new_turn(text)
        turn.go = asyncio.Event()
        self._start(turn, intent=intent, preemptive=True)
        log.debug("preemptive reply", extra={"fields": {**self._log_fields, "turn": turn.turn_id}})

    def turn_heard(self) -> None:
        """A caller turn was confirmed: words judged before may be judged afresh."""
        self._declined = ""

    def drop(self, turn: ReplyTurn | None = None) -> None:
        """Drop the preemptive reply (the caller went on, or said something else)."""
        turn = turn or self.pending
        if turn is None:
            return
        if turn is self.pending:
            self.pending = None
        if turn.task is not None:
            turn.task.cancel()
        PREEMPTIVE_REPLIES.labels("dropped").inc()

    async def take_unheard(self) -> tuple[str, int] | None:
        """The caller added to the turn while the agent was still thinking: cancel that reply and return
        the words and record it answered, so both are answered as one."""
        if (withdrawn := self._withdrawn) is not None:
            self._withdrawn = None
            return withdrawn
        reply = self.current
        if reply is None or reply.audio_started or reply.user_seq is None or not reply.running:
            return None
        assert reply.task is not None
        reply.task.cancel()
        await asyncio.gather(reply.task, return_exceptions=True)
        reply.saved = True  # nothing was spoken; no agent turn to record
        self.drop()
        return reply.user_text, reply.user_seq

    def _start(
        self,
        turn: ReplyTurn,
        *,
        line: str | None = None,
        intent: Intent | None = None,
        preemptive: bool = False,
        action: Callable[[ReplyTurn], Awaitable[Any]] | None = None,
    ) -> None:
        previous = None
        if not preemptive:  # a preemptive reply becomes the reply only once the turn is confirmed
            previous, self.current = self.current, turn
        turn.task = asyncio.create_task(
            self._run(turn, previous, line, intent, preemptive, action), name=f"reply-{turn.turn_id}"
        )

    async def _run(
        self,
        turn: ReplyTurn,
        previous: ReplyTurn | None,
        line: str | None,
        intent: Intent | None,
        preemptive: bool,
        action: Callable[[ReplyTurn], Awaitable[Any]] | None = None,
    ) -> None:
        if previous is not None and previous.running:
            # The previous reply finishes speaking first (interruptions are handled elsewhere).
            await asyncio.gather(previous.task, return_exceptions=True)  # type: ignore[arg-type]
        try:
            assert self.responder is not None or line is not None
            if action is not None:
                await action(turn)
            elif line is not None:
                turn.source = ReplySource.FIXED_LINE
                await self.speaker.say(turn, [line])
            elif preemptive:
                await self.responder.llm_reply(turn, intent)  # type: ignore[union-attr]  (answer()'s other branches act)
            else:
                await self.responder.answer(turn, intent or detect_intent(turn.user_text))  # type: ignore[union-attr]
            await self._finish(turn)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            fields = {**self._log_fields, "error": type(exc).__name__}
            log.error("reply failed", extra={"fields": fields})

    async def _finish(self, turn: ReplyTurn) -> None:
        """A reply said whole: stored once it has played, then handed to the ending if it ends the call."""
        await self.speaker.wait_played(turn)
        self.transcript.save_reply(turn)
        if turn.hang_up_after is not None:
            self.endings.put_nowait(turn)

    # ---------------------------------------------------------------- a supervisor's turn

    async def interject(
        self,
        line: str | None,
        kind: str,
        then: Callable[[ReplyTurn], Awaitable[Any]] | None = None,
    ) -> ReplyTurn:
        """A supervisor's line (and ``then``, e.g. a transfer) next: the sentence playing now ends, the
        rest of that reply (and any reply being prepared) is dropped and stored as far as it was heard."""
        self.drop()
        reply = self.current
        if reply is not None and reply.running:
            assert reply.task is not None
            reply.task.cancel()
            await asyncio.gather(reply.task, return_exceptions=True)
        keep = self.speaker.keep_current_sentence()
        if reply is not None and not reply.saved:
            self.cut(reply, keep)
        turn = self.new_turn(kind=kind)
        turn.source = ReplySource.SUPERVISOR
        self.current = turn
        turn.task = asyncio.create_task(self._interjection(turn, line, then), name=f"reply-{turn.turn_id}")
        return turn

    async def _interjection(
        self, turn: ReplyTurn, line: str | None, then: Callable[[ReplyTurn], Awaitable[Any]] | None
    ) -> None:
        try:
            if line:
                await self.speaker.say(turn, [line])
            if then is not None:
                if line:
                    await self.speaker.wait_played(turn)  # heard before it acts (a transfer)
                await then(turn)
            await self._finish(turn)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            fields = {**self._log_fields, "error": type(exc).__name__}
            log.error("supervisor turn failed", extra={"fields": fields})

    def hold(self) -> ReplyTurn | None:
        """A supervisor takes the call over: nothing new starts; returns the reply playing (to be cut)."""
        self.held = True
        self.drop()
        return self.current if self.current is not None and self.current.running else None

    # ---------------------------------------------------------------- ending replies

    async def say_last(self, line: str, reason: str) -> None:
        """The call's last line: whatever is playing stops, the line plays to its end."""
        turn = self.new_turn(kind="closing")
        turn.hang_up_after, turn.source = reason, ReplySource.FIXED_LINE
        self.transcript.set_state(CallState.COMPLETION)
        await self._stop_all()
        self.current = turn
        await self.speaker.say(turn, [line])
        await self.speaker.wait_played(turn)
        self.transcript.save_reply(turn)

    async def _stop_all(self) -> None:
        """Every reply in progress ends for good: stored as far as it was heard, its task ended (awaited:
        a sentence being synthesized closes where its audio ends, so its mark is not sent after the
        next line's first frames), and audio still queued or held by a barge-in pause is cleared."""
        current, stopping = self.current, [t for t in (self.pending, self.current) if t and t.running]
        self.pending = None
        if current is not None and current.running and current.audio_started:
            self.cut(current, self.speaker.played_frame())
        for reply in stopping:
            reply.task.cancel()  # type: ignore[union-attr]
        await asyncio.gather(*(r.task for r in stopping if r.task), return_exceptions=True)
        if not self.speaker.idle:
            await self.speaker.clear()

    async def interrupted(self, turn: ReplyTurn | None, played_frame: int, *, reopen: bool = True) -> str:
        """The caller took the turn while ``turn`` played: it stops for good and is stored as far as it was
        heard (``played_frame``); a closing call opens again (unless ``reopen`` is False: the agent was
        silenced because a machine, a screener or a menu answered). Returns what the caller heard."""
        heard = ""
        if turn is not None and turn.running:
            heard = self.cut(turn, played_frame)
            assert turn.task is not None
            turn.task.cancel()
            await asyncio.gather(turn.task, return_exceptions=True)
        await self.speaker.clear()
        if reopen and self.transcript.state == CallState.COMPLETION:
            self.transcript.set_state(CallState.ACTIVE)
        if turn is not None and turn.planned:
            self.transcript.emit(
                "call.interrupted", {"heard_text": heard, "planned_text": " ".join(turn.planned)}
            )
        return heard

    async def withdraw(self, turn: ReplyTurn) -> None:
        """A recovery (call.recovery): the reply stops at once and is not stored; the caller's next
        words are answered together with the turn it answered (``take_unheard`` returns that turn)."""
        turn.saved = True  # a syllable or two was heard: no agent turn to record
        if turn.task is not None and turn.running:
            turn.task.cancel()
            await asyncio.gather(turn.task, return_exceptions=True)
        await self.speaker.clear()
        if turn.user_seq is not None:
            self._withdrawn = (turn.user_text, turn.user_seq)

    def cut(self, turn: ReplyTurn, played_frame: int) -> str:
        """Store a reply cut short, as far as the caller heard it; returns what was heard."""
        if turn.saved:
            return ""
        heard = self.speaker.heard(turn, played_frame)
        self.transcript.save_cut_reply(turn, heard)
        return heard

    async def close(self) -> None:
        """The call is over: the reply playing is stored as heard, every reply task ends."""
        if self.pending is not None and self.pending.task is not None:
            self.pending.task.cancel()
            await asyncio.gather(self.pending.task, return_exceptions=True)
        reply = self.current
        if reply is not None and reply.running:
            self.cut(reply, self.speaker.played_frame())
            reply.task.cancel()  # type: ignore[union-attr]
        if reply is not None and reply.task is not None:
            await asyncio.gather(reply.task, return_exceptions=True)

    def end_reason(self) -> str | None:
        """How the call ends if it ends now (a transfer in progress, …)."""
        return self.current.end_reason if self.current is not None else None
