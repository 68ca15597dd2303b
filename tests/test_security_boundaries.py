"""Security items 1-4 of issue 25, each pinned by a test that failed before its fix.

Tool schemas never fetch remote ``$ref``s; forwarded client addresses are believed only from the
configured proxies; Twilio webhooks check content type, size and signature before anything else; the
benchmark stand-in providers need ALLOW_BENCH_PROVIDERS.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from fastapi import FastAPI

from config import Settings
from main import create_app
from tests.conftest import API_KEY, make_settings


class CountingServer:
    """A local HTTP server (its own thread, so a blocking fetch from the loop still reaches it) that
    serves a schema at any path and counts every request it gets."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                requests.append(self.path)
                body = json.dumps({"type": "string"}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]

    async def __aenter__(self) -> CountingServer:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self._server.shutdown)
        self._server.server_close()


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test", headers={"xi-api-key": API_KEY}
        ) as client:
            yield app, client


# ---------------------------------------------------------------- 1. tool schemas: no remote $ref


@pytest.mark.asyncio
async def test_tool_schemas_with_remote_refs_are_refused_and_never_fetched(tmp_path: Path) -> None:
    from sqlalchemy import select
    from sqlalchemy.orm import selectinload

    from models import Agent, AgentTool, Conversation
    from providers.base import ToolCall
    from tools.runner import ToolContext

    async with CountingServer() as server, running(make_settings(tmp_path)) as (app, client):
        remote = f"http://127.0.0.1:{server.port}/x"

        def schema(ref: str) -> dict[str, Any]:
            return {"type": "object", "properties": {"account": {"$ref": ref}}, "required": ["account"]}

        agent_id = (await client.post("/v1/convai/agents", json={"name": "Ava"})).json()["agent_id"]
        tools_url = f"/v1/convai/agents/{agent_id}/tools"
        hook = {"url": f"http://127.0.0.1:{server.port}/hook"}

        created = await client.post(
            tools_url, json={"name": "lookup", "parameters": schema(remote), "config": hook}
        )
        assert created.status_code == 422, created.text
        assert remote in created.text and "parameters.properties.account.$ref" in created.text
        nested = {
            "type": "object",
            "properties": {"ids": {"type": "array", "prefixItems": [{"$ref": "#/$defs/id"}]}},
            "$defs": {"id": {"anyOf": [{"type": "string"}, {"$dynamicRef": "other.json#node"}]}},
        }
        deep = await client.post(tools_url, json={"name": "deep", "parameters": nested, "config": hook})
        assert deep.status_code == 422 and "other.json#node" in deep.text, deep.text

        local = {
            "type": "object",
            "properties": {"account": {"$ref": "#/$defs/account"}},
            "$defs": {"account": {"type": "string", "pattern": "^A-"}},
        }
        fine = await client.post(tools_url, json={"name": "lookup", "parameters": local, "config": hook})
        assert fine.status_code == 201, fine.text
        patched = await client.patch(f"{tools_url}/{fine.json()['id']}", json={"parameters": schema(remote)})
        assert patched.status_code == 422 and remote in patched.text
        embedded = await client.post(
            "/v1/convai/agents",
            json={"name": "Bo", "tools": [{"name": "lookup", "parameters": schema(remote), "config": hook}]},
        )
        assert embedded.status_code == 422 and remote in embedded.text

        # A row stored before the check (or written around the API): the call validates without fetching.
        runtime = app.state.runtime
        async with runtime.db.session() as session:
            agent = Agent(name="Legacy")
            session.add(agent)
            await session.flush()
            session.add(
                AgentTool(
                    agent_id=agent.id, name="legacy", kind="webhook", parameters=schema(remote), config=hook
                )
            )
            conversation = Conversation(agent_id=agent.id, call_sid="CA" + "2" * 32)
            session.add(conversation)
            await session.flush()
            loaded = await session.scalar(
                select(Agent).where(Agent.id == agent.id).options(selectinload(Agent.tools))
            )
        ctx = ToolContext(conversation.id, "CA" + "2" * 32, "+15550001111", "+15550100000")
        outcome = await runtime.tool_runner.execute(
            loaded, ToolCall("legacy", {"account": "A-1"}, id="c1"), ctx
        )
        assert not outcome.success and "does not contain" in (outcome.error or "")
        # The local-ref tool still validates its arguments through its own definitions.
        async with runtime.db.session() as session:
            with_local = await session.scalar(
                select(Agent).where(Agent.id == agent_id).options(selectinload(Agent.tools))
            )
        ctx = ToolContext(conversation.id, "CA" + "2" * 32, "+15550001111", "+15550100000")
        wrong = await runtime.tool_runner.execute(
            with_local, ToolCall("lookup", {"account": "B-1"}, id="c2"), ctx
        )
        assert not wrong.success and "invalid arguments (account)" in (wrong.error or "")
        assert server.requests == []  # neither the schema nor the webhook was fetched


