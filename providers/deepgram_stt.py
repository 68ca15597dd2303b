"""Deepgram streaming speech-to-text (live ``/v1/listen``) through the official ``deepgram-sdk``.

One WebSocket per call. Caller audio (8 kHz mu-law, exactly what Twilio sends) goes out as binary
frames; a reader task turns Deepgram's JSON messages into ``TranscriptEvent``s:

- ``SpeechStarted`` (``vad_events``) -> ``speech_started``: the barge-in hint, before any words;
- ``Results`` with ``is_final=false`` -> ``partial``; ``is_final=true`` -> ``final``, with
  ``speech_final`` when Deepgram's endpointing (``deepgram_endpointing_ms`` of silence) saw the pause;
- ``UtteranceEnd`` -> ``utterance_end`` (word-timing based: still fires in noise where endpointing doesn't).

The SDK's own ``client.listen.v1.connect()`` builds the URL, query string and ``Authorization: Token``
header; ``settings.deepgram_url`` only swaps the environment's base URL (tests use a local stand-in).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

from deepgram import AsyncDeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.environment import DeepgramClientEnvironment
from deepgram.listen.v1.socket_client import AsyncV1SocketClient
from deepgram.listen.v1.types import (
    ListenV1Error,
    ListenV1Results,
    ListenV1SpeechStarted,
    ListenV1UtteranceEnd,
)
from websockets.exceptions import ConnectionClosed

from config import Settings
from providers.base import SAMPLE_RATE, STTError, TranscriptEvent

log = logging.getLogger(__name__)

# After CloseStream Deepgram sends the last Results and a Metadata message, then closes the socket.
# Waiting this long lets those final words reach events() without letting a hung server stall teardown.
CLOSE_WAIT_S = 2.0


def deepgram_client(settings: Settings) -> AsyncDeepgramClient:
    """An SDK client for the configured key; ``deepgram_url`` (ws/wss/http/https) overrides the host."""
    environment = DeepgramClientEnvironment.PRODUCTION
    if settings.deepgram_url:
        url = settings.deepgram_url.rstrip("/")
        # The SDK keeps the WebSocket base ("production") and the REST base separately: derive both.
        ws = "ws" + url[4:] if url.startswith("http") else url
        http = "http" + url[2:] if url.startswith("ws") else url
        environment = DeepgramClientEnvironment(base=http, production=ws, agent=ws, agent_rest=http)
    return AsyncDeepgramClient(api_key=settings.deepgram_api_key.get_secret_value(), environment=environment)


def describe_failure(exc: BaseException, endpoint: str) -> str:
    """A short reason for a failed connection that never carries the API key."""
    if isinstance(exc, ApiError):
        if exc.status_code == 401:
            return f"deepgram {endpoint}: API key rejected (HTTP 401)"
        return f"deepgram {endpoint}: handshake refused (HTTP {exc.status_code})"
    return f"deepgram {endpoint}: connection failed ({type(exc).__name__})"


def to_event(message: Any) -> TranscriptEvent | None:
    """Deepgram server message (as typed by the SDK) -> our event; None for messages we don't surface."""
    if isinstance(message, ListenV1SpeechStarted):
        return TranscriptEvent("speech_started", start_s=message.timestamp)
    if isinstance(message, ListenV1UtteranceEnd):
        return TranscriptEvent("utterance_end", end_s=message.last_word_end)
    if not isinstance(message, ListenV1Results) or not message.channel.alternatives:
        return None
    best = message.channel.alternatives[0]
    text = best.transcript.strip()
    start = message.start
    # The last word's end is when the caller stopped talking; start + duration also counts the trailing
    # silence Deepgram needed to decide, which would make voice-to-voice latency look better than it is.
    end = best.words[-1].end if best.words else start + message.duration
    if not message.is_final:
        return TranscriptEvent("partial", text=text, start_s=start, end_s=end) if text else None
    if not text and not message.speech_final:
        return None  # an empty finalised segment (silence): nothing to say
    return TranscriptEvent(
        "final",
        text=text,
        speech_final=bool(message.speech_final),
        confidence=best.confidence,
        start_s=start,
        end_s=end,
    )


