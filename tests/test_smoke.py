"""The service starts: probes answer, the API wants a key and takes the right one."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

AGENTS = "/v1/convai/agents"
READY = {
    "database": True,
    "tts_loaded": True,
    "vad_loaded": True,
    "stt_loaded": True,
    "llm_loaded": True,
    "accepting_calls": True,
    "turn_model_loaded": True,
}


@pytest.mark.asyncio
async def test_health_and_auth(app_client: httpx.AsyncClient) -> None:
    del app_client.headers["xi-api-key"]  # the probes need no credentials
    r = await app_client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}

    # The (echo) providers warm up in the background right after start-up: ready within a bounded wait.
    deadline = time.monotonic() + 10
    while (r := await app_client.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
        assert r.status_code == 503 and r.json()["ready"] is False
        await asyncio.sleep(0.05)
    assert r.status_code == 200, r.text
    assert r.json() == {"ready": True, "checks": READY}

    anonymous = await app_client.get(AGENTS)
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/json"
    assert anonymous.json()["detail"].startswith("missing credentials")
    wrong = await app_client.get(AGENTS, headers={"xi-api-key": "not-the-key"})
    assert wrong.status_code == 401 and wrong.json() == {"detail": "invalid API key"}

    authorized = await app_client.get(AGENTS, headers={"xi-api-key": "test-key-123"})
    assert authorized.status_code == 200, authorized.text
    assert authorized.json() == {"agents": [], "has_more": False, "next_cursor": None}
