"""The supervisor seat (issue 28): listen to a live call, control it, take it over — over real WebSockets,
on one instance (SQLite) and on two instances of one PostgreSQL database (the call on A, the supervisor
on B)."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websockets

from call.seat import CallFeed
from speech.audio import pcm16_to_mulaw
from tests.conftest import API_KEY, LiveServer, free_port, make_settings
from tests.phone_line import PhoneLine
from tests.test_multi_instance import NUMBER, eventually, make_agent

FRAME = 160


def speech(seconds: float, seed: int) -> bytes:
    """Loud noise shaped like syllables: speech to the echo STT, never repeating."""
    rng = np.random.default_rng(seed)
    n = int(8000 * seconds)
    envelope = 0.6 + 0.4 * np.abs(np.sin(np.arange(n) * np.pi * 4 / 8000))
    return pcm16_to_mulaw((rng.normal(0, 6000, n) * envelope).clip(-32000, 32000).astype(np.int16))


@dataclass
class Caller(PhoneLine):
    """A phone line that also keeps every agent frame it received (to find the supervisor's in it)."""

    heard: list[bytes] = field(default_factory=list)

    async def _receive(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                msg = json.loads(raw)
                if msg["event"] == "media":
                    self.heard.append(base64.b64decode(msg["media"]["payload"]))
                    now = time.perf_counter()
                    if not self.replies or now - self.replies[-1].last_frame_at > self._reply_gap_s:
                        from tests.phone_line import Reply

                        self.replies.append(Reply(now, now))
                    self.replies[-1].last_frame_at = now
                    self.replies[-1].frames += 1
                elif msg["event"] == "mark":
                    await self._ws.send(json.dumps({"event": "mark", "mark": msg["mark"]}))
        except websockets.ConnectionClosed:
            pass
        self.closed_by_server.set()


class Listening:
    """A listen socket's messages, gathered as they come."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self.closed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.messages.append(json.loads(raw))
        except websockets.ConnectionClosed:
            pass
        self.closed.set()

    def media(self, track: str) -> list[bytes]:
        return [
            base64.b64decode(m["payload"])
            for m in self.messages
            if m["event"] == "media" and m["track"] == track
        ]

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["event"] == kind]

    async def until(self, check: Any, timeout: float = 10.0) -> Any:
        async def found() -> Any:
            return check(self)

        return await eventually(found, timeout=timeout)

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self._task, return_exceptions=True)


async def listen(server: LiveServer, cid: str, **kwargs: Any) -> Listening:
    headers = {} if "token" in kwargs else {"xi-api-key": API_KEY}
    query = f"?token={kwargs['token']}" if "token" in kwargs else ""
    url = f"{server.ws_url}/v1/convai/conversations/{cid}/listen{query}"
    return Listening(await websockets.connect(url, additional_headers=headers, max_size=2**20))


async def refused(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    with pytest.raises(websockets.InvalidStatus) as exc:
        await websockets.connect(
            url, additional_headers={"xi-api-key": API_KEY} if headers is None else headers
        )
    response = exc.value.response
    return response.status_code, json.loads(response.body or b"{}")


async def stuck_listener(server: LiveServer, cid: str) -> socket.socket:
    """A listener that opens the socket and never reads from it (a tiny receive window)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", server.port))
    key = base64.b64encode(b"0123456789abcdef").decode()
    request = (
        f"GET /v1/convai/conversations/{cid}/listen HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"xi-api-key: {API_KEY}\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    assert b" 101 " in await loop.sock_recv(sock, 256)
    return sock


async def start_call(server: LiveServer, http: httpx.AsyncClient) -> Caller:
    sid = "CA" + uuid.uuid4().hex
    line = await Caller(server.base_url, sid, NUMBER).start(http)
    await line.wait_reply(1, quiet_s=0.3)  # the greeting
    return line


async def turns(client: httpx.AsyncClient, cid: str) -> list[dict[str, Any]]:
    return (await client.get(f"/v1/convai/conversations/{cid}")).json()["transcript"]


async def control(client: httpx.AsyncClient, cid: str, **body: Any) -> httpx.Response:
    return await client.post(f"/v1/convai/conversations/{cid}/control", json=body)


def frames_of(audio: bytes) -> list[bytes]:
    return [audio[i : i + FRAME] for i in range(0, len(audio) - FRAME + 1, FRAME)]


# ---------------------------------------------------------------- listen


@pytest.mark.asyncio
async def test_listeners_get_both_tracks_and_the_transcript_then_the_end(tmp_path: Path) -> None:
    async with (
        LiveServer(make_settings(tmp_path)) as server,
        server.client() as client,
        httpx.AsyncClient() as http,
    ):
        await make_agent(client)
        line = await start_call(server, http)
        cid = line.conversation_id
        header = await listen(server, cid)
        token = (await client.post(f"/v1/convai/conversations/{cid}/listen-token")).json()
        by_token = await listen(server, cid, token=token["token"])
        words = speech(1.0, seed=1)
        line.say(words)
        await header.until(lambda s: any(e["role"] == "agent" for e in s.events("transcript")))
        await line.wait_reply(2, quiet_s=0.3)
        await asyncio.sleep(0.3)
        await line.hang_up()
        await header.closed.wait()
        await by_token.closed.wait()
        other = await client.post("/v1/convai/conversations/conv_nope/listen-token")
    caller_frames = set(frames_of(words))
    for listening in (header, by_token):
        inbound = listening.media("inbound")
        assert caller_frames <= set(inbound)  # every frame the caller said, as it arrived
        assert set(inbound) - caller_frames <= {b"\xff" * FRAME}  # and the line's silence
        assert len(listening.media("outbound")) >= 20  # the agent's voice: its reply at least
        said = [(e["role"], e["text"], e["final"]) for e in listening.events("transcript")]
        assert ("user", "caller turn 1", False) in said  # interim words as they come, then the final
        assert ("user", "caller turn 1.", True) in said
        assert any(role == "agent" and final and text.startswith("You said") for role, text, final in said)
        assert listening.messages[-1]["event"] == "end"
        assert listening.messages[-1]["reason"] == "caller_hung_up"
    assert [e["stage"] for e in header.events("stage")] == ["DISCOVERY", "ACTIVE"]  # now, then each change
    assert header.ws.close_code == 1000
    assert other.status_code == 404


@pytest.mark.asyncio
async def test_sockets_and_control_refuse_unknown_ended_unauthorized_and_bad_bodies(tmp_path: Path) -> None:
    async with (
        LiveServer(make_settings(tmp_path)) as server,
        server.client() as client,
        httpx.AsyncClient() as http,
    ):
        await make_agent(client)
        line = await start_call(server, http)
        cid = line.conversation_id
        base = f"{server.ws_url}/v1/convai/conversations"
        # bad bodies: 422, saying what is wrong
        for body in (
            {"type": "shout", "text": "hi"},
            {"type": "say"},
            {"type": "say", "text": "   "},
            {"type": "whisper", "text": "x" * 1001},
            {"type": "transfer", "to": "not a number"},
            {"type": "transfer", "to": "+14155550199", "mode": "lukewarm"},
            {"type": "end_call", "extra": 1},
        ):
            r = await control(client, cid, **body)
            assert r.status_code == 422, (body, r.text)
            assert "detail" in r.json() and "Traceback" not in r.text
        assert (await control(client, "conv_unknown", type="release")).status_code == 404
        assert (await refused(f"{base}/conv_unknown/listen"))[0] == 404
        assert (await refused(f"{base}/conv_unknown/takeover"))[0] == 404
        assert (await refused(f"{base}/{cid}/listen", {"xi-api-key": "wrong"}))[0] == 401
        assert (await refused(f"{base}/{cid}/listen?token=forged", {}))[0] == 401
        other_token = (await client.post(f"/v1/convai/conversations/{cid}/listen-token")).json()["token"]
        await line.hang_up()

        async def ended() -> bool:
            return (await client.get(f"/v1/convai/conversations/{cid}")).json()["call_state"] == "ENDED"

        await eventually(ended)
        r = await control(client, cid, type="say", text="Hello?")
        assert r.status_code == 409 and "ended" in r.json()["detail"]
        assert (await refused(f"{base}/{cid}/listen"))[0] == 409
        assert (await refused(f"{base}/{cid}/takeover"))[0] == 409
        # a token names one conversation: never another one's
        line2 = await start_call(server, http)
        code, _ = await refused(f"{base}/{line2.conversation_id}/listen?token={other_token}", {})
        assert code == 401
        await line2.hang_up()


def test_a_listener_that_falls_behind_is_dropped_and_the_call_never_waits() -> None:
    async def run() -> None:
        feed = CallFeed("conv_1", object(), queue_limit=10)
        slow, fast = feed.listen(), feed.listen()
        assert slow is not None and fast is not None
        started = time.perf_counter()
        for n in range(200):
            feed.inbound(bytes([n % 256]) * FRAME)
            if not fast.queue.empty():
                fast.queue.get_nowait()
        assert time.perf_counter() - started < 0.5  # publishing never waits for a listener
        assert slow.dropped and slow not in feed.listeners
        drained = [slow.queue.get_nowait() for _ in range(slow.queue.qsize())]
        assert drained == [None]  # what it had not read is gone with it; its socket closes
        assert not fast.dropped and fast in feed.listeners
        feed.close("caller_hung_up")
        assert json.loads(fast.queue.get_nowait() or "{}") == {"event": "end", "reason": "caller_hung_up"}

    asyncio.run(run())


@pytest.mark.asyncio
async def test_a_slow_listener_socket_is_dropped_while_the_call_goes_on(tmp_path: Path) -> None:
    async with (
        LiveServer(make_settings(tmp_path, seat_listener_queue=20)) as server,
        server.client() as client,
        httpx.AsyncClient() as http,
    ):
        await make_agent(client)
        line = await start_call(server, http)
        cid = line.conversation_id
        stuck = await stuck_listener(server, cid)
        healthy = await listen(server, cid)
        for n in range(6):  # the call goes on: caller turns answered, while the stuck listener reads nothing
            line.say(speech(0.6, seed=10 + n))
            await line.wait_reply(2 + n, quiet_s=0.3, timeout=15)
            feed = server.runtime.seats.feed(cid)
            if feed is not None and feed.dropped:
                break
        assert feed is not None and feed.dropped == 1
        line.say(speech(0.6, seed=99))
        await line.wait_reply(len(line.replies) + 1, quiet_s=0.3)  # still answered after the drop
        assert not line.closed_by_server.is_set()
        stuck.close()
        await line.hang_up()
        await healthy.closed.wait()
    assert healthy.messages[-1]["event"] == "end"  # the healthy one was never dropped


# ---------------------------------------------------------------- control and take-over (one instance)


@pytest.mark.asyncio
async def test_say_whisper_takeover_and_release_on_a_live_call(tmp_path: Path) -> None:
    from tests.ollama_standin import DEFAULT_MODEL, OllamaStandIn

    async with OllamaStandIn() as ollama:
        settings = make_settings(
            tmp_path, llm_provider="ollama", ollama_host=ollama.url, ollama_model=DEFAULT_MODEL
        )
        async with LiveServer(settings) as server, server.client() as client, httpx.AsyncClient() as http:
            await make_agent(client)
            line = await start_call(server, http)
            cid = line.conversation_id
            listening = await listen(server, cid)
            whisper = "Mention the spring discount of twenty percent"
            assert (await control(client, cid, type="whisper", text=whisper)).status_code == 202
            await listening.until(lambda s: s.events("control"))
            line.say(speech(0.8, seed=2))
            await line.wait_reply(2, quiet_s=0.3)
            chats_before_say = len(ollama.chats)
            assert any(whisper in c["messages"][0]["content"] for c in ollama.chats if c.get("messages"))

            # say: heard by the caller next, in the agent's voice
            posted = time.perf_counter()
            r = await control(client, cid, type="say", text="Quick note from my colleague.")
            assert r.status_code == 202 and r.json()["type"] == "say"
            said = await line.wait_reply(3, quiet_s=0.3)
            assert said.first_frame_at - posted < 2.0

            # take-over: the supervisor's audio is what the caller hears; the agent stays quiet
            assert (await control(client, cid, type="takeover")).status_code == 202
            await listening.until(lambda s: any(e["type"] == "takeover" for e in s.events("control")))
            takeover_url = f"{server.ws_url}/v1/convai/conversations/{cid}/takeover"
            supervisor = await websockets.connect(takeover_url, additional_headers={"xi-api-key": API_KEY})
            voice = speech(1.2, seed=3)
            for frame in frames_of(voice + b"\xff" * 8000):  # words, then a second of the supervisor's quiet
                payload = base64.b64encode(frame).decode()
                await supervisor.send(json.dumps({"event": "media", "track": "outbound", "payload": payload}))
                await asyncio.sleep(0.02)
            line.say(speech(0.8, seed=4))  # the caller answers the supervisor
            await line.wait_speech_sent()
            await asyncio.sleep(1.5)
            during = await turns(client, cid)
            chats_during = len(ollama.chats)

            assert (await control(client, cid, type="release")).status_code == 202
            await supervisor.close()
            await listening.until(lambda s: any(e["type"] == "release" for e in s.events("control")))
            replies_at_release = len(line.replies)
            line.say(speech(0.8, seed=5))
            await line.wait_reply(replies_at_release + 1, quiet_s=0.3)
            await asyncio.sleep(0.3)
            after = await turns(client, cid)
            actions = (await client.get(f"/v1/convai/conversations/{cid}/control")).json()["actions"]
            await line.hang_up()
            await listening.closed.wait()

    # whisper: in the prompt of the next reply, never spoken
    replies = [
        c for c in ollama.chats if c.get("messages") and c["messages"][0]["content"].startswith("Hello.")
    ]
    system = replies[0]["messages"][0]["content"]  # the reply to the caller's first turn
    assert whisper in system
    assert all(
        whisper not in t["text"] and "discount" not in t["text"] for t in after if t["role"] == "agent"
    )
    # say: an agent turn of its own, from the supervisor
    say_turn = next(t for t in after if t["kind"] == "supervisor_say")
    assert (say_turn["role"], say_turn["text"], say_turn["source"]) == (
        "agent",
        "Quick note from my colleague.",
        "supervisor",
    )
    # take-over: every supervisor frame reached the caller, in order; no reply was asked of the LLM
    voice_frames = frames_of(voice)
    heard = line.heard
    start = heard.index(voice_frames[0])
    assert heard[start : start + len(voice_frames)] == voice_frames
    assert chats_during == chats_before_say
    assert during[-1]["role"] == "user"  # the caller was still transcribed ...
    supervisor_turns = [t for t in during if t["source"] == "supervisor" and t["kind"] == "supervisor"]
    assert supervisor_turns and supervisor_turns[0]["role"] == "agent"  # ... and so was the supervisor
    assert any(e["role"] == "supervisor" for e in listening.events("transcript"))
    # release: the agent answers again, with the whole call in its history
    resumed = replies[-1]["messages"]
    texts = [m["content"] for m in resumed]
    assert supervisor_turns[0]["text"] in texts and "Quick note from my colleague." in texts
    assert during[-1]["text"] in texts
    assert [a["type"] for a in actions] == ["whisper", "say", "takeover", "release"]
    assert all(a["actor"].startswith("key:") and API_KEY not in a["actor"] for a in actions)
    assert all(a["delivered_at"] is not None for a in actions)


@pytest.mark.asyncio
async def test_transfer_takes_the_transfer_tools_entry_point_with_the_mode(tmp_path: Path) -> None:
    from tests.test_command_channel import ACCOUNT_SID, AUTH_TOKEN, LEAD, signed_post, twilio_settings
    from tests.twilio_standin import TwilioStandIn

    async with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, answer=False) as twilio:
        async with LiveServer(twilio_settings(tmp_path, twilio)) as server, server.client() as client:
            agent = await client.post(
                "/v1/convai/agents",
                json={
                    "name": "Ava",
                    "system_prompt": "Hi.",
                    "first_message": "Hi, Ava here.",
                    "voicemail_detection": False,
                },
            )
            agent_id = agent.json()["agent_id"]
            await client.post("/v1/convai/phone-numbers", json={"phone_number": NUMBER, "agent_id": agent_id})
            placed = (
                await client.post("/v1/convai/outbound", json={"agent_id": agent_id, "to_number": LEAD})
            ).json()
            sid = placed["call_sid"]
            form = {"CallSid": sid, "AccountSid": ACCOUNT_SID, "CallStatus": "in-progress"}
            async with httpx.AsyncClient() as http:
                twiml = await signed_post(http, twilio.calls[sid].params["Url"], form)
                line = await Caller("", sid, LEAD).start(http, twiml=twiml.text)
                await line.wait_reply(1, quiet_s=0.3)
                r = await control(
                    client, placed["conversation_id"], type="transfer", to="+14155550199", mode="cold"
                )
                assert r.status_code == 202

                async def transferred() -> bool:
                    return any("+14155550199" in u.get("Twiml", "") for u in twilio.calls[sid].updates)

                await eventually(transferred)
                await line.hang_up()
            detail = (await client.get(f"/v1/convai/conversations/{placed['conversation_id']}")).json()
    # the transfer_call tool's entry point (ToolRunner.transfer): its record says who asked and the mode
    (transfer,) = detail["transfers"]
    assert (transfer["to"], transfer["mode"], transfer["requested_by"]) == (
        "+14155550199",
        "cold",
        "supervisor",
    )
    assert any(t["text"] == "Sure, let me transfer you now." for t in detail["transcript"])


# ---------------------------------------------------------------- two instances on PostgreSQL


@asynccontextmanager
async def two_instances(tmp_path: Path, url: str) -> Any:
    ports = free_port(), free_port()
    shared = {
        "database_url": url,
        "multi_instance": True,
        "chroma_host": "127.0.0.1",
        "call_command_poll_sec": 30.0,
    }
    async with (
        LiveServer(
            make_settings(
                tmp_path / "a", instance_id="app-a", instance_url=f"http://127.0.0.1:{ports[0]}", **shared
            ),
            port=ports[0],
        ) as a,
        LiveServer(
            make_settings(
                tmp_path / "b", instance_id="app-b", instance_url=f"http://127.0.0.1:{ports[1]}", **shared
            ),
            port=ports[1],
        ) as b,
        a.client() as client_a,
        b.client() as client_b,
    ):
        yield a, b, client_a, client_b


@pytest.mark.asyncio
async def test_the_seat_on_the_instance_without_the_call(tmp_path: Path, postgres: Any) -> None:
    """The call is on A; the supervisor talks to B only: listens (relayed), says, takes over, releases,
    ends the call."""
    url = await postgres.create_database()
    async with two_instances(tmp_path, url) as (a, b, client_a, client_b), httpx.AsyncClient() as http:
        await make_agent(client_a)
        line = await start_call(a, http)
        cid = line.conversation_id

        async def live_on_a() -> bool:
            holder = await b.runtime.live_calls.holder(cid)
            return holder is not None and holder.instance_id == "app-a"

        await eventually(live_on_a)
        token = (await client_b.post(f"/v1/convai/conversations/{cid}/listen-token")).json()["token"]
        listening = await listen(b, cid, token=token)  # through B, relayed from A
        posted = time.perf_counter()
        assert (await control(client_b, cid, type="say", text="Hello from the seat.")).status_code == 202
        said = await line.wait_reply(2, quiet_s=0.3)
        assert said.first_frame_at - posted < 1.5  # LISTEN/NOTIFY, not the 30 s poll
        assert (await control(client_b, cid, type="takeover")).status_code == 202
        await listening.until(lambda s: any(e["type"] == "takeover" for e in s.events("control")))
        supervisor = await websockets.connect(
            f"{b.ws_url}/v1/convai/conversations/{cid}/takeover?token={token}"
        )
        voice = speech(0.6, seed=7)
        for frame in frames_of(voice):
            payload = base64.b64encode(frame).decode()
            await supervisor.send(json.dumps({"event": "media", "track": "outbound", "payload": payload}))
            await asyncio.sleep(0.02)
        words = speech(0.6, seed=8)
        line.say(words)
        await line.wait_speech_sent()
        await listening.until(lambda s: set(frames_of(voice)) <= set(s.media("outbound")))
        await listening.until(lambda s: set(frames_of(words)) <= set(s.media("inbound")))
        assert (await control(client_b, cid, type="release")).status_code == 202
        await supervisor.close()
        # end_call: a polite goodbye heard whole, then the hang-up; the seat's sockets close with the call
        idle_supervisor = await websockets.connect(
            f"{b.ws_url}/v1/convai/conversations/{cid}/takeover?token={token}"
        )
        assert (await control(client_b, cid, type="end_call")).status_code == 202
        await asyncio.wait_for(line.closed_by_server.wait(), 10)
        await asyncio.wait_for(listening.closed.wait(), 10)
        await asyncio.wait_for(idle_supervisor.wait_closed(), 10)
        assert idle_supervisor.close_code == 1000

        async def ended() -> dict[str, Any] | None:
            detail = (await client_b.get(f"/v1/convai/conversations/{cid}")).json()
            return detail if detail["call_state"] == "ENDED" else None

        detail = await eventually(ended)
        actions = (await client_b.get(f"/v1/convai/conversations/{cid}/control")).json()["actions"]
        await line.hang_up()
    voice_frames = frames_of(voice)
    start = line.heard.index(voice_frames[0])
    assert line.heard[start : start + len(voice_frames)] == voice_frames  # B's take-over reached A's caller
    assert listening.messages[-1] == {"event": "end", "reason": "supervisor_ended_call"}
    assert detail["transcript"][-1]["text"] == "Thanks so much for your time today. Goodbye!"
    assert detail["metadata"]["termination_reason"] == "supervisor_ended_call"
    assert [(x["type"], x["delivered_to"]) for x in actions] == [
        ("say", "app-a"),
        ("takeover", "app-a"),
        ("release", "app-a"),
        ("end_call", "app-a"),
    ]


def test_listen_tokens_are_kept_out_of_the_log() -> None:
    """uvicorn logs a WebSocket's path and query at INFO; a token in it is redacted."""
    import logging

    from utils import RedactQueryTokens

    record = logging.LogRecord(
        "uvicorn.error",
        logging.INFO,
        __file__,
        1,
        '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5", "/v1/convai/conversations/conv_1/listen?token=eyJhbGciOi.x.y&z=1"),
        None,
    )
    assert RedactQueryTokens().filter(record)
    assert "eyJ" not in record.getMessage() and "token=[redacted]&z=1" in record.getMessage()
