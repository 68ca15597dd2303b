"""Security defects of issue 19, each pinned by a test that failed before its fix.

Webhooks fail closed without TWILIO_AUTH_TOKEN, a stream token admits one stream, model output never
has variables filled in, tool headers are masked, /metrics needs the API key, knowledge uploads are
capped and indexed in the background, the URL guard pins the address it checked, and the generated
API key file is private from its first byte.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import stat
from pathlib import Path

import httpx
import pytest
import websockets

from api.auth import KeyRing
from config import Settings
from storage.db import Database
from tests.conftest import LiveServer, make_settings
from tests.test_telephony import conversation, make_agent, start_message, twiml_params
from tools.runner import ToolOutcome

# ---------------------------------------------------------------- the generated API key file


def test_generated_api_key_file_is_created_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mode 600 from creation: not a world-readable file narrowed by a chmod afterwards."""
    settings = make_settings(tmp_path, api_keys="")
    key_file = Path(settings.api_key_file)
    key_file.write_text("old key\n")
    key_file.chmod(0o644)  # a leftover with a wide mode is replaced, not reused
    monkeypatch.setattr(Path, "chmod", lambda *a, **k: None)  # the mode must not depend on a late chmod

    async def first_start() -> None:
        db = Database(settings.database_url)
        try:
            await db.upgrade()
            await KeyRing(settings).load(db)
        finally:
            await db.dispose()

    old_umask = os.umask(0o022)
    try:
        asyncio.run(first_start())
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    assert key.startswith("sk_") and key != "old key"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


# ---------------------------------------------------------------- metrics


@pytest.mark.asyncio
async def test_metrics_need_the_api_key_and_a_get_changes_nothing(app_client: httpx.AsyncClient) -> None:
    for path in ("/metrics", "/metrics/loop-lag"):
        response = await app_client.get(path, headers={"xi-api-key": "wrong"})
        assert response.status_code == 401 and "detail" in response.json(), path
        async with httpx.AsyncClient(transport=app_client._transport, base_url="http://test") as bare:
            response = await bare.get(path)
        assert response.status_code == 401 and "xi-api-key" in response.json()["detail"], path
    assert (await bare_post(app_client, "/metrics/loop-lag/reset")).status_code == 401

    metrics = await app_client.get("/metrics")
    assert metrics.status_code == 200 and "ai_sdr_event_loop_lag_seconds" in metrics.text

    lag = app_client.app.state.runtime.loop_lag  # type: ignore[attr-defined]
    for _ in range(100):
        if len(lag.samples) >= 5:
            break
        await asyncio.sleep(0.02)
    before = (await app_client.get("/metrics/loop-lag")).json()["count"]
    assert before >= 5
    refused = await app_client.get("/metrics/loop-lag", params={"reset": "true"})
    assert refused.status_code == 400 and "POST" in refused.json()["detail"]
    assert len(lag.samples) >= before  # the GET did not clear the window
    reset = await app_client.post("/metrics/loop-lag/reset")
    assert reset.status_code == 200 and reset.json()["count"] >= before
    assert len(lag.samples) < before


async def bare_post(client: httpx.AsyncClient, path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=client._transport, base_url="http://test") as bare:
        return await bare.post(path)


# ---------------------------------------------------------------- Twilio webhooks without a token


