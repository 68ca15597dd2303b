"""ChromaDB's own server for the tests: ``chroma run`` from the pinned chromadb package, on a temp dir."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.pg_server import _free_port, orphaned_dirs


def chroma_cli() -> Path | None:
    found = Path(sys.executable).parent / "chroma"
    if found.exists():
        return found
    which = shutil.which("chroma")
    return Path(which) if which else None


class ChromaServer:
    def __init__(self, cli: Path) -> None:
        self.cli = cli
        self.dir = Path(tempfile.mkdtemp(prefix="chromatest-"))
        self.host = "127.0.0.1"
        self.port = _free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> ChromaServer:
        for orphan in orphaned_dirs("chromatest-"):
            _stop_orphan(orphan)
        (self.dir / "owner.pid").write_text(str(os.getpid()))
        log = (self.dir / "server.log").open("wb")
        self._proc = subprocess.Popen(
            [
                str(self.cli),
                "run",
                "--path",
                str(self.dir / "data"),
                "--host",
                self.host,
                "--port",
                str(self.port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
        )
        (self.dir / "server.pid").write_text(str(self._proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"chroma run exited: {(self.dir / 'server.log').read_text()[-2000:]}")
            try:
                if (
                    httpx.get(f"http://{self.host}:{self.port}/api/v2/heartbeat", timeout=1).status_code
                    == 200
                ):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("chroma run did not answer its heartbeat")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def settings(self) -> dict[str, object]:
        """Settings overrides pointing the service at this server."""
        return {"chroma_host": self.host, "chroma_port": self.port}


def _stop_orphan(path: Path) -> None:
    """Stop the ``chroma run`` a killed test session left behind in ``path`` (checked by its command line)."""
    try:
        pid = int((path / "server.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        if "chroma" in cmdline and str(path) in cmdline:
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass
    shutil.rmtree(path, ignore_errors=True)
