"""The service as operators run it: ``uvicorn main:app`` in a subprocess, configured by environment only."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import API_KEY, ROOT, free_port, fresh_sqlite

JWT_SECRET = "test-jwt-secret-0123456789abcdef0123"


def service_env(workdir: Path, **overrides: object) -> dict[str, str]:
    """Environment for one instance: instant providers, no model warm-up, files under ``workdir``."""
    if "database_url" not in overrides:
        fresh_sqlite(workdir / "agents.db")
    values: dict[str, object] = {
        "DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'agents.db'}",
        "CHROMA_PATH": str(workdir / "chroma"),
        "API_KEYS": API_KEY,
        "API_KEY_FILE": str(workdir / ".api_key"),
        "JWT_SECRET": JWT_SECRET,
        "RECORDINGS_DIR": str(workdir / "recordings"),
        "STT_PROVIDER": "echo",
        "TTS_PROVIDER": "echo",
        "LLM_PROVIDER": "echo",
        "ALLOW_BENCH_PROVIDERS": "true",
        "WEBHOOK_ALLOW_PRIVATE": "true",
        "WARM_EMBEDDINGS": "false",
        "LOG_LEVEL": "INFO",
    }
    values.update({k.upper(): v for k, v in overrides.items()})
    env = {
        k: v for k, v in os.environ.items() if k not in values and not k.startswith(("DATABASE_", "CHROMA_"))
    }
    env.update({k: str(v) for k, v in values.items()})
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


class ServiceProcess:
    ARGS = ("--ws", "websockets-sansio", "--host", "127.0.0.1", "--port")

    def __init__(self, workdir: Path, env: dict[str, str], port: int | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env["PUBLIC_URL"] = self.base_url
        self.env = env
        self.log_path = workdir / f"uvicorn-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> subprocess.Popen[bytes]:
        # cwd is the work dir, so no .env of the checkout is read; --app-dir finds the code.
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "main:app",
                    "--app-dir",
                    str(ROOT),
                    *self.ARGS,
                    str(self.port),
                ],
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self.proc

    async def __aenter__(self) -> ServiceProcess:
        proc = self.spawn()
        async with httpx.AsyncClient() as http:
            for _ in range(1200):
                if proc.poll() is not None:
                    raise RuntimeError(f"service exited ({proc.returncode}): {self.output()[-3000:]}")
                try:
                    if (await http.get(f"{self.base_url}/healthz", timeout=1)).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError(f"service did not start: {self.output()[-3000:]}")

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait, 10)

    def sigterm(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    async def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return await asyncio.to_thread(self.proc.wait, timeout)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, headers={"xi-api-key": API_KEY}, timeout=30)
