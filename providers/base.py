"""The small interfaces the call engine depends on.

Every speech/LLM backend (Deepgram, Ollama, the embedded local models, the
benchmark's instant providers) implements one of these; the engine never
imports a concrete provider. Audio crossing these interfaces is always
8 kHz, mono, 8-bit mu-law, which is what Twilio Media Streams carries.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from speech.audio import FRAME_BYTES as FRAME_BYTES  # the format is speech's; named here for callers
from speech.audio import FRAME_MS as FRAME_MS
from speech.audio import SAMPLE_RATE as SAMPLE_RATE

# ---------------------------------------------------------------- speech-to-text

TranscriptKind = Literal["speech_started", "partial", "final", "utterance_end"]


@dataclass(slots=True)
class TranscriptEvent:
    """One thing the STT learned about the caller's speech.

    - ``speech_started``: the recogniser heard speech begin (barge-in hint).
    - ``partial``: interim words for the utterance in progress (may change).
    - ``final``: a stable transcript segment. ``speech_final`` is True when the
      recogniser also believes the speaker paused (an endpoint).
    - ``utterance_end``: the recogniser saw enough silence after the last word.
    """

    kind: TranscriptKind
    text: str = ""
    speech_final: bool = False
    confidence: float | None = None
    # monotonic time (time.monotonic()) when the event was produced locally
    at: float = field(default_factory=time.monotonic)
    # seconds of audio (from stream start) where the segment starts/ends, when known
    start_s: float | None = None
    end_s: float | None = None
    # finals: how sure the recogniser was of the last word (0..1), when it says (call/turns.py WordDoubt)
    last_word_confidence: float | None = None


@runtime_checkable
class STTSession(Protocol):
    """One caller's live recognition stream."""

    async def send_audio(self, mulaw: bytes) -> None:
        """Forward caller audio (any multiple of mu-law bytes) as it arrives."""

    async def finalize(self) -> None:
        """Ask for the pending words now: the engine decided the turn is over."""

    async def keepalive(self) -> None:
        """Keep the stream open while the caller is silent (agent speaking)."""

    def set_agent_speaking(self, speaking: bool) -> None:
        """Hint: interim results matter only while the agent talks (barge-in words, backchannels).

        A recogniser that pays per interim result (the embedded Whisper) may skip them otherwise.
        """

    def events(self) -> AsyncIterator[TranscriptEvent]:
        """Transcript events, in order, until the session is closed."""

    async def close(self) -> None:
        """Release the stream; ``events()`` ends after this."""


class STTProvider(Protocol):
    name: str

    async def open_session(
        self, *, language: str = "en", call_id: str = "", keywords: Sequence[str] = ()
    ) -> STTSession:
        """A live stream; ``keywords`` are names and terms the caller is likely to say."""
        ...

    async def aclose(self) -> None: ...


# ---------------------------------------------------------------- text-to-speech


class TTSProvider(Protocol):
    name: str

    def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[bytes]:
        """Yield 8 kHz mu-law audio for ``text`` as soon as it is produced.

        Chunks may be any length; the engine slices them into 20 ms frames.
        Cancelling the iteration (``aclose``) must stop synthesis promptly.
        """

    async def aclose(self) -> None: ...


# ---------------------------------------------------------------- LLM


@dataclass(slots=True)
class ToolSpec:
    """A tool the model may call (JSON-schema parameters, Ollama/OpenAI shape)."""

    name: str
    description: str
    parameters: dict[str, Any]

    def as_openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


@dataclass(slots=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str = ""


@dataclass(slots=True)
class ChatMessage:
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None  # for role == "tool"


@dataclass(slots=True)
class LLMChunk:
    """A streamed piece of the reply: text delta and/or completed tool calls."""

    text: str = ""
    tool_calls: list[ToolCall] | None = None
    done: bool = False


class LLMProvider(Protocol):
    name: str

    def stream_chat(
        self,
        messages: list[ChatMessage],
        *,
        tools: list[ToolSpec] | None = None,
        model: str | None = None,
        temperature: float = 0.7,
        max_tokens: int = 200,
        json_schema: dict[str, Any] | None = None,
    ) -> AsyncIterator[LLMChunk]:
        """Stream the reply token by token. Raises ``LLMError`` on failure.

        ``json_schema``: constrain the reply to JSON of that schema where the backend can (post-call
        analysis asks for it); a backend that cannot simply ignores it.
        """

    async def aclose(self) -> None: ...


class ProviderError(RuntimeError):
    """A provider failed in a way the engine should survive (fallback, retry)."""


class LLMError(ProviderError):
    pass


class STTError(ProviderError):
    pass


class TTSError(ProviderError):
    pass