@pytest.mark.asyncio
async def test_webhooks_without_a_token_serve_only_loopback(app_client: httpx.AsyncClient) -> None:
    app = app_client.app  # type: ignore[attr-defined]
    assert not app.state.runtime.settings.twilio_auth_token.get_secret_value()
    form = {"CallSid": "CA" + "c" * 32, "From": "+15550001111", "To": "+15550100001"}
    status = {"CallSid": "CA" + "c" * 32, "CallStatus": "failed"}

    def from_address(host: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(host, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://test")

    for host in ("203.0.113.9", "10.0.0.5", "2001:db8::1", "not-an-address"):
        async with from_address(host) as remote:
            for path, data in (("/twiml/voice", form), ("/twiml/status", status)):
                response = await remote.post(path, data=data)
                assert response.status_code == 403, (host, path, response.text)
                assert "TWILIO_AUTH_TOKEN" in response.json()["detail"]
    for host in ("127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"):
        async with from_address(host) as local:
            voice = await local.post("/twiml/voice", data=form)
            assert voice.status_code == 200 and "<Response>" in voice.text, host  # no agent: an apology
            assert (await local.post("/twiml/status", data=status)).status_code == 404, host  # unknown call
            # An RFC 7239 Forwarded header (uvicorn reads only X-Forwarded-For) names an origin no one vouches for.
            relayed = await local.post("/twiml/voice", data=form, headers={"Forwarded": "for=198.51.100.7"})
            assert relayed.status_code == 403, host
    for proxy_host in ("127.0.0.1", "::1"):  # FORWARDED_ALLOW_IPS' default: the proxies on this machine
        async with from_address(proxy_host) as proxy:
            outside = await proxy.post("/twiml/voice", data=form, headers={"X-Forwarded-For": "198.51.100.7"})
            assert outside.status_code == 403, proxy_host


# ---------------------------------------------------------------- stream tokens admit one stream


async def _events(server: LiveServer, conversation_id: str, event_type: str) -> int:
    from sqlalchemy import func, select

    from models import WebhookEvent

    async with server.runtime.db.session() as session:
        return await session.scalar(
            select(func.count())
            .select_from(WebhookEvent)
            .where(WebhookEvent.conversation_id == conversation_id, WebhookEvent.type == event_type)
        )


async def _stream(url: str, call_sid: str, params: dict[str, str], frames: int) -> tuple[int, int | None]:
    """Open a Media Stream, send ``frames`` of silence, hang up; (media messages received, close code)."""
    received, code = 0, None
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(start_message(call_sid, params))
        try:
            for _ in range(frames):
                payload = base64.b64encode(b"\xff" * 160).decode()
                await ws.send(json.dumps({"event": "media", "media": {"payload": payload}}))
                await asyncio.sleep(0.02)
            while received < 20:
                message = json.loads(await asyncio.wait_for(ws.recv(), 3))
                received += message.get("event") == "media"
            await ws.send(json.dumps({"event": "stop", "stop": {"callSid": call_sid}}))
            await asyncio.wait_for(ws.recv(), 3)
        except websockets.ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd is not None else None
        except TimeoutError:
            pass
    return received, code


@pytest.mark.asyncio
async def test_a_stream_token_admits_one_stream_and_an_ended_call_stays_ended(tmp_path: Path) -> None:
    async with LiveServer(make_settings(tmp_path)) as server, server.client() as client:
        await make_agent(client, system_prompt="Hello.")
        hook = await client.post("/v1/convai/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": []})
        assert hook.status_code == 201, hook.text
        call_sid = "CA" + "d" * 32
        url, params = await twiml_params(client, call_sid)
        conversation_id = params["conversation_id"]

        received, _ = await _stream(url, call_sid, params, frames=10)
        assert received >= 20  # the greeting was played: the first stream is served
        first = await conversation(client, conversation_id)
        for _ in range(100):
            if await _events(server, conversation_id, "call.completed"):
                break
            await asyncio.sleep(0.1)

        # The same token again: refused before any audio, the conversation is not reopened.
        received, code = await _stream(url, call_sid, params, frames=10)
        assert (received, code) == (0, 1008)
        # A fresh token for the ended call (the TwiML webhook asked again): refused too.
        _, again = await twiml_params(client, call_sid)
        assert again["conversation_id"] == conversation_id and again["token"] != params["token"]
        received, code = await _stream(url, call_sid, again, frames=10)
        assert (received, code) == (0, 1008)

        await asyncio.sleep(1.0)  # a reopened call would close and run post-call again meanwhile
        assert await _events(server, conversation_id, "call.completed") == 1
        assert await _events(server, conversation_id, "call.started") == 1
        after = (await client.get(f"/v1/convai/conversations/{conversation_id}")).json()
        assert after["transcript"] == first["transcript"] and after["status"] == first["status"]


@pytest.mark.asyncio
async def test_two_instances_racing_with_one_token_admit_one_stream(tmp_path: Path) -> None:
    """The claim is one conditional UPDATE: with two service instances on one database, one wins."""
    from models import Agent, Conversation
    from telephony.stream_auth import admit_stream, make_stream_token

    settings = make_settings(tmp_path)
    instances = [Database(settings.database_url), Database(settings.database_url)]
    try:
        await instances[0].upgrade()
        async with instances[0].session() as session:
            agent = Agent(name="Ava")
            session.add(agent)
            await session.flush()
            session.add(Conversation(id="conv_race", agent_id=agent.id, call_sid="CA" + "e" * 32))
        token = make_stream_token(settings, "CA" + "e" * 32, "conv_race")
        assert await admit_stream(instances[0], settings, token, "CA" + "f" * 32) is None  # another call's
        racers = [admit_stream(db, settings, token, "CA" + "e" * 32) for db in instances for _ in range(4)]
        assert sorted(await asyncio.gather(*racers), key=str) == [None] * 7 + ["conv_race"]
        assert await admit_stream(instances[1], settings, token, "CA" + "e" * 32) is None
    finally:
        for db in instances:
            await db.dispose()


# ---------------------------------------------------------------- outbound URLs: rebinding, NAT64, 6to4


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254 (cloud metadata)
        ("2002:a00:1::1", False),  # 6to4 of 10.0.0.1
        ("2002:c0a8:101::", False),  # 6to4 of 192.168.1.1
        ("64:ff9b:1::a00:1", False),  # local-use NAT64
        ("::a00:1", False),  # IPv4-compatible 10.0.0.1
        ("::ffff:10.0.0.1", False),
        ("64:ff9b::5db8:d822", True),  # NAT64 of 93.184.216.34
        ("2002:5db8:d822::1", True),  # 6to4 of 93.184.216.34
        ("2606:4700::1111", True),
    ],
)
async def test_nat64_and_6to4_count_as_the_ipv4_inside(address: str, public: bool) -> None:
    from core.net_guard import UnsafeURLError, ensure_public_url

    if public:
        await ensure_public_url(f"http://[{address}]/hook", allow_private=False)
    else:
        with pytest.raises(UnsafeURLError):
            await ensure_public_url(f"http://[{address}]/hook", allow_private=False)


