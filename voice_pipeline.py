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
import itertools
import logging
import re
import time
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from call.bargein import BargeIn, CommitInterruption, PauseAgent, ResumeAgent
from call.clock import CallClock
from call.intents import Intent, detect_intent, is_backchannel
from call.profile import AgentProfile, build_profile
from call.reply_turn import ReplySource, ReplyTurn
from call.responder import Responder, may_preempt, state_after
from call.speaker import Speaker
from call.transcript import CallState, CallTranscript
from call.transport import Dtmf, Mark, Media, MediaStreamTransport, StreamStart
from call.turns import CallerTurn, DtmfBuffer, EndOfTurn, TurnAssembler, VoiceCue
from call.watchdog import MAX_DURATION_LINE, STILL_THERE_LINE, TIMEOUT_GOODBYE_LINE, Watchdog, WatchdogAction
from core.metrics import BARGE_IN, PREEMPTIVE_REPLIES
from providers.base import FRAME_BYTES, ProviderError, STTSession
from speech.audio import FrameSlicer
from speech.vad import FrameClassifier
from storage.call_store import CallStore
from storage.recordings import CallRecorder
from telephony.stream_auth import admit_stream
from tools.runner import ToolContext

if TYPE_CHECKING:
    from core.runtime import Runtime

log = logging.getLogger("ai_sdr.call")

BUSY_LINE = "All of our agents are busy right now. Please call again later. Goodbye."
NO_AGENT_LINE = "Sorry, this number is not available right now. Goodbye."
STT_FAILED_LINE = "Sorry, I'm having trouble hearing you. I'll call you back. Goodbye."


def _same_words(a: str, b: str) -> bool:
    """Equal up to case and punctuation (an interim and a final transcript often differ only so)."""
    return re.sub(r"[^\w\s]", "", a).lower().split() == re.sub(r"[^\w\s]", "", b).lower().split()


