"""The per-call engine: one Twilio Media Stream in, the agent's voice out.

``WSConn`` wires the call's parts (package ``call``) and owns the call's lifecycle:

    transport ─ media ─> BargeIn.classify ─> TurnAssembler.on_voice ─> BargeIn.on_frame ─> pause/resume/commit
              └───────> STT session ─ transcript events ─> TurnAssembler ─> CallerTurn ─> Responder
    Responder (intent / tool / knowledge / LLM) ─ sentences ─> Speaker (TTS, paced frames, marks) ─> transport
    every turn record and state change ─> CallTranscript ─> write-behind store

Data flows one way: parts return values or events, and only this class acts on them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from call.amd import AnsweringMachineDetector, carrier_verdicts
from call.answering import Answering
from call.bargein import Backchannel, BargeIn, ResumeAgent, TakeTurn
from call.clock import CallClock
from call.ending import CallEnding
from call.intents import detect_intent, is_backchannel
from call.interruptions import Interruptions
from call.parts import CallServices, assemble
from call.profile import AgentProfile
from call.replies import Replies
from call.reply_turn import ReplyTurn
from call.silence import watch_silence
from call.speaker import Speaker
from call.supervisor import Supervisor
from call.transcript import CallState, CallTranscript
from call.transport import Dtmf, Mark, Media, MediaStreamTransport, StreamStart
from call.turns import CallerTurn, DtmfBuffer, TurnAssembler, VoiceCue
from call.watchdog import Watchdog
from providers.base import FRAME_BYTES, ProviderError, STTSession
from speech.audio import FrameSlicer
from storage.call_store import CallStore
from storage.recordings import CallRecorder
from telephony.stream_auth import admit_stream

log = logging.getLogger("ai_sdr.call")

BUSY_LINE = "All of our agents are busy right now. Please call again later. Goodbye."
NO_AGENT_LINE = "Sorry, this number is not available right now. Goodbye."
STT_FAILED_LINE = "Sorry, I'm having trouble hearing you. I'll call you back. Goodbye."


class WSConn:
    """One live call on one Media Streams WebSocket."""

    def __init__(self, runtime: CallServices, websocket: WebSocket, call_sid: str) -> None:
        self.runtime = runtime
        self.call_sid = call_sid
        self.conversation_id = self.caller_number = self.agent_number = ""
        self.started_at = time.monotonic()
        self._fields: dict[str, Any] = {"call_sid": call_sid, "conversation_id": ""}
        settings = runtime.settings
        self.clock = CallClock()
        self.transport = MediaStreamTransport(websocket, self._fields)
        self.transcript = CallTranscript(None, self.clock.ms)
        self.speaker = Speaker(self.transport, self.clock.ms)
        self.speaker.played_margin_s = settings.hangup_played_margin_sec
        self.replies = Replies(
            self.speaker, self.transcript, preemptive=settings.preemptive_replies, log_fields=self._fields
        )
        self.ending = CallEnding(
            self.speaker, self.replies, self.transport, lambda: runtime.twilio.end_call(call_sid),
            settings.hangup_max_wait_sec, self._fields,
        )  # fmt: skip
        self.profile: AgentProfile | None = None
        self.store: CallStore | None = None
        self.recorder: CallRecorder | None = None
        self.stt: STTSession | None = None
        self.barge: BargeIn[ReplyTurn] | None = None
        self.turns: TurnAssembler | None = None
        self.watchdog: Watchdog | None = None
        self.amd: AnsweringMachineDetector | None = None  # outbound calls: a person or a machine?
        self.answering: Answering | None = None  # who answered an outbound call: machines, screeners, menus
        self.interruptions: Interruptions | None = None
        self._slicer = FrameSlicer()
        self._dtmf = DtmfBuffer()
        self._tasks: list[asyncio.Task[Any]] = []
        self._stt_hint: bool | None = None  # what the STT was last told about the agent speaking
        self._last_media_at = time.monotonic()
        self._eot_timer: asyncio.TimerHandle | None = None  # the next end-of-turn check
        self._closed = asyncio.Event()

    @property
    def closing(self) -> bool:
        return self.ending.closing

    @property
    def end_reason(self) -> str:
        return self.ending.reason

    def _log(self, msg: str, level: int = logging.INFO, **fields: Any) -> None:
        log.log(level, msg, extra={"fields": {**self._fields, **fields}})

    # ================================================================ lifecycle

    async def serve(self) -> None:
        """The whole life of the socket: handshake, call, teardown. Never raises."""
        try:
            start = await self.transport.handshake()
            if start is not None and await self._admit(start) and await self._setup():
                await self._receive_loop()
        except WebSocketDisconnect:
            pass
        except Exception as exc:
            self.ending.reason = "engine_error"
            self._log("call failed", logging.ERROR, error=type(exc).__name__)
        finally:
            await self._teardown()

    async def _admit(self, start: StreamStart) -> bool:
        """The stream token must name this call before any audio is processed."""
        conversation_id = await admit_stream(
            self.runtime.db, self.runtime.settings, start.token, self.call_sid
        )
        if conversation_id is None:
            self._log("stream refused: bad or missing token", logging.WARNING)
            await self.transport.close(1008, "invalid stream token")
            return False
        self.conversation_id = self._fields["conversation_id"] = conversation_id
        self.caller_number, self.agent_number = start.caller, start.callee
        return True

    async def _setup(self) -> bool:
        rt = self.runtime
        await rt.calls.wait_gone(self.call_sid, 5.0)  # dtmf: a redirected call's previous stream ends first
        if not rt.calls.register(self):
            self._log("refusing call: at MAX_CONCURRENT_CALLS", logging.WARNING)
            return await self._refuse(BUSY_LINE, "capacity")
        self.store = CallStore(rt.db, self.conversation_id, emit=rt.webhooks.emit, writer=rt.writer)
        try:
            conversation, agent = await self.store.load()
        except LookupError:
            self._log("stream for unknown conversation", logging.WARNING)
            await self.transport.close(1008, "unknown call")
            return False
        if agent is None:
            return await self._refuse(NO_AGENT_LINE, "no_agent")
        self.clock.restart()
        from_, to = conversation.from_number or "", conversation.to_number or ""
        if conversation.direction == "outbound":  # the other party is the number we called
            self.caller_number, self.agent_number = to, from_
        else:
            self.caller_number, self.agent_number = self.caller_number or from_, self.agent_number or to
        parts = await assemble(
            rt, conversation, agent, call_sid=self.call_sid, numbers=(self.caller_number, self.agent_number),
            clock=self.clock, speaker=self.speaker, transcript=self.transcript, log_fields=self._fields,
        )  # fmt: skip
        self.profile, self.stt, self.barge, self.turns = parts.profile, parts.stt, parts.barge, parts.turns
        self.watchdog, self.amd, self.recorder = parts.watchdog, parts.amd, parts.recorder
        self.replies.responder = parts.responder
        self.answering = Answering(
            parts, self.replies, self.speaker, self.transcript, self.clock, self.store, self.ending,
            screener_wait_s=rt.settings.screener_wait_sec, log_fields=self._fields,
        )  # fmt: skip
        self.interruptions = Interruptions(parts, self.speaker, self.replies, self.ending, self._fields)
        seat = Supervisor(  # the supervisor seat: listeners, say / whisper / end / transfer / take-over
            rt.seats.open(self.conversation_id, self), parts, self.replies, self.speaker, self.transcript,
            self.transport, self.ending, self.interruptions, self.clock.ms, self._fields,
        )  # fmt: skip
        self.speaker.start()
        self.transcript.attach(self.store)
        await self.store.mark_started(self.call_sid)
        rt.webhooks_notify()
        self._log("call started", agent_id=agent.id, **parts.provider_names)
        verdicts = carrier_verdicts(self.amd, self.answering.on_amd, self.ending.hang_up)  # from any instance
        watch = watch_silence(
            parts.watchdog, parts.turns, self.replies, self.speaker, parts.stt, self.ending,
            lambda: self._last_media_at,
        )  # fmt: skip
        for job, name in (
            (self._stt_events(), "stt"),
            (watch, "watchdog"),
            (self.ending.after_final_reply(), "endings"),
            (rt.commands.serve(self.conversation_id, {**verdicts, **seat.handlers()}), "commands"),
        ):
            self._tasks.append(asyncio.create_task(job, name=f"{name}-{self.call_sid}"))
        if self.amd is None and self.profile.first_message:  # with AMD: once a person has answered
            self.replies.say(self.profile.first_message, kind="greeting")
        if hasattr(llm := parts.llm, "prefill"):
            # While the greeting plays: the model reads the system prompt once, so the first reply's
            # prompt is mostly cached (embedded model: ~1 s → ~0.1 s to the first token).
            prompt = parts.responder.prefill_prompt()
            self._tasks.append(asyncio.create_task(llm.prefill(prompt), name=f"prefill-{self.call_sid}"))
        self.transcript.set_state(CallState.DISCOVERY)
        return True

    async def _refuse(self, line: str, reason: str) -> bool:
        """Say why the call cannot be taken, and hang up."""
        self.clock.restart()
        self.speaker.use(self.runtime.providers.tts(), None)
        self.speaker.start()
        self.ending.started = True
        await self.ending.say_last(line, reason)
        return False

    async def _teardown(self) -> None:
        self.ending.started = True
        self._dtmf.cancel()
        if self._eot_timer is not None:
            self._eot_timer.cancel()
        await self.replies.close()
        if self.answering is not None:
            await self.answering.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.speaker.stop()
        if self.stt is not None:
            try:
                await self.stt.close()
            except Exception:
                self._log("stt close failed", logging.WARNING)
        if self.store is not None and self.profile is not None:
            try:
                recording = await self.recorder.save_url() if self.recorder else None
                if await self.store.finish(self.end_reason, recording_url=recording):  # dtmf: not redirected
                    self.runtime.calls.schedule_post_call(self.conversation_id)
            except Exception as exc:
                self._log("could not close conversation", logging.ERROR, error=type(exc).__name__)
        self.runtime.calls.unregister(self)
        await self.transport.close(1000, "call ended")
        self._closed.set()
        self._log(
            "call ended", reason=self.end_reason, duration_s=round(time.monotonic() - self.started_at, 1)
        )

    async def hang_up(self, reason: str, *, heard_first: bool = True) -> None:
        """End the call once what the agent said was heard (``heard_first=False``: at once)."""
        await self.ending.hang_up(reason, heard_first=heard_first)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def snapshot(self) -> dict[str, Any]:
        return {
            "call_sid": self.call_sid,
            "conversation_id": self.conversation_id,
            "agent_id": self.profile.id if self.profile else None,
            "state": self.transcript.state.value,
            "duration_sec": round(time.monotonic() - self.started_at, 1),
            "agent_speaking": self.speaker.is_speaking,
        }

    # ================================================================ caller audio and events

    async def _receive_loop(self) -> None:
        assert self.watchdog is not None and self.stt is not None and self.answering is not None
        while not self.closing:
            event = await self.transport.receive()
            if isinstance(event, Media):
                self._on_media(event.audio)
                await self.stt.send_audio(event.audio)
            elif isinstance(event, Mark):
                self.speaker.on_mark(event.name)
                self.watchdog.activity(time.monotonic())
            elif isinstance(event, Dtmf):
                self.watchdog.activity(time.monotonic())
                self._dtmf.key(event.digit, self._dtmf_turn)
            else:  # Stop, or the socket is gone / hopelessly broken
                if event is None and self.transport.too_broken:
                    self.ending.reason = "protocol_error"
                elif not self.ending.started:
                    ended = self.replies.end_reason() or self.answering.unanswered_end()
                    self.ending.reason = ended or "caller_hung_up"
                return

    def _on_media(self, chunk: bytes) -> None:
        self._last_media_at = time.monotonic()
        self.clock.media_received(len(chunk), self._last_media_at)
        if self.recorder is not None:
            self.recorder.caller_audio(chunk, self.clock.sample_at(self._last_media_at))
        for frame in self._slicer.push(chunk) if len(chunk) != FRAME_BYTES else (chunk,):
            self._on_frame(frame)

    def _on_frame(self, frame: bytes) -> None:
        """Per 20 ms of caller audio: voicing, barge-in, silence tracking. Cheap by design."""
        assert self.barge is not None and self.turns is not None and self.watchdog is not None
        assert self.answering is not None and self.interruptions is not None
        now = time.monotonic()
        energy, voiced = self.barge.classify(frame, self.speaker.is_speaking)
        if self.amd is not None and (amd := self.amd.on_frame(frame, energy, voiced)) is not None:
            self.answering.on_amd(amd)
        cue = self.turns.on_voice(energy, voiced, now, frame)
        if voiced:
            self.watchdog.activity(now)
        if cue & VoiceCue.KEPT_TALKING:
            self.replies.drop()  # a reply guessed on the pause would answer half a turn
        if cue & VoiceCue.QUIET_WITH_WORDS and not self.barge.is_paused and not self.closing:
            self.replies.preempt(self.turns.text_so_far, self.turns.sounds_finished())
        if cue & VoiceCue.CHECK_TURN and self.turns.has_finals:  # the turn-end model has answered
            self._check_end_of_turn_in(0)
        if cue & VoiceCue.ASK_FINAL and self.stt is not None:
            asyncio.get_running_loop().create_task(self.stt.finalize())
        speaking = self.speaker.is_speaking or self.barge.is_paused
        if speaking != self._stt_hint and self.stt is not None:
            self._stt_hint = speaking
            self.stt.set_agent_speaking(speaking)
        quiet = now - self.turns.last_voice_at
        event = self.barge.on_frame(
            energy, voiced, now, words_pending=self.turns.words_pending, quiet_s=quiet
        )
        if event is not None:
            self.interruptions.on_event(event)

    def _dtmf_turn(self, digits: str) -> None:
        if not self.closing:
            text = f"(The caller pressed the keys {' '.join(digits)} on the keypad.)"
            turn = CallerTurn(text, None, None, None, self.turns.take_peak() if self.turns else 0.0)
            asyncio.get_running_loop().create_task(self._user_turn(turn, kind="dtmf", display=digits))

    async def _stt_events(self) -> None:
        assert self.stt is not None and self.turns is not None and self.barge is not None
        assert self.answering is not None and self.interruptions is not None
        try:
            async for event in self.stt.events():
                if self.turns.on_transcript(event, time.monotonic(), self.clock.media_t0):
                    self._check_end_of_turn_in(0)
                if self.amd is not None and event.text and (amd := self.amd.on_text(self.turns.text_so_far)):
                    self.answering.on_amd(amd)
                elif event.kind == "partial" and self.barge.is_paused:
                    self.interruptions.on_event(self.barge.on_partial(event.text, is_backchannel(event.text)))
        except ProviderError as exc:
            self._log("stt failed", logging.ERROR, error=type(exc).__name__)
            await self.ending.say_last(STT_FAILED_LINE, "stt_failed")

    def _check_end_of_turn_in(self, delay: float) -> None:
        if self._eot_timer is not None:
            self._eot_timer.cancel()
        loop = asyncio.get_running_loop()
        check = lambda: loop.create_task(self._check_end_of_turn())  # noqa: E731
        self._eot_timer = loop.call_later(max(0.0, delay), check)

    async def _check_end_of_turn(self) -> None:
        if self.closing or self.turns is None:
            return
        result = self.turns.check(time.monotonic())
        if isinstance(result, CallerTurn):
            self.replies.turn_heard()
            await self._user_turn(result)
        elif result is not None:
            self._check_end_of_turn_in(result)

    async def _user_turn(
        self, heard: CallerTurn, *, kind: str = "speech", display: str | None = None
    ) -> None:
        """The caller finished a turn: record it and answer (or resume, merge, or ignore)."""
        assert self.barge is not None and self.watchdog is not None
        assert self.answering is not None and self.interruptions is not None
        self.watchdog.caller_spoke()
        text = heard.text
        if self.ending.last_line:  # recorded, never an interruption of the last line
            self.transcript.save_user_turn(
                display or text, kind=kind, intent=detect_intent(text).value,
                start_ms=heard.speech_start_ms, end_ms=heard.speech_end_ms, stt_final_ms=heard.stt_final_ms,
            )  # fmt: skip
            return
        if kind == "speech" and self.answering.screener_turn(heard):
            return
        event = self.barge.on_caller_turn(
            speech=kind == "speech", backchannel=is_backchannel(text),
            agent_speaking=self.speaker.is_speaking, peak_energy=heard.peak_energy,
        )  # fmt: skip
        if isinstance(event, Backchannel):
            self.transcript.save_backchannel(text, heard.speech_start_ms, heard.speech_end_ms)
            if event.resumed:
                self.interruptions.on_event(ResumeAgent("backchannel"))
            return
        if isinstance(event, TakeTurn):
            await self.interruptions.pause(time.monotonic(), detected=False)
        if event is not None:
            await self.interruptions.commit()
        seq = -1
        if (unheard := await self.replies.take_unheard()) is not None:
            text, seq = f"{unheard[0]} {text}", unheard[1]  # one turn: the record of the first is updated
        if kind != "speech":
            self.replies.drop()
        intent = detect_intent(text)
        seq = self.transcript.save_user_turn(
            display or text, kind=kind, intent=intent.value, start_ms=heard.speech_start_ms,
            end_ms=heard.speech_end_ms, stt_final_ms=heard.stt_final_ms, seq=seq,
        )  # fmt: skip
        self._log("user turn", seq=seq, intent=intent.value, chars=len(text), p=(heard.model_p, heard.text_p))
        # Words of whoever picked up, said before we knew who: recorded, not answered (the greeting does)
        if self.transcript.closing or (
            self.amd is not None and self.amd.said_before_decision(heard.speech_end_ms)
        ):
            self.replies.drop()
            return
        timings = {"user_speech_end_ms": heard.speech_end_ms or self.clock.ms()}
        if heard.stt_final_ms is not None:
            timings["stt_final_ms"] = heard.stt_final_ms
        self.replies.answer(text, seq, intent, timings)
