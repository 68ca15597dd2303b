"""Instant, deterministic providers for measuring the engine itself (STT/TTS/LLM_PROVIDER=echo).

``delayed`` variants add the fixed latencies typical of cloud providers
(Deepgram STT final, GPU Ollama first token, Aura first audio) so the
benchmark can show how much of them the engine overlaps.

- STT: segments the caller's audio by energy; each utterance is transcribed
  as "caller turn N": interim results every 500 ms of speech, the final once
  ``endpointing_ms`` of silence follows it.
- LLM: answers "You said: <last user text>." token by token.
- TTS: a tone whose length follows the text (ECHO_TTS_MS_PER_CHAR, 55 ms per character by default).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np

from config import Settings
from providers.base import (
    FRAME_BYTES,
    FRAME_MS,
    SAMPLE_RATE,
    ChatMessage,
    LLMChunk,
    ToolSpec,
    TranscriptEvent,
)
from speech.audio import frame_energy, pcm16_to_mulaw

SPEECH_ENERGY = 300.0  # RMS on the PCM16 scale; line noise sits far below, speech far above
MIN_SPEECH_MS = 60
INTERIM_EVERY_FRAMES = 25  # an interim result per 500 ms of speech


class EchoSTTSession:
    def __init__(self, endpointing_ms: int, final_delay_s: float) -> None:
        self._endpoint_frames = max(1, endpointing_ms // FRAME_MS)
        self._min_speech_frames = MIN_SPEECH_MS // FRAME_MS
        self._final_delay_s = final_delay_s
        self._queue: asyncio.Queue[TranscriptEvent | None] = asyncio.Queue()
        self._pending = bytearray()
        self._speech_frames = 0
        self._silent_frames = 0
        self._in_speech = False
        self._turns = 0
        self._frames_seen = 0
        self._speech_start_s = 0.0

    async def send_audio(self, mulaw: bytes) -> None:
        self._pending.extend(mulaw)
        while len(self._pending) >= FRAME_BYTES:
            frame = bytes(self._pending[:FRAME_BYTES])
            del self._pending[:FRAME_BYTES]
            self._on_frame(frame)

    def _on_frame(self, frame: bytes) -> None:
        self._frames_seen += 1
        voiced = frame_energy(frame) > SPEECH_ENERGY
        if voiced:
            self._speech_frames += 1
            self._silent_frames = 0
            if not self._in_speech and self._speech_frames >= self._min_speech_frames:
                self._in_speech = True
                self._speech_start_s = (self._frames_seen - self._speech_frames) * FRAME_MS / 1000
                self._queue.put_nowait(TranscriptEvent("speech_started", start_s=self._speech_start_s))
            if self._in_speech and self._speech_frames % INTERIM_EVERY_FRAMES == 0:
                # Interim results while the caller talks, as Deepgram sends them (same delay as a final).
                self._deliver(TranscriptEvent("partial", text=f"caller turn {self._turns + 1}"))
        else:
            self._silent_frames += 1
            if not self._in_speech:
                self._speech_frames = 0
            elif self._silent_frames >= self._endpoint_frames:
                self._emit_final()

    def _emit_final(self) -> None:
        self._in_speech = False
        self._speech_frames = 0
        self._turns += 1
        end_s = (self._frames_seen - self._silent_frames) * FRAME_MS / 1000
        event = TranscriptEvent(
            "final",
            text=f"caller turn {self._turns}.",  # closed like a punctuating STT's final
            speech_final=True,
            confidence=1.0,
            start_s=self._speech_start_s,
            end_s=end_s,
        )
        self._deliver(event)

    def _deliver(self, event: TranscriptEvent) -> None:
        if self._final_delay_s > 0:
            asyncio.get_running_loop().call_later(self._final_delay_s, self._queue.put_nowait, event)
        else:
            self._queue.put_nowait(event)

    async def finalize(self) -> None:
        if self._in_speech:
            self._emit_final()

    async def keepalive(self) -> None:
        return None

    def set_agent_speaking(self, speaking: bool) -> None:
        return None

    async def events(self) -> AsyncIterator[TranscriptEvent]:
        while (event := await self._queue.get()) is not None:
            yield event

    async def close(self) -> None:
        self._queue.put_nowait(None)


class EchoSTTProvider:
    def __init__(self, settings: Settings, delay_s: float = 0.0) -> None:
        self.name = "echo" if delay_s == 0 else "delayed"
        self._endpointing_ms = int(settings.silence_threshold_sec * 1000)
        self._delay_s = delay_s

    async def open_session(
        self, *, language: str = "en", call_id: str = "", keywords: Sequence[str] = ()
    ) -> EchoSTTSession:
        return EchoSTTSession(self._endpointing_ms, self._delay_s)

    async def aclose(self) -> None:
        return None


def _tone_frame() -> bytes:
    t = np.arange(FRAME_BYTES) / SAMPLE_RATE
    # 400 Hz fits exactly 8 periods in 20 ms, so repeated frames join without clicks.
    return pcm16_to_mulaw((0.3 * np.sin(2 * math.pi * 400 * t)).astype(np.float32))


TONE_FRAME = _tone_frame()
MS_PER_CHAR = 55


class EchoTTSProvider:
    def __init__(self, delay_s: float = 0.0, ms_per_char: int = MS_PER_CHAR) -> None:
        self.name = "echo" if delay_s == 0 else "delayed"
        self._delay_s = delay_s
        self._ms_per_char = ms_per_char

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[bytes]:
        if self._delay_s:
            await asyncio.sleep(self._delay_s)
        frames = max(1, len(text) * self._ms_per_char // FRAME_MS)
        # Yield in 200 ms chunks, like a streaming TTS would.
        for start in range(0, frames, 10):
            yield TONE_FRAME * min(10, frames - start)
            await asyncio.sleep(0)

    async def aclose(self) -> None:
        return None


class EchoLLMProvider:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.name = "echo" if delay_s == 0 else "delayed"
        self._delay_s = delay_s

    async def stream_chat(
        self,
        messages: list[ChatMessage],
        *,
        tools: list[ToolSpec] | None = None,
        model: str | None = None,
        temperature: float = 0.7,
        max_tokens: int = 200,
        json_schema: dict[str, Any] | None = None,
    ) -> AsyncIterator[LLMChunk]:
        if self._delay_s:
            await asyncio.sleep(self._delay_s)
        last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
        reply = f"You said: {last_user.strip().rstrip('.!?')}. Anything else?"
        for word in reply.split(" "):
            yield LLMChunk(text=word + " ")
            await asyncio.sleep(0)
        yield LLMChunk(done=True)

    async def is_available(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


def create(kind: str, name: str, settings: Settings) -> object:
    delayed = name == "delayed"
    if kind == "stt":
        return EchoSTTProvider(settings, settings.delayed_stt_ms / 1000 if delayed else 0.0)
    if kind == "tts":
        return EchoTTSProvider(
            settings.delayed_tts_ms / 1000 if delayed else 0.0, settings.echo_tts_ms_per_char
        )
    return EchoLLMProvider(settings.delayed_llm_ms / 1000 if delayed else 0.0)
