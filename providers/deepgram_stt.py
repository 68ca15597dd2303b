"""Deepgram streaming speech-to-text (live ``/v1/listen``) through the official ``deepgram-sdk``.

One WebSocket at a time per call. Caller audio (8 kHz mu-law, exactly what Twilio sends) goes out as
binary frames; a reader task turns Deepgram's JSON messages into ``TranscriptEvent``s:

- ``SpeechStarted`` (``vad_events``) -> ``speech_started``: the barge-in hint, before any words;
- ``Results`` with ``is_final=false`` -> ``partial``; ``is_final=true`` -> ``final``, with
  ``speech_final`` when Deepgram's endpointing (``deepgram_endpointing_ms`` of silence) saw the pause;
- ``UtteranceEnd`` -> ``utterance_end`` (word-timing based: still fires in noise where endpointing doesn't).

The SDK's own ``client.listen.v1.connect()`` builds the URL, query string and ``Authorization: Token``
header; ``settings.deepgram_url`` only swaps the environment's base URL (tests use a local stand-in).

A dropped socket is not the end of the call. The session keeps the caller audio Deepgram has not yet
confirmed with a final result (at most ``REPLAY_MAX_BYTES``). When the socket closes without us asking,
it reconnects with backoff (``RECONNECT_DELAYS_S``, within ``RECONNECT_BUDGET_S``), replays that audio,
then goes back to live audio; meanwhile ``send_audio`` only buffers. Deepgram's timestamps restart at 0
on the new socket, so events are shifted back onto the call's clock. Words already final were not in the
buffer, so none repeat. Only when reconnecting fails (or Deepgram sent an ``Error`` explaining why it hung
up) does ``events()`` raise ``STTError``. Each recovery logs one WARNING, ``deepgram stt reconnected``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
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
# Deepgram keyword intensifier: a moderate boost (a large one makes it hear the word everywhere).
KEYWORD_BOOST = 2

# Unconfirmed caller audio kept for a replay: 30 s of 8 kHz mu-law. Deepgram finalises far more often than
# that, so the cap only bites on a pathological stream; then the oldest audio goes first.
REPLAY_MAX_BYTES = 30 * SAMPLE_RATE
# Pauses before each reconnect attempt, and the wall-clock limit for one outage: the caller is talking
# meanwhile, so past a few seconds hanging up honestly beats a long silence.
RECONNECT_DELAYS_S = (0.1, 0.3, 1.0, 2.0)
RECONNECT_BUDGET_S = 5.0
REPLAY_CHUNK_BYTES = SAMPLE_RATE  # replay in 1 s messages rather than thousands of 20 ms ones

Connect = Callable[[], Awaitable[tuple[AsyncExitStack, AsyncV1SocketClient]]]


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
    """One call's live ``/v1/listen`` stream, re-opened after a drop; see the module docstring."""

    def __init__(
        self, connect: Connect, stack: AsyncExitStack, socket: AsyncV1SocketClient, call_id: str
    ) -> None:
        self._connect = connect  # opens another socket with the same options (a reconnect)
        # The stack owns the SDK's connect() context (closing it closes the socket). Both are None
        # between sockets: send_audio then only buffers.
        self._stack: AsyncExitStack | None = stack
        self._socket: AsyncV1SocketClient | None = socket
        self._call_id = call_id
        self._events: asyncio.Queue[TranscriptEvent | STTError | None] = asyncio.Queue()
        self._closing = False  # set by close(): from then on the server closing the socket is expected
        self._failed = False  # gave up: stop buffering audio that will never be sent
        # Positions on the call's audio clock are byte counts: one mu-law byte is one 8 kHz sample.
        self._unconfirmed = bytearray()  # audio sent since the last final result (the replay)
        self._unconfirmed_at = 0  # where _unconfirmed[0] sits in the call's audio
        self._socket_at = 0  # where the current socket's audio began: its timestamps count from here
        self._finalize_pending = False  # finalize() came while reconnecting: send it after the replay
        # One outage's attempts and deadline; see _reconnect() for when they start afresh.
        self._attempts = 0
        self._outage_deadline: float | None = None
        self._connected_at = asyncio.get_running_loop().time()
        self._reader = asyncio.create_task(self._run(), name=f"deepgram-stt-{call_id}")

    async def _run(self) -> None:
        try:
            while not self._closing:
                reason = await self._read()
                if not self._closing:
                    await self._reconnect(reason)
        except STTError as exc:
            self._failed = True
            self._events.put_nowait(exc)
        except Exception as exc:  # a message we could not map: fail the call loudly, not silently
            self._failed = True
            self._events.put_nowait(STTError(f"deepgram listen: reader failed ({type(exc).__name__})"))
        finally:
            self._events.put_nowait(None)

    async def _read(self) -> str:
        """Turn the current socket's messages into events until it closes; returns why it closed."""
        assert self._socket is not None
        offset_s = self._socket_at / SAMPLE_RATE
        error: str | None = None
        try:
            async for message in self._socket:
                if isinstance(message, ListenV1Error):
                    # Deepgram explains, then closes the socket: keep the reason for the STTError below.
                    error = f"deepgram listen error: {message.variant}: {message.description}"[:300]
                    fields = {"call_sid": self._call_id, "error": f"ListenV1Error {message.variant}"[:100]}
                    log.warning("deepgram stt error message", extra={"fields": fields})
                    continue
                if isinstance(message, ListenV1Results) and message.is_final:
                    # Final results tile the stream: everything up to start + duration is settled.
                    self._confirm(round((offset_s + message.start + message.duration) * SAMPLE_RATE))
                if (event := to_event(message)) is not None:
                    if event.start_s is not None:
                        event.start_s += offset_s
                    if event.end_s is not None:
                        event.end_s += offset_s
                    self._events.put_nowait(event)
            reason = "deepgram listen: stream closed by the server"
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            reason = f"deepgram listen: connection lost (close code {code})"
        if error and not self._closing:
            # Deepgram hung up on purpose (bad audio, idle timeout, ...): a new socket would fare no better.
            raise STTError(error)
        return reason

    def _confirm(self, position: int) -> None:
        """Deepgram finalised the audio before ``position``: it no longer needs replaying."""
        settled = min(position - self._unconfirmed_at, len(self._unconfirmed))
        if settled > 0:
            del self._unconfirmed[:settled]
            self._unconfirmed_at += settled

    async def _reconnect(self, reason: str) -> None:
        """Open a new socket and replay the unconfirmed audio; STTError once the outage's budget is spent."""
        self._socket = None
        await self._close_stack()
        now = asyncio.get_running_loop().time()
        # A socket that stayed up longer than a whole budget earns a fresh one. One that died sooner
        # continues the same outage, so a server that accepts and drops us at once cannot loop forever.
        if self._outage_deadline is None or now - self._connected_at >= RECONNECT_BUDGET_S:
            self._attempts, self._outage_deadline = 0, now + RECONNECT_BUDGET_S
        last = "out of time"
        while self._attempts < len(RECONNECT_DELAYS_S):
            delay = RECONNECT_DELAYS_S[self._attempts]
            if asyncio.get_running_loop().time() + delay >= self._outage_deadline:
                break
            await asyncio.sleep(delay)
            if self._closing:
                return
            self._attempts += 1
            try:
                async with asyncio.timeout_at(self._outage_deadline):  # a hung handshake counts too
                    stack, socket = await self._connect()
            except Exception as exc:
                last = describe_failure(exc, "listen")
                continue
            try:
                replayed = await self._replay(socket)
            except BaseException as exc:  # incl. cancellation by close(): don't leak the new socket
                await self._close_stack(stack)
                if not isinstance(exc, ConnectionClosed):
                    raise
                last = f"deepgram listen: connection lost during replay ({type(exc).__name__})"
                continue
            self._stack, self._socket = stack, socket
            self._connected_at = asyncio.get_running_loop().time()
            fields = {
                "call_sid": self._call_id,
                "attempts": self._attempts,
                "replayed_ms": replayed * 1000 // SAMPLE_RATE,
            }
            log.warning("deepgram stt reconnected", extra={"fields": fields})
            return
        raise STTError(f"{reason}; reconnecting failed after {self._attempts} attempts ({last})")

    async def _replay(self, socket: AsyncV1SocketClient) -> int:
        """Send the unconfirmed audio, then a Finalize asked for meanwhile; returns the bytes replayed."""
        self._socket_at = self._unconfirmed_at
        sent = 0
        # send_audio keeps appending while we await, so send until caught up. The caller then makes the
        # socket live with no await in between: no frame is lost or sent out of order. Nothing trims the
        # front meanwhile (the cap only applies while live, and finals arrive on this task).
        while sent < len(self._unconfirmed):
            chunk = bytes(self._unconfirmed[sent : sent + REPLAY_CHUNK_BYTES])
            await socket.send_media(chunk)
            sent += len(chunk)
        if self._finalize_pending:
            self._finalize_pending = False
            await socket.send_finalize()
        return sent

    async def _close_stack(self, stack: AsyncExitStack | None = None) -> None:
        if stack is None:
            stack, self._stack = self._stack, None
        if stack is None:
            return
        try:
            await stack.aclose()
        except Exception as exc:  # teardown of an already-dead socket: nothing left to save
            log.debug("deepgram stt close failed: %s", type(exc).__name__)

    async def _send(self, send: Any, *args: Any) -> None:
        try:
            await send(*args)
        except ConnectionClosed:
            # The reader sees the same closed socket and reconnects (the unconfirmed audio includes this
            # frame): the media path, called for every 20 ms frame, must not blow up the Twilio handler.
            pass

    async def send_audio(self, mulaw: bytes) -> None:
        if not mulaw or self._closing or self._failed:
            return
        self._unconfirmed += mulaw
        socket = self._socket
        if socket is None:
            return  # reconnecting: the replay carries it; the media path must never wait for that
        if (excess := len(self._unconfirmed) - REPLAY_MAX_BYTES) > 0:
            del self._unconfirmed[:excess]
            self._unconfirmed_at += excess
        await self._send(socket.send_media, mulaw)

    async def finalize(self) -> None:
        if self._closing or self._failed:
            return
        if self._socket is None:
            self._finalize_pending = True
            return
        await self._send(self._socket.send_finalize)

    def set_agent_speaking(self, speaking: bool) -> None:
        return None  # Deepgram's interim results cost nothing extra

    async def keepalive(self) -> None:
        if self._socket is not None and not self._closing:  # a new socket needs none
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
        if self._socket is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._socket.send_close_stream()
            await asyncio.wait({self._reader}, timeout=CLOSE_WAIT_S)
        # Otherwise we are between sockets (or gave up): there are no last words to wait for.
        if not self._reader.done():
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self._close_stack()


class DeepgramSTTProvider:
    name = "deepgram"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client = deepgram_client(settings)

    async def open_session(
        self, *, language: str = "en", call_id: str = "", keywords: Sequence[str] = ()
    ) -> DeepgramSTTSession:
        s = self.settings
        # Nova-3 takes key terms; earlier models take keywords with a boost ("Orbit CRM:2").
        nova3 = s.deepgram_stt_model.startswith("nova-3")
        terms = [k.strip() for k in keywords if k.strip()]
        if not s.deepgram_api_key.get_secret_value():
            raise STTError("deepgram listen: DEEPGRAM_API_KEY is not set")

        async def connect() -> tuple[AsyncExitStack, AsyncV1SocketClient]:
            stack = AsyncExitStack()
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
                    keyterm=terms if nova3 and terms else None,
                    keywords=[f"{t}:{KEYWORD_BOOST}" for t in terms] if terms and not nova3 else None,
                )
            )
            return stack, socket

        try:
            stack, socket = await connect()
        except Exception as exc:
            raise STTError(describe_failure(exc, "listen")) from exc
        return DeepgramSTTSession(connect, stack, socket, call_id)

    async def aclose(self) -> None:
        return None
