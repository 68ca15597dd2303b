"""Deepgram Aura text-to-speech over the streaming speak WebSocket (``/v1/speak``), via ``deepgram-sdk``.

Per ``synthesize`` call: open a socket asking for 8 kHz mu-law (what Twilio plays: no resampling),
send ``Speak`` + ``Flush``, yield the binary audio frames as they arrive until ``Flushed``, then
``Close``. If the caller stops iterating early (barge-in), ``Clear`` tells Deepgram to drop the rest.

One socket per sentence is deliberately simple: nothing from an abandoned sentence can leak into the
next one, and there's no Flushed/sentence bookkeeping. The price is a WebSocket (and TLS) handshake
before each sentence's first audio, roughly one to two round trips to api.deepgram.com (~50-150 ms).
A per-call persistent socket (Speak+Flush per sentence, Clear on barge-in, discard until Cleared)
would save that on every sentence after the first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from deepgram.speak.v1.socket_client import AsyncV1SocketClient
from deepgram.speak.v1.types import SpeakV1Text
from websockets.exceptions import ConnectionClosed

from config import Settings
from providers.base import SAMPLE_RATE, TTSError
from providers.deepgram_stt import deepgram_client, describe_failure

log = logging.getLogger(__name__)

# Bound on stopping an abandoned sentence (Clear -> Cleared) before the socket is closed anyway.
CLEAR_TIMEOUT_S = 1.0


def message_type(message: object) -> str:
    """The ``type`` of a server message. Not ``isinstance``: the SDK parses ``Cleared`` into a
    ``SpeakV1Flushed`` (the two share one shape), so only the type field tells them apart."""
    if isinstance(message, dict):  # the SDK hands unknown message types back as plain dicts
        return str(message.get("type", ""))
    return str(getattr(message, "type", ""))


class DeepgramTTSProvider:
    name = "deepgram"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client = deepgram_client(settings)

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[bytes]:
        """8 kHz mu-law audio of ``text`` in the chunks Deepgram sends; ``voice`` is an Aura model name."""
        if not text.strip():
            return
        if not self.settings.deepgram_api_key.get_secret_value():
            raise TTSError("deepgram speak: DEEPGRAM_API_KEY is not set")
        stack = contextlib.AsyncExitStack()
        try:
            socket = await stack.enter_async_context(
                self._client.speak.v1.connect(
                    model=voice or self.settings.deepgram_voice, encoding="mulaw", sample_rate=SAMPLE_RATE
                )
            )
        except Exception as exc:
            raise TTSError(describe_failure(exc, "speak")) from exc
        flushed = False
        try:
            try:
                await socket.send_text(SpeakV1Text(text=text))
                await socket.send_flush()
                async for message in socket:
                    if isinstance(message, bytes):
                        if message:
                            yield message
                    elif message_type(message) == "Flushed":
                        flushed = True
                        break
                    elif message_type(message) == "Warning":
                        code = getattr(message, "code", "")
                        log.warning("deepgram tts warning", extra={"fields": {"code": code}})
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                raise TTSError(f"deepgram speak: connection lost (close code {code})") from exc
            if not flushed:
                raise TTSError("deepgram speak: stream ended before Flushed (audio may be cut)")
        finally:
            # Runs on normal end, on error, on aclose() (GeneratorExit) and on task cancellation.
            await self._finish(socket, stack, flushed)

    async def _finish(
        self, socket: AsyncV1SocketClient, stack: contextlib.AsyncExitStack, flushed: bool
    ) -> None:
        try:
            async with asyncio.timeout(CLEAR_TIMEOUT_S):
                if not flushed:
                    # Abandoned mid-sentence: stop Deepgram generating, and read through to its Cleared.
                    # Draining matters: audio already in flight can fill the client's receive queue
                    # (32 messages), and then the close handshake below waits out its 10 s timeout.
                    await socket.send_clear()
                    while message_type(await socket.recv()) != "Cleared":
                        pass
                await socket.send_close()
        except (ConnectionClosed, TimeoutError):
            pass  # already closed, or Deepgram didn't answer Clear in time: closing below is enough
        finally:
            try:
                await stack.aclose()  # the SDK's connect() context: WebSocket close handshake
            except Exception as exc:  # teardown of a dead socket: nothing left to save
                log.debug("deepgram tts close failed: %s", type(exc).__name__)

    async def aclose(self) -> None:
        return None
