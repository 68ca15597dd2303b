"""Shared fixtures: a real app on a real SQLite file in a temp dir, over httpx and over loopback."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from config import Settings  # noqa: E402

API_KEY = "test-key-123"


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings isolated from any .env: a fresh SQLite file and Chroma dir under tmp_path."""
    values: dict[str, object] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'agents.db'}",
        "chroma_path": str(tmp_path / "chroma"),
        "api_keys": API_KEY,
        "api_key_file": str(tmp_path / ".api_key"),
        "jwt_secret": "test-jwt-secret-0123456789abcdef0123",
        "recordings_dir": str(tmp_path / "recordings"),
        "stt_provider": "echo",
        "tts_provider": "echo",
        "llm_provider": "echo",
        "webhook_allow_private": True,
        "warm_embeddings": False,
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """The real app served by uvicorn on 127.0.0.1 inside the test's event loop."""

    def __init__(self, settings: Settings, port: int | None = None) -> None:
        import uvicorn

        from main import create_app

        self.port = port or free_port()  # the same port again: a restart of the service
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        settings.public_url = self.base_url
        self.settings = settings
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_config=None, lifespan="on", ws="websockets-sansio"
        )
        self.server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LiveServer:
        self._task = asyncio.create_task(self.server.serve())
        for _ in range(3600):  # start-up waits for the models to warm (embedded providers: ~10-30 s)
            if self.server.started:
                return self
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.05)
        raise RuntimeError("server did not start")

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await asyncio.wait_for(self._task, 30)

    @property
    def runtime(self):  # type: ignore[no-untyped-def]
        return self.app.state.runtime

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, headers={"xi-api-key": API_KEY}, timeout=30)


@pytest_asyncio.fixture
async def app_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process (lifespan run), an httpx client authenticated with the test key."""
    from main import create_app

    app = create_app(make_settings(tmp_path))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers={"xi-api-key": API_KEY}
        ) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)
