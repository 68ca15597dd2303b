"""Agents API over httpx on the in-process app with a real SQLite file: CRUD, pagination, errors."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from models import Agent, AgentTool, KnowledgeDocument
from tests.conftest import SQLITE_ONLY

AGENTS = "/v1/convai/agents"


def agent_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Sales Bot",
        "system_prompt": "You are a sales representative for Acme.",
        "first_message": "Hello {{name}}, how can I help?",
        "voice_id": "aura-2-thalia-en",
        "interrupt_enabled": True,
    }
    body.update(overrides)
    return body


async def create(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    r = await client.post(AGENTS, json=agent_body(**overrides))
    assert r.status_code == 201, r.text
    return r.json()


async def count(client: httpx.AsyncClient, model: Any) -> int:
    async with client.app.state.runtime.db.session() as session:  # type: ignore[attr-defined]
        return await session.scalar(select(func.count()).select_from(model))


def error_locs(response: httpx.Response) -> list[list[Any]]:
    assert response.status_code == 422, response.text
    return [e["loc"] for e in response.json()["detail"]]


@pytest.mark.asyncio
async def test_create_with_the_spec_flat_body_and_get_it_back(app_client: httpx.AsyncClient) -> None:
    body = agent_body(
        language="de",
        llm_model="llama3:8b-instruct-q4_K_S",
        temperature=0.3,
        max_call_duration_sec=600,
        silence_timeout_sec=12.5,
        turn_settings={
            "interrupt_min_energy": 650,
            "interrupt_debounce_ms": 300,
            "silence_threshold_sec": 0.4,
        },
        providers={"stt": "local", "tts": "deepgram", "llm": "ollama"},
        builtin_tools=["end_call", "book_meeting"],
        transfer_number="+14155550123",
        data_collection=[{"name": "budget", "type": "number", "description": "Yearly budget in USD"}],
        tools=[
            {
                "name": "lookup_account",
                "description": "Find the caller's account",
                "kind": "webhook",
                "parameters": {"type": "object", "properties": {"email": {"type": "string"}}},
                "config": {"url": "https://crm.example.com/lookup"},
            },
            {"name": "hang_up", "kind": "end_call"},
        ],
    )
    r = await app_client.post(AGENTS, json=body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["id"].startswith("agent_") and created["agent_id"] == created["id"]
    for key in ("name", "system_prompt", "first_message", "voice_id", "language", "llm_model", "temperature"):
        assert created[key] == body[key]
    assert created["turn_settings"] == {
        "interrupt_min_energy": 650,
        "interrupt_debounce_ms": 300,
        "silence_threshold_sec": 0.4,
    }
    assert created["providers"] == {"stt": "local", "tts": "deepgram", "llm": "ollama"}
    assert created["builtin_tools"] == ["end_call", "book_meeting"]
    assert created["data_collection"] == body["data_collection"]
    tools = {t["name"]: t for t in created["tools"]}
    assert set(tools) == {"lookup_account", "hang_up"}
    assert tools["lookup_account"]["config"]["url"] == "https://crm.example.com/lookup"
    assert tools["lookup_account"]["config"]["method"] == "POST"
    assert tools["hang_up"]["parameters"] == {"type": "object", "properties": {}}
    # The same object also speaks ElevenLabs.
    cc = created["conversation_config"]
    assert cc["agent"]["prompt"]["prompt"] == body["system_prompt"]
    assert cc["agent"]["first_message"] == body["first_message"]
    assert cc["tts"]["voice_id"] == "aura-2-thalia-en"
    assert created["metadata"]["created_at_unix_secs"] > 0

    r = await app_client.get(f"{AGENTS}/{created['id']}")
    assert r.status_code == 200
    assert r.json() == created
    async with app_client.app.state.runtime.db.session() as session:  # type: ignore[attr-defined]
        agent = await session.get(Agent, created["id"])
        assert agent is not None and agent.turn_settings["interrupt_debounce_ms"] == 300


@pytest.mark.asyncio
async def test_defaults_of_a_minimal_agent(app_client: httpx.AsyncClient) -> None:
    r = await app_client.post(AGENTS, json={"name": "Minimal"})
    assert r.status_code == 201
    agent = r.json()
    assert agent["voice_id"] is None and agent["llm_model"] is None
    assert agent["interrupt_enabled"] is True and agent["language"] == "en"
    assert agent["tools"] == [] and agent["knowledge_base_ids"] == [] and agent["tags"] == []


@pytest.mark.asyncio
async def test_list_is_newest_first_with_cursor_pagination(app_client: httpx.AsyncClient) -> None:
    ids = [(await create(app_client, name=f"agent {i}"))["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"page_size": 2}
        if cursor:
            params["cursor"] = cursor
        r = await app_client.get(AGENTS, params=params)
        assert r.status_code == 200
        page = r.json()
        pages += 1
        seen += [a["id"] for a in page["agents"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert pages == 3
    assert seen == list(reversed(ids))

    r = await app_client.get(AGENTS, params={"search": "AGENT 3"})
    assert [a["id"] for a in r.json()["agents"]] == [ids[3]]


@SQLITE_ONLY
@pytest.mark.asyncio
async def test_list_rejects_bad_paging_input(app_client: httpx.AsyncClient) -> None:
    r = await app_client.get(AGENTS, params={"cursor": "not-a-cursor!"})
    assert r.status_code == 400 and r.json() == {"detail": "invalid cursor"}
    assert ["query", "page_size"] in error_locs(await app_client.get(AGENTS, params={"page_size": 0}))
    assert ["query", "page_size"] in error_locs(await app_client.get(AGENTS, params={"page_size": 101}))


@pytest.mark.asyncio
async def test_patch_is_partial(app_client: httpx.AsyncClient) -> None:
    agent = await create(
        app_client,
        turn_settings={"interrupt_min_energy": 500, "interrupt_debounce_ms": 250},
        providers={"stt": "echo"},
    )
    r = await app_client.patch(
        f"{AGENTS}/{agent['id']}",
        json={
            "first_message": "Hi there!",
            "interrupt_enabled": False,
            "voice_id": None,
            # merge patch: a key sent as null is removed, keys not sent are kept
            "turn_settings": {"interrupt_min_energy": None, "interrupt_min_speech_ms": 120},
            "providers": {"tts": "local"},
        },
    )
    assert r.status_code == 200, r.text
    updated = r.json()
    assert updated["first_message"] == "Hi there!"
    assert updated["interrupt_enabled"] is False
    assert updated["voice_id"] is None
    assert updated["system_prompt"] == agent["system_prompt"]
    assert updated["turn_settings"] == {"interrupt_debounce_ms": 250, "interrupt_min_speech_ms": 120}
    assert updated["providers"] == {"stt": "echo", "tts": "local"}
    assert updated["updated_at"] >= agent["updated_at"]
    assert (await app_client.get(f"{AGENTS}/{agent['id']}")).json() == updated


@pytest.mark.asyncio
async def test_patch_with_elevenlabs_conversation_config_is_deep_merged(
    app_client: httpx.AsyncClient,
) -> None:
    agent = await create(app_client)
    r = await app_client.patch(
        f"{AGENTS}/{agent['id']}",
        json={
            "conversation_config": {
                "agent": {"prompt": {"prompt": "New prompt", "temperature": 0.2}},
                "asr": {"quality": "high", "keywords": ["Acme"]},
            },
            "tags": ["sales"],
            "platform_settings": {"widget": {"variant": "compact"}},
        },
    )
    assert r.status_code == 200, r.text
    updated = r.json()
    assert updated["system_prompt"] == "New prompt" and updated["temperature"] == 0.2
    assert updated["first_message"] == agent["first_message"]
    assert updated["conversation_config"]["asr"] == {"quality": "high", "keywords": ["Acme"]}
    assert updated["tags"] == ["sales"]
    assert updated["platform_settings"] == {"widget": {"variant": "compact"}}
    r = await app_client.patch(
        f"{AGENTS}/{agent['id']}", json={"conversation_config": {"asr": {"provider": "elevenlabs"}}}
    )
    assert r.json()["conversation_config"]["asr"] == {
        "quality": "high",
        "keywords": ["Acme"],
        "provider": "elevenlabs",
    }
    assert r.json()["system_prompt"] == "New prompt"


@pytest.mark.asyncio
async def test_delete_removes_the_agent_and_its_tools(app_client: httpx.AsyncClient) -> None:
    agent = await create(app_client, tools=[{"name": "hang_up", "kind": "end_call"}])
    assert await count(app_client, AgentTool) == 1
    r = await app_client.delete(f"{AGENTS}/{agent['id']}")
    assert r.status_code == 204 and r.content == b""
    assert (await app_client.get(f"{AGENTS}/{agent['id']}")).status_code == 404
    assert await count(app_client, AgentTool) == 0
    assert (await app_client.delete(f"{AGENTS}/{agent['id']}")).status_code == 404


@pytest.mark.asyncio
async def test_unknown_ids_are_404_with_json_detail(app_client: httpx.AsyncClient) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        r = await app_client.request(method, f"{AGENTS}/agent_nope", json={} if method == "PATCH" else None)
        assert r.status_code == 404
        assert r.json() == {"detail": "agent not found: agent_nope"}


@pytest.mark.asyncio
async def test_duplicate_tool_names_are_409_and_nothing_is_written(app_client: httpx.AsyncClient) -> None:
    r = await app_client.post(
        AGENTS, json=agent_body(tools=[{"name": "x", "kind": "end_call"}, {"name": "x", "kind": "send_sms"}])
    )
    assert r.status_code == 409
    assert r.json() == {"detail": "duplicate tool names: x"}
    assert await count(app_client, Agent) == 0


@SQLITE_ONLY
@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("overrides", "loc"),
    [
        ({"name": ""}, ["body", "name"]),
        ({"temperature": 3}, ["body", "temperature"]),
        ({"transfer_number": "555-1234"}, ["body", "transfer_number"]),
        ({"turn_settings": {"interrupt_threshold": 3}}, ["body", "turn_settings", "interrupt_threshold"]),
        (
            {"turn_settings": {"interrupt_debounce_ms": -1}},
            ["body", "turn_settings", "interrupt_debounce_ms"],
        ),
        ({"providers": {"stt": "whisper-cloud"}}, ["body", "providers", "stt"]),
        ({"providers": {"llm": "deepgram"}}, ["body", "providers", "llm"]),
        ({"builtin_tools": ["end_call", "fly"]}, ["body", "builtin_tools", 1]),
        ({"builtin_tools": ["end_call", "end_call"]}, ["body", "builtin_tools"]),
        ({"data_collection": [{"name": "x", "type": "date"}]}, ["body", "data_collection", 0, "type"]),
        ({"language": "English!"}, ["body", "language"]),
        ({"unknown_field": 1}, ["body", "unknown_field"]),
        ({"tools": [{"name": "1bad"}]}, ["body", "tools", 0, "name"]),
        ({"tools": [{"name": "hook", "kind": "webhook", "config": {}}]}, ["body", "tools", 0]),
        ({"tools": [{"name": "t", "parameters": {"type": "string"}}]}, ["body", "tools", 0, "parameters"]),
        ({"stt_keywords": ["Acme:5"]}, ["body", "stt_keywords", 0]),
        ({"stt_keywords": ["Acme", "Acme"]}, ["body", "stt_keywords"]),
        ({"stt_keywords": ["x" * 51]}, ["body", "stt_keywords", 0]),
    ],
)
async def test_validation_errors_are_422_pointing_at_the_field(
    app_client: httpx.AsyncClient, overrides: dict[str, Any], loc: list[Any]
) -> None:
    r = await app_client.post(AGENTS, json=agent_body(**overrides))
    assert loc in error_locs(r)
    assert all(set(e) == {"loc", "msg", "type"} for e in r.json()["detail"])
    assert await count(app_client, Agent) == 0


@pytest.mark.asyncio
async def test_stt_keywords_are_the_elevenlabs_asr_keywords(app_client: httpx.AsyncClient) -> None:
    agent = await create(app_client, stt_keywords=["Acme", "HubSpot"])
    assert agent["stt_keywords"] == ["Acme", "HubSpot"]
    assert agent["conversation_config"]["asr"]["keywords"] == ["Acme", "HubSpot"]
    r = await app_client.patch(
        f"{AGENTS}/{agent['id']}", json={"conversation_config": {"asr": {"keywords": ["Orbit CRM"]}}}
    )
    assert r.status_code == 200 and r.json()["stt_keywords"] == ["Orbit CRM"]
    r = await app_client.patch(
        f"{AGENTS}/{agent['id']}", json={"conversation_config": {"asr": {"keywords": ["bad:2"]}}}
    )
    assert ["body", "conversation_config", "asr", "keywords"] == error_locs(r)[0][:4]
    assert (await app_client.get(f"{AGENTS}/{agent['id']}")).json()["stt_keywords"] == ["Orbit CRM"]


@SQLITE_ONLY
@pytest.mark.asyncio
async def test_patch_refuses_null_for_required_fields_and_bad_json(app_client: httpx.AsyncClient) -> None:
    agent = await create(app_client)
    r = await app_client.patch(f"{AGENTS}/{agent['id']}", json={"name": None})
    assert r.status_code == 422 and "name may not be null" in r.text
    r = await app_client.patch(
        f"{AGENTS}/{agent['id']}", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert (await app_client.get(f"{AGENTS}/{agent['id']}")).json() == agent


@pytest.mark.asyncio
async def test_knowledge_base_ids_copy_documents_and_unknown_ids_roll_back(
    app_client: httpx.AsyncClient,
) -> None:
    source = await create(app_client, name="Source")
    async with app_client.app.state.runtime.db.session() as session:  # type: ignore[attr-defined]
        doc = KnowledgeDocument(
            agent_id=source["id"], name="pricing.md", text="Pro plan: $99/month", size_bytes=19
        )
        session.add(doc)
    r = await app_client.post(AGENTS, json=agent_body(name="Copy", knowledge_base_ids=[doc.id]))
    assert r.status_code == 201, r.text
    copy = r.json()
    assert len(copy["knowledge_base_ids"]) == 1 and copy["knowledge_base_ids"][0] != doc.id
    async with app_client.app.state.runtime.db.session() as session:  # type: ignore[attr-defined]
        copied = await session.get(KnowledgeDocument, copy["knowledge_base_ids"][0])
        assert copied is not None
        assert (copied.agent_id, copied.text, copied.status) == (copy["id"], "Pro plan: $99/month", "pending")

    # An unknown document: 404, and neither the agent nor its tools are left behind.
    agents_before, tools_before = await count(app_client, Agent), await count(app_client, AgentTool)
    r = await app_client.post(
        AGENTS,
        json=agent_body(
            name="Broken", knowledge_base_ids=["doc_missing"], tools=[{"name": "t", "kind": "end_call"}]
        ),
    )
    assert r.status_code == 404 and r.json() == {"detail": "knowledge document not found: doc_missing"}
    assert (await count(app_client, Agent), await count(app_client, AgentTool)) == (
        agents_before,
        tools_before,
    )

    # PATCH attaches: its own documents stay as they are.
    r = await app_client.patch(f"{AGENTS}/{source['id']}", json={"knowledge_base_ids": [doc.id]})
    assert r.status_code == 200 and r.json()["knowledge_base_ids"] == [doc.id]


@pytest.mark.asyncio
async def test_elevenlabs_create_maps_conversation_config(app_client: httpx.AsyncClient) -> None:
    r = await app_client.post(
        f"{AGENTS}/create",
        json={
            "name": "EL agent",
            "tags": ["x"],
            "conversation_config": {
                "agent": {
                    "first_message": "Hi!",
                    "language": "fr",
                    "prompt": {
                        "prompt": "Be brief.",
                        "llm": "qwen2.5:3b",
                        "temperature": 0.1,
                        "max_tokens": 90,
                    },
                },
                "tts": {"voice_id": "aura-2-amalthea-en", "stability": 0.5},
                "turn": {"turn_timeout": 9},
                "conversation": {"max_duration_seconds": 300},
                "vad": {"background_voice_detection": True},
            },
        },
    )
    assert r.status_code == 200, r.text
    agent_id = r.json()["agent_id"]
    agent = (await app_client.get(f"{AGENTS}/{agent_id}")).json()
    assert (agent["name"], agent["first_message"], agent["language"]) == ("EL agent", "Hi!", "fr")
    assert (agent["system_prompt"], agent["llm_model"], agent["temperature"]) == (
        "Be brief.",
        "qwen2.5:3b",
        0.1,
    )
    assert (agent["voice_id"], agent["silence_timeout_sec"], agent["max_call_duration_sec"]) == (
        "aura-2-amalthea-en",
        9,
        300,
    )
    cc = agent["conversation_config"]
    assert cc["agent"]["prompt"]["max_tokens"] == 90
    assert cc["tts"] == {"voice_id": "aura-2-amalthea-en", "stability": 0.5}
    assert cc["vad"] == {"background_voice_detection": True}
    assert agent["tags"] == ["x"]

    r = await app_client.post(f"{AGENTS}/create", json={"conversation_config": {"turn": {"turn_timeout": 0}}})
    assert ["body", "conversation_config", "turn", "turn_timeout"] in error_locs(r)
    r = await app_client.post(
        f"{AGENTS}/create", json={"conversation_config": {"turn": {"turn_eagerness": "sluggish"}}}
    )
    assert r.status_code == 422 and error_locs(r) == [
        ["body", "conversation_config", "turn", "turn_eagerness"]
    ]

    # turn_eagerness lives in turn_settings: a PATCH through conversation_config merges into them
    r = await app_client.patch(f"{AGENTS}/{agent_id}", json={"turn_settings": {"interrupt_debounce_ms": 250}})
    assert r.status_code == 200, r.text
    r = await app_client.patch(
        f"{AGENTS}/{agent_id}", json={"conversation_config": {"turn": {"turn_eagerness": "eager"}}}
    )
    assert r.status_code == 200, r.text
    assert r.json()["turn_settings"] == {"interrupt_debounce_ms": 250, "turn_eagerness": "eager"}
    assert r.json()["conversation_config"]["turn"] == {"turn_timeout": 9, "turn_eagerness": "eager"}
    r = await app_client.patch(f"{AGENTS}/{agent_id}", json={"turn_settings": {"turn_eagerness": "slow"}})
    assert r.status_code == 422 and error_locs(r) == [["body", "turn_settings", "turn_eagerness"]]
    r = await app_client.post(f"{AGENTS}/create", json={"name": "no config"})
    assert ["body", "conversation_config"] in error_locs(r)


@SQLITE_ONLY
@pytest.mark.asyncio
async def test_openapi_describes_every_route_with_models_and_errors(app_client: httpx.AsyncClient) -> None:
    spec = (await app_client.get("/openapi.json")).json()
    paths = spec["paths"]
    expected = {
        "/v1/convai/agents": {"get", "post"},
        "/v1/convai/agents/create": {"post"},
        "/v1/convai/agents/{agent_id}": {"get", "patch", "delete"},
        "/v1/convai/agents/{agent_id}/tools": {"get", "post"},
        "/v1/convai/agents/{agent_id}/tools/{tool_id}": {"get", "patch", "delete"},
        "/v1/convai/conversations": {"get"},
        "/v1/convai/conversations/{conversation_id}": {"get", "delete"},
        "/v1/convai/phone-numbers": {"get", "post"},
        "/v1/convai/phone-numbers/{phone_number_id}": {"get", "patch", "delete"},
        "/v1/convai/webhooks": {"get", "post"},
        "/v1/convai/webhooks/{webhook_id}": {"get", "patch", "delete"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path
        for method in methods:
            operation = paths[path][method]
            assert "401" in operation["responses"], (path, method)
            ok = next(code for code in operation["responses"] if code.startswith("2"))
            if ok != "204":
                assert "$ref" in str(operation["responses"][ok]["content"]), (path, method)
            if "{" in path:
                assert operation["responses"]["404"]["content"], (path, method)
    assert "AgentResponse" in spec["components"]["schemas"]
    assert (await app_client.get("/docs")).status_code == 200
