"""A supervisor on a live call: the seat's commands (``storage.commands``) and the take-over audio.

Commands come through the per-call command channel, from whichever instance received the
``POST /v1/convai/conversations/{id}/control``; this part acts on them on the instance holding the call:

- ``seat_say``: the agent speaks the text next, once the sentence playing now ends (``Replies.interject``).
- ``seat_whisper``: guidance the LLM sees for its next replies (``CallTranscript.guidance``), never spoken.
- ``seat_end_call``: a polite goodbye, then the hang-up, through ``call.ending``.
- ``seat_transfer``: the ``transfer_call`` tool's own entry point (``ToolRunner.transfer``) to the number,
  warm or cold, after the sentence playing now.
- ``seat_takeover``: the agent stops speaking and starts nothing; the audio a supervisor sends on the
  take-over socket is what the caller hears (paced, recorded and heard by listeners like the agent's),
  transcribed into the transcript as the supervisor's turns. The caller is still transcribed and recorded.
- ``seat_release``: the agent has the call again and answers the next turn with the whole transcript.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from call.ending import CallEnding
from call.interruptions import Interruptions
from call.parts import CallParts
from call.replies import Replies
from call.seat import CallFeed
from call.speaker import Speaker
from call.transcript import CallTranscript
from call.transport import MediaStreamTransport
from providers.base import FRAME_BYTES, ProviderError, STTSession
from storage.commands import Command

log = logging.getLogger("ai_sdr.call")

COMMAND_PREFIX = "seat_"  # command types on the channel: seat_say, seat_whisper, …
END_CALL_LINE = "Thanks so much for your time today. Goodbye!"
MAX_GUIDANCE = 8  # whispers the LLM sees (the latest)


class Supervisor:
    def __init__(
        self,
        feed: CallFeed,
        parts: CallParts,
        replies: Replies,
        speaker: Speaker,
        transcript: CallTranscript,
        transport: MediaStreamTransport,
        ending: CallEnding,
        interruptions: Interruptions,
        ms: Callable[[], float],
        log_fields: dict[str, Any],
    ) -> None:
        self.feed = feed
        self.responder = parts.responder
        self.replies = replies
        self.speaker = speaker
        self.transcript = transcript
        self.ending = ending
        self.interruptions = interruptions
        self._open_stt = parts.open_stt
        self._ms = ms
        self._fields = log_fields
        self.active = False  # the call is taken over
        self._stt: STTSession | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._spoke_at: float | None = None  # when the supervisor's current words began (ms)
        # what listeners see: both tracks and the call's events
        feed.supervisor = self
        transport.on_media = feed.inbound
        speaker.tap(feed.outbound)
        transcript.observer = feed.event  # the caller's interim words too (``call.seat.HeardSTT``)

    def handlers(self) -> dict[str, Callable[[Command], Awaitable[None]]]:
        acts = {
            "say": self._say,
            "whisper": self._whisper,
            "end_call": self._end_call,
            "transfer": self._transfer,
            "takeover": self._takeover,
            "release": self._release,
        }
        return {COMMAND_PREFIX + name: act for name, act in acts.items()}

    def _log(self, msg: str, **fields: Any) -> None:
        log.info(msg, extra={"fields": {**self._fields, **fields}})

    def _announce(self, command: Command, **fields: Any) -> None:
        kind = command.type.removeprefix(COMMAND_PREFIX)
        self.feed.event("control", {"type": kind, **fields})
        self._log("supervisor command", type=kind, command_id=command.id)

    # ------------------------------------------------------------ the commands

    async def _say(self, command: Command) -> None:
        text = str(command.payload.get("text", "")).strip()
        if text and not self.ending.closing:
            await self.replies.interject(text, kind="supervisor_say")
            self._announce(command, text=text)

    async def _whisper(self, command: Command) -> None:
        text = str(command.payload.get("text", "")).strip()
        if text:
            self.transcript.guidance = [*self.transcript.guidance, text][-MAX_GUIDANCE:]
            self._announce(command, text=text)

    async def _end_call(self, command: Command) -> None:
        if self.ending.closing:
            return
        self._hand_back()
        self._announce(command)
        self._spawn(self.ending.say_last(END_CALL_LINE, "supervisor_ended_call"))

    async def _transfer(self, command: Command) -> None:
        to, mode = str(command.payload.get("to", "")), str(command.payload.get("mode") or "cold")
        if not to or self.ending.closing:
            return
        self._hand_back()
        # the transfer_call tool's own entry point (ToolRunner.transfer), after the sentence playing now;
        # the responder says the transfer line (warm or cold) before it acts
        await self.replies.interject(
            None, kind="transfer", then=lambda turn: self.responder.transfer(turn, to, mode, "supervisor")
        )
        self._announce(command, to=to, mode=mode)

    async def _takeover(self, command: Command) -> None:
        if self.active or self.ending.closing:
            return
        self.active = True
        self.interruptions.suspended = True
        reply = self.replies.hold()
        if reply is not None:  # the agent stops now; its reply is stored as far as it was heard
            self.replies.cut(reply, self.speaker.played_frame())
            assert reply.task is not None
            reply.task.cancel()
            await asyncio.gather(reply.task, return_exceptions=True)
        await self.speaker.clear()
        self._announce(command)
        try:
            self._stt = await self._open_stt()
        except Exception as exc:  # the take-over goes on untranscribed
            self._log("supervisor transcription unavailable", error=type(exc).__name__)
            return
        self._spawn(self._transcribe(self._stt))

    async def _release(self, command: Command) -> None:
        if not self.active:
            return
        self._hand_back()
        self._announce(command)

    def _hand_back(self) -> None:
        """The agent has the call again (a release, or an end or a transfer during a take-over)."""
        if not self.active:
            return
        self.active = False
        self.replies.held = False
        self.interruptions.suspended = False
        stt, self._stt = self._stt, None
        if stt is not None:
            self._spawn(self._close_stt(stt))

    # ------------------------------------------------------------ the supervisor's voice

    async def take_audio(self, frame: bytes) -> None:
        """A frame from the take-over socket: heard by the caller while the call is taken over."""
        if not self.active or self.ending.closing:
            return
        for i in range(0, len(frame), FRAME_BYTES):  # paced 20 ms a frame, like the agent's own
            self.speaker.play_live(frame[i : i + FRAME_BYTES].ljust(FRAME_BYTES, b"\xff"))
        if self._stt is not None:
            try:
                await self._stt.send_audio(frame)
            except ProviderError:
                pass

    async def _transcribe(self, stt: STTSession) -> None:
        try:
            async for event in stt.events():
                if event.kind == "speech_started" and self._spoke_at is None:
                    self._spoke_at = self._ms()
                elif event.kind == "partial" and event.text:
                    self.transcript.partial("supervisor", event.text)
                elif event.kind == "final" and event.text.strip():
                    start, self._spoke_at = self._spoke_at, None
                    self.transcript.save_supervisor_turn(event.text.strip(), start, self._ms())
        except ProviderError as exc:
            self._log("supervisor transcription failed", error=type(exc).__name__)

    async def _close_stt(self, stt: STTSession) -> None:
        try:
            await stt.finalize()
            await asyncio.sleep(0.5)  # the last words' final
            await stt.close()
        except Exception as exc:
            self._log("supervisor stt close failed", error=type(exc).__name__)

    def _spawn(self, job: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """The call is over."""
        self.active = False
        if self._stt is not None:
            stt, self._stt = self._stt, None
            try:
                await stt.close()
            except Exception:
                pass
        for task in list(self._tasks):
            if not task.done() and task is not asyncio.current_task():
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
