"""Each call event is emitted once per call: a Twilio status callback replayed (one after another, or
at the same moment, or to two instances on one PostgreSQL database) gives one ``call.failed``; a
post-call run repeated gives one ``call.completed``.

Every test that touches the database runs on SQLite and on PostgreSQL (the ``database_url`` fixture).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from models import WebhookEvent
from tests.conftest import LiveServer, make_settings
from tests.webhook_receiver import WebhookReceiver

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "twilio-test-token"
NUMBER = "+15550100001"
SECRET = "whsec_test_secret_0123456789"


def signed(base_url: str, path: str, params: dict[str, str]) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(AUTH_TOKEN).compute_signature(base_url + path, params)}


async def set_up(client: httpx.AsyncClient, base_url: str, receiver_url: str, call_sid: str) -> str:
    """An agent on NUMBER, a webhook config for every event, and an inbound call ringing: its id."""
    agent = await client.post(
        "/v1/convai/agents", json={"name": "Ava", "system_prompt": "Hello.", "first_message": "Hi."}
    )
    assert agent.status_code == 201, agent.text
    number = await client.post(
        "/v1/convai/phone-numbers", json={"phone_number": NUMBER, "agent_id": agent.json()["agent_id"]}
    )
    assert number.status_code == 201, number.text
    hook = await client.post("/v1/convai/webhooks", json={"url": receiver_url, "secret": SECRET})
    assert hook.status_code == 201, hook.text
    form = {"CallSid": call_sid, "From": "+15550001111", "To": NUMBER}
    answered = await client.post("/twiml/voice", data=form, headers=signed(base_url, "/twiml/voice", form))
    assert answered.status_code == 200 and "<Stream" in answered.text, answered.text
    listed = (await client.get("/v1/convai/conversations")).json()["conversations"]
    return listed[0]["conversation_id"]


async def events_of(server: LiveServer, event_type: str, conversation_id: str) -> int:
    async with server.runtime.db.session() as session:
        return int(
            await session.scalar(
                select(func.count())
                .select_from(WebhookEvent)
                .where(WebhookEvent.type == event_type, WebhookEvent.conversation_id == conversation_id)
            )
            or 0
        )


async def settled(receiver: WebhookReceiver, event_type: str, quiet_s: float = 1.5) -> list[dict[str, Any]]:
    """The events of a type the receiver got, once one came and nothing more came for ``quiet_s``."""
    for _ in range(300):
        if receiver.of_type(event_type):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(quiet_s)
    return receiver.of_type(event_type)


@pytest.mark.asyncio
async def test_a_replayed_failed_callback_emits_call_failed_once(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(
        tmp_path, database_url=database_url, twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN
    )
    call_sid = "CA" + "7" * 32
    async with WebhookReceiver(SECRET) as receiver, LiveServer(settings) as server, server.client() as client:
        conversation_id = await set_up(client, server.base_url, receiver.url, call_sid)
        failed = {"CallSid": call_sid, "CallStatus": "failed"}
        headers = signed(server.base_url, "/twiml/status", failed)
        first = await client.post("/twiml/status", data=failed, headers=headers)
        assert first.status_code == 200, first.text
        again = await client.post("/twiml/status", data=failed, headers=headers)  # Twilio's retry
        assert again.status_code == 200, again.text
        together = await asyncio.gather(
            *(client.post("/twiml/status", data=failed, headers=headers) for _ in range(6))
        )
        assert [r.status_code for r in together] == [200] * 6, [r.text for r in together]
        assert await events_of(server, "call.failed", conversation_id) == 1
        delivered = await settled(receiver, "call.failed")
        assert len(delivered) == 1 and sum(receiver.deliveries.values()) == 1
        assert delivered[0]["data"]["conversation_id"] == conversation_id
        assert delivered[0]["data"]["status"] == "failed"
        detail = (await client.get(f"/v1/convai/conversations/{conversation_id}")).json()
        assert detail["status"] == "failed"


@pytest.mark.asyncio
async def test_the_same_callback_to_two_instances_at_once_emits_once(tmp_path: Path, postgres: Any) -> None:
    from tests.test_multi_instance import two_instances

    url = await postgres.create_database()
    call_sid = "CA" + "8" * 32
    twilio = {"twilio_account_sid": ACCOUNT_SID, "twilio_auth_token": AUTH_TOKEN}
    async with (
        WebhookReceiver(SECRET) as receiver,
        two_instances(tmp_path, url, **twilio) as (a, b, client_a, client_b),
    ):
        conversation_id = await set_up(client_a, a.base_url, receiver.url, call_sid)
        busy = {"CallSid": call_sid, "CallStatus": "busy"}
        posts = [
            client.post("/twiml/status", data=busy, headers=signed(server.base_url, "/twiml/status", busy))
            for server, client in ((a, client_a), (b, client_b)) * 4
        ]
        assert [r.status_code for r in await asyncio.gather(*posts)] == [200] * 8
        assert await events_of(a, "call.failed", conversation_id) == 1
        delivered = await settled(receiver, "call.failed")
        assert len(delivered) == 1 and delivered[0]["data"]["status"] == "busy"


@pytest.mark.asyncio
async def test_post_call_run_twice_emits_call_completed_once(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(
        tmp_path, database_url=database_url, twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN
    )
    async with WebhookReceiver(SECRET) as receiver, LiveServer(settings) as server, server.client() as client:
        conversation_id = await set_up(client, server.base_url, receiver.url, "CA" + "9" * 32)
        await asyncio.gather(
            server.runtime.post_call(conversation_id), server.runtime.post_call(conversation_id)
        )
        await server.runtime.post_call(conversation_id)
        assert await events_of(server, "call.completed", conversation_id) == 1
        assert len(await settled(receiver, "call.completed")) == 1