class Listener:
    """An HTTP endpoint on 127.0.0.1 that records every request it gets."""

    def __init__(self) -> None:
        from aiohttp import web

        self.hits: list[dict[str, str]] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._hit)
        self.port = 0

    async def _hit(self, request):  # type: ignore[no-untyped-def]
        from aiohttp import web

        self.hits.append({"path": request.path, "host": request.headers.get("Host", "")})
        return web.json_response({"ok": True})

    async def __aenter__(self) -> Listener:
        from aiohttp import web

        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


async def _run_webhook_tool(settings: Settings, url: str) -> ToolOutcome:
    """Run a webhook tool at ``url`` the way a call does (check, then request), in a real app."""
    from sqlalchemy import select
    from sqlalchemy.orm import selectinload

    from main import create_app
    from models import Agent, AgentTool, Conversation
    from providers.base import ToolCall
    from tools.runner import ToolContext

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        runtime = app.state.runtime
        async with runtime.db.session() as session:
            agent = Agent(name="Ava")
            session.add(agent)
            await session.flush()
            session.add(AgentTool(agent_id=agent.id, name="lookup", kind="webhook", config={"url": url}))
            conversation = Conversation(agent_id=agent.id, call_sid="CA" + "1" * 32)
            session.add(conversation)
            await session.flush()
            loaded = await session.scalar(
                select(Agent).where(Agent.id == agent.id).options(selectinload(Agent.tools))
            )
        ctx = ToolContext(conversation.id, "CA" + "1" * 32, "+15550001111", "+15550100000")
        return await runtime.tool_runner.execute(loaded, ToolCall("lookup", {}, id="c1"), ctx)