class WSConn:
    """One live call on one Media Streams WebSocket."""

    def __init__(self, runtime: Runtime, websocket: WebSocket, call_sid: str) -> None:
        self.runtime = runtime
        self.call_sid = call_sid
        self.conversation_id = ""
        self.caller_number = self.agent_number = ""
        self.end_reason = "caller_hung_up"
        self.started_at = time.monotonic()
        self._fields: dict[str, Any] = {"call_sid": call_sid, "conversation_id": ""}
        self.clock = CallClock()
        self.transport = MediaStreamTransport(websocket, self._fields)
        self.transcript = CallTranscript(None, self.clock.ms)
        self.speaker = Speaker(self.transport, self.clock.ms)
        self.profile: AgentProfile | None = None
        self.store: CallStore | None = None
        self.recorder: CallRecorder | None = None
        self.stt: STTSession | None = None
        self.responder: Responder | None = None
        self.barge: BargeIn[ReplyTurn] | None = None
        self.turns: TurnAssembler | None = None
        self.watchdog: Watchdog | None = None
        self._slicer = FrameSlicer()
        self._dtmf = DtmfBuffer()
        self._tasks: list[asyncio.Task[Any]] = []
        self._turn_ids = itertools.count(1)
        self._reply: ReplyTurn | None = None
        self._preempt: ReplyTurn | None = None  # a reply started before the caller's turn was confirmed
        self._preempt_declined = ""  # text already judged not worth a preemptive reply
        self._stt_hint: bool | None = None  # what the STT was last told about the agent speaking
        self._last_media_at = time.monotonic()
        self._eot_handle: asyncio.TimerHandle | None = None
        self._dtmf_handle: asyncio.TimerHandle | None = None
        self._closing = False
        self._closed = asyncio.Event()

    @property
    def state(self) -> CallState:
        return self.transcript.state

    @property
    def closing(self) -> bool:
        return self._closing or self.transport.broken

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
            self.end_reason = "engine_error"
            self._log("call failed", logging.ERROR, error=type(exc).__name__, detail=str(exc)[:200])
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
        self.caller_number = self.caller_number or (conversation.from_number or "")
        self.agent_number = self.agent_number or (conversation.to_number or "")
        profile = self.profile = build_profile(
            agent,
            conversation.dynamic_variables or {},
            settings=rt.settings,
            tool_specs=rt.tool_runner.specs_for(agent),
            caller_number=self.caller_number,
            call_sid=self.call_sid,
        )
        if rt.settings.record_calls:
            self.recorder = CallRecorder(rt.settings.recordings_dir, self.conversation_id)
            self.speaker.tap(lambda frame, at: self.recorder.agent_audio(frame, self.clock.sample_at(at)))
        self.speaker.start()
        overrides = agent.providers or {}
        stt_provider = rt.providers.stt(overrides.get("stt"))
        self.speaker.use(rt.providers.tts(overrides.get("tts")), agent.voice_id)
        llm = await rt.providers.llm(overrides.get("llm"))
        self.stt = await stt_provider.open_session(
            language=agent.language or "en", call_id=self.call_sid, keywords=agent.stt_keywords or ()
        )
        self.barge = BargeIn(profile.turn, FrameClassifier(profile.turn.vad_aggressiveness))
        self.turns = TurnAssembler(
            EndOfTurn(profile.turn.silence_threshold_sec), self.clock.ms, self.clock.t0
        )
        max_duration = min(agent.max_call_duration_sec or 1800, rt.settings.max_call_duration_sec)
        silence = agent.silence_timeout_sec or rt.settings.silence_timeout_sec
        self.watchdog = Watchdog(self.clock.t0, max_duration, silence)
        self.transcript.attach(self.store)
        context = ToolContext(
            self.conversation_id, self.call_sid, self.caller_number, self.agent_number, profile.variables
        )
        self.responder = Responder(
            profile=profile, llm=llm, speaker=self.speaker, transcript=self.transcript,
            tool_runner=rt.tool_runner, tool_context=context, knowledge=rt.knowledge, db=rt.db,
            settings=rt.settings, ms=self.clock.ms, after_tool=rt.webhooks_notify, log_fields=self._fields,
        )  # fmt: skip
        await self.store.mark_started(self.call_sid)
        rt.webhooks_notify()
        names = {
            p: getattr(x, "name", "")
            for p, x in (("stt", stt_provider), ("llm", llm), ("tts", self.speaker.tts))
        }
        self._log("call started", agent_id=agent.id, **names)
        self._spawn(self._stt_events(), "stt")
        self._spawn(self._watch(), "watchdog")
        if profile.first_message:
            self._start_reply(self._new_turn(kind="greeting"), greeting=profile.first_message)
        if hasattr(llm, "prefill"):
            # While the greeting plays: the model reads the system prompt once, so the first reply's
            # prompt is mostly cached (embedded model: ~1 s → ~0.1 s to the first token).
            self._spawn(llm.prefill(self.responder.prefill_prompt()), "prefill")
        self.transcript.set_state(CallState.DISCOVERY)
        return True

    async def _refuse(self, line: str, reason: str) -> bool:
        """Say why the call cannot be taken, and hang up."""
        self.clock.restart()
        self.speaker.use(self.runtime.providers.tts(), None)
        self.speaker.start()
        self._closing = True
        await self._say_and_hang_up(line, reason)
        return False

    async def _teardown(self) -> None:
        self._closing = True
        for handle in (self._eot_handle, self._dtmf_handle):
            if handle is not None:
                handle.cancel()
        if self._preempt is not None and self._preempt.task is not None:
            self._preempt.task.cancel()
            await asyncio.gather(self._preempt.task, return_exceptions=True)
        reply = self._reply
        if reply is not None and reply.running:
            self._save_cut(reply, self.speaker.played_frame())
            reply.task.cancel()  # type: ignore[union-attr]
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(
            *self._tasks, *([reply.task] if reply and reply.task else []), return_exceptions=True
        )
        await self.speaker.stop()
        if self.stt is not None:
            try:
                await self.stt.close()
            except Exception:
                self._log("stt close failed", logging.WARNING)
        if self.store is not None and self.profile is not None:
            try:
                await self.store.finish(self.end_reason, recording_url=await self._save_recording())
                self.runtime.calls.schedule_post_call(self.conversation_id)
            except Exception as exc:
                self._log("could not close conversation", logging.ERROR, error=type(exc).__name__)
        self.runtime.calls.unregister(self)
        await self.transport.close(1000, "call ended")
        self._closed.set()
        self._log(
            "call ended", reason=self.end_reason, duration_s=round(time.monotonic() - self.started_at, 1)
        )

    async def _save_recording(self) -> str | None:
        if self.recorder is None:
            return None
        try:
            path = await self.recorder.save()
        except OSError as exc:
            self._log("could not save recording", logging.ERROR, error=type(exc).__name__)
            return None
        return f"/v1/convai/conversations/{self.conversation_id}/recording" if path else None

    async def hang_up(self, reason: str) -> None:
        """End the call: through Twilio's REST API for a real call, and by closing the stream."""
        self.end_reason = reason
        self._closing = True
        twilio = self.runtime.twilio
        if getattr(twilio, "configured", False) and self.call_sid.startswith("CA"):
            try:
                await twilio.hangup(self.call_sid)
            except Exception as exc:
                self._log("twilio hangup failed", logging.WARNING, error=type(exc).__name__)
        await self.transport.close(1000, reason)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def snapshot(self) -> dict[str, Any]:
        return {
            "call_sid": self.call_sid,
            "conversation_id": self.conversation_id,
            "agent_id": self.profile.id if self.profile else None,
            "state": self.state.value,
            "duration_sec": round(time.monotonic() - self.started_at, 1),
            "agent_speaking": self.speaker.is_speaking,
        }

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=f"{name}-{self.call_sid}"))

    # ================================================================ caller audio and events

    async def _receive_loop(self) -> None:
        assert self.watchdog is not None and self.stt is not None
        while not self.closing:
            event = await self.transport.receive()
            if isinstance(event, Media):
                self._on_media(event.audio)
                await self.stt.send_audio(event.audio)
            elif isinstance(event, Mark):
                self.speaker.on_mark(event.name)
                self.watchdog.activity(time.monotonic())
            elif isinstance(event, Dtmf):
                self._on_dtmf(event.digit)
            else:  # Stop, or the socket is gone / hopelessly broken
                if event is None and self.transport.too_broken:
                    self.end_reason = "protocol_error"
                elif not self._closing:
                    self.end_reason = (self._reply.end_reason if self._reply else None) or "caller_hung_up"
                return

    def _on_media(self, chunk: bytes) -> None:
        self._last_media_at = time.monotonic()
        if self.recorder is not None:
            self.recorder.caller_audio(chunk, self.clock.sample_at(self._last_media_at))
        for frame in self._slicer.push(chunk) if len(chunk) != FRAME_BYTES else (chunk,):
            self._on_frame(frame)

    def _on_frame(self, frame: bytes) -> None:
        """Per 20 ms of caller audio: voicing, barge-in, silence tracking. Cheap by design."""
        assert self.barge is not None and self.turns is not None and self.watchdog is not None
        now = time.monotonic()
        energy, voiced = self.barge.classify(frame, self.speaker.is_speaking)
        cue = self.turns.on_voice(energy, voiced, now)
        if voiced:
            self.watchdog.activity(now)
        if cue & VoiceCue.KEPT_TALKING and self._preempt is not None:
            self._drop_preempt(self._preempt)
        if cue & VoiceCue.QUIET_WITH_WORDS and self._preempt is None:
            self._maybe_preempt()
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
            self._on_barge_event(event)

    def _on_dtmf(self, digit: str) -> None:
        assert self.watchdog is not None
        self.watchdog.activity(time.monotonic())
        if self._dtmf_handle is not None:
            self._dtmf_handle.cancel()
        if (digits := self._dtmf.push(digit)) is not None:
            self._dtmf_turn(digits)
        elif digit != "#":
            self._dtmf_handle = asyncio.get_running_loop().call_later(
                self._dtmf.gap_s, lambda: self._dtmf_turn(self._dtmf.flush())
            )

    def _dtmf_turn(self, digits: str | None) -> None:
        if digits and not self.closing:
            text = f"(The caller pressed the keys {' '.join(digits)} on the keypad.)"
            asyncio.get_running_loop().create_task(self._user_turn(text, kind="dtmf", display=digits))

    async def _stt_events(self) -> None:
        assert self.stt is not None and self.turns is not None and self.barge is not None
        try:
            async for event in self.stt.events():
                if self.turns.on_transcript(event, time.monotonic(), self.clock.t0):
                    self._schedule_eot(0)
                elif event.kind == "partial" and self.barge.is_paused:
                    if isinstance(
                        self.barge.on_partial(event.text, is_backchannel(event.text)), CommitInterruption
                    ):
                        asyncio.get_running_loop().create_task(self._commit_interruption())
        except ProviderError as exc:
            self._log("stt failed", logging.ERROR, error=type(exc).__name__, detail=str(exc)[:200])
            self.end_reason = "stt_failed"
            await self._say_and_hang_up(STT_FAILED_LINE, "stt_failed")

    def _schedule_eot(self, delay: float) -> None:
        if self._eot_handle is not None:
            self._eot_handle.cancel()
        loop = asyncio.get_running_loop()
        self._eot_handle = loop.call_later(
            max(0.0, delay), lambda: loop.create_task(self._check_end_of_turn())
        )

    async def _check_end_of_turn(self) -> None:
        if self.closing or self.turns is None:
            return
        result = self.turns.check(time.monotonic())
        if isinstance(result, CallerTurn):
            self._preempt_declined = ""
            await self._user_turn(result.text, heard=result)
        elif result is not None:
            self._schedule_eot(result)

    # ================================================================ the caller's turn

    async def _user_turn(
        self, text: str, *, kind: str = "speech", display: str | None = None, heard: CallerTurn | None = None
    ) -> None:
        """The caller finished a turn: record it and answer (or resume, merge, or ignore)."""
        assert self.barge is not None and self.turns is not None and self.watchdog is not None
        self.watchdog.caller_spoke()
        peak = heard.peak_energy if heard is not None else self.turns.take_peak()
        start_ms, end_ms, final_ms = (
            (heard.speech_start_ms, heard.speech_end_ms, heard.stt_final_ms) if heard else (None, None, None)
        )
        if kind == "speech" and (self.barge.is_paused or self.speaker.is_speaking) and is_backchannel(text):
            self.transcript.save_backchannel(text, start_ms, end_ms)
            self._on_barge_event(self.barge.resume("backchannel"))
            return
        turn_cfg = self.profile.turn if self.profile else None
        if self.barge.is_paused:
            await self._commit_interruption()
        elif (
            kind == "speech"
            and self.speaker.is_speaking
            and turn_cfg
            and turn_cfg.interrupt_enabled
            and peak >= turn_cfg.interrupt_min_energy
        ):
            # Words over the agent whose pause already timed out (or that the detector's timing let pass):
            # the caller is talking, so the agent stops and answers. A far-off voice (a TV) is too quiet.
            await self._pause_agent(time.monotonic(), detected=False)
            await self._commit_interruption()
        merged_seq = None
        reply = self._reply
        if reply is not None and not reply.audio_started and reply.user_seq is not None and reply.running:
            # The caller added to the turn while the agent was still thinking: answer both as one.
            reply.task.cancel()  # type: ignore[union-attr]
            await asyncio.gather(reply.task, return_exceptions=True)  # type: ignore[arg-type]
            reply.saved = True  # nothing was spoken; no agent turn to record
            text, merged_seq = f"{reply.user_text} {text}", reply.user_seq
        intent = detect_intent(text)
        preempt, self._preempt = self._preempt, None
        if preempt is not None and (
            merged_seq is not None or kind != "speech" or not _same_words(preempt.user_text, text)
        ):
            self._drop_preempt(preempt)
            preempt = None
        seq = self.transcript.save_user_turn(
            display or text, kind=kind, intent=intent.value, start_ms=start_ms, end_ms=end_ms,
            stt_final_ms=final_ms, seq=merged_seq if merged_seq is not None else -1,
        )  # fmt: skip
        self._log("user turn", seq=seq, intent=intent.value, chars=len(text))
        if self.transcript.closing:
            if preempt is not None:
                self._drop_preempt(preempt)
            return
        turn = preempt or self._new_turn(text, seq)
        turn.user_seq = seq
        turn.timings["user_speech_end_ms"] = end_ms or self.clock.ms()
        if final_ms is not None:
            turn.timings["stt_final_ms"] = final_ms
        if preempt is None:
            self._start_reply(turn, intent=intent)
            return
        # The confirmed turn says what the preemptive reply guessed: it becomes the reply, and plays.
        self.transcript.set_state(state_after(self.state, intent))
        self._reply = turn
        turn.go.set()
        PREEMPTIVE_REPLIES.labels("used").inc()

    def _maybe_preempt(self) -> None:
        """The caller has gone quiet with words heard: start the reply now, held until the turn is
        confirmed, so the LLM's first token and the TTS's first audio overlap the endpointing wait."""
        assert self.turns is not None and self.barge is not None
        text = self.turns.text_so_far
        if (
            not text
            or text == self._preempt_declined
            or self.closing
            or not self.runtime.settings.preemptive_replies
        ):
            return
        if (
            self.barge.is_paused
            or self.speaker.is_speaking
            or self.transcript.closing
            or (self._reply and self._reply.running)
        ):
            return
        intent = detect_intent(text)
        if not may_preempt(intent, self.turns.sounds_finished()):
            self._preempt_declined = text  # an action, or words that sound unfinished: wait for the turn
            return
        self._preempt = self._new_turn(text)
        self._preempt.go = asyncio.Event()
        self._start_reply(self._preempt, intent=intent, preemptive=True)
        self._log("preemptive reply", level=logging.DEBUG, turn=self._preempt.turn_id)

    def _drop_preempt(self, turn: ReplyTurn) -> None:
        if turn is self._preempt:
            self._preempt = None
        if turn.task is not None:
            turn.task.cancel()
        PREEMPTIVE_REPLIES.labels("dropped").inc()

    # ================================================================ replies

    def _new_turn(self, user_text: str = "", user_seq: int | None = None, kind: str = "speech") -> ReplyTurn:
        return ReplyTurn(next(self._turn_ids), user_text, user_seq, kind=kind)

    def _start_reply(
        self,
        turn: ReplyTurn,
        *,
        greeting: str | None = None,
        intent: Intent | None = None,
        preemptive: bool = False,
    ) -> None:
        previous = None
        if not preemptive:  # a preemptive reply becomes the reply only once the turn is confirmed
            previous, self._reply = self._reply, turn
        turn.task = asyncio.create_task(
            self._run_reply(turn, previous, greeting, intent, preemptive), name=f"reply-{turn.turn_id}"
        )

    async def _run_reply(
        self,
        turn: ReplyTurn,
        previous: ReplyTurn | None,
        greeting: str | None,
        intent: Intent | None,
        preemptive: bool,
    ) -> None:
        assert self.responder is not None
        if previous is not None and previous.running:
            # The previous reply finishes speaking first (interruptions are handled elsewhere).
            await asyncio.gather(previous.task, return_exceptions=True)  # type: ignore[arg-type]
        try:
            if greeting is not None:
                await self.responder.greet(turn, greeting)
            elif preemptive:
                await self.responder.llm_reply(
                    turn, intent
                )  # answer()'s other branches act, so are not guessed
            else:
                await self.responder.answer(turn, intent or detect_intent(turn.user_text))
            await self.speaker.wait_played(turn)
            self._save_reply(turn)
            if turn.hang_up_after is not None:
                await self.hang_up(turn.hang_up_after)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._log("reply failed", logging.ERROR, error=type(exc).__name__, detail=str(exc)[:200])

    def _save_reply(self, turn: ReplyTurn) -> None:
        if self.transcript.save_reply(turn) and self.watchdog is not None:
            self.watchdog.activity(time.monotonic())

    def _save_cut(self, turn: ReplyTurn, played_frame: int) -> str:
        """Store a reply cut short, as far as the caller heard it."""
        if turn.saved:
            return ""
        heard = self.speaker.heard(turn, played_frame)
        self.transcript.save_cut_reply(turn, heard)
        return heard

    async def _say_and_hang_up(self, line: str, reason: str) -> None:
        turn = self._new_turn(kind="closing")
        turn.hang_up_after, turn.source = reason, ReplySource.FIXED_LINE
        self.transcript.set_state(CallState.COMPLETION)
        if self._reply is not None and self._reply.running:
            self._reply.task.cancel()  # type: ignore[union-attr]
        self._reply = turn
        try:
            await self.speaker.say(turn, [line])
            await self.speaker.wait_played(turn)
            self._save_reply(turn)
        finally:
            await self.hang_up(reason)

    # ================================================================ barge-in

    def _on_barge_event(self, event: PauseAgent | ResumeAgent | CommitInterruption | None) -> None:
        if isinstance(event, PauseAgent):
            asyncio.get_running_loop().create_task(self._pause_agent(event.onset))
        elif isinstance(event, ResumeAgent):
            self.speaker.resume()
            self._log("barge-in was not an interruption: agent resumes", why=event.why)
        elif isinstance(event, CommitInterruption):
            asyncio.get_running_loop().create_task(self._commit_interruption())

    async def _pause_agent(self, onset: float, *, detected: bool = True) -> None:
        """The caller started talking over the agent: go quiet now, decide what it was once words arrive."""
        assert self.barge is not None
        if self.barge.is_paused or self.closing:
            return
        played = await self.speaker.pause()
        latency_ms = (time.monotonic() - onset) * 1000
        if detected:  # not when words arrived first (no onset was detected to time from)
            BARGE_IN.observe(latency_ms / 1000)
        self.barge.did_pause(onset, played, self._reply, time.monotonic())
        self._log("barge-in: agent paused", onset_to_clear_ms=round(latency_ms, 1))

    async def _commit_interruption(self) -> None:
        """handle_interrupt(): the caller really took the turn. Cancel, clear, store what was heard."""
        assert self.barge is not None
        paused = self.barge.commit()
        if paused is None:
            return
        turn, heard = paused.turn, ""
        if turn is not None and turn.running:
            heard = self._save_cut(turn, paused.played_frame)
            turn.task.cancel()  # type: ignore[union-attr]
            await asyncio.gather(turn.task, return_exceptions=True)  # type: ignore[arg-type]
        await self.speaker.clear()
        if self.state == CallState.COMPLETION:
            self.transcript.set_state(CallState.ACTIVE)
        if turn is not None and turn.planned:
            self.transcript.emit(
                "call.interrupted", {"heard_text": heard, "planned_text": " ".join(turn.planned)}
            )
        self._log("interrupted", heard_chars=len(heard))

    # ================================================================ watchdog

    async def _watch(self) -> None:
        assert self.watchdog is not None and self.turns is not None and self.stt is not None
        while not self.closing:
            await asyncio.sleep(0.5)
            busy = (
                (self._reply is not None and self._reply.running)
                or self.turns.has_finals
                or not self.speaker.idle
            )
            now = time.monotonic()
            for action in self.watchdog.tick(
                now, last_media=self._last_media_at, last_voice=self.turns.last_voice_at, busy=busy
            ):
                if action is WatchdogAction.KEEPALIVE:
                    await self.stt.keepalive()  # no caller audio flowing: keep the STT stream open
                elif action is WatchdogAction.ASK_STILL_THERE:
                    self._start_reply(self._new_turn(kind="silence_prompt"), greeting=STILL_THERE_LINE)
                else:
                    line = (
                        MAX_DURATION_LINE if action is WatchdogAction.MAX_DURATION else TIMEOUT_GOODBYE_LINE
                    )
                    await self._say_and_hang_up(line, action.value)
                    return
