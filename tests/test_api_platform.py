"""The REST platform around the agents API, on real SQLite files in temp dirs.

* the official ``elevenlabs`` SDK (AsyncElevenLabs) as the client of a live server: agents CRUD and
  conversations list/get, its responses also validated strictly against the SDK's pydantic models;
* authentication: ``xi-api-key`` and HS256 Bearer JWTs, and what a 401 body may (not) say;
* conversations: filter, keyset pagination newest first, bad cursor, unknown id;
* phone numbers and webhook configs CRUD with their validation and conflicts;
* request size limits (413) and transactional writes (a failed request leaves nothing behind).

Migrations are in test_migrations.py, the request log in test_request_log.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from elevenlabs import (
    AgentConfig,
    AsyncElevenLabs,
    ConversationalConfig,
    PromptAgentApiModelOutput,
    TtsConversationalConfigOutput,
    TurnConfig,
)
from elevenlabs.core.api_error import ApiError
from elevenlabs.types import (
    CreateAgentResponseModel,
    GetAgentResponseModel,
    GetAgentsPageResponseModel,
    GetConversationResponseModel,
    GetConversationsPageResponseModel,
)

from models import Agent, AgentTool, PhoneNumber, WebhookConfig
from tests.api_helpers import (
    AGENTS,
    CONVERSATIONS,
    JWT_SECRET,
    PHONE_NUMBERS,
    WEBHOOKS,
    assert_plain_401,
    bare_client,
    bearer,
    count,
    create_agent,
    db_of,
    error_locs,
    insert_conversation,
    list_all,
    running_app,
)
from tests.conftest import API_KEY, SQLITE_ONLY, LiveServer, make_settings

# ---------------------------------------------------------------- the ElevenLabs SDK


@pytest.mark.asyncio
async def test_elevenlabs_sdk_round_trip_against_a_live_server(tmp_path: Path, database_url: str) -> None:
    async with (
        LiveServer(make_settings(tmp_path, database_url=database_url)) as server,
        httpx.AsyncClient(timeout=30) as http,
        server.client() as raw,
    ):
        sdk = AsyncElevenLabs(api_key=API_KEY, base_url=server.base_url, httpx_client=http).conversational_ai

        created = await sdk.agents.create(
            name="SDK agent",
            tags=["sdk", "sales"],
            conversation_config=ConversationalConfig(
                agent=AgentConfig(
                    first_message="Hi, this is Acme.",
                    language="en",
                    prompt=PromptAgentApiModelOutput(prompt="Be brief.", llm="qwen2.5:3b", temperature=0.2),
                ),
                tts=TtsConversationalConfigOutput(voice_id="aura-2-thalia-en"),
                turn=TurnConfig(turn_eagerness="patient"),
            ),
        )
        assert isinstance(created, CreateAgentResponseModel) and created.agent_id.startswith("agent_")
        agent_id = created.agent_id

        agent = await sdk.agents.get(agent_id)
        assert isinstance(agent, GetAgentResponseModel)
        assert (agent.agent_id, agent.name, agent.tags) == (agent_id, "SDK agent", ["sdk", "sales"])
        cc = agent.conversation_config
        assert cc.agent.first_message == "Hi, this is Acme." and cc.agent.language == "en"
        assert (cc.agent.prompt.prompt, cc.agent.prompt.llm, cc.agent.prompt.temperature) == (
            "Be brief.",
            "qwen2.5:3b",
            0.2,
        )
        assert cc.tts.voice_id == "aura-2-thalia-en"
        assert cc.turn.turn_eagerness == "patient"  # the agent's calls wait out thinking pauses
        flat = (await raw.get(f"/v1/convai/agents/{agent_id}")).json()
        assert flat["turn_settings"] == {"turn_eagerness": "patient"}
        assert agent.metadata.created_at_unix_secs > 0

        page = await sdk.agents.list(page_size=10)
        assert [a.agent_id for a in page.agents] == [agent_id] and page.has_more is False
        assert page.agents[0].voice_id == "aura-2-thalia-en" and page.agents[0].access_info.is_creator

        updated = await sdk.agents.update(
            agent_id,
            name="Renamed",
            conversation_config=ConversationalConfig(agent=AgentConfig(first_message="Hello again!")),
        )
        assert updated.name == "Renamed"
        assert updated.conversation_config.agent.first_message == "Hello again!"
        assert updated.conversation_config.agent.prompt.prompt == "Be brief."  # deep-merged, not replaced
        assert updated.conversation_config.turn.turn_eagerness == "patient"

        # Conversations are written by calls: insert two directly, then read them through the SDK.
        t0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
        older = await insert_conversation(server.runtime.db, agent_id, t0, status="failed")
        newer = await insert_conversation(
            server.runtime.db,
            agent_id,
            t0 + timedelta(minutes=5),
            turns=[("agent", "Hi, this is Acme."), ("user", "What does the Pro plan cost?")],
        )
        convs = await sdk.conversations.list(agent_id=agent_id, page_size=10)
        assert [c.conversation_id for c in convs.conversations] == [newer, older]
        first = convs.conversations[0]
        assert (first.agent_id, first.agent_name, first.message_count) == (agent_id, "Renamed", 2)
        assert first.start_time_unix_secs == int((t0 + timedelta(minutes=5)).timestamp())
        assert (first.call_duration_secs, first.call_successful) == (42, "success")
        assert convs.conversations[1].call_successful == "failure"

        conv = await sdk.conversations.get(newer)
        assert (conv.conversation_id, conv.agent_id, conv.status) == (newer, agent_id, "completed")
        assert [(t.role, t.message, t.time_in_call_secs) for t in conv.transcript] == [
            ("agent", "Hi, this is Acme.", 0),
            ("user", "What does the Pro plan cost?", 2),
        ]
        assert conv.metadata.call_duration_secs == 42
        assert conv.analysis.transcript_summary == "Caller asked about pricing."
        assert conv.has_audio is False

        # The SDK builds its models without validation; validate the raw JSON strictly as well.
        for path, model in [
            (f"{AGENTS}/{agent_id}", GetAgentResponseModel),
            (AGENTS, GetAgentsPageResponseModel),
            (f"{CONVERSATIONS}/{newer}", GetConversationResponseModel),
            (CONVERSATIONS, GetConversationsPageResponseModel),
        ]:
            r = await raw.get(path)
            assert r.status_code == 200, (path, r.text)
            model.model_validate(r.json())

        await sdk.agents.delete(agent_id)
        with pytest.raises(ApiError) as missing:
            await sdk.agents.get(agent_id)
        assert missing.value.status_code == 404
        assert missing.value.body == {"detail": f"agent not found: {agent_id}"}
        # The calls outlive their agent.
        assert (await sdk.conversations.get(older)).conversation_id == older


# ---------------------------------------------------------------- auth


@pytest.mark.asyncio
@SQLITE_ONLY
async def test_api_key_and_bearer_jwt_authentication(app_client: httpx.AsyncClient) -> None:
    async with bare_client(app_client) as anonymous:
        r = await anonymous.get(AGENTS)
        assert_plain_401(r)
        assert "missing credentials" in r.json()["detail"]

        r = await anonymous.get(AGENTS, headers={"xi-api-key": "not-the-key"})
        assert_plain_401(r)
        assert r.json() == {"detail": "invalid API key"}
        assert_plain_401(await anonymous.get(AGENTS, headers={"xi-api-key": ""}))

        assert (await anonymous.get(AGENTS, headers={"xi-api-key": API_KEY})).status_code == 200
        assert (await anonymous.get(AGENTS, headers=bearer())).status_code == 200
        r = await anonymous.post(AGENTS, json={"name": "via JWT"}, headers=bearer())
        assert r.status_code == 201

        r = await anonymous.get(AGENTS, headers=bearer(expires_in=timedelta(seconds=-30)))
        assert_plain_401(r)
        assert r.json() == {"detail": "bearer token has expired"}

        rejected = {
            "wrong secret": bearer(secret="another-secret-0123456789abcdef0123"),
            "no exp claim": {"Authorization": f"Bearer {jwt.encode({'sub': 'x'}, JWT_SECRET)}"},
            "alg none": {
                "Authorization": f"Bearer {jwt.encode({'sub': 'x', 'exp': 2**40}, None, algorithm='none')}"
            },
            "not a JWT": {"Authorization": "Bearer abc.def.ghi"},
        }
        for case, headers in rejected.items():
            r = await anonymous.get(AGENTS, headers=headers)
            assert_plain_401(r)
            assert r.json() == {"detail": "invalid bearer token"}, case
        assert_plain_401(await anonymous.get(AGENTS, headers={"Authorization": "Bearer "}))
        assert_plain_401(await anonymous.get(AGENTS, headers={"Authorization": f"Basic {API_KEY}"}))

        # A wrong key is not rescued by a valid token: the key, when sent, decides.
        assert_plain_401(await anonymous.get(AGENTS, headers={"xi-api-key": "nope", **bearer()}))
        # Health stays public.
        assert (await anonymous.get("/healthz")).status_code == 200


# ---------------------------------------------------------------- conversations


@pytest.mark.asyncio
async def test_conversations_filter_and_paginate_newest_first(app_client: httpx.AsyncClient) -> None:
    db = db_of(app_client)
    sales = await create_agent(app_client, "Sales")
    support = await create_agent(app_client, "Support")
    t0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    sales_ids = [
        await insert_conversation(db, sales, t0 + timedelta(minutes=i), turns=[("agent", f"call {i}")])
        for i in range(5)
    ]
    # Two calls with the very same created_at: the id breaks the tie, so paging neither skips nor repeats.
    tie = t0 + timedelta(minutes=2, seconds=30)
    support_ids = [await insert_conversation(db, support, tie) for _ in range(2)]

    ids, pages = await list_all(app_client, CONVERSATIONS, "conversations", agent_id=sales, page_size=2)
    assert (ids, pages) == (list(reversed(sales_ids)), 3)

    r = await app_client.get(CONVERSATIONS, params={"agent_id": sales, "page_size": 2})
    first_page = r.json()["conversations"]
    assert [c["agent_name"] for c in first_page] == ["Sales", "Sales"]
    assert [c["message_count"] for c in first_page] == [1, 1]

    everything, pages = await list_all(app_client, CONVERSATIONS, "conversations", page_size=1)
    assert pages == 7 and len(set(everything)) == 7
    assert everything[:2] == list(reversed(sales_ids))[:2]
    assert everything[2:4] == sorted(support_ids, reverse=True)
    assert everything[4:] == list(reversed(sales_ids))[2:]

    r = await app_client.get(CONVERSATIONS, params={"agent_id": "agent_nobody"})
    assert r.status_code == 200 and r.json() == {"has_more": False, "next_cursor": None, "conversations": []}

    for bad in ("not-a-cursor!", "e30", "WyJub3QgYSBkYXRlIiwgMV0"):
        r = await app_client.get(CONVERSATIONS, params={"cursor": bad})
        assert r.status_code == 400 and r.json() == {"detail": "invalid cursor"}, bad

    r = await app_client.get(f"{CONVERSATIONS}/conv_missing")
    assert r.status_code == 404 and r.json() == {"detail": "conversation not found: conv_missing"}

    r = await app_client.get(f"{CONVERSATIONS}/{sales_ids[0]}")
    assert r.status_code == 200
    detail = r.json()
    assert (detail["id"], detail["agent_id"], detail["agent_name"]) == (sales_ids[0], sales, "Sales")
    assert [(t["seq"], t["role"], t["text"]) for t in detail["transcript"]] == [(0, "agent", "call 0")]


# ---------------------------------------------------------------- phone numbers


@pytest.mark.asyncio
async def test_phone_numbers_crud(app_client: httpx.AsyncClient) -> None:
    agent_id = await create_agent(app_client)
    r = await app_client.post(
        PHONE_NUMBERS, json={"phone_number": "+14155550123", "agent_id": agent_id, "label": "Main line"}
    )
    assert r.status_code == 201, r.text
    number = r.json()
    assert number["id"].startswith("pn_")
    assert (number["phone_number"], number["agent_id"], number["label"]) == (
        "+14155550123",
        agent_id,
        "Main line",
    )

    assert ["body", "phone_number"] in error_locs(
        await app_client.post(PHONE_NUMBERS, json={"phone_number": "555-1234"})
    )
    assert ["body", "phone_number"] in error_locs(
        await app_client.post(PHONE_NUMBERS, json={"phone_number": "14155550123"})
    )
    r = await app_client.post(PHONE_NUMBERS, json={"phone_number": "+14155550123"})
    assert r.status_code == 409 and r.json() == {"detail": "phone number already registered: +14155550123"}
    r = await app_client.post(PHONE_NUMBERS, json={"phone_number": "+14155550199", "agent_id": "agent_nope"})
    assert r.status_code == 404 and r.json() == {"detail": "agent not found: agent_nope"}
    assert await count(db_of(app_client), PhoneNumber) == 1

    other = (await app_client.post(PHONE_NUMBERS, json={"phone_number": "+442071838750"})).json()
    assert other["agent_id"] is None and other["label"] == ""

    ids, _ = await list_all(app_client, PHONE_NUMBERS, "phone_numbers")
    assert ids == [other["id"], number["id"]]
    ids, _ = await list_all(app_client, PHONE_NUMBERS, "phone_numbers", agent_id=agent_id)
    assert ids == [number["id"]]
    assert (await app_client.get(f"{PHONE_NUMBERS}/{number['id']}")).json() == number

    r = await app_client.patch(f"{PHONE_NUMBERS}/{other['id']}", json={"agent_id": agent_id, "label": "UK"})
    assert r.status_code == 200, r.text
    assert (r.json()["agent_id"], r.json()["label"], r.json()["phone_number"]) == (
        agent_id,
        "UK",
        "+442071838750",
    )
    r = await app_client.patch(f"{PHONE_NUMBERS}/{other['id']}", json={"phone_number": "+14155550123"})
    assert r.status_code == 409
    r = await app_client.patch(f"{PHONE_NUMBERS}/{other['id']}", json={"agent_id": "agent_nope"})
    assert r.status_code == 404 and r.json() == {"detail": "agent not found: agent_nope"}
    assert ["body", "phone_number"] in error_locs(
        await app_client.patch(f"{PHONE_NUMBERS}/{other['id']}", json={"phone_number": "555-1234"})
    )
    r = await app_client.patch(f"{PHONE_NUMBERS}/{other['id']}", json={"agent_id": None})
    assert r.status_code == 200 and r.json()["agent_id"] is None and r.json()["label"] == "UK"

    r = await app_client.delete(f"{PHONE_NUMBERS}/{number['id']}")
    assert r.status_code == 204 and r.content == b""
    for method in ("GET", "PATCH", "DELETE"):
        r = await app_client.request(
            method, f"{PHONE_NUMBERS}/{number['id']}", json={} if method == "PATCH" else None
        )
        assert r.status_code == 404 and r.json() == {"detail": f"phone number not found: {number['id']}"}
    # The freed number can be registered again.
    r = await app_client.post(PHONE_NUMBERS, json={"phone_number": "+14155550123"})
    assert r.status_code == 201


# ---------------------------------------------------------------- webhook configs


@pytest.mark.asyncio
async def test_webhook_configs_crud_and_the_secret_is_shown_once(app_client: httpx.AsyncClient) -> None:
    agent_id = await create_agent(app_client)
    r = await app_client.post(
        WEBHOOKS, json={"url": "https://hooks.example.com/calls", "events": ["call.started"]}
    )
    assert r.status_code == 201, r.text
    hook = r.json()
    secret = hook.pop("secret")
    assert secret.startswith("whsec_") and len(secret) > 30
    assert hook["events"] == ["call.started"] and hook["active"] is True and hook["agent_id"] is None

    r = await app_client.post(
        WEBHOOKS,
        json={"url": "http://127.0.0.1:9/x", "secret": "my-own-secret-0123456789", "agent_id": agent_id},
    )
    assert r.status_code == 201 and r.json()["secret"] == "my-own-secret-0123456789"
    scoped = r.json()
    assert scoped["events"] == [] and scoped["agent_id"] == agent_id

    r = await app_client.get(f"{WEBHOOKS}/{hook['id']}")
    assert r.status_code == 200 and r.json() == hook and "secret" not in r.json()
    r = await app_client.get(WEBHOOKS)
    assert [w["id"] for w in r.json()["webhooks"]] == [scoped["id"], hook["id"]]
    assert secret not in r.text and "my-own-secret" not in r.text and "secret" not in r.json()["webhooks"][0]
    ids, _ = await list_all(app_client, WEBHOOKS, "webhooks", agent_id=agent_id)
    assert ids == [scoped["id"]]

    r = await app_client.patch(
        f"{WEBHOOKS}/{hook['id']}", json={"events": ["call.completed", "tool.executed"], "active": False}
    )
    assert r.status_code == 200, r.text
    assert r.json()["events"] == ["call.completed", "tool.executed"] and r.json()["active"] is False
    assert "secret" not in r.json()
    # Rotating the secret: stored, still never returned.
    r = await app_client.patch(f"{WEBHOOKS}/{hook['id']}", json={"secret": "rotated-secret-0123456789"})
    assert r.status_code == 200 and "rotated-secret" not in r.text
    async with db_of(app_client).session() as session:
        stored = await session.get(WebhookConfig, hook["id"])
        assert stored is not None and stored.secret == "rotated-secret-0123456789"

    invalid: list[tuple[dict[str, Any], list[Any]]] = [
        ({"url": "https://x.example.com", "events": ["call.exploded"]}, ["body", "events", 0]),
        ({"url": "https://x.example.com", "events": ["call.started", "call.started"]}, ["body", "events"]),
        ({"url": "not a url"}, ["body", "url"]),
        ({"url": "ftp://files.example.com/drop"}, ["body", "url"]),
        ({"url": "https://x.example.com", "secret": "short"}, ["body", "secret"]),
        ({"url": "https://x.example.com", "bogus": 1}, ["body", "bogus"]),
    ]
    for body, loc in invalid:
        assert loc in error_locs(await app_client.post(WEBHOOKS, json=body)), body
    assert ["body", "events", 0] in error_locs(
        await app_client.patch(f"{WEBHOOKS}/{hook['id']}", json={"events": ["nope"]})
    )
    assert ["body", "url"] in error_locs(
        await app_client.patch(f"{WEBHOOKS}/{hook['id']}", json={"url": "javascript:alert(1)"})
    )
    r = await app_client.post(WEBHOOKS, json={"url": "https://x.example.com", "agent_id": "agent_nope"})
    assert r.status_code == 404 and r.json() == {"detail": "agent not found: agent_nope"}
    assert await count(db_of(app_client), WebhookConfig) == 2

    r = await app_client.delete(f"{WEBHOOKS}/{hook['id']}")
    assert r.status_code == 204
    r = await app_client.get(f"{WEBHOOKS}/{hook['id']}")
    assert r.status_code == 404 and r.json() == {"detail": f"webhook not found: {hook['id']}"}
    assert (await app_client.delete(f"{WEBHOOKS}/{hook['id']}")).status_code == 404


# ---------------------------------------------------------------- limits and transactions


@pytest.mark.asyncio
async def test_oversized_bodies_are_413_with_json_detail(tmp_path: Path) -> None:
    limit = 4096
    async with running_app(tmp_path, max_request_bytes=limit) as client:
        big = {"name": "Big", "system_prompt": "x" * (limit + 1)}
        r = await client.post(AGENTS, json=big)
        assert r.status_code == 413
        assert r.json() == {"detail": f"request body too large (limit {limit} bytes)"}

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            payload = json.dumps(big).encode()
            for i in range(0, len(payload), 1000):
                yield payload[i : i + 1000]

        r = await client.post(AGENTS, content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413, r.text
        assert r.json() == {"detail": f"request body too large (limit {limit} bytes)"}
        assert await count(db_of(client), Agent) == 0

        # Just under the limit is fine.
        r = await client.post(AGENTS, json={"name": "Fits", "system_prompt": "x" * (limit - 200)})
        assert r.status_code == 201, r.text


@pytest.mark.asyncio
async def test_a_request_failing_midway_leaves_the_database_unchanged(app_client: httpx.AsyncClient) -> None:
    db = db_of(app_client)
    r = await app_client.post(
        AGENTS,
        json={
            "name": "Dup tools",
            "tools": [{"name": "x", "kind": "end_call"}, {"name": "x", "kind": "send_sms"}],
        },
    )
    assert r.status_code == 409 and r.json() == {"detail": "duplicate tool names: x"}
    assert (await count(db, Agent), await count(db, AgentTool)) == (0, 0)

    # Create: the agent and its tools are flushed before the unknown document is found, then rolled back.
    r = await app_client.post(
        AGENTS,
        json={
            "name": "Half",
            "tools": [{"name": "hang_up", "kind": "end_call"}],
            "knowledge_base_ids": ["doc_x"],
        },
    )
    assert r.status_code == 404 and r.json() == {"detail": "knowledge document not found: doc_x"}
    assert (await count(db, Agent), await count(db, AgentTool)) == (0, 0)

    # Update: the new name is set on the row before the unknown document is found; it is not kept.
    agent_id = await create_agent(app_client, "Original", tools=[{"name": "hang_up", "kind": "end_call"}])
    before = (await app_client.get(f"{AGENTS}/{agent_id}")).json()
    r = await app_client.patch(
        f"{AGENTS}/{agent_id}",
        json={"name": "Changed", "system_prompt": "New", "knowledge_base_ids": ["doc_x"]},
    )
    assert r.status_code == 404
    assert (await app_client.get(f"{AGENTS}/{agent_id}")).json() == before

    # A second tool of the same name hits the unique constraint at flush: 409, nothing written.
    r = await app_client.post(f"{AGENTS}/{agent_id}/tools", json={"name": "hang_up", "kind": "end_call"})
    assert r.status_code == 409, r.text
    assert await count(db, AgentTool) == 1
    assert (await app_client.get(f"{AGENTS}/{agent_id}")).json() == before
