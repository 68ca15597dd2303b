"""The per-call engine: one Twilio Media Stream in, the agent's voice out.

``WSConn`` holds one call's state and runs it as a few asyncio tasks:

    caller frames ─┬─> FrameClassifier ─> InterruptionDetector ─> barge-in (pause / clear)
                   └─> STT session ─> transcript events ─> EndOfTurn ─> reply
    reply: intent fast path / RAG + LLM stream ─> SentenceChunker ─> TTS ─> OutboundAudio (paced, marked)

``ConnectionManager`` registers live calls, enforces MAX_CONCURRENT_CALLS and
drains calls on shutdown. The engine depends only on the provider interfaces
in ``providers.base``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from audio import FrameSlicer
from call_recorder import CallRecorder
from call_store import CallStore, TurnRecord
from intents import Intent, detect_intent, extract_meeting_request, is_backchannel
from interruption import FrameClassifier, InterruptionDetector, TurnSettings
from metrics import BARGE_IN, CALLS_ACTIVE, CALLS_TOTAL, PREEMPTIVE_REPLIES, VOICE_TO_VOICE
from outbound_audio import OutboundAudio, Segment
from prompt import build_messages
from providers.base import (
    FRAME_BYTES,
    SAMPLE_RATE,
    ChatMessage,
    LLMProvider,
    ProviderError,
    STTSession,
    ToolCall,
    ToolSpec,
    TranscriptEvent,
    TTSProvider,
)
from sentences import SentenceChunker
from speech_text import clean_markdown_for_tts, fill_template
from stream_auth import verify_stream_token
from turn_taking import EndOfTurn

if TYPE_CHECKING:
    from runtime import Runtime

log = logging.getLogger("ai_sdr.call")

FALLBACK_LINE = "Sorry, could you say that again?"
_STREAM_SID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
EXTRACTIVE_MIN_SCORE = 0.45  # question ↔ knowledge-sentence cosine needed to answer with the sentence
FINALIZE_AFTER_S = 0.25  # silence beyond the end-of-turn threshold with only partials: ask for the final
FIRST_CLAUSE_CHARS = 24  # a reply's first clause this long goes to TTS without waiting for the full stop
KEEPALIVE_AFTER_S = 3.0  # Deepgram closes a stream after ~10 s without audio
STILL_THERE_LINE = "Are you still there?"
GOODBYE_LINE = "Thanks for your time. Goodbye!"
TIMEOUT_GOODBYE_LINE = "It seems we got disconnected. I'll follow up later. Goodbye!"
MAX_DURATION_LINE = "We're out of time for today. Thanks for talking with me. Goodbye!"
BUSY_LINE = "All of our agents are busy right now. Please call again later. Goodbye."
HANDSHAKE_TIMEOUT_S = 10.0
BARGE_NO_WORDS_RESUME_S = 1.2  # paused for a sound that produced no words: resume after this
NO_WORDS_SILENCE_S = 0.6  # …and after this much quiet, so a final still being transcribed is not missed
MAX_BAD_MESSAGES = 500  # a stream this broken is closed
PREEMPT_AFTER_S = 0.12  # caller quiet this long with words heard: start the reply before the endpoint
# Replies that act (book, transfer, hang up) are never started on a guess.
NOT_PREEMPTED = frozenset(
    {Intent.GOODBYE, Intent.NOT_INTERESTED, Intent.BOOK_MEETING, Intent.TRANSFER_REQUEST}
)


class CallState(StrEnum):
    CALL_START = "CALL_START"
    DISCOVERY = "DISCOVERY"
    ACTIVE = "ACTIVE"
    COMPLETION = "COMPLETION"
    ENDED = "ENDED"


@dataclass(slots=True)
class AgentProfile:
    """What a call needs of its agent, fixed at call start (variables filled)."""

    agent: Any  # models.Agent, detached (tools and documents loaded)
    system_prompt: str
    first_message: str
    turn: TurnSettings
    tool_specs: list[ToolSpec]
    variables: dict[str, Any]

    @property
    def id(self) -> str:
        return self.agent.id


def _released() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


def _same_words(a: str, b: str) -> bool:
    """Equal up to case and punctuation (an interim and a final transcript often differ only so)."""
    return re.sub(r"[^\w\s]", "", a).lower().split() == re.sub(r"[^\w\s]", "", b).lower().split()


@dataclass(slots=True)
class ReplyTurn:
    """One agent turn in progress: its text, timings and task."""

    turn_id: int
    user_text: str
    user_seq: int | None
    kind: str = "speech"
    planned: list[str] = field(default_factory=list)  # sentences handed to TTS
    timings: dict[str, float] = field(default_factory=dict)  # ms since stream start
    task: asyncio.Task[None] | None = None
    saved: bool = False
    audio_started: bool = False
    hang_up_after: str | None = None  # end reason, when this turn closes the call
    # Set when the turn may be heard. A preemptive reply is generated and synthesized while the caller's
    # turn is still being confirmed, and waits here with its first audio in hand.
    go: asyncio.Event = field(default_factory=_released)


@dataclass(slots=True)
class BargeIn:
    onset: float  # monotonic time the caller's speech began
    paused_at_frame: int
    turn: ReplyTurn | None
    words_deadline: float  # resume if no words by then


class WSConn:
    """One live call on one Media Streams WebSocket."""

    def __init__(self, runtime: Runtime, websocket: WebSocket, call_sid: str) -> None:
        self.runtime = runtime
        self.ws = websocket
        self.call_sid = call_sid
        self.stream_sid = ""
        self.conversation_id = ""
        self.state = CallState.CALL_START
        self.end_reason = "caller_hung_up"
        self.t0 = time.monotonic()
        self.started_at = time.monotonic()
        self.store: CallStore | None = None
        self.recorder: CallRecorder | None = None
        self.profile: AgentProfile | None = None
        self.out: OutboundAudio | None = None
        self.stt: STTSession | None = None
        self.tts: TTSProvider | None = None
        self.llm: LLMProvider | None = None
        self.classifier: FrameClassifier | None = None
        self.detector: InterruptionDetector | None = None
        self.eot: EndOfTurn | None = None
        self.history: list[ChatMessage] = []
        self.caller_number = ""
        self.agent_number = ""
        self._slicer = FrameSlicer()
        self._send_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[Any]] = []
        self._turn_counter = 0
        self._reply: ReplyTurn | None = None
        self._barge: BargeIn | None = None
        self._finals: list[str] = []
        self._finals_confidence: float | None = None  # the least sure final of the turn so far
        self._final_at: float | None = None
        self._final_speech_end: float | None = None
        self._last_voice_at = time.monotonic()
        self._voiced_run = 0
        self._partial_pending = False  # a partial transcript with no final yet
        self._partial_text = ""  # the latest partial transcript of the caller's turn
        self._preempt: ReplyTurn | None = None  # a reply started before the caller's turn was confirmed
        self._preempt_declined = ""  # text already judged not worth a preemptive reply
        self._turn_peak_energy = 0.0  # loudest voiced frame of the caller's current turn
        self._agent_speaking_hint: bool | None = None  # what the STT was last told
        self._last_media_at = time.monotonic()
        self._speech_end_ms: float | None = None
        self._speech_start_ms: float | None = None  # of the caller turn being heard
        self._eot_handle: asyncio.TimerHandle | None = None
        self._last_user_seq: int | None = None
        self._dtmf: list[str] = []
        self._dtmf_handle: asyncio.TimerHandle | None = None
        self._silence_prompts = 0
        self._last_activity = time.monotonic()
        self._bad_messages = 0
        self._closing = False
        self._closed = asyncio.Event()

    # ================================================================ lifecycle

    def ms(self, t: float | None = None) -> float:
        """Milliseconds since the media stream started (the offsets stored on turns)."""
        return round(((time.monotonic() if t is None else t) - self.t0) * 1000, 1)

    def _log(self, msg: str, level: int = logging.INFO, **fields: Any) -> None:
        log.log(
            level,
            msg,
            extra={"fields": {"call_sid": self.call_sid, "conversation_id": self.conversation_id, **fields}},
        )

    async def serve(self) -> None:
        """The whole life of the socket: handshake, call, teardown. Never raises."""
        try:
            start = await self._handshake()
            if start is None:
                return
            if not await self._setup(start):
                return
            await self._receive_loop()
        except WebSocketDisconnect:
            pass
        except Exception as exc:
            self.end_reason = "engine_error"
            self._log("call failed", logging.ERROR, error=type(exc).__name__, detail=str(exc)[:200])
        finally:
            await self._teardown()

    async def _handshake(self) -> dict[str, Any] | None:
        """Read `connected`/`start`; check the stream token before any audio is processed."""
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._log("no start message, closing stream", logging.WARNING)
                await self._close(1008, "start message expected")
                return None
            try:
                raw = await asyncio.wait_for(self.ws.receive_text(), remaining)
            except TimeoutError:
                continue
            msg = self._parse(raw)
            if msg is None:
                continue
            event = msg.get("event")
            if event == "start":
                start = msg.get("start") if isinstance(msg.get("start"), dict) else {}
                params = start.get("customParameters") or {}
                token = params.get("token", "") if isinstance(params, dict) else ""
                conversation_id = verify_stream_token(self.runtime.settings, str(token), self.call_sid)
                if conversation_id is None:
                    self._log("stream refused: bad or missing token", logging.WARNING)
                    await self._close(1008, "invalid stream token")
                    return None
                self.conversation_id = conversation_id
                stream_sid = str(msg.get("streamSid") or start.get("streamSid") or "")
                if not _STREAM_SID.match(stream_sid):  # it is echoed into every frame we send
                    self._log("stream refused: bad streamSid", logging.WARNING)
                    await self._close(1008, "invalid streamSid")
                    return None
                self.stream_sid = stream_sid
                self.caller_number = str(params.get("from", ""))
                self.agent_number = str(params.get("to", ""))
                return start
            if event == "media":
                self._bad("media before start")
            elif event not in ("connected",):
                self._bad(f"unexpected {event!r} before start")

    async def _setup(self, start: dict[str, Any]) -> bool:
        rt = self.runtime
        if not rt.calls.register(self):
            self._log("refusing call: at MAX_CONCURRENT_CALLS", logging.WARNING)
            self.end_reason = "capacity"
            self.t0 = time.monotonic()
            await self._start_outbound()
            self.tts = rt.providers.tts()
            self._closing = True
            await self._say_and_hang_up(BUSY_LINE, "capacity")
            return False
        self.store = CallStore(rt.db, self.conversation_id, emit=rt.webhooks.emit, writer=rt.writer)
        try:
            conversation, agent = await self.store.load()
        except LookupError:
            self._log("stream for unknown conversation", logging.WARNING)
            await self._close(1008, "unknown call")
            return False
        self.t0 = time.monotonic()
        self._last_voice_at = self.t0
        await self._start_outbound()
        if agent is None:
            self.tts = rt.providers.tts()
            await self._say_and_hang_up("Sorry, this number is not available right now. Goodbye.", "no_agent")
            return False
        self.caller_number = self.caller_number or (conversation.from_number or "")
        self.agent_number = self.agent_number or (conversation.to_number or "")
        self.profile = self._build_profile(agent, conversation.dynamic_variables or {})
        if rt.settings.record_calls:
            self.recorder = CallRecorder(rt.settings.recordings_dir, self.conversation_id)
            assert self.out is not None
            self.out.on_frame_sent = self._record_agent_frame
        overrides = agent.providers or {}
        self.tts = rt.providers.tts(overrides.get("tts"))
        self.llm = await rt.providers.llm(overrides.get("llm"))
        self.stt = await rt.providers.stt(overrides.get("stt")).open_session(
            language=agent.language or "en", call_id=self.call_sid, keywords=agent.stt_keywords or ()
        )
        turn = self.profile.turn
        self.classifier = FrameClassifier(turn.vad_aggressiveness)
        self.detector = InterruptionDetector(turn)
        self.eot = EndOfTurn(turn.silence_threshold_sec)
        await self.store.mark_started(self.call_sid)
        rt.webhooks_notify()
        self._log(
            "call started",
            agent_id=agent.id,
            stt=getattr(rt.providers.stt(overrides.get("stt")), "name", ""),
            llm=getattr(self.llm, "name", ""),
            tts=getattr(self.tts, "name", ""),
        )
        self._tasks.append(asyncio.create_task(self._stt_events(), name=f"stt-{self.call_sid}"))
        self._tasks.append(asyncio.create_task(self._watchdog(), name=f"watchdog-{self.call_sid}"))
        if self.profile.first_message:
            self._start_reply(
                ReplyTurn(self._next_turn_id(), "", None, kind="greeting"),
                greeting=self.profile.first_message,
            )
        if hasattr(self.llm, "prefill"):
            # While the greeting plays: the model reads the system prompt once, so the first reply's
            # prompt is mostly cached (embedded model: ~1 s → ~0.1 s to the first token).
            prompt = build_messages(self.profile.system_prompt, CallState.DISCOVERY.value, "", [], "")
            self._tasks.append(
                asyncio.create_task(self.llm.prefill(prompt[:1]), name=f"prefill-{self.call_sid}")
            )
        self.state = CallState.DISCOVERY
        return True

    def _build_profile(self, agent: Any, dynamic: dict[str, Any]) -> AgentProfile:
        settings = self.runtime.settings
        variables = {
            "agent_name": agent.name,
            "caller_number": self.caller_number,
            "call_sid": self.call_sid,
            "date": time.strftime("%A, %B %d, %Y"),
            **{k: v for k, v in dynamic.items()},
        }
        turn = TurnSettings.from_sources(settings, agent.turn_settings, agent.interrupt_enabled)
        specs = self.runtime.tool_runner.specs_for(agent)
        return AgentProfile(
            agent=agent,
            system_prompt=fill_template(agent.system_prompt or "", variables, strict=False),
            first_message=fill_template(agent.first_message or "", variables, strict=False),
            turn=turn,
            tool_specs=specs,
            variables=variables,
        )

    async def _start_outbound(self) -> None:
        self.out = OutboundAudio(self.stream_sid, self._send_text)
        self.out.on_first_frame = self._on_first_frame
        self.out.start()

    def _sample_at(self, t: float) -> int:
        return int((t - self.t0) * SAMPLE_RATE)

    def _record_agent_frame(self, frame: bytes, at: float) -> None:
        assert self.recorder is not None
        self.recorder.agent_audio(frame, self._sample_at(at))

    async def _save_recording(self) -> str | None:
        if self.recorder is None:
            return None
        try:
            path = await self.recorder.save()
        except OSError as exc:
            self._log("could not save recording", logging.ERROR, error=type(exc).__name__)
            return None
        return f"/v1/convai/conversations/{self.conversation_id}/recording" if path else None

    async def _teardown(self) -> None:
        self._closing = True
        for handle in (self._eot_handle, self._dtmf_handle):
            if handle is not None:
                handle.cancel()
        if self._preempt is not None and self._preempt.task is not None:
            self._preempt.task.cancel()
            await asyncio.gather(self._preempt.task, return_exceptions=True)
        if self._reply is not None and self._reply.task is not None and not self._reply.task.done():
            await self._save_cut_reply(self._reply, self.out.played_frame() if self.out else 0)
            self._reply.task.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._reply is not None and self._reply.task is not None:
            await asyncio.gather(self._reply.task, return_exceptions=True)
        if self.out is not None:
            await self.out.stop()
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
        await self._close(1000, "call ended")
        self._closed.set()
        self._log(
            "call ended", reason=self.end_reason, duration_s=round(time.monotonic() - self.started_at, 1)
        )

    async def _close(self, code: int, reason: str) -> None:
        if self.ws.client_state == WebSocketState.CONNECTED:
            try:
                await self.ws.close(code=code, reason=reason)
            except Exception:
                pass

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
        await self._close(1000, reason)

    # ================================================================ inbound messages

    def _parse(self, raw: str) -> dict[str, Any] | None:
        try:
            msg = json.loads(raw)
        except (json.JSONDecodeError, RecursionError):
            self._bad("malformed JSON")
            return None
        if not isinstance(msg, dict):
            self._bad("message is not an object")
            return None
        return msg

    def _bad(self, what: str) -> None:
        self._bad_messages += 1
        # Logged with a cap: a broken peer must not flood the log.
        if self._bad_messages <= 5 or self._bad_messages % 100 == 0:
            self._log("bad stream message", logging.WARNING, problem=what, count=self._bad_messages)

    async def _receive_loop(self) -> None:
        while not self._closing:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text")
            if raw is None:
                self._bad("binary message")
                continue
            msg = self._parse(raw)
            if msg is None:
                if self._bad_messages > MAX_BAD_MESSAGES:
                    self.end_reason = "protocol_error"
                    return
                continue
            event = msg.get("event")
            if event == "media":
                await self._on_media(msg)
            elif event == "mark":
                mark = msg.get("mark")
                if isinstance(mark, dict) and self.out is not None:
                    self.out.on_mark(str(mark.get("name", "")))
                    self._last_activity = time.monotonic()
            elif event == "dtmf":
                dtmf = msg.get("dtmf")
                if isinstance(dtmf, dict):
                    self._on_dtmf(str(dtmf.get("digit", ""))[:1])
            elif event == "stop":
                self.end_reason = self.end_reason if self._closing else "caller_hung_up"
                return
            elif event == "start":
                self._bad("second start")
            elif event != "connected":
                self._bad(f"unknown event {str(event)[:32]!r}")
            if self._bad_messages > MAX_BAD_MESSAGES:
                self.end_reason = "protocol_error"
                return

    async def _on_media(self, msg: dict[str, Any]) -> None:
        media = msg.get("media")
        payload = media.get("payload") if isinstance(media, dict) else None
        if not isinstance(payload, str):
            self._bad("media without payload")
            return
        try:
            chunk = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            self._bad("bad base64")
            return
        if not chunk or len(chunk) > FRAME_BYTES * 50:
            self._bad(f"media of {len(chunk)} bytes")
            return
        self._last_media_at = time.monotonic()
        if self.recorder is not None:
            self.recorder.caller_audio(chunk, self._sample_at(self._last_media_at))
        for frame in self._slicer.push(chunk) if len(chunk) != FRAME_BYTES else (chunk,):
            self._on_frame(frame)
        assert self.stt is not None
        await self.stt.send_audio(chunk)

    def _on_frame(self, frame: bytes) -> None:
        """Per 20 ms of caller audio: voicing, barge-in, silence tracking. Cheap by design."""
        assert self.classifier is not None and self.detector is not None and self.out is not None
        now = time.monotonic()
        detecting = (
            self._barge is None
            and self.out.is_speaking
            and self.profile is not None
            and self.profile.turn.interrupt_enabled
        )
        # While the agent talks, a frame loud enough to interrupt must also sound like speech. Checked
        # from the energy floor, not the adaptive threshold: loud noise raises the baseline, and its
        # frames must not then count as a loud voice when words (Whisper hears words in hiss) arrive.
        spectrum_above = self.profile.turn.interrupt_min_energy if detecting else None
        energy, voiced = self.classifier.classify(frame, spectrum_above)
        if voiced:
            self._last_voice_at = now
            self._last_activity = now
            self._turn_peak_energy = max(self._turn_peak_energy, energy)
            self._voiced_run += 1
            if self._voiced_run == 3:
                if self._final_at is not None:
                    # The caller kept talking after the STT's final: that endpoint was a pause.
                    self._final_at = None
                if self._preempt is not None:
                    self._drop_preempt()  # …and the reply started on that pause answers half a turn
        else:
            self._voiced_run = 0
            if (
                self._preempt is None
                and (self._finals or self._partial_text)
                and now - self._last_voice_at >= PREEMPT_AFTER_S
            ):
                self._maybe_preempt()
            if (
                self._partial_pending
                and self.eot is not None
                and now - self._last_voice_at > self.eot.silence_s + FINALIZE_AFTER_S
            ):
                # Words were heard, the caller went quiet, and no final came: ask the STT for it now.
                self._partial_pending = False
                if self.stt is not None:
                    asyncio.get_running_loop().create_task(self.stt.finalize())
        speaking = self.out.is_speaking or self._barge is not None
        if speaking != self._agent_speaking_hint and self.stt is not None:
            self._agent_speaking_hint = speaking
            self.stt.set_agent_speaking(speaking)
        barge = self._barge
        if barge is not None:
            if (
                now > barge.words_deadline
                and not self._finals
                and not self._partial_pending
                and now - self._last_voice_at > NO_WORDS_SILENCE_S
            ):
                self._resume_after_false_barge("no words")
            return
        if detecting:
            if self.detector.process(energy, voiced, now * 1000):
                asyncio.get_running_loop().create_task(self._on_barge_in(self.detector.onset_ms / 1000))
        elif not voiced:
            self.detector.update_baseline(energy)

    def _on_dtmf(self, digit: str) -> None:
        if digit not in "0123456789*#" or not digit:
            self._bad("bad dtmf digit")
            return
        self._last_activity = time.monotonic()
        if self._dtmf_handle is not None:
            self._dtmf_handle.cancel()
        if digit == "#":
            self._flush_dtmf()
            return
        self._dtmf.append(digit)
        self._dtmf_handle = asyncio.get_running_loop().call_later(1.5, self._flush_dtmf)

    def _flush_dtmf(self) -> None:
        if not self._dtmf or self._closing:
            return
        digits = "".join(self._dtmf)
        self._dtmf.clear()
        text = f"(The caller pressed the keys {' '.join(digits)} on the keypad.)"
        asyncio.get_running_loop().create_task(self._user_turn(text, kind="dtmf", display=digits))

    # ================================================================ STT events and end of turn

    async def _stt_events(self) -> None:
        assert self.stt is not None
        try:
            async for event in self.stt.events():
                self._on_transcript(event)
        except ProviderError as exc:
            self._log("stt failed", logging.ERROR, error=type(exc).__name__, detail=str(exc)[:200])
            self.end_reason = "stt_failed"
            await self._say_and_hang_up(
                "Sorry, I'm having trouble hearing you. I'll call you back. Goodbye.", "stt_failed"
            )

    def _on_transcript(self, event: TranscriptEvent) -> None:
        now = time.monotonic()
        if self._speech_start_ms is None and event.kind in ("speech_started", "partial", "final"):
            started = self.t0 + event.start_s if event.start_s is not None else now
            self._speech_start_ms = self.ms(min(started, now))
        if event.kind == "partial":
            self._partial_pending = bool(event.text.strip())
            self._partial_text = event.text.strip()
            if self._barge is not None and event.text.strip() and not is_backchannel(event.text):
                if len(event.text.split()) >= 2:
                    asyncio.get_running_loop().create_task(self._commit_interruption())
            return
        if event.kind == "final":
            self._partial_pending = False
            self._partial_text = ""
            text = event.text.strip()
            if not text:
                return
            self._finals.append(text)
            if event.confidence is not None:
                self._finals_confidence = min(self._finals_confidence or 1.0, event.confidence)
            if self._speech_end_ms is None or event.end_s is not None:
                end = (
                    self.ms(self.t0 + event.end_s)
                    if event.end_s is not None
                    else self.ms(self._last_voice_at)
                )
                self._speech_end_ms = min(end, self.ms(now))
            self._stt_final_ms = self.ms(now)
            if event.speech_final:
                self._final_at = now
            self._schedule_eot(0)
        elif event.kind == "utterance_end" and self._finals:
            self._final_at = self._final_at or now
            self._schedule_eot(0)

    def _schedule_eot(self, delay: float) -> None:
        if self._eot_handle is not None:
            self._eot_handle.cancel()
        loop = asyncio.get_running_loop()
        self._eot_handle = loop.call_later(
            max(0.0, delay), lambda: loop.create_task(self._check_end_of_turn())
        )

    async def _check_end_of_turn(self) -> None:
        if not self._finals or self._closing or self.eot is None:
            return
        text = " ".join(self._finals)
        now = time.monotonic()
        silence = now - self._last_voice_at
        if self._final_at is not None:
            # The STT's endpoint is evidence of silence too (our VAD may hear line noise as voice).
            silence = max(silence, now - self._final_at + self.eot.silence_s)
        remaining = self.eot.remaining(text, silence, self._finals_confidence)
        if remaining > 0:
            self._schedule_eot(remaining)
            return
        self._finals.clear()
        self._finals_confidence = None
        self._partial_text = ""
        self._preempt_declined = ""
        self._final_at = None
        speech_end_ms, self._speech_end_ms = self._speech_end_ms, None
        speech_start_ms, self._speech_start_ms = self._speech_start_ms, None
        await self._user_turn(
            text,
            speech_start_ms=speech_start_ms,
            speech_end_ms=speech_end_ms,
            stt_final_ms=getattr(self, "_stt_final_ms", None),
        )

    async def _user_turn(
        self,
        text: str,
        *,
        kind: str = "speech",
        display: str | None = None,
        speech_start_ms: float | None = None,
        speech_end_ms: float | None = None,
        stt_final_ms: float | None = None,
    ) -> None:
        """The caller finished a turn: record it and answer (or resume, merge, or ignore)."""
        assert self.store is not None and self.out is not None
        self._silence_prompts = 0
        peak_energy, self._turn_peak_energy = self._turn_peak_energy, 0.0
        agent_talking = self._barge is not None or self.out.is_speaking
        if kind == "speech" and agent_talking and is_backchannel(text):
            self.store.save_turn(
                TurnRecord(
                    "user",
                    text,
                    kind="backchannel",
                    start_ms=speech_start_ms,
                    end_ms=speech_end_ms,
                    intent="BACKCHANNEL",
                )
            )
            if self._barge is not None:
                self._resume_after_false_barge("backchannel")
            return
        if self._barge is not None:
            await self._commit_interruption()
        elif (
            kind == "speech"
            and self.out.is_speaking
            and self.profile is not None
            and self.profile.turn.interrupt_enabled
            and peak_energy >= self.profile.turn.interrupt_min_energy
        ):
            # Words over the agent whose pause already timed out (or that the detector's timing let pass):
            # the caller is talking, so the agent stops and answers. A far-off voice (a TV) is too quiet.
            await self._on_barge_in(time.monotonic(), detected=False)
            await self._commit_interruption()
        reply = self._reply
        merged_seq: int | None = None
        if (
            reply is not None
            and not reply.audio_started
            and reply.user_seq is not None
            and reply.task
            and not reply.task.done()
        ):
            # The caller added to the turn while the agent was still thinking: answer both as one.
            reply.task.cancel()
            await asyncio.gather(reply.task, return_exceptions=True)
            reply.saved = True  # nothing was spoken; no agent turn to record
            text = f"{reply.user_text} {text}"
            merged_seq = reply.user_seq
        intent = detect_intent(text)
        preempt, self._preempt = self._preempt, None
        if preempt is not None and (
            merged_seq is not None or kind != "speech" or not _same_words(preempt.user_text, text)
        ):
            self._drop_preempt(preempt)
            preempt = None
        record = TurnRecord(
            "user",
            display or text,
            kind=kind,
            intent=intent.value,
            start_ms=speech_start_ms if speech_start_ms is not None else speech_end_ms or self.ms(),
            end_ms=speech_end_ms or self.ms(),
            stt_final_ms=stt_final_ms,
            seq=merged_seq if merged_seq is not None else -1,
        )
        seq = self.store.save_turn(record)
        self._log("user turn", seq=seq, intent=intent.value, chars=len(text))
        if self.state in (CallState.COMPLETION, CallState.ENDED):
            if preempt is not None:
                self._drop_preempt(preempt)
            return
        if preempt is not None:
            self._adopt_preempt(preempt, intent, seq, speech_end_ms, stt_final_ms)
            return
        turn = ReplyTurn(self._next_turn_id(), text, seq)
        turn.timings["user_speech_end_ms"] = speech_end_ms or self.ms()
        if stt_final_ms is not None:
            turn.timings["stt_final_ms"] = stt_final_ms
        self._start_reply(turn, intent=intent)

    # ================================================================ replies

    def _next_turn_id(self) -> int:
        self._turn_counter += 1
        return self._turn_counter

    def _start_reply(
        self, turn: ReplyTurn, *, greeting: str | None = None, intent: Intent | None = None
    ) -> None:
        previous = self._reply
        self._reply = turn
        turn.task = asyncio.create_task(
            self._run_reply(turn, previous, greeting, intent), name=f"reply-{turn.turn_id}"
        )

    async def _run_reply(
        self,
        turn: ReplyTurn,
        previous: ReplyTurn | None,
        greeting: str | None,
        intent: Intent | None,
        *,
        preemptive: bool = False,
    ) -> None:
        if previous is not None and previous.task is not None and not previous.task.done():
            # The previous reply finishes speaking first (interruptions are handled elsewhere).
            await asyncio.gather(previous.task, return_exceptions=True)
        try:
            if greeting is not None:
                await self._speak_lines(turn, [greeting])
            elif preemptive:
                await self._llm_reply(turn, intent)  # _answer's other branches act, so are not guessed
            else:
                await self._answer(turn, intent or detect_intent(turn.user_text))
            await self._wait_played(turn)
            await self._save_reply(turn)
            if turn.hang_up_after is not None:
                await self.hang_up(turn.hang_up_after)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._log("reply failed", logging.ERROR, error=type(exc).__name__, detail=str(exc)[:200])

    async def _answer(self, turn: ReplyTurn, intent: Intent) -> None:
        assert self.profile is not None
        if self.state == CallState.DISCOVERY and intent not in (Intent.HELLO, Intent.BACKCHANNEL):
            self._set_state(CallState.ACTIVE)
        if intent == Intent.GOODBYE or (intent == Intent.NOT_INTERESTED and self._said_no_before()):
            self._set_state(CallState.COMPLETION)
            turn.hang_up_after = "agent_goodbye"
            await self._speak_lines(turn, [GOODBYE_LINE])
            return
        if await self._intent_tool(turn, intent):
            return
        await self._llm_reply(turn, intent)

    def _said_no_before(self) -> bool:
        return (
            sum(
                1
                for m in self.history
                if m.role == "user" and detect_intent(m.content) == Intent.NOT_INTERESTED
            )
            >= 1
        )

    async def _intent_tool(self, turn: ReplyTurn, intent: Intent) -> bool:
        """Run a tool straight from the caller's words, without an LLM round trip."""
        assert self.profile is not None
        names = {spec.name for spec in self.profile.tool_specs}
        if intent == Intent.BOOK_MEETING and "book_meeting" in names:
            request = extract_meeting_request(turn.user_text)
            if request:
                args = {"attendee_name": str(self.profile.variables.get("name") or "the caller"), **request}
                await self._run_tool(turn, ToolCall("book_meeting", args))
                return True
        if intent == Intent.TRANSFER_REQUEST and "transfer_call" in names:
            await self._speak_lines(turn, ["Sure, let me transfer you now."])
            await self._wait_played(turn)
            await self._run_tool(turn, ToolCall("transfer_call", {"reason": turn.user_text[:200]}))
            return True
        return False

    async def _run_tool(self, turn: ReplyTurn, call: ToolCall) -> Any:
        from tools import ToolContext

        assert self.profile is not None
        ctx = ToolContext(
            conversation_id=self.conversation_id,
            call_sid=self.call_sid,
            caller_number=self.caller_number,
            agent_number=self.agent_number,
            dynamic_variables=self.profile.variables,
        )
        runner = self.runtime.tool_runner
        task = asyncio.create_task(runner.execute(self.profile.agent, call, ctx))
        done, _ = await asyncio.wait({task}, timeout=0.8)
        if not done:
            await self._speak_lines(turn, [runner.filler_for(call.name)])
        outcome = await task
        self.runtime.webhooks_notify()
        self._log("tool executed", tool=call.name, success=outcome.success, ms=round(outcome.duration_ms, 1))
        if outcome.say:
            await self._speak_lines(turn, [outcome.say])
        elif outcome.say is None:
            await self._speak_tool_result(turn, call, outcome)
        if outcome.ends_call:
            self._set_state(CallState.COMPLETION)
            turn.hang_up_after = "agent_ended_call"
            if not outcome.say:
                await self._speak_lines(turn, [GOODBYE_LINE])
        if getattr(outcome, "transferred", False):
            turn.hang_up_after = None
            self.end_reason = "transferred"
        return outcome

    async def _speak_tool_result(self, turn: ReplyTurn, call: ToolCall, outcome: Any) -> None:
        """Let the LLM word a tool's result (one round: the call, then its result as a tool message)."""
        assert self.profile is not None and self.llm is not None
        result = outcome.result if outcome.success else {"error": outcome.error}
        messages = build_messages(
            self.profile.system_prompt, self.state.value, "", self.history, turn.user_text
        )
        messages += [
            ChatMessage("assistant", "", tool_calls=[call]),
            ChatMessage("tool", json.dumps(result, default=str)[:2000], tool_name=call.name),
        ]
        text = ""
        try:
            async with asyncio.timeout(self.runtime.settings.llm_timeout_sec):
                async for chunk in self.llm.stream_chat(
                    messages,
                    model=self.profile.agent.llm_model,
                    temperature=self.profile.agent.temperature,
                    max_tokens=self.runtime.settings.llm_max_tokens,
                ):
                    text += chunk.text
        except (ProviderError, TimeoutError) as exc:
            self._log("llm tool follow-up failed", logging.WARNING, error=type(exc).__name__)
        if not text.strip():
            text = "Done." if outcome.success else "Sorry, I couldn't do that just now."
        await self._speak_lines(turn, [text.strip()])

    async def _llm_reply(self, turn: ReplyTurn, intent: Intent | None = None) -> None:
        assert self.profile is not None and self.llm is not None
        settings = self.runtime.settings
        agent = self.profile.agent
        started = time.monotonic()
        chunks = await self._retrieve(turn.user_text)
        self._log(
            "retrieved",
            level=logging.DEBUG,
            chunks=len(chunks),
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        if chunks and intent == Intent.QUESTION and getattr(self.llm, "extractive_knowledge", False):
            if await self._extractive_answer(turn, chunks):
                return
        knowledge = self.runtime.knowledge.format_for_prompt(chunks) if chunks else ""
        messages = build_messages(
            self.profile.system_prompt, self.state.value, knowledge, self.history, turn.user_text
        )
        tools = (
            self.profile.tool_specs if getattr(self.llm, "supports_tools", self.llm.name != "local") else None
        )
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        speaker = asyncio.create_task(self._speak_queue(turn, sentences))
        chunker = SentenceChunker(first_clause_chars=FIRST_CLAUSE_CHARS)
        tool_calls: list[ToolCall] = []
        produced = False
        try:
            async with asyncio.timeout(settings.llm_timeout_sec):
                async for chunk in self.llm.stream_chat(
                    messages,
                    tools=tools or None,
                    model=agent.llm_model,
                    temperature=agent.temperature,
                    max_tokens=settings.llm_max_tokens,
                ):
                    if chunk.text:
                        if "llm_first_token_ms" not in turn.timings:
                            turn.timings["llm_first_token_ms"] = self.ms()
                        for sentence in chunker.push(chunk.text):
                            produced = True
                            sentences.put_nowait(sentence)
                    if chunk.tool_calls:
                        tool_calls.extend(chunk.tool_calls)
            rest = chunker.flush()
            if rest:
                produced = True
                sentences.put_nowait(rest)
        except (ProviderError, TimeoutError) as exc:
            self._log("llm turn failed", logging.WARNING, error=type(exc).__name__)
            if not produced:
                turn.kind = "fallback"
                sentences.put_nowait(FALLBACK_LINE)
        finally:
            sentences.put_nowait(None)
            await speaker
        if tool_calls:
            await turn.go.wait()  # a tool acts: never on a turn that is still a guess
        for call in tool_calls[:3]:
            await self._run_tool(turn, call)

    async def _extractive_answer(self, turn: ReplyTurn, chunks: list[Any]) -> bool:
        """A small embedded model paraphrases facts unreliably: answer a knowledge question with the
        knowledge base's own best-matching sentence instead, when it matches the question well."""
        try:
            sentence, score = await self.runtime.knowledge.best_sentence(turn.user_text, chunks)
        except Exception as exc:
            self._log("extractive answer failed", logging.WARNING, error=type(exc).__name__)
            return False
        if score < EXTRACTIVE_MIN_SCORE:
            return False
        turn.timings["llm_first_token_ms"] = self.ms()
        await self._speak_lines(turn, [sentence])
        return True

    async def _retrieve(self, text: str) -> list[Any]:
        assert self.profile is not None
        store = self.runtime.knowledge
        if not self.profile.agent.documents:
            return []
        if any(d.status == "pending" for d in self.profile.agent.documents):
            await store.index_pending(self.runtime.db, self.profile.id)  # documents copied from another agent
            for document in self.profile.agent.documents:
                document.status = "ready"
        said = next((m.content for m in reversed(self.history) if m.role == "assistant"), "")
        try:
            async with asyncio.timeout(1.5):
                return await store.query(self.profile.id, text, context=said.rstrip(" —"))
        except Exception as exc:
            self._log("retrieval failed", logging.WARNING, error=type(exc).__name__)
            return []

    async def _speak_lines(self, turn: ReplyTurn, lines: list[str]) -> None:
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        # Same pieces as a streamed reply: a long first sentence starts playing after its first clause.
        chunker = SentenceChunker(first_clause_chars=FIRST_CLAUSE_CHARS if not turn.planned else 0)
        for piece in chunker.push(" ".join(lines) + " "):
            queue.put_nowait(piece)
        if (rest := chunker.flush()) is not None:
            queue.put_nowait(rest)
        queue.put_nowait(None)
        await self._speak_queue(turn, queue)

    async def _speak_queue(self, turn: ReplyTurn, sentences: asyncio.Queue[str | None]) -> None:
        """TTS each sentence as it comes and queue its audio; sentence N+1 synthesizes while N plays."""
        assert self.out is not None and self.tts is not None
        voice = self.profile.agent.voice_id if self.profile is not None else None
        while (sentence := await sentences.get()) is not None:
            spoken = clean_markdown_for_tts(sentence)
            if not spoken.strip():
                continue
            segment: Segment | None = None
            try:
                async for audio in self.tts.synthesize(spoken, voice=voice):
                    if "tts_first_audio_ms" not in turn.timings:
                        turn.timings["tts_first_audio_ms"] = self.ms()
                    if segment is None:
                        await turn.go.wait()  # a preemptive reply holds its first audio until confirmed
                        segment = self.out.begin_segment(turn.turn_id, len(turn.planned), sentence.strip())
                        turn.planned.append(sentence.strip())
                    self.out.push_audio(audio)
            except ProviderError as exc:
                self._log("tts failed", logging.WARNING, error=type(exc).__name__)
            finally:
                if segment is not None:
                    self.out.end_segment(segment)

    # ================================================================ preemptive replies

    def _maybe_preempt(self) -> None:
        """The caller has gone quiet with words heard: start the reply now, held until the turn is
        confirmed, so the LLM's first token and the TTS's first audio overlap the endpointing wait."""
        text = " ".join([*self._finals, self._partial_text]).strip()
        if not text or text == self._preempt_declined or self._closing:
            return
        if not self.runtime.settings.preemptive_replies:
            return
        assert self.out is not None and self.eot is not None
        reply = self._reply
        if (
            self.profile is None
            or self._barge is not None
            or self.out.is_speaking
            or self.state in (CallState.COMPLETION, CallState.ENDED)
            or (reply is not None and reply.task is not None and not reply.task.done())
        ):
            return
        intent = detect_intent(text)
        required = self.eot.required_silence(text, self._finals_confidence, final=not self._partial_text)
        if intent in NOT_PREEMPTED or required > self.eot.silence_s:
            self._preempt_declined = text  # an action, or words that sound unfinished: wait for the turn
            return
        turn = ReplyTurn(self._next_turn_id(), text, None, go=asyncio.Event())
        turn.task = asyncio.create_task(
            self._run_reply(turn, None, None, intent, preemptive=True), name=f"preempt-{turn.turn_id}"
        )
        self._preempt = turn
        self._log("preemptive reply", level=logging.DEBUG, turn=turn.turn_id)

    def _drop_preempt(self, turn: ReplyTurn | None = None) -> None:
        turn = turn or self._preempt
        if turn is self._preempt:
            self._preempt = None
        if turn is not None and turn.task is not None:
            turn.task.cancel()
        PREEMPTIVE_REPLIES.labels("dropped").inc()

    def _adopt_preempt(
        self,
        turn: ReplyTurn,
        intent: Intent,
        seq: int,
        speech_end_ms: float | None,
        stt_final_ms: float | None,
    ) -> None:
        """The confirmed turn says what the preemptive reply guessed: it becomes the reply, and plays."""
        turn.user_seq = seq
        turn.timings["user_speech_end_ms"] = speech_end_ms or self.ms()
        if stt_final_ms is not None:
            turn.timings["stt_final_ms"] = stt_final_ms
        if self.state == CallState.DISCOVERY and intent not in (Intent.HELLO, Intent.BACKCHANNEL):
            self._set_state(CallState.ACTIVE)
        self._reply = turn
        turn.go.set()
        PREEMPTIVE_REPLIES.labels("used").inc()

    def _on_first_frame(self, turn_id: int, at: float) -> None:
        reply = self._reply
        if reply is not None and reply.turn_id == turn_id and not reply.audio_started:
            reply.audio_started = True
            reply.timings.setdefault("first_frame_sent_ms", self.ms(at))
            if "user_speech_end_ms" in reply.timings:
                VOICE_TO_VOICE.observe(max(0.0, self.ms(at) - reply.timings["user_speech_end_ms"]) / 1000)

    async def _wait_played(self, turn: ReplyTurn) -> None:
        """Until Twilio has played every segment of the turn (its marks came back)."""
        assert self.out is not None
        # Bounded: a peer that never echoes marks must not hold the turn (and its storage) forever.
        await self.out.wait_idle(timeout=5 + len(" ".join(turn.planned)) * 0.09)

    async def _save_reply(self, turn: ReplyTurn) -> None:
        if turn.saved or self.store is None:
            return
        turn.saved = True
        text = " ".join(turn.planned)
        if not text:
            return
        self.history.append(ChatMessage("user", turn.user_text)) if turn.user_text else None
        self.history.append(ChatMessage("assistant", text))
        self.store.save_turn(self._agent_record(turn, text, interrupted=False))
        self._last_activity = time.monotonic()

    def _agent_record(self, turn: ReplyTurn, heard: str, interrupted: bool) -> TurnRecord:
        t = turn.timings
        return TurnRecord(
            "agent",
            heard,
            kind=turn.kind,
            full_text=" ".join(turn.planned),
            interrupted=interrupted,
            start_ms=t.get("first_frame_sent_ms"),
            end_ms=self.ms(),
            user_speech_end_ms=t.get("user_speech_end_ms"),
            stt_final_ms=t.get("stt_final_ms"),
            llm_first_token_ms=t.get("llm_first_token_ms"),
            tts_first_audio_ms=t.get("tts_first_audio_ms"),
            first_frame_sent_ms=t.get("first_frame_sent_ms"),
        )

    async def _save_cut_reply(self, turn: ReplyTurn, played_frame: int) -> str:
        """Store an agent turn cut short, truncated to what the caller heard."""
        assert self.out is not None
        if turn.saved or self.store is None:
            return ""
        turn.saved = True
        heard, _ = self.out.heard_text(turn.turn_id, played_frame)
        if turn.user_text:
            self.history.append(ChatMessage("user", turn.user_text))
        if heard:
            self.history.append(ChatMessage("assistant", heard + " —"))
        if turn.planned:
            self.store.save_turn(self._agent_record(turn, heard, interrupted=True))
        return heard

    def _set_state(self, state: CallState) -> None:
        if state != self.state and self.store is not None:
            self.state = state
            self.store.set_state(state.value)

    # ================================================================ barge-in

    async def _on_barge_in(self, onset: float, *, detected: bool = True) -> None:
        """The caller started talking over the agent: go quiet now, decide what it was once words arrive."""
        if self._barge is not None or self.out is None or self._closing:
            return
        played = await self.out.pause()
        latency_ms = (time.monotonic() - onset) * 1000
        if detected:  # not when words arrived first (no onset was detected to time from)
            BARGE_IN.observe(latency_ms / 1000)
        self._barge = BargeIn(onset, played, self._reply, time.monotonic() + BARGE_NO_WORDS_RESUME_S)
        self._log("barge-in: agent paused", onset_to_clear_ms=round(latency_ms, 1))

    def _resume_after_false_barge(self, why: str) -> None:
        if self._barge is None or self.out is None:
            return
        self._barge = None
        self.detector.reset() if self.detector else None
        self.out.resume()
        self._log("barge-in was not an interruption: agent resumes", why=why)

    async def _commit_interruption(self) -> None:
        """handle_interrupt(): the caller really took the turn. Cancel, clear, store what was heard."""
        barge, self._barge = self._barge, None
        if barge is None or self.out is None:
            return
        turn = barge.turn
        if turn is not None and turn.task is not None and not turn.task.done():
            heard = await self._save_cut_reply(turn, barge.paused_at_frame)
            turn.task.cancel()
            await asyncio.gather(turn.task, return_exceptions=True)
        else:
            heard = ""
        await self.out.clear()
        if self.state == CallState.COMPLETION:
            self.state = CallState.ACTIVE
        if turn is not None and turn.planned and self.store is not None:
            self.store.emit("call.interrupted", {"heard_text": heard, "planned_text": " ".join(turn.planned)})
        self._log("interrupted", heard_chars=len(heard))

    # ================================================================ watchdog

    async def _watchdog(self) -> None:
        assert self.profile is not None
        agent = self.profile.agent
        max_duration = min(agent.max_call_duration_sec or 1800, self.runtime.settings.max_call_duration_sec)
        silence_timeout = agent.silence_timeout_sec or self.runtime.settings.silence_timeout_sec
        while not self._closing:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            if now - self._last_media_at > KEEPALIVE_AFTER_S and self.stt is not None:
                await self.stt.keepalive()  # no caller audio flowing: keep the STT stream open
            if now - self.t0 > max_duration:
                await self._say_and_hang_up(MAX_DURATION_LINE, "max_duration")
                return
            busy = self._reply is not None and self._reply.task is not None and not self._reply.task.done()
            if busy or self._finals or (self.out is not None and not self.out.idle):
                self._last_activity = max(self._last_activity, now - 0.5)
                continue
            if now - max(self._last_activity, self._last_voice_at) > silence_timeout:
                self._silence_prompts += 1
                self._last_activity = now
                if self._silence_prompts == 1:
                    self._start_reply(
                        ReplyTurn(self._next_turn_id(), "", None, kind="silence_prompt"),
                        greeting=STILL_THERE_LINE,
                    )
                else:
                    await self._say_and_hang_up(TIMEOUT_GOODBYE_LINE, "silence_timeout")
                    return

    async def _say_and_hang_up(self, line: str, reason: str) -> None:
        turn = ReplyTurn(self._next_turn_id(), "", None, kind="closing")
        turn.hang_up_after = reason
        self.state = CallState.COMPLETION
        if self._reply is not None and self._reply.task is not None and not self._reply.task.done():
            self._reply.task.cancel()
        self._reply = turn
        try:
            await self._speak_lines(turn, [line])
            await self._wait_played(turn)
            await self._save_reply(turn)
        finally:
            await self.hang_up(reason)

    # ================================================================ sending

    async def _send_text(self, text: str) -> None:
        if self.ws.client_state != WebSocketState.CONNECTED:
            return
        try:
            await self.ws.send_text(text)
        except Exception:
            self._closing = True

    async def wait_closed(self) -> None:
        await self._closed.wait()


class ConnectionManager:
    """Live calls of this process."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.calls: dict[str, WSConn] = {}
        self._post_call: set[asyncio.Task[None]] = set()
        self.accepting = True

    @property
    def active(self) -> int:
        return len(self.calls)

    def has_capacity(self) -> bool:
        return self.accepting and self.active < self.runtime.settings.max_concurrent_calls

    def register(self, conn: WSConn) -> bool:
        if not self.has_capacity() or conn.call_sid in self.calls:
            return False
        self.calls[conn.call_sid] = conn
        CALLS_ACTIVE.set(len(self.calls))
        return True

    def unregister(self, conn: WSConn) -> None:
        if self.calls.get(conn.call_sid) is conn:
            del self.calls[conn.call_sid]
            CALLS_ACTIVE.set(len(self.calls))
            CALLS_TOTAL.labels(conn.end_reason).inc()

    def snapshot(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [
            {
                "call_sid": c.call_sid,
                "conversation_id": c.conversation_id,
                "agent_id": c.profile.id if c.profile else None,
                "state": c.state.value,
                "duration_sec": round(now - c.started_at, 1),
                "agent_speaking": bool(c.out and c.out.is_speaking),
            }
            for c in list(self.calls.values())
        ]

    def schedule_post_call(self, conversation_id: str) -> None:
        hook = getattr(self.runtime, "post_call", None)
        if hook is None:
            return
        task = asyncio.create_task(hook(conversation_id), name=f"post-call-{conversation_id}")
        self._post_call.add(task)
        task.add_done_callback(self._post_call.discard)

    async def drain(self, timeout: float = 10.0) -> None:
        """Stop taking calls, end live ones (their state is saved), finish post-call work."""
        self.accepting = False
        for conn in list(self.calls.values()):
            conn.end_reason = "server_shutdown"
            await conn.hang_up("server_shutdown")
        waits = [asyncio.create_task(c.wait_closed()) for c in list(self.calls.values())]
        if waits:
            await asyncio.wait(waits, timeout=timeout)
        if self._post_call:
            await asyncio.wait(self._post_call, timeout=timeout)
