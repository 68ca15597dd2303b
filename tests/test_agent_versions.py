"""Agent versions: every change makes one (a no-op makes none), a version shows the agent as it was, a
restore makes a new version equal to the old one, and a call records its version and runs it, not the
agent's current configuration."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from models import AgentTool, Conversation
from storage.call_store import CallStore
from tests.api_helpers import db_of
from tests.conftest import SQLITE_ONLY

AGENTS = "/v1/convai/agents"
AGENT = {
    "name": "Ava",
    "system_prompt": "You are Ava, version one.",
    "first_message": "Hello from version one.",
    "data_collection": [{"name": "budget", "qualifies": True}],
}


async def versions(client: httpx.AsyncClient, agent_id: str) -> list[dict[str, Any]]:
    r = await client.get(f"{AGENTS}/{agent_id}/versions")
    assert r.status_code == 200, r.text
    return r.json()["versions"]


@pytest.mark.asyncio
async def test_changes_make_versions_and_no_ops_do_not(app_client: httpx.AsyncClient) -> None:
    created = await app_client.post(AGENTS, json=AGENT)
    agent_id = created.json()["agent_id"]
    [v1] = await versions(app_client, agent_id)
    assert (v1["number"], v1["description"], v1["is_current"]) == (1, "created", True)

    same = await app_client.patch(f"{AGENTS}/{agent_id}", json={"system_prompt": AGENT["system_prompt"]})
    assert same.status_code == 200
    assert await app_client.patch(f"{AGENTS}/{agent_id}", json={}) is not None
    assert len(await versions(app_client, agent_id)) == 1  # nothing changed: no version

    await app_client.patch(f"{AGENTS}/{agent_id}", json={"system_prompt": "You are Ava, version two."})
    await app_client.patch(
        f"{AGENTS}/{agent_id}", json={"voice_id": "amy", "conversation_config": {"tts": {"stability": 0.3}}}
    )
    tool = await app_client.post(
        f"{AGENTS}/{agent_id}/tools",
        json={
            "name": "crm",
            "kind": "webhook",
            "config": {"url": "https://crm.example/x", "headers": {"Authorization": "Bearer s3cret"}},
        },
    )
    assert tool.status_code == 201, tool.text
    doc = await app_client.post(
        f"{AGENTS}/{agent_id}/knowledge", json={"name": "Pricing", "text": "Orbit costs 49 dollars."}
    )
    assert doc.status_code == 201, doc.text
    listed = await versions(app_client, agent_id)
    assert [(v["number"], v["description"]) for v in listed] == [
        (5, "added knowledge document Pricing"),
        (4, "added tool crm"),
        (3, "changed extra_config, voice_id"),
        (2, "changed system_prompt"),
        (1, "created"),
    ]
    assert [v["is_current"] for v in listed] == [True, False, False, False, False]
    assert len({v["config_hash"] for v in listed}) == 5
    # a version is the agent as GET returned it then; secrets stay masked
    five = (await app_client.get(f"{AGENTS}/{agent_id}/versions/{listed[0]['id']}")).json()
    now = (await app_client.get(f"{AGENTS}/{agent_id}")).json()
    for key in ("system_prompt", "voice_id", "conversation_config", "knowledge_base_ids", "data_collection"):
        assert five["config"][key] == now[key], key
    assert five["config"]["tools"][0]["config"]["headers"] == {"Authorization": "********"}
    one = (await app_client.get(f"{AGENTS}/{agent_id}/versions/{v1['id']}")).json()
    assert one["config"]["system_prompt"] == "You are Ava, version one." and one["config"]["tools"] == []
    # paging
    page = (await app_client.get(f"{AGENTS}/{agent_id}/versions", params={"page_size": 2})).json()
    assert [v["number"] for v in page["versions"]] == [5, 4] and page["has_more"]
    rest = (
        await app_client.get(
            f"{AGENTS}/{agent_id}/versions", params={"page_size": 10, "cursor": page["next_cursor"]}
        )
    ).json()
    assert [v["number"] for v in rest["versions"]] == [3, 2, 1]
    # removing the tool is a change too; an unknown version is a 404
    await app_client.delete(f"{AGENTS}/{agent_id}/tools/{tool.json()['id']}")
    assert (await versions(app_client, agent_id))[0]["description"] == "removed tool crm"
    assert (await app_client.get(f"{AGENTS}/{agent_id}/versions/agver_nope")).status_code == 404
    assert (await app_client.get(f"{AGENTS}/agent_nope/versions")).status_code == 404


@SQLITE_ONLY
@pytest.mark.asyncio
async def test_restore_makes_a_new_version_equal_to_the_old_one(app_client: httpx.AsyncClient) -> None:
    created = await app_client.post(AGENTS, json={**AGENT, "tools": [
        {"name": "crm", "kind": "webhook", "config": {"url": "https://crm.example/x", "headers": {"X-Key": "k1"}}}
    ]})  # fmt: skip
    agent_id = created.json()["agent_id"]
    [v1] = await versions(app_client, agent_id)
    await app_client.patch(f"{AGENTS}/{agent_id}", json={"system_prompt": "Changed.", "first_message": "Yo."})
    tool_id = created.json()["tools"][0]["id"]
    await app_client.delete(f"{AGENTS}/{agent_id}/tools/{tool_id}")
    assert len(await versions(app_client, agent_id)) == 3

    restored = await app_client.post(f"{AGENTS}/{agent_id}/versions/{v1['id']}/restore")
    assert restored.status_code == 201, restored.text
    body = restored.json()
    assert (body["number"], body["restored_from"], body["description"]) == (4, v1["id"], "restored version 1")
    assert body["config_hash"] == v1["config_hash"]  # the same configuration again
    agent = (await app_client.get(f"{AGENTS}/{agent_id}")).json()
    assert (agent["system_prompt"], agent["first_message"]) == (
        AGENT["system_prompt"],
        AGENT["first_message"],
    )
    assert [t["name"] for t in agent["tools"]] == ["crm"]
    runtime = app_client.app.state.runtime  # type: ignore[attr-defined]
    async with runtime.db.session() as session:
        [config] = (
            await session.scalars(select(AgentTool.config).where(AgentTool.agent_id == agent_id))
        ).all()
    assert config["headers"] == {"X-Key": "k1"}  # the real header value came back, not the mask
    assert (await app_client.post(f"{AGENTS}/{agent_id}/versions/agver_nope/restore")).status_code == 404


@SQLITE_ONLY
@pytest.mark.asyncio
async def test_a_call_records_its_version_and_runs_that_config(app_client: httpx.AsyncClient) -> None:
    created = await app_client.post(AGENTS, json=AGENT)
    agent_id = created.json()["agent_id"]
    number = await app_client.post(
        "/v1/convai/phone-numbers", json={"phone_number": "+15550100001", "agent_id": agent_id}
    )
    assert number.status_code == 201
    [v1] = await versions(app_client, agent_id)

    # a call arrives: its conversation records version 1 ...
    answered = await app_client.post(
        "/twiml/voice", data={"CallSid": "CA" + "a1" * 16, "From": "+12025550100", "To": "+15550100001"}
    )
    assert answered.status_code == 200 and "<Stream" in answered.text, answered.text
    [conv] = (await app_client.get("/v1/convai/conversations")).json()["conversations"]
    # ... then the agent changes before the media stream opens
    await app_client.patch(
        f"{AGENTS}/{agent_id}", json={"first_message": "Hello from version two.", "data_collection": []}
    )
    v2 = (await versions(app_client, agent_id))[0]
    store = CallStore(db_of(app_client), conv["conversation_id"])
    conversation, agent = await store.load()  # what the engine (WSConn) loads at the stream's start
    assert conversation.agent_version_id == v1["id"]
    assert agent is not None and agent.id == agent_id
    assert agent.first_message == "Hello from version one."
    assert [f["name"] for f in agent.data_collection] == ["budget"]

    # a new call runs version 2; the browser's test call too
    again = await app_client.post(
        "/twiml/voice", data={"CallSid": "CA" + "a2" * 16, "From": "+12025550100", "To": "+15550100001"}
    )
    assert again.status_code == 200
    web = await app_client.post(f"{AGENTS}/{agent_id}/browser-call", json={})
    assert web.status_code == 201
    async with db_of(app_client).session() as session:
        found = {c.call_sid: c.agent_version_id for c in (await session.scalars(select(Conversation))).all()}
    assert found["CA" + "a2" * 16] == v2["id"] and found[web.json()["call_sid"]] == v2["id"]

    # a scenario test runs the version asked for, through the engine's parts (text mode)
    scenario = {
        "name": "greets",
        "caller": [{"say": "Hi there."}],
        "criteria": {"agent_never_says": ["xyzzy"]},
    }
    for version, greeting in ((v1, "Hello from version one."), (v2, "Hello from version two.")):
        run = await app_client.post(
            f"{AGENTS}/{agent_id}/tests/run?wait=true",
            json={"scenarios": [scenario], "version_id": version["id"]},
        )
        assert run.status_code == 200, run.text
        transcript = run.json()["results"][0]["transcript"]
        assert transcript[0]["role"] == "agent" and transcript[0]["text"] == greeting
    other = (await app_client.post(AGENTS, json={"name": "Other"})).json()["agent_id"]
    [other_v1] = await versions(app_client, other)
    wrong = await app_client.post(
        f"{AGENTS}/{agent_id}/tests/run", json={"scenarios": [scenario], "version_id": other_v1["id"]}
    )
    assert wrong.status_code == 404
