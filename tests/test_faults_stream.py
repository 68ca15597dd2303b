"""Fault suite, bad input on the Media Streams socket.

While a real call runs on the service (its own process, instant providers, the simulator's caller
speaking synthesized speech), 10,000 malformed messages arrive on OTHER sockets to /ws/voice/… (from a
process of their own, ``tests/stream_flood.py``): the service neither crashes nor logs a stack trace,
each bad socket is closed, and the live call completes its turns with its response gap (the caller's
last speech frame → the agent's first frame) about what it was without the flood. Then garbage on the
live call's own socket, among its good frames, does not drop that call either.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

import simulator.caller
from simulator.caller import CallResult, SimulatedCaller, Utterance, frames_of
from tests.conftest import QUICK_ECHO_VOICE, ROOT
from tests.fault_calls import NUMBER, make_agent
from tests.service_process import ServiceProcess, service_env

FLOOD_MESSAGES = 10_000
FLOOD_SECONDS = 8.0
TURNS = 2


@pytest.fixture(scope="module")
def hello() -> list[bytes]:
    from simulator.speech import synthesize_caller

    return frames_of(synthesize_caller("Hi, about the demo."))


async def _call(base_url: str, call_sid: str, hello: list[bytes]) -> CallResult:
    caller = SimulatedCaller(base_url, call_sid, NUMBER, [Utterance(hello) for _ in range(TURNS)])
    async with httpx.AsyncClient() as http:
        return await caller.run(http)


async def _turns(client: httpx.AsyncClient, conversation_id: str) -> dict[str, Any]:
    for _ in range(100):
        body = (await client.get(f"/v1/convai/conversations/{conversation_id}")).json()
        if body.get("call_state") == "ENDED":
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"conversation not closed: {body}")


def _completed(result: CallResult, body: dict[str, Any]) -> None:
    assert result.error is None, result.error
    assert len(result.voice_to_voice_s) == TURNS, result
    roles = [(t["role"], t["kind"]) for t in body["transcript"]]
    assert roles == [("agent", "greeting")] + [("user", "speech"), ("agent", "speech")] * TURNS, roles
    assert body["end_reason"] == "caller_hung_up" and body["status"] == "completed", body


GARBAGE: list[str | bytes] = [
    "{not json",
    b"\x00binary\xff",
    '{"event": "telemetry"}',
    '{"event": "media", "media": {"payload": "***"}}',
    '{"event": "media", "media": {"payload": 7}}',
    '{"event": "media", "media": {"payload": "' + "A" * 400_000 + '"}}',
    '{"event": "start", "streamSid": "MZx", "start": {"customParameters": {"token": "forged"}}}',
    '{"event": "dtmf", "dtmf": {"digit": "Z"}}',
    '{"event": "mark", "mark": "m"}',
    '{"event": "media", "sequenceNumber": 1e400, "media": {"payload": "/w=="}}',
]


class _GarblingSocket:
    """The caller's socket, with one garbage message before every 25th good one."""

    def __init__(self, ws: websockets.ClientConnection, sent: list[int]) -> None:
        self._ws, self._sent, self._n = ws, sent, 0

    async def send(self, message: str | bytes) -> None:
        self._n += 1
        if self._n > 2 and self._n % 25 == 0:  # after connected + start
            await self._ws.send(GARBAGE[self._sent[0] % len(GARBAGE)])
            self._sent[0] += 1
        await self._ws.send(message)

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self._ws.__aiter__()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)


