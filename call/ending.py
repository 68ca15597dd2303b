"""How a call ends: why, and the agent's last words heard whole before the line is dropped.

Every agent-initiated end (a goodbye, the voicemail message, the do-not-call confirmation, the busy
line, a timeout) goes through ``say_last`` or ``hang_up``: the hang-up waits until what was said has
played at the far end (its mark came back, or its duration passed), within HANGUP_MAX_WAIT_SEC, since
hanging up drops whatever Twilio still holds.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from call.replies import Replies
from call.speaker import Speaker
from call.transport import MediaStreamTransport

log = logging.getLogger("ai_sdr.call")


class CallEnding:
    def __init__(
        self,
        speaker: Speaker,
        replies: Replies,
        transport: MediaStreamTransport,
        end_call: Callable[[], Awaitable[None]],
        max_wait_s: float,
        log_fields: dict[str, Any],
    ) -> None:
        self.speaker = speaker
        self.replies = replies
        self.transport = transport
        self._end_call = end_call  # the carrier's hang-up (Twilio's REST API for a real call)
        self._max_wait_s = max_wait_s
        self._fields = log_fields
        self.reason = "caller_hung_up"
        self.started = False  # the call is ending: nothing new is started
        self.last_line = False  # the call's last line plays: nothing the far end does cuts it

    @property
    def closing(self) -> bool:
        return self.started or self.transport.broken

    async def hang_up(self, reason: str, *, heard_first: bool = True) -> None:
        """End the call through the carrier and close the stream, once the far end heard what was said.
        ``heard_first=False``: at once (the service is shutting down)."""
        self.reason = reason
        self.started = True
        if heard_first and not await self.speaker.wait_heard(self._max_wait_s):
            fields = {**self._fields, "reason": reason}
            log.warning("hanging up before the last audio was heard", extra={"fields": fields})
        await self._end_call()
        await self.transport.close(1000, reason)

    async def say_last(self, line: str, reason: str) -> None:
        """The call's last line: it plays whole, then the call ends. Words that reach us meanwhile (a
        machine greeting's late transcript) do not cut it."""
        self.last_line = True
        try:
            await self.replies.say_last(line, reason)
        finally:
            await self.hang_up(reason)

    async def after_final_reply(self) -> None:
        """A reply that ends the call (a goodbye, the end_call tool) hangs up once heard."""
        turn = await self.replies.endings.get()
        await self.hang_up(turn.hang_up_after or "agent_ended_call")
