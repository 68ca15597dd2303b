"""Acting on barge-in: pause the agent the moment the caller talks over it, resume it when that was not
an interruption, and commit one that was (``call.bargein.BargeIn`` decides which)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from call.bargein import BargeIn, CommitInterruption, PauseAgent, ResumeAgent
from call.ending import CallEnding
from call.parts import CallParts
from call.recovery import Recovery
from call.replies import Replies
from call.reply_turn import ReplyTurn
from call.speaker import Speaker
from core.metrics import BARGE_IN

log = logging.getLogger("ai_sdr.call")


class Interruptions:
    def __init__(
        self,
        parts: CallParts,
        speaker: Speaker,
        replies: Replies,
        ending: CallEnding,
        log_fields: dict[str, Any],
    ) -> None:
        self.recovery: Recovery | None = parts.recovery
        self.barge: BargeIn[ReplyTurn] = parts.barge
        self.speaker = speaker
        self.replies = replies
        self.ending = ending
        self._fields = log_fields
        self.suspended = False  # a supervisor has taken the call over: their voice is not interrupted

    def _log(self, msg: str, **fields: Any) -> None:
        log.info(msg, extra={"fields": {**self._fields, **fields}})

    def on_event(self, event: PauseAgent | ResumeAgent | CommitInterruption | None) -> None:
        if self.ending.last_line or self.suspended:
            return
        if isinstance(event, PauseAgent):
            asyncio.get_running_loop().create_task(self.pause(event.onset))
        elif isinstance(event, ResumeAgent):
            self.speaker.resume()
            self._log("barge-in was not an interruption: agent resumes", why=event.why)
        elif isinstance(event, CommitInterruption):
            asyncio.get_running_loop().create_task(self.commit())

    async def pause(self, onset: float, *, detected: bool = True) -> None:
        """The caller started talking over the agent: go quiet now, decide what it was once words arrive."""
        if self.barge.is_paused or self.ending.closing or self.ending.last_line or self.suspended:
            return
        played = await self.speaker.pause()
        latency_ms = (time.monotonic() - onset) * 1000
        if detected:  # not when words arrived first (no onset was detected to time from)
            BARGE_IN.observe(latency_ms / 1000)
        self.barge.did_pause(onset, played, self.replies.current, time.monotonic())
        self._log("barge-in: agent paused", onset_to_clear_ms=round(latency_ms, 1))

    async def commit(self) -> None:
        """handle_interrupt(): the caller really took the turn. Cancel, clear, store what was heard."""
        if (paused := self.barge.commit()) is None:
            return
        if self.recovery is not None and self.recovery.applies(paused.turn, paused.onset):
            assert paused.turn is not None
            await self.replies.withdraw(paused.turn)
            self._log("recovery: the caller went on; reply withdrawn, their words join the turn")
            return
        heard = await self.replies.interrupted(paused.turn, paused.played_frame)
        self._log("interrupted", heard_chars=len(heard))
