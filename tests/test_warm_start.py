"""Warm start: /readyz says 503 until every model is warm, then 200; start-up waits for the warm-up
(bounded) so the port opens warm, and a service that opened early still serves while warming."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import pytest

from tests.conftest import API_KEY, make_settings


def gate_warm_up(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, list[str]]:
    """Hold the provider warm-up at its VAD step until the returned event is set."""
    import providers.registry as registry

    release, ran = threading.Event(), []

    def slow_vad() -> None:
        ran.append("vad")
        assert release.wait(20)

    monkeypatch.setattr(registry, "warm_vad", slow_vad)
    return release, ran


@pytest.mark.asyncio
async def test_readyz_is_503_until_the_models_are_warm_then_200(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from main import create_app

    release, ran = gate_warm_up(monkeypatch)
    app = create_app(make_settings(tmp_path, warm_start_wait_sec=0))  # the port opens at once
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.get("/readyz")
            assert r.status_code == 503 and r.json()["ready"] is False
            checks = r.json()["checks"]
            assert checks["tts_loaded"] is True and checks["vad_loaded"] is False  # TTS first: the greeting
            assert checks["stt_loaded"] is False and checks["llm_loaded"] is False
            # not ready, yet serving: the API answers meanwhile
            assert (await client.get("/v1/convai/agents", headers={"xi-api-key": API_KEY})).status_code == 200
            await asyncio.sleep(0.2)
            assert (await client.get("/readyz")).status_code == 503
            release.set()
            for _ in range(100):
                if (r := await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert r.status_code == 200 and all(r.json()["checks"].values())
    assert ran == ["vad"]


@pytest.mark.asyncio
async def test_start_up_waits_for_the_warm_up_before_the_service_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from main import create_app

    release, _ = gate_warm_up(monkeypatch)
    app = create_app(make_settings(tmp_path, warm_start_wait_sec=30))
    lifespan = app.router.lifespan_context(app)
    starting = asyncio.create_task(lifespan.__aenter__())
    await asyncio.sleep(0.5)
    assert not starting.done()  # the port would not be open yet
    release.set()
    await asyncio.wait_for(starting, 10)
    try:
        assert app.state.runtime.providers.readiness() == dict.fromkeys(
            ("tts_loaded", "vad_loaded", "stt_loaded", "llm_loaded"), True
        )
    finally:
        await lifespan.__aexit__(None, None, None)


@pytest.mark.asyncio
async def test_start_up_opens_anyway_when_the_warm_up_overruns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from main import create_app

    release, _ = gate_warm_up(monkeypatch)
    app = create_app(make_settings(tmp_path, warm_start_wait_sec=0.3))
    try:
        async with app.router.lifespan_context(app):
            assert app.state.runtime.providers.readiness()["vad_loaded"] is False
            release.set()
    finally:
        release.set()