class DeepgramSTTSession:
    """One call's live ``/v1/listen`` socket; see the module docstring for the event mapping."""

    def __init__(self, stack: AsyncExitStack, socket: AsyncV1SocketClient, call_id: str) -> None:
        self._stack = stack  # owns the SDK's connect() context: closing it closes the WebSocket
        self._socket = socket
        self._call_id = call_id
        self._events: asyncio.Queue[TranscriptEvent | STTError | None] = asyncio.Queue()
        self._closing = False  # set by close(): from then on the server closing the socket is expected
        self._reader = asyncio.create_task(self._read(), name=f"deepgram-stt-{call_id}")

    async def _read(self) -> None:
        error: str | None = None
        try:
            async for message in self._socket:
                if isinstance(message, ListenV1Error):
                    # Deepgram explains, then closes the socket: keep the reason for the STTError below.
                    error = f"deepgram listen error: {message.variant}: {message.description}"[:300]
                    fields = {"call_sid": self._call_id, "error": error}
                    log.warning("deepgram stt error message", extra={"fields": fields})
                elif (event := to_event(message)) is not None:
                    self._events.put_nowait(event)
            if not self._closing:  # Deepgram hung up on us (idle timeout, server error, ...)
                self._events.put_nowait(STTError(error or "deepgram listen: stream closed by the server"))
        except ConnectionClosed as exc:
            if not self._closing:
                code = exc.rcvd.code if exc.rcvd is not None else None
                reason = error or f"deepgram listen: connection lost (close code {code})"
                self._events.put_nowait(STTError(reason))
        except Exception as exc:  # a message we could not map: fail the call loudly, not silently
            self._events.put_nowait(STTError(f"deepgram listen: reader failed ({type(exc).__name__})"))
        finally:
            self._events.put_nowait(None)

    async def _send(self, send: Any, *args: Any) -> None:
        if self._closing:
            return
        try:
            await send(*args)
        except ConnectionClosed:
            # The reader sees the same closed socket and reports it once, through events(): the media
            # path (called for every 20 ms frame) must not blow up the Twilio handler meanwhile.
            pass

    async def send_audio(self, mulaw: bytes) -> None:
        if mulaw:
            await self._send(self._socket.send_media, mulaw)

    async def finalize(self) -> None:
        await self._send(self._socket.send_finalize)

    async def keepalive(self) -> None:
        await self._send(self._socket.send_keep_alive)

    async def events(self) -> AsyncIterator[TranscriptEvent]:
        while (item := await self._events.get()) is not None:
            if isinstance(item, STTError):
                raise item
            yield item

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(ConnectionClosed):
            await self._socket.send_close_stream()
        _, pending = await asyncio.wait({self._reader}, timeout=CLOSE_WAIT_S)
        if pending:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        try:
            await self._stack.aclose()
        except Exception as exc:  # teardown of an already-dead socket: nothing left to save
            log.debug("deepgram stt close failed: %s", type(exc).__name__)


class DeepgramSTTProvider:
    name = "deepgram"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client = deepgram_client(settings)

    async def open_session(self, *, language: str = "en", call_id: str = "") -> DeepgramSTTSession:
        s = self.settings
        if not s.deepgram_api_key.get_secret_value():
            raise STTError("deepgram listen: DEEPGRAM_API_KEY is not set")
        stack = AsyncExitStack()
        try:
            socket = await stack.enter_async_context(
                self._client.listen.v1.connect(
                    model=s.deepgram_stt_model,
                    language=language or "en",
                    encoding="mulaw",
                    sample_rate=SAMPLE_RATE,
                    channels=1,
                    interim_results=True,
                    smart_format=True,
                    # 0 disables endpointing (Deepgram wants the literal false); then only
                    # utterance_end and the engine's own silence timer end a turn.
                    endpointing=s.deepgram_endpointing_ms if s.deepgram_endpointing_ms > 0 else False,
                    # Deepgram rejects utterance_end_ms below 1000; 0 here means "off".
                    utterance_end_ms=s.deepgram_utterance_end_ms or None,
                    vad_events=True,
                )
            )
        except Exception as exc:
            raise STTError(describe_failure(exc, "listen")) from exc
        return DeepgramSTTSession(stack, socket, call_id)

    async def aclose(self) -> None:
        return None
