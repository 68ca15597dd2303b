"""Tools as a call runs them: HTTP webhook tools against a local server, built-ins through the Twilio
stand-in, schema validation, dynamic variables, records and `tool.executed` events."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from main import create_app
from models import Agent, Conversation, Meeting, ToolCallRecord, WebhookEvent
from providers.base import ToolCall
from tests.conftest import API_KEY, make_settings
from tests.twilio_standin import PlacedCall, TwilioStandIn
from tools.runner import ToolContext

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "tools-test-token"


class ToolServer:
    """A CRM-like HTTP endpoint: answers, fails on purpose, stalls, or floods."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_first = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> ToolServer:
        app = web.Application()
        app.router.add_route("*", "/lookup", self._lookup)
        app.router.add_get("/slow", self._slow)
        app.router.add_get("/huge", self._huge)
        app.router.add_get("/missing", lambda _: web.json_response({"error": "no such account"}, status=404))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _lookup(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        self.requests.append(
            {
                "method": request.method,
                "query": dict(request.query),
                "json": body,
                "headers": dict(request.headers),
            }
        )
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.Response(status=503, text="busy")
        return web.json_response({"account": "Acme", "plan": "growth", "seats": 12})

    async def _slow(self, _: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    async def _huge(self, _: web.Request) -> web.Response:
        return web.Response(text="x" * 200_000)


@pytest.mark.asyncio
async def test_tools_run_validate_and_are_recorded(tmp_path: Path) -> None:
    async with ToolServer() as crm, TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN) as twilio:
        settings = make_settings(
            tmp_path,
            twilio_account_sid=ACCOUNT_SID,
            twilio_auth_token=AUTH_TOKEN,
            twilio_api_base=twilio.url,
            twilio_phone_number="+15550100000",
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            runtime = app.state.runtime
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t", headers={"xi-api-key": API_KEY}
            ) as client:
                agent = (
                    await client.post(
                        "/v1/convai/agents",
                        json={
                            "name": "Ava",
                            "system_prompt": "Hi",
                            "transfer_number": "+15550107777",
                            "builtin_tools": ["book_meeting", "send_sms", "transfer_call", "end_call"],
                        },
                    )
                ).json()
                agent_id = agent["agent_id"]
                params = {
                    "type": "object",
                    "properties": {"account_id": {"type": "string"}},
                    "required": ["account_id"],
                    "additionalProperties": False,
                }
                tools: dict[str, Any] = {}
                for name, config in (
                    (
                        "lookup_post",
                        {
                            "url": crm.url + "/lookup",
                            "method": "POST",
                            "headers": {"authorization": "Bearer {{crm_token}}"},
                        },
                    ),
                    ("lookup_get", {"url": crm.url + "/lookup", "method": "GET"}),
                    ("slow", {"url": crm.url + "/slow", "method": "GET", "timeout_sec": 0.5}),
                    ("huge", {"url": crm.url + "/huge", "method": "GET"}),
                    ("missing", {"url": crm.url + "/missing", "method": "GET"}),
                ):
                    created = await client.post(
                        f"/v1/convai/agents/{agent_id}/tools",
                        json={
                            "name": name,
                            "description": "Look up the caller's account",
                            "kind": "webhook",
                            "parameters": params,
                            "config": config,
                        },
                    )
                    assert created.status_code == 201, created.text
                    tools[name] = created.json()
                # Header values are write-only, like webhook secrets: masked in every response.
                assert tools["lookup_post"]["config"]["headers"] == {"authorization": "********"}
                listed = (await client.get(f"/v1/convai/agents/{agent_id}/tools")).json()["tools"]
                shown = (await client.get(f"/v1/convai/agents/{agent_id}")).json()
                assert "{{crm_token}}" not in json.dumps(listed) + json.dumps(shown)
                assert "********" in json.dumps(listed) and "********" in json.dumps(shown)
                # Sending the masked value back keeps the stored one (checked below: the header still works).
                echoed = await client.patch(
                    f"/v1/convai/agents/{agent_id}/tools/{tools['lookup_post']['id']}",
                    json={"config": {**tools["lookup_post"]["config"], "timeout_sec": 4}},
                )
                assert echoed.status_code == 200 and echoed.json()["config"]["timeout_sec"] == 4
                unknown = await client.patch(
                    f"/v1/convai/agents/{agent_id}/tools/{tools['lookup_get']['id']}",
                    json={"config": {"url": crm.url + "/lookup", "headers": {"x-key": "********"}}},
                )
                assert unknown.status_code == 422 and "masked" in unknown.text
                fixed_sms = await client.post(
                    f"/v1/convai/agents/{agent_id}/tools",
                    json={
                        "name": "text_deck",
                        "kind": "send_sms",
                        "config": {"message": "Hi {{name}}, the deck: https://x.example/d"},
                    },
                )
                assert fixed_sms.status_code == 201, fixed_sms.text
                bad = await client.post(
                    f"/v1/convai/agents/{agent_id}/tools",
                    json={"name": "bad", "kind": "webhook", "config": {"url": "not a url"}},
                )
                assert bad.status_code == 422

            async with runtime.db.session() as session:
                conversation = Conversation(
                    agent_id=agent_id,
                    call_sid="CA" + "f" * 32,
                    direction="inbound",
                    from_number="+15550001111",
                    to_number="+15550100000",
                )
                session.add(conversation)
                await session.flush()
                conversation_id = conversation.id
                loaded = await session.scalar(
                    select(Agent).where(Agent.id == agent_id).options(selectinload(Agent.tools))
                )
            # A placed call the transfer can update, as Twilio would have it.
            twilio.calls["CA" + "f" * 32] = PlacedCall(sid="CA" + "f" * 32, params={"To": "+15550100000"})
            ctx = ToolContext(
                conversation_id,
                "CA" + "f" * 32,
                "+15550001111",
                "+15550100000",
                {"crm_token": "tok-123", "name": "Sam"},
            )
            runner = runtime.tool_runner
            names = {spec.name for spec in runner.specs_for(loaded)}
            assert {"book_meeting", "send_sms", "transfer_call", "end_call", "lookup_post"} <= names

            async def run(name: str, args: dict[str, Any]) -> Any:
                return await runner.execute(loaded, ToolCall(name, args, id=f"call_{name}"), ctx)

            posted = await run("lookup_post", {"account_id": "A-1"})
            assert posted.success and posted.result == {"account": "Acme", "plan": "growth", "seats": 12}
            request = crm.requests[-1]
            assert request["json"]["arguments"] == {"account_id": "A-1"}
            assert request["json"]["conversation_id"] == conversation_id
            assert request["headers"]["Authorization"] == "Bearer tok-123"  # dynamic variable in a header
            # Model output is never filled with variables: a caller cannot make the model send a secret.
            got = await run("lookup_get", {"account_id": "{{crm_token}}"})
            assert got.success and crm.requests[-1]["query"] == {"account_id": "{{crm_token}}"}
            leaked = await run("lookup_post", {"account_id": "{{crm_token}} {{name}}"})
            assert leaked.success and crm.requests[-1]["json"]["arguments"] == {
                "account_id": "{{crm_token}} {{name}}"
            }

            crm.fail_first = 2  # two 503s, then success: retried with the same idempotency key
            retried = await run("lookup_post", {"account_id": "A-2"})
            keys = {r["headers"]["idempotency-key"] for r in crm.requests[-3:]}
            assert retried.success and len(keys) == 1

            invalid = await run("lookup_post", {"account_id": 7, "extra": True})
            assert not invalid.success and "invalid arguments" in invalid.error
            slow = await run("slow", {"account_id": "A"})
            assert not slow.success and "0.5 s" in slow.error and slow.duration_ms < 5000
            huge = await run("huge", {"account_id": "A"})
            assert not huge.success and "larger than" in huge.error
            missing = await run("missing", {"account_id": "A"})
            assert not missing.success and "404" in missing.error

            runtime.settings.webhook_allow_private = False
            refused = await run("lookup_get", {"account_id": "A"})
            assert not refused.success and refused.error.startswith("refused")
            runtime.settings.webhook_allow_private = True

            booked = await run("book_meeting", {"start_time": "2026-12-01T15:00:00", "attendee_name": "Sam"})
            assert booked.success and "Tuesday, December 1 at 3 PM" in booked.say
            assert not (await run("book_meeting", {"start_time": "next tuesday"})).success

            texted = await run("send_sms", {"message": "Hi {{name}}, your code is {{crm_token}}"})
            assert texted.success and twilio.messages[-1]["Body"] == "Hi {{name}}, your code is {{crm_token}}"
            assert "tok-123" not in json.dumps(twilio.messages)
            deck = await run("text_deck", {"message": "{{crm_token}}"})  # the owner's fixed body is sent
            assert deck.success and twilio.messages[-1]["Body"] == "Hi Sam, the deck: https://x.example/d"
            assert (
                twilio.messages[-1]["To"] == "+15550001111" and twilio.messages[-1]["From"] == "+15550100000"
            )

            transferred = await run("transfer_call", {"reason": "wants a human"})
            assert transferred.success and transferred.transferred
            update = twilio.calls["CA" + "f" * 32].updates[-1]
            assert "<Dial>+15550107777</Dial>" in update["Twiml"]

            assert (await run("end_call", {})).ends_call
            assert not (await run("no_such_tool", {})).success

            async with runtime.db.session() as session:
                records = (
                    await session.scalars(
                        select(ToolCallRecord).where(ToolCallRecord.conversation_id == conversation_id)
                    )
                ).all()
                meetings = (
                    await session.scalars(select(Meeting).where(Meeting.conversation_id == conversation_id))
                ).all()
                events = (await session.scalars(select(WebhookEvent))).all()
            assert len(meetings) == 1
            # Each execution is stored with the arguments it ran with (as the model wrote them: placeholders
            # in model output are never filled; JSON types kept) and its outcome, in the order they ran.
            stored = [(r.name, r.arguments, r.success) for r in sorted(records, key=lambda r: r.created_at)]
            assert stored == [
                ("lookup_post", {"account_id": "A-1"}, True),
                ("lookup_get", {"account_id": "{{crm_token}}"}, True),
                ("lookup_post", {"account_id": "{{crm_token}} {{name}}"}, True),
                ("lookup_post", {"account_id": "A-2"}, True),
                ("lookup_post", {"account_id": 7, "extra": True}, False),
                ("slow", {"account_id": "A"}, False),
                ("huge", {"account_id": "A"}, False),
                ("missing", {"account_id": "A"}, False),
                ("lookup_get", {"account_id": "A"}, False),
                ("book_meeting", {"start_time": "2026-12-01T15:00:00", "attendee_name": "Sam"}, True),
                ("book_meeting", {"start_time": "next tuesday"}, False),
                ("send_sms", {"message": "Hi {{name}}, your code is {{crm_token}}"}, True),
                ("text_deck", {"message": "{{crm_token}}"}, True),
                ("transfer_call", {"reason": "wants a human"}, True),
                ("end_call", {}, True),
                ("no_such_tool", {}, False),
            ]
            assert events == []  # no webhook config subscribed: nothing queued