@pytest.mark.asyncio
async def test_malformed_media_streams_traffic_does_not_disturb_a_live_call(
    tmp_path: Path, hello: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = service_env(tmp_path, log_level="INFO", **QUICK_ECHO_VOICE)
    async with ServiceProcess(tmp_path, env) as service, service.client() as client:
        await make_agent(client)
        ws_base = "ws" + service.base_url[len("http") :]

        quiet_sid = "CA" + "1" * 32
        quiet = await _call(service.base_url, quiet_sid, hello)
        _completed(quiet, await _turns(client, quiet.conversation_id))

        flood_sid = "CA" + "2" * 32
        flood = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.stream_flood",
            ws_base,
            flood_sid,
            str(FLOOD_MESSAGES),
            str(FLOOD_SECONDS),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            await asyncio.sleep(1.0)  # the flood is under way before the call starts
            flooded = await _call(service.base_url, flood_sid, hello)
            out, _ = await asyncio.wait_for(flood.communicate(), 120)
        finally:
            with contextlib.suppress(ProcessLookupError):
                flood.kill()
        stats = json.loads(out.decode().strip().splitlines()[-1])
        flooded_body = await _turns(client, flooded.conversation_id)
        _completed(flooded, flooded_body)
        assert stats["sent"] == FLOOD_MESSAGES, stats
        assert stats["seconds"] > 5.0, stats  # the flood overlapped the call
        # A malformed call SID is refused before the upgrade (403); nothing else is refused.
        refused = {k for k in stats["closes"] if k.startswith("refused")}
        assert refused == {"refused InvalidStatus 403"}, stats
        assert (await client.get("/healthz")).status_code == 200

        # Garbage on the live call's own socket: each bad message is counted and skipped.
        garbage_sent = [0]
        real_connect = websockets.connect

        @contextlib.asynccontextmanager
        async def garbling_connect(*args: Any, **kwargs: Any) -> AsyncIterator[_GarblingSocket]:
            async with real_connect(*args, **kwargs) as ws:
                yield _GarblingSocket(ws, garbage_sent)

        monkeypatch.setattr(simulator.caller.websockets, "connect", garbling_connect)
        garbled = await _call(service.base_url, "CA" + "3" * 32, hello)
        monkeypatch.undo()
        _completed(garbled, await _turns(client, garbled.conversation_id))
        assert garbage_sent[0] >= 8

        live = (await client.get("/v1/convai/calls/live")).json()
        assert live["count"] == 0  # no call left behind
    log = service.output()

    gap_quiet = statistics.median(quiet.voice_to_voice_s)
    gap_flood = statistics.median(flooded.voice_to_voice_s)
    gap_garbled = statistics.median(garbled.voice_to_voice_s)
    print(
        f"\nstream flood: {stats['sent']} bad messages on {stats['sockets']} sockets in "
        f"{stats['seconds']:.1f} s, closes {stats['closes']}; response gap median quiet/flood/own-garbage "
        f"{gap_quiet * 1000:.0f}/{gap_flood * 1000:.0f}/{gap_garbled * 1000:.0f} ms; "
        f"{garbage_sent[0]} garbage messages on the live socket"
    )
    assert "Traceback" not in log and '"level": "ERROR"' not in log, log[-3000:]
    assert log.count("bad stream message") >= 100  # logged (capped per socket), not silently dropped
    assert gap_flood < 2 * gap_quiet + 0.3, (gap_quiet, gap_flood)
    assert gap_garbled < 2 * gap_quiet + 0.3, (gap_quiet, gap_garbled)


@pytest.mark.asyncio
async def test_a_socket_that_only_sends_garbage_is_closed_before_the_start_timeout(tmp_path: Path) -> None:
    from call.transport import HANDSHAKE_TIMEOUT_S, MAX_BAD_MESSAGES
    from tests.conftest import LiveServer, make_settings

    async with LiveServer(make_settings(tmp_path)) as server:
        started = asyncio.get_running_loop().time()
        async with websockets.connect(f"{server.ws_url}/ws/voice/CA{'9' * 32}") as ws:
            with contextlib.suppress(websockets.ConnectionClosed):
                for _ in range(MAX_BAD_MESSAGES + 50):
                    await ws.send("{not json")
                await ws.wait_closed()
        assert (ws.close_code, ws.close_reason) == (1008, "too many bad messages")
        assert asyncio.get_running_loop().time() - started < HANDSHAKE_TIMEOUT_S / 2
        assert server.runtime.calls.active == 0
