"""A local stand-in for Deepgram's streaming APIs that speaks their wire protocol (tests only).

``/v1/listen``: mu-law audio in, real-shaped ``SpeechStarted`` / ``Results`` / ``UtteranceEnd`` /
``Metadata`` JSON out. An energy segmenter (20 ms frames, like ``providers.instant.EchoSTTSession``)
finds utterances in the audio it is actually sent; the words are scripted (one string per utterance,
in order across connections, so a reconnected client hears the same conversation), the timings come from
the audio. Endpointing and utterance-end follow the query parameters. ``drop_after_bytes = N`` makes the
next listen connection fail like a Deepgram-side error (close code 1011) once it has received N audio bytes.

``/v1/speak``: ``Speak`` text in; on ``Flush`` a 400 Hz tone (``MS_PER_CHAR`` per character) streams
back as binary mu-law in ``chunk_bytes`` pieces, then ``Flushed``. ``Clear`` stops it (``Cleared``).
Faults: ``speak_reject_next = N`` answers the next N speak handshakes HTTP 500; ``speak_fail_text`` /
``speak_fail_times`` cut the socket (close code 1011, no audio) on a ``Speak`` containing that text,
that many times.

Both check ``Authorization: Token <key>`` (HTTP 401 otherwise) and record what they got.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from providers.base import FRAME_BYTES, FRAME_MS
from providers.instant import SPEECH_ENERGY, TONE_FRAME
from speech.audio import frame_energy

MS_PER_CHAR = 60
ONSET_FRAMES = 3  # consecutive voiced frames before SpeechStarted (60 ms)
INTERIM_EVERY_FRAMES = 25  # an interim Results every 500 ms of speech
CONFIDENCE = 0.98
MODEL_UUID = "40bd3654-e622-47c4-a111-63a61b23bfe8"


@dataclass
class ListenRecord:
    params: dict[str, str]
    query: list[tuple[str, str]] = field(default_factory=list)  # as sent: a key may repeat (keywords)
    audio_bytes: int = 0
    audio: bytearray = field(default_factory=bytearray)  # every audio byte received, in order
    controls: list[str] = field(default_factory=list)  # KeepAlive / Finalize / CloseStream, in order
    sent: list[dict[str, Any]] = field(default_factory=list)  # every JSON message sent back
    closed: bool = False
    dropped: bool = False  # the stand-in cut this connection (drop_after_bytes)


@dataclass
class SpeakRecord:
    params: dict[str, str]
    texts: list[str] = field(default_factory=list)
    controls: list[str] = field(default_factory=list)  # Flush / Clear / Close, in order
    audio_bytes_sent: int = 0
    cleared: bool = False
    closed: bool = False


class DeepgramStandIn:
    """``async with DeepgramStandIn(key, transcripts=[...]) as dg:`` -> ``dg.url`` is ws://127.0.0.1:PORT."""

    def __init__(
        self,
        api_key: str,
        transcripts: list[str] | None = None,
        *,
        chunk_bytes: int = FRAME_BYTES * 6,
        chunk_delay_s: float = 0.0,
    ) -> None:
        assert chunk_bytes % FRAME_BYTES == 0
        self.api_key = api_key
        self.transcripts = transcripts or ["hello"]
        self.chunk_bytes = chunk_bytes
        self.chunk_delay_s = chunk_delay_s  # pause between audio chunks (Aura runs faster than real time)
        self.listens: list[ListenRecord] = []
        self.speaks: list[SpeakRecord] = []
        self.rejected = 0
        self.utterances = 0  # finalised so far, on any listen connection: indexes ``transcripts``
        # Cut the next listen connection once it has received this many audio bytes (then reset to None).
        self.drop_after_bytes: int | None = None
        self.speak_reject_next = 0  # answer this many of the next speak handshakes HTTP 500
        self.speak_fail_text: str | None = None  # a Speak containing this gets the socket cut (1011)
        self.speak_fail_times = 0
        self.speak_faults = 0  # speak connections failed on purpose (either way)
        self.url = ""
        self._server: Server | None = None

    async def __aenter__(self) -> DeepgramStandIn:
        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=self._authorize)
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def connections(self) -> int:
        """Listen connections accepted so far (a reconnect makes a second one)."""
        return len(self.listens)

    @staticmethod
    def expected_tts_bytes(text: str) -> int:
        return math.ceil(len(text) * MS_PER_CHAR / FRAME_MS) * FRAME_BYTES

    # ------------------------------------------------------------ handshake

    def _authorize(self, connection: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path not in ("/v1/listen", "/v1/speak"):
            return connection.respond(HTTPStatus.NOT_FOUND, "Not found\n")
        if request.headers.get("Authorization") != f"Token {self.api_key}":
            self.rejected += 1
            return connection.respond(HTTPStatus.UNAUTHORIZED, "Invalid credentials.\n")
        if urlsplit(request.path).path == "/v1/speak" and self.speak_reject_next > 0:
            self.speak_reject_next -= 1
            self.speak_faults += 1
            return connection.respond(HTTPStatus.INTERNAL_SERVER_ERROR, "Internal Server Error\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        url = urlsplit(ws.request.path)
        pairs = parse_qsl(url.query)
        params = dict(pairs)
        if url.path == "/v1/listen":
            stream = ListenStream(ws, params, self)
            stream.record.query = pairs
            await stream.run()
        else:
            await SpeakStream(ws, params, self).run()


class ListenStream:
    """One /v1/listen connection: segment the audio, answer like Deepgram's live API."""

    def __init__(self, ws: ServerConnection, params: dict[str, str], standin: DeepgramStandIn) -> None:
        self.ws = ws
        self.params = params
        self.standin = standin
        self.record = ListenRecord(params)
        standin.listens.append(self.record)
        self.request_id = str(uuid.uuid4())
        self.endpoint_frames = max(1, int(params.get("endpointing", "10")) // FRAME_MS)
        self.utterance_end_frames = int(params.get("utterance_end_ms", "0")) // FRAME_MS
        self.pending = bytearray()
        self.digest = hashlib.sha256()
        self.frames = 0
        self.voiced_run = 0
        self.silent_run = 0
        self.in_speech = False
        self.start_frame = 0
        self.last_voiced_frame = 0
        self.interims = 0
        self.next_interim_frame = 0
        self.awaiting_utterance_end = False
        self.last_word_end = 0.0

    async def run(self) -> None:
        try:
            async for message in self.ws:
                if isinstance(message, bytes):
                    self.record.audio_bytes += len(message)
                    self.record.audio.extend(message)
                    self.digest.update(message)
                    self.pending.extend(message)
                    while len(self.pending) >= FRAME_BYTES:
                        frame = bytes(self.pending[:FRAME_BYTES])
                        del self.pending[:FRAME_BYTES]
                        await self.on_frame(frame)
                    drop_at = self.standin.drop_after_bytes
                    if drop_at is not None and self.record.audio_bytes >= drop_at:
                        self.standin.drop_after_bytes = None  # once: the reconnection is left alone
                        self.record.dropped = True
                        await self.ws.close(1011, "stand-in dropped the connection")
                        break
                    continue
                kind = json.loads(message).get("type", "")
                self.record.controls.append(kind)
                if kind == "Finalize":
                    await self.finish_utterance(speech_final=False, from_finalize=True)
                elif kind == "CloseStream":
                    await self.finish_utterance(speech_final=False)
                    await self.send(self.metadata())
                    await self.ws.close()
                    break
        except ConnectionClosed:
            pass
        finally:
            self.record.closed = True

    async def on_frame(self, frame: bytes) -> None:
        self.frames += 1
        if frame_energy(frame) > SPEECH_ENERGY:
            self.voiced_run += 1
            self.silent_run = 0
            self.last_voiced_frame = self.frames
            if not self.in_speech and self.voiced_run >= ONSET_FRAMES:
                self.in_speech = True
                self.awaiting_utterance_end = False
                self.start_frame = self.frames - self.voiced_run
                self.interims = 0
                self.next_interim_frame = self.frames + INTERIM_EVERY_FRAMES
                if self.params.get("vad_events") == "true":
                    timestamp = self.seconds(self.start_frame)
                    await self.send({"type": "SpeechStarted", "channel": [0], "timestamp": timestamp})
            elif self.in_speech and self.frames >= self.next_interim_frame:
                self.next_interim_frame += INTERIM_EVERY_FRAMES
                if self.params.get("interim_results") == "true":
                    self.interims += 1
                    words = self.script().split()[: self.interims]
                    await self.send(self.results(" ".join(words), is_final=False, speech_final=False))
            return
        self.silent_run += 1
        if not self.in_speech:
            self.voiced_run = 0
        if self.in_speech and self.silent_run >= self.endpoint_frames:
            await self.finish_utterance(speech_final=True)
        gap_done = self.utterance_end_frames and self.silent_run >= self.utterance_end_frames
        if self.awaiting_utterance_end and gap_done:
            self.awaiting_utterance_end = False
            await self.send({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": self.last_word_end})

    async def finish_utterance(self, *, speech_final: bool, from_finalize: bool = False) -> None:
        if not self.in_speech:
            if from_finalize:  # Deepgram still answers a Finalize with an (empty) final result
                await self.send(self.results("", is_final=True, speech_final=False, from_finalize=True))
            return
        text = self.script()
        self.in_speech = False
        self.voiced_run = 0
        self.standin.utterances += 1
        self.awaiting_utterance_end = True
        await self.send(
            self.results(text, is_final=True, speech_final=speech_final, from_finalize=from_finalize)
        )

    # ------------------------------------------------------------ message shapes

    def script(self) -> str:
        scripts = self.standin.transcripts
        return scripts[min(self.standin.utterances, len(scripts) - 1)]

    def seconds(self, frame: int) -> float:
        return round(frame * FRAME_MS / 1000, 3)

    def model_info(self) -> dict[str, str]:
        return {"name": self.params.get("model", ""), "version": "stand-in", "arch": "stand-in"}

    def results(
        self, text: str, *, is_final: bool, speech_final: bool, from_finalize: bool = False
    ) -> dict[str, Any]:
        start, end = self.seconds(self.start_frame), self.seconds(self.last_voiced_frame)
        tokens = text.split()
        step = (end - start) / max(1, len(tokens))
        words = [
            {
                "word": token.strip(".,?!").lower(),
                "start": round(start + i * step, 3),
                "end": round(start + (i + 1) * step, 3),
                "confidence": CONFIDENCE,
                "punctuated_word": token,
            }
            for i, token in enumerate(tokens)
        ]
        if words and is_final:
            self.last_word_end = words[-1]["end"]
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(self.seconds(self.frames) - start, 3),
            "start": start,
            "is_final": is_final,
            "speech_final": speech_final,
            "channel": {
                "alternatives": [
                    {"transcript": text, "confidence": CONFIDENCE if text else 0.0, "words": words}
                ]
            },
            "metadata": {
                "request_id": self.request_id,
                "model_info": self.model_info(),
                "model_uuid": MODEL_UUID,
            },
            "from_finalize": from_finalize,
        }

    def metadata(self) -> dict[str, Any]:
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.request_id,
            "sha256": self.digest.hexdigest(),
            "created": datetime.now(UTC).isoformat(),
            "duration": self.seconds(self.frames),
            "channels": 1,
            "models": [MODEL_UUID],
            "model_info": {MODEL_UUID: self.model_info()},
        }

    async def send(self, message: dict[str, Any]) -> None:
        self.record.sent.append(message)
        await self.ws.send(json.dumps(message))


class SpeakStream:
    """One /v1/speak connection: Speak buffers text, Flush streams it as tone, Clear cuts it off."""

    def __init__(self, ws: ServerConnection, params: dict[str, str], standin: DeepgramStandIn) -> None:
        self.ws = ws
        self.standin = standin
        self.record = SpeakRecord(params)
        standin.speaks.append(self.record)
        self.buffer: list[str] = []
        self.sequence_id = 0
        self.streaming: asyncio.Task[None] | None = None

    async def run(self) -> None:
        model = self.record.params.get("model", "aura-asteria-en")
        try:
            await self.ws.send(
                json.dumps(
                    {
                        "type": "Metadata",
                        "request_id": str(uuid.uuid4()),
                        "model_name": model,
                        "model_version": "stand-in",
                        "model_uuid": MODEL_UUID,
                    }
                )
            )
            async for message in self.ws:
                if isinstance(message, bytes):
                    continue
                request = json.loads(message)
                kind = request.get("type", "")
                if kind == "Speak":
                    self.record.texts.append(request.get("text", ""))
                    fail = self.standin.speak_fail_text
                    if fail and fail in request.get("text", "") and self.standin.speak_fail_times > 0:
                        self.standin.speak_fail_times -= 1
                        self.standin.speak_faults += 1
                        await self.ws.close(1011, "stand-in failed the sentence")
                        break
                    self.buffer.append(request.get("text", ""))
                    continue
                self.record.controls.append(kind)
                if kind == "Flush":
                    text, self.buffer = "".join(self.buffer), []
                    # Flushes are answered in order: each stream waits for the previous one.
                    self.streaming = asyncio.create_task(self.stream(text, self.sequence_id, self.streaming))
                    self.sequence_id += 1
                elif kind == "Clear":
                    self.buffer = []
                    await self.stop_streaming()
                    self.record.cleared = True
                    await self.ws.send(json.dumps({"type": "Cleared", "sequence_id": self.sequence_id}))
                elif kind == "Close":
                    if self.streaming is not None:
                        await self.streaming
                    await self.ws.close()
                    break
        except ConnectionClosed:
            pass
        finally:
            await self.stop_streaming()
            self.record.closed = True

    async def stream(self, text: str, sequence_id: int, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await previous
        audio = TONE_FRAME * (self.standin.expected_tts_bytes(text) // FRAME_BYTES)
        with contextlib.suppress(ConnectionClosed):
            for start in range(0, len(audio), self.standin.chunk_bytes):
                chunk = audio[start : start + self.standin.chunk_bytes]
                await self.ws.send(chunk)
                self.record.audio_bytes_sent += len(chunk)
                await asyncio.sleep(self.standin.chunk_delay_s)
            await self.ws.send(json.dumps({"type": "Flushed", "sequence_id": sequence_id}))

    async def stop_streaming(self) -> None:
        if self.streaming is not None and not self.streaming.done():
            self.streaming.cancel()
            await asyncio.gather(self.streaming, return_exceptions=True)
        self.streaming = None