@pytest.mark.asyncio
async def test_a_name_that_rebinds_to_loopback_after_the_check_is_not_reached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS answers 93.184.216.34 to the check and 127.0.0.1 afterwards: nothing reaches 127.0.0.1."""
    import socket

    real_getaddrinfo = socket.getaddrinfo
    answers: list[str] = []

    def rebinding_dns(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        name = host.decode() if isinstance(host, bytes) else host
        if name != "rebind.test":
            return real_getaddrinfo(host, port, *args, **kwargs)
        answers.append("93.184.216.34" if not answers else "127.0.0.1")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[-1], int(port or 80)))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_dns)
    async with Listener() as listener:
        settings = make_settings(tmp_path, webhook_allow_private=False)
        outcome = await _run_webhook_tool(settings, f"http://rebind.test:{listener.port}/lookup")
        assert answers[:2] == ["93.184.216.34", "127.0.0.1"]  # the check saw a public address
        assert listener.hits == []
        assert not outcome.success and outcome.error is not None and outcome.error.startswith("refused")


@pytest.mark.asyncio
async def test_the_checked_address_is_the_one_connected_to_with_the_names_host_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection goes to the address the guard resolved and checked (here: 127.0.0.1, which this
    test lets pass as public); the request still names the host, so Host and TLS SNI are the name's."""
    import core.net_guard as net_guard

    resolved: list[str] = []

    async def fake_dns(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["127.0.0.1"] if host == "crm.example" else [host]

    monkeypatch.setattr(net_guard, "resolve", fake_dns)
    monkeypatch.setattr(net_guard, "_is_public", lambda address: address == "127.0.0.1")
    async with Listener() as listener:
        settings = make_settings(tmp_path, webhook_allow_private=False)
        outcome = await _run_webhook_tool(settings, f"http://crm.example:{listener.port}/lookup")
    assert outcome.success, outcome.error
    assert listener.hits == [{"path": "/lookup", "host": f"crm.example:{listener.port}"}]
    assert resolved.count("crm.example") == 2  # the early check and the connect, which used its own answer


# ---------------------------------------------------------------- knowledge uploads: caps, background indexing


async def _kb_client(tmp_path: Path, **overrides: object):  # type: ignore[no-untyped-def]
    from main import create_app
    from tests.conftest import API_KEY

    app = create_app(make_settings(tmp_path, **overrides))
    return app, lambda: httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", headers={"xi-api-key": API_KEY}
    )


@pytest.mark.asyncio
async def test_knowledge_text_and_pdf_pages_are_capped(tmp_path: Path) -> None:
    from pypdf import PdfWriter

    from tests.test_rag import make_pdf

    app, client_for = await _kb_client(tmp_path, knowledge_max_text_bytes=1000, knowledge_max_pdf_pages=3)
    async with app.router.lifespan_context(app), client_for() as client:
        agent_id = (await client.post("/v1/convai/agents", json={"name": "KB"})).json()["agent_id"]
        base = f"/v1/convai/agents/{agent_id}/knowledge"

        def four_pages() -> bytes:
            writer, out = PdfWriter(), io.BytesIO()
            for _ in range(4):
                writer.add_blank_page(612, 792)
            writer.write(out)
            return out.getvalue()

        attempts = {
            "json text": await client.post(base, json={"name": "Big", "text": "é" * 600}),  # 1200 bytes
            "text file": await client.post(
                f"{base}/upload", files={"file": ("a.txt", b"x " * 700, "text/plain")}
            ),
            "pdf pages": await client.post(
                f"{base}/upload", files={"file": ("p.pdf", four_pages(), "application/pdf")}
            ),
            "pdf text": await client.post(
                f"{base}/upload", files={"file": ("t.pdf", make_pdf("word " * 300), "application/pdf")}
            ),
        }
        for what, response in attempts.items():
            assert response.status_code == 413, (what, response.text)
            detail = response.json()["detail"]
            setting = "KNOWLEDGE_MAX_PDF_PAGES" if what == "pdf pages" else "KNOWLEDGE_MAX_TEXT_BYTES"
            assert setting in detail, (what, detail)
        assert (await client.get(base)).json()["documents"] == []
        small = await client.post(base, json={"name": "Small", "text": "é" * 400})  # 800 bytes: fits
        assert small.status_code == 201


class FakeEmbedder:
    """Stands in for MiniLM: records each call's size and thread, takes 50 ms, can be held or fail."""

    def __init__(self) -> None:
        import threading

        self.calls: list[tuple[int, str, float, float]] = []  # (texts, thread, start, end)
        self.gate = threading.Event()
        self.fail = False

    def __call__(self, texts: list[str]):  # type: ignore[no-untyped-def]
        import threading
        import time

        import numpy as np

        self.gate.wait(30)
        started = time.perf_counter()
        if self.fail:
            raise RuntimeError("model exploded at /secret/path")
        time.sleep(0.05)
        vectors = np.random.default_rng(len(self.calls)).normal(size=(len(texts), 384)).astype("float32")
        self.calls.append((len(texts), threading.current_thread().name, started, time.perf_counter()))
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


