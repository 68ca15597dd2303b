"""Twilio's side of one call for the fault tests: the inbound webhook, then the Media Stream.

Caller audio goes out on one 20 ms clock (speech queued by ``say()``, line silence otherwise); the agent's
audio is timed and its marks echoed on receipt (the server paces frames in real time). A reply is one
run of agent frames: ``wait_reply()`` returns once the agent has been quiet for ``quiet_s`` after one.
Every caller frame sent is kept, so a test can check that the speech-to-text saw all of it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from dataclasses import dataclass, field

import httpx
import websockets

FRAME_BYTES = 160
SILENCE = b"\xff" * FRAME_BYTES


async def open_stream(
    http: httpx.AsyncClient, voice_url: str, call_sid: str, from_number: str, to_number: str
) -> tuple[websockets.ClientConnection, str]:
    """What Twilio does when a call comes in: POST the voice webhook, open the TwiML's Media Stream
    and send ``connected`` and ``start`` (with the TwiML's parameters). Returns the socket and the
    conversation id."""
    twiml = (
        await http.post(voice_url, data={"CallSid": call_sid, "From": from_number, "To": to_number})
    ).text
    return await connect_stream(twiml, call_sid)


async def connect_stream(twiml: str, call_sid: str) -> tuple[websockets.ClientConnection, str]:
    """Open the Media Stream a TwiML answer names, as Twilio does; the socket and the conversation id."""
    url = re.search(r'<Stream url="([^"]+)"', twiml)
    assert url is not None, twiml
    params = dict(re.findall(r'<Parameter name="([^"]+)" value="([^"]*)"', twiml))
    ws = await websockets.connect(url.group(1), max_size=2**20)
    stream_sid = "MZ" + call_sid[2:]
    start = {
        "streamSid": stream_sid,
        "callSid": call_sid,
        "accountSid": "AC1",
        "tracks": ["inbound"],
        "customParameters": params,
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    await ws.send(json.dumps({"event": "start", "streamSid": stream_sid, "start": start}))
    return ws, params["conversation_id"]


@dataclass
class Reply:
    first_frame_at: float
    last_frame_at: float
    frames: int = 0


@dataclass
class PhoneLine:
    base_url: str
    call_sid: str
    to_number: str
    from_number: str = "+15550001111"
    conversation_id: str = ""
    replies: list[Reply] = field(default_factory=list)
    sent: bytearray = field(default_factory=bytearray)  # every caller byte sent, in order
    closed_by_server: asyncio.Event = field(default_factory=asyncio.Event)
    _queue: list[bytes] = field(default_factory=list)
    _ws: websockets.ClientConnection | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _reply_gap_s: float = 0.3  # frames further apart than this start a new reply

    async def start(self, http: httpx.AsyncClient | None, twiml: str | None = None) -> PhoneLine:
        """An inbound call through the voice webhook, or (``twiml``) the stream of an answered call."""
        if twiml is not None:
            self._ws, self.conversation_id = await connect_stream(twiml, self.call_sid)
        else:
            assert http is not None
            url = f"{self.base_url}/twiml/voice"
            self._ws, self.conversation_id = await open_stream(
                http, url, self.call_sid, self.from_number, self.to_number
            )
        self._tasks = [asyncio.create_task(self._send()), asyncio.create_task(self._receive())]
        return self

    def say(self, audio: bytes) -> None:
        padded = audio + SILENCE[: -len(audio) % FRAME_BYTES]
        self._queue.extend(padded[i : i + FRAME_BYTES] for i in range(0, len(padded), FRAME_BYTES))

    @property
    def speaking(self) -> bool:
        return bool(self._queue)

    async def _send(self) -> None:
        assert self._ws is not None
        tick = time.perf_counter()
        try:
            while True:
                frame = self._queue.pop(0) if self._queue else SILENCE
                payload = base64.b64encode(frame).decode()
                await self._ws.send(json.dumps({"event": "media", "media": {"payload": payload}}))
                self.sent.extend(frame)
                tick += 0.02
                await asyncio.sleep(max(0.0, tick - time.perf_counter()))
        except websockets.ConnectionClosed:
            self.closed_by_server.set()

    async def _receive(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                msg = json.loads(raw)
                now = time.perf_counter()
                if msg["event"] == "media":
                    if not self.replies or now - self.replies[-1].last_frame_at > self._reply_gap_s:
                        self.replies.append(Reply(now, now))
                    self.replies[-1].last_frame_at = now
                    self.replies[-1].frames += 1
                elif msg["event"] == "mark":
                    await self._ws.send(json.dumps({"event": "mark", "mark": msg["mark"]}))
        except websockets.ConnectionClosed:
            pass
        self.closed_by_server.set()

    async def wait_reply(self, count: int, *, quiet_s: float = 0.6, timeout: float = 20.0) -> Reply:
        """Until ``count`` replies have been heard, the last one followed by ``quiet_s`` of quiet."""
        deadline = time.perf_counter() + timeout
        while True:
            now = time.perf_counter()
            if len(self.replies) >= count and now - self.replies[-1].last_frame_at >= quiet_s:
                return self.replies[count - 1]
            if now > deadline:
                raise AssertionError(f"heard {len(self.replies)} replies, waited for {count}")
            if self.closed_by_server.is_set():
                raise AssertionError("the server closed the call")
            await asyncio.sleep(0.02)

    async def wait_speech_sent(self) -> None:
        while self._queue:
            await asyncio.sleep(0.02)

    async def hang_up(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ws is None:
            return
        try:
            await self._ws.send(json.dumps({"event": "stop", "stop": {"callSid": self.call_sid}}))
            await self._ws.close()
        except websockets.ConnectionClosed:
            pass
