"""Security items 1-4 of issue 25, each pinned by a test that failed before its fix.

Tool schemas never fetch remote ``$ref``s; forwarded client addresses are believed only from the
configured proxies; Twilio webhooks check content type, size and signature before anything else; the
benchmark stand-in providers need ALLOW_BENCH_PROVIDERS.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

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
