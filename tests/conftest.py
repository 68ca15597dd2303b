"""Shared fixtures: a real app on a real database in a temp dir, over httpx and over loopback.

The database tests run on both backends: ``database_url`` is parametrized over a SQLite file and a
database of its own on a PostgreSQL server started once per session (``tests/pg_server.py``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
from collections.abc import AsyncIterator, Iterator
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

# The echo TTS at 20 ms a character instead of 55 (ECHO_TTS_MS_PER_CHAR): for call tests whose subject does
# not depend on how long the agent's replies last (the echo voice is a tone), so their calls end sooner.
QUICK_ECHO_VOICE: dict[str, object] = {"echo_tts_ms_per_char": 20}

# For tests whose subject does not depend on the database (validation, auth, OpenAPI): SQLite only.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings isolated from any .env: a fresh SQLite file and Chroma dir under tmp_path."""
    if "database_url" not in overrides:
        fresh_sqlite(tmp_path / "agents.db")
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
        "allow_bench_providers": True,  # the instant stand-ins: tests are about the engine around them
        "webhook_allow_private": True,
        "warm_embeddings": False,
        # the text end-of-turn model reads real words; the echo STT's are not (tests/test_text_turn.py
        # covers it, with the real model)
        "turn_text_model": "off",
        "log_level": "WARNING",
        "multi_instance": False,  # the multi-instance tests say so; PostgreSQL alone would imply it
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


# Set per session by the ``sqlite_template_dir`` fixture (in the environment: pytest imports this file
# as ``conftest`` and the tests import it again as ``tests.conftest``).
SQLITE_TEMPLATE_ENV = "TESTS_SQLITE_TEMPLATE_DIR"


def fresh_sqlite(path: Path) -> None:
    """A fresh database at ``path`` (when none is there yet): a copy of one file migrated once per
    session, so the service finds its schema at head instead of running every migration again. The
    migrations themselves run on empty databases in tests/test_migrations.py."""
    directory = os.environ.get(SQLITE_TEMPLATE_ENV)
    if not directory or path.exists():
        return
    template = Path(directory) / "migrated.db"
    if not template.exists():
        from concurrent.futures import ThreadPoolExecutor

        from storage.db import upgrade_schema

        building = Path(directory) / f"building-{os.getpid()}.db"
        with ThreadPoolExecutor(1) as pool:  # Alembic runs its own event loop: not inside the test's
            pool.submit(upgrade_schema, f"sqlite+aiosqlite:///{building}").result()
        building.replace(template)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, path)


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


@pytest.fixture(scope="session")
def postgres() -> Iterator[object]:
    """One PostgreSQL server for the whole session (Debian's ``postgresql`` package)."""
    from tests.pg_server import PostgresServer, find_bin_dir

    bin_dir = find_bin_dir()
    if bin_dir is None:
        # A failure, not a skip: `make test` installs it, and a green run must not hide a missing install.
        pytest.fail(
            "PostgreSQL is not installed (Debian package postgresql): run `make test`, which installs it"
        )
    server = PostgresServer(bin_dir).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def chroma_server() -> Iterator[object]:
    """One ChromaDB server (``chroma run``) for the whole session."""
    from tests.chroma_server import ChromaServer, chroma_cli

    cli = chroma_cli()
    if cli is None:
        pytest.fail("the chroma CLI (from the pinned chromadb package) is not installed: run `make test`")
    server = ChromaServer(cli).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["embedded", "server"])
def chroma_overrides(request: pytest.FixtureRequest) -> dict[str, object]:
    """Settings for each knowledge-store deployment: embedded Chroma (a dir under tmp_path) or a server."""
    if request.param == "embedded":
        return {}
    return request.getfixturevalue("chroma_server").settings()


@pytest_asyncio.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, migrated database on each backend: a SQLite file, or a PostgreSQL database of its own."""
    if request.param == "sqlite":
        fresh_sqlite(tmp_path / "agents.db")
        return f"sqlite+aiosqlite:///{tmp_path / 'agents.db'}"
    server = request.getfixturevalue("postgres")
    return await server.create_database()


@pytest_asyncio.fixture(params=["sqlite", "postgresql"])
async def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database without any schema yet, on each backend (for the migration tests)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    server = request.getfixturevalue("postgres")
    return await server.create_database(migrated=False)


@pytest_asyncio.fixture
async def app_client(tmp_path: Path, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process (lifespan run), an httpx client authenticated with the test key."""
    from main import create_app

    app = create_app(make_settings(tmp_path, database_url=database_url))
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


def _session_dir_in_env(factory: pytest.TempPathFactory, name: str, env: str) -> Iterator[Path]:
    """A session temp dir named in ``env`` for this process and the service processes tests start."""
    directory = factory.mktemp(name)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(env, str(directory))
        yield directory


@pytest.fixture(scope="session", autouse=True)
def caller_speech_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Caller lines synthesized once per session (``simulator/speech.py``: keyed by text, voice, speed
    and steadiness), here and in the processes the tests start."""
    from simulator.speech import CACHE_ENV

    yield from _session_dir_in_env(tmp_path_factory, "caller-speech", CACHE_ENV)


@pytest.fixture(scope="session", autouse=True)
def sqlite_template_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where ``fresh_sqlite`` keeps the session's migrated SQLite file (built on first use)."""
    yield from _session_dir_in_env(tmp_path_factory, "sqlite-template", SQLITE_TEMPLATE_ENV)


async def run_simulator(*args: str, timeout_s: float = 120) -> tuple[str, str]:
    """``python -m simulator ARGS`` as a user runs it (the venv's commands first on PATH, e.g. espeak's
    and piper's); its stdout and stderr, once it exited 0."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulator", *args,
        cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode == 0, err.decode()[-2000:]
    return out.decode(), err.decode()
