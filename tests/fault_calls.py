"""Helpers of the fault suite: a raw Media Streams call (webhook, socket, handshake) that a test can hold
open, flood or break, and the caller speech the simulator sends."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
from typing import Any

import httpx
import websockets

_STREAM_URL = re.compile(r'<Stream url="([^"]+)"')
_PARAMETER = re.compile(r'<Parameter name="([^"]+)" value="([^"]*)"')
SILENCE = b"\xff" * 160
NUMBER = "+15550100001"


async def make_agent(client: httpx.AsyncClient, first_message: str = "Hi, this is Ava.") -> str:
    r = await client.post(
        "/v1/convai/agents",
        json={"name": "Ava", "system_prompt": "You are Ava.", "first_message": first_message},
    )
    assert r.status_code == 201, r.text
    agent_id = r.json()["agent_id"]
    r = await client.post("/v1/convai/phone-numbers", json={"phone_number": NUMBER, "agent_id": agent_id})
    assert r.status_code == 201, r.text
    return agent_id


async def inbound_twiml(base_url: str, call_sid: str) -> str:
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{base_url}/twiml/voice", data={"CallSid": call_sid, "From": "+15550001111", "To": NUMBER}
        )
    assert r.status_code == 200, r.text
    return r.text


def stream_of(twiml: str) -> tuple[str, dict[str, str]]:
    match = _STREAM_URL.search(twiml)
    assert match is not None, f"no <Stream> in {twiml}"
    return match.group(1), dict(_PARAMETER.findall(twiml))


def media(payload: bytes, stream_sid: str) -> str:
    return json.dumps(
        {"event": "media", "streamSid": stream_sid, "media": {"payload": base64.b64encode(payload).decode()}}
    )


class HeldCall:
    """One call's Media Stream, held open with line silence (20 ms frames) until ``close()``."""

    def __init__(self, ws_url: str, params: dict[str, str], call_sid: str) -> None:
        self.ws_url, self.params, self.call_sid = ws_url, params, call_sid
        self.stream_sid = "MZ" + call_sid[2:]
        self.ws: websockets.ClientConnection | None = None
        self.frames_received = 0
        self.closed: tuple[int | None, str] | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    async def open(self) -> HeldCall:
        self.ws = await websockets.connect(self.ws_url, max_size=2**20, compression=None)
        await self.ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        start = {"streamSid": self.stream_sid, "callSid": self.call_sid, "customParameters": self.params}
        await self.ws.send(json.dumps({"event": "start", "streamSid": self.stream_sid, "start": start}))
        self._tasks = [asyncio.create_task(self._silence()), asyncio.create_task(self._receive())]
        return self

    async def _silence(self) -> None:
        assert self.ws is not None
        frame = media(SILENCE, self.stream_sid)
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await self.ws.send(frame)
                await asyncio.sleep(0.02)

    async def _receive(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                if isinstance(raw, str) and '"media"' in raw[:40]:
                    self.frames_received += 1
        except websockets.ConnectionClosed:
            pass
        self.closed = (self.ws.close_code, self.ws.close_reason or "")

    async def wait_closed(self, timeout: float) -> tuple[int | None, str]:
        await asyncio.wait_for(asyncio.shield(self._tasks[1]), timeout)
        assert self.closed is not None
        return self.closed

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.ws is not None:
            await self.ws.close()