# ---------------------------------------------------------------- 2. forwarded addresses: proxies only


@pytest.mark.asyncio
async def test_forwarded_for_is_believed_only_from_the_configured_proxies(tmp_path: Path) -> None:
    """Without TWILIO_AUTH_TOKEN only this machine is served: a header cannot make a caller local."""
    settings = make_settings(tmp_path, forwarded_allow_ips="10.0.0.2")
    form = {"CallSid": "CA" + "c" * 32, "From": "+15550001111", "To": "+15550100001"}
    async with running(settings) as (app, _):

        async def voice_from(peer: str, forwarded_for: str) -> int:
            transport = httpx.ASGITransport(app=app, client=(peer, 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                response = await client.post(
                    "/twiml/voice", data=form, headers={"X-Forwarded-For": forwarded_for}
                )
            return response.status_code

        # A client reaching the port directly names itself local: not believed.
        assert await voice_from("203.0.113.9", "127.0.0.1") == 403
        assert await voice_from("203.0.113.9", "127.0.0.1, 127.0.0.1") == 403
        # The configured proxy names the client it relays: that client is the one checked.
        assert await voice_from("10.0.0.2", "127.0.0.1") == 200  # no agent for the number: an apology
        assert await voice_from("10.0.0.2", "198.51.100.7") == 403
        # A spoofed entry before the one the proxy appended changes nothing.
        assert await voice_from("10.0.0.2", "127.0.0.1, 198.51.100.7") == 403
        # Another host on the proxy's network is not a proxy.
        assert await voice_from("10.0.0.3", "127.0.0.1") == 403


# ---------------------------------------------------------------- 3. Twilio webhooks: verify first

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "twilio-test-token"
WEBHOOKS = ("/twiml/voice", "/twiml/voice_outbound", "/twiml/status", "/twiml/amd")


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def refusals(self, reason: str) -> list[int]:
        """The ``suppressed`` count of each logged refusal for ``reason``."""
        return [
            r.fields["suppressed"]  # type: ignore[attr-defined]
            for r in self.records
            if r.getMessage() == f"twilio webhook refused: {reason}"
        ]


@pytest.mark.asyncio
async def test_twilio_webhooks_check_type_size_and_signature_before_anything_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import func, select
    from twilio.request_validator import RequestValidator

    import api.twilio_webhook as gate
    from models import Conversation
    from tests.test_telephony import NUMBER, make_agent

    now = [1000.0]
    monkeypatch.setattr(gate, "REFUSALS", gate.RefusalLog(every_s=60, clock=lambda: now[0]))
    lines = Lines()
    logging.getLogger("ai_sdr.telephony").addHandler(lines)
    settings = make_settings(tmp_path, twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN)
    try:
        async with running(settings) as (app, api):
            await make_agent(api)
            transport = httpx.ASGITransport(app=app, client=("198.51.100.20", 443))
            twilio = httpx.AsyncClient(transport=transport, base_url="http://test")

            def signed(path: str, params: dict[str, str]) -> dict[str, str]:
                signature = RequestValidator(AUTH_TOKEN).compute_signature(settings.public_url + path, params)
                return {"X-Twilio-Signature": signature}

            async def conversations() -> int:
                async with app.state.runtime.db.session() as session:
                    return await session.scalar(select(func.count()).select_from(Conversation)) or 0

            form = {"CallSid": "CA" + "5" * 32, "From": "+15550001111", "To": NUMBER, "CallStatus": "busy"}
            big = {**form, "Pad": "x" * 70_000}
            encoded_big = urlencode(big).encode()

            async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the cap counts what arrives
                for start in range(0, len(encoded_big), 8192):
                    yield encoded_big[start : start + 8192]

            for path in WEBHOOKS:
                # Signed, but not a form: JSON and multipart are refused before they are read.
                as_json = await twilio.post(path, json=form, headers=signed(path, form))
                assert as_json.status_code == 415, (path, as_json.text)
                assert "application/x-www-form-urlencoded" in as_json.json()["detail"]
                as_multipart = await twilio.post(
                    path, data=form, files={"f": ("a.txt", b"x")}, headers=signed(path, form)
                )
                assert as_multipart.status_code == 415, path
                # Signed, but over 64 KB: declared, or sent without a length.
                declared = await twilio.post(path, data=big, headers=signed(path, big))
                assert declared.status_code == 413 and "65536" in declared.json()["detail"], path
                streamed = await twilio.post(
                    path,
                    content=chunks(),
                    headers={"content-type": "application/x-www-form-urlencoded", **signed(path, big)},
                )
                assert streamed.status_code == 413, path
                # A bad signature: refused before any field is looked at (a malformed CallSid is not a 400).
                forged = await twilio.post(path, data=form, headers={"X-Twilio-Signature": "bm9wZQ=="})
                assert forged.status_code == 403 and forged.json() == {"detail": "invalid Twilio signature"}
                malformed = {**form, "CallSid": "not a sid"}
                assert (await twilio.post(path, data=malformed)).status_code == 403, path
            assert await conversations() == 0

            # One line per reason a minute, however many refusals; the next line counts the rest.
            assert lines.refusals("wrong content type") == [0]
            assert lines.refusals("body too large") == [0]
            assert lines.refusals("bad signature") == [0]
            now[0] += 61
            assert (await twilio.post("/twiml/voice", data=form)).status_code == 403
            assert lines.refusals("bad signature") == [0, 2 * len(WEBHOOKS) - 1]

            # A signed form is served, with a charset or without one.
            served = await twilio.post(
                "/twiml/voice",
                content=urlencode(form).encode(),
                headers={
                    "content-type": "application/x-www-form-urlencoded; charset=utf-8",
                    **signed("/twiml/voice", form),
                },
            )
            assert served.status_code == 200 and "<Stream" in served.text, served.text
            assert await conversations() == 1
            await twilio.aclose()
    finally:
        logging.getLogger("ai_sdr.telephony").removeHandler(lines)


# ---------------------------------------------------------------- 4. benchmark stand-ins: opt-in only


@pytest.mark.asyncio
async def test_bench_stand_ins_need_allow_bench_providers(tmp_path: Path) -> None:
    from config import ConfigError
    from providers.registry import BenchProviderRefused, ProviderRegistry

    # Service-wide: the process does not start.
    with pytest.raises(ConfigError) as refused:
        create_app(make_settings(tmp_path, allow_bench_providers=False, stt_provider="local"))
    assert "TTS_PROVIDER='echo'" in refused.value.message and "LLM_PROVIDER='echo'" in refused.value.message
    assert (
        "STT_PROVIDER" not in refused.value.message and "ALLOW_BENCH_PROVIDERS=true" in refused.value.message
    )
    make_settings(
        tmp_path,
        allow_bench_providers=False,
        stt_provider="auto",
        tts_provider="local",
        llm_provider="ollama",
    ).check_bench_providers()

    # Per agent: the API answers 422, naming the field.
    async with running(make_settings(tmp_path)) as (app, client):
        app.state.runtime.settings.allow_bench_providers = False
        echo = await client.post("/v1/convai/agents", json={"name": "Ava", "providers": {"llm": "echo"}})
        assert echo.status_code == 422, echo.text
        [error] = echo.json()["detail"]
        assert error["loc"] == ["body", "providers", "llm"] and "ALLOW_BENCH_PROVIDERS=true" in error["msg"]
        mixed = await client.post(
            "/v1/convai/agents", json={"name": "Ava", "providers": {"stt": "delayed", "tts": "local"}}
        )
        assert [e["loc"][-1] for e in mixed.json()["detail"]] == ["stt"]
        real = await client.post("/v1/convai/agents", json={"name": "Ava", "providers": {"llm": "local"}})
        assert real.status_code == 201, real.text
        agent_url = f"/v1/convai/agents/{real.json()['agent_id']}"
        assert (await client.patch(agent_url, json={"providers": {"tts": "echo"}})).status_code == 422
        assert (await client.patch(agent_url, json={"name": "Ava 2"})).status_code == 200
        assert (await client.get(agent_url)).json()["providers"] == {"llm": "local"}
        app.state.runtime.settings.allow_bench_providers = True  # benchmarks and tests
        assert (await client.patch(agent_url, json={"providers": {"tts": "echo"}})).status_code == 200

    # In a call: the engine's one door to providers refuses them, even an instance it made while allowed.
    settings = make_settings(tmp_path)
    registry = ProviderRegistry(settings)
    assert (await registry.llm("echo")).name == "echo"
    settings.allow_bench_providers = False
    with pytest.raises(BenchProviderRefused, match="ALLOW_BENCH_PROVIDERS=true"):
        await registry.llm("echo")
    with pytest.raises(BenchProviderRefused):
        registry.stt("delayed")
    with pytest.raises(BenchProviderRefused):
        registry.tts(None)  # TTS_PROVIDER=echo of the test settings