LONG_DOC = "\n\n".join(
    f"Paragraph {i}: " + "Orbit CRM keeps every deal in one place. " * 6 for i in range(30)
)


@pytest.mark.asyncio
async def test_knowledge_is_indexed_in_the_background_in_small_batches(tmp_path: Path) -> None:
    from knowledge.store import chunk_text

    app, client_for = await _kb_client(tmp_path, knowledge_index_batch=4)
    async with app.router.lifespan_context(app), client_for() as client:
        fake = FakeEmbedder()
        store = app.state.runtime.knowledge
        store.embedder.embed_sync = fake  # type: ignore[method-assign]
        agent_id = (await client.post("/v1/convai/agents", json={"name": "KB"})).json()["agent_id"]
        base = f"/v1/convai/agents/{agent_id}/knowledge"

        # The embedder is held: the request still answers at once, with the document pending.
        created = await asyncio.wait_for(client.post(base, json={"name": "Playbook", "text": LONG_DOC}), 5)
        assert created.status_code == 201 and created.json()["status"] == "pending", created.text
        url = f"{base}/{created.json()['id']}"
        assert (await client.get(url)).json()["status"] in ("pending", "indexing")

        store._live_calls = lambda: 1  # a call is live: the indexer leaves at least half of its core
        fake.gate.set()
        for _ in range(300):
            body = (await client.get(url)).json()
            if body["status"] not in ("pending", "indexing"):
                break
            await asyncio.sleep(0.05)
        chunks = chunk_text(LONG_DOC)
        assert body["status"] == "ready" and body["chunk_count"] == len(chunks) > 8, body
        assert sum(n for n, *_ in fake.calls) == len(chunks)
        assert all(n <= 4 for n, *_ in fake.calls)  # small batches
        assert {thread for _, thread, *_ in fake.calls} == {fake.calls[0][1]}  # one worker thread
        assert fake.calls[0][1].startswith("embed")  # the embedder's own thread, not the event loop
        for (_, _, start, end), (_, _, next_start, _) in zip(fake.calls, fake.calls[1:], strict=False):
            assert next_start - end >= 0.8 * (end - start)  # paused as long as the batch took
        listed = (await client.get(base)).json()["documents"]
        assert [(d["status"], d["error"]) for d in listed] == [("ready", None)]

        # A failure is a status with a safe reason, not a 500 and not a stack trace.
        fake.fail = True
        broken = await client.post(base, json={"name": "Broken", "text": LONG_DOC})
        assert broken.status_code == 201
        for _ in range(200):
            body = (await client.get(f"{base}/{broken.json()['id']}")).json()
            if body["status"] not in ("pending", "indexing"):
                break
            await asyncio.sleep(0.05)
        assert body["status"] == "failed" and body["error"] == "indexing failed (RuntimeError)"


# ---------------------------------------------------------------- the image


def test_the_image_keeps_secrets_and_state_out_and_runs_unprivileged() -> None:
    from tests.conftest import ROOT

    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip()[:1] not in ("", "#")
    }
    # `**/`: a pattern matches from the context root only, and deploy/.env is where the compose guide puts
    # the secrets. scripts/container_check.sh builds with these rules and looks inside the image.
    for pattern in (
        "**/.env",
        "**/.api_key",
        "**/*.db",
        "**/*.db-wal",
        "**/recordings",
        "**/chroma_db",
        "**/.venv",
        "**/pip.conf",
        "bench",
    ):
        assert pattern in ignored, pattern
    assert "!.env.example" in ignored  # the documented defaults may go in; the real .env may not
    instructions = [
        line.split(None, 1) for line in (ROOT / "Dockerfile").read_text().splitlines() if line.strip()
    ]
    users = [rest.strip() for word, *rest_list in instructions if word == "USER" for rest in rest_list]
    assert users and users[-1].split(":")[0] not in ("root", "0")
