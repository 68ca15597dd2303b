"""A throwaway PostgreSQL server for the tests, from Debian's ``postgresql`` package.

``PostgresServer`` runs ``initdb`` on a temporary data directory and ``pg_ctl start`` on a free loopback
port (its unix socket in the same temporary directory), with durability switched off since the data is
thrown away. PostgreSQL refuses to run as root, so as root the binaries run as the ``postgres`` user
(``runuser``) on a directory it owns. Each test gets a database of its own (``create_database``), cloned
from a template that already holds the migrated schema, which takes milliseconds.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import asyncpg


def find_bin_dir() -> Path | None:
    """``/usr/lib/postgresql/<newest>/bin``, or None when the package is not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def orphaned_dirs(prefix: str) -> list[Path]:
    """Temp dirs of test servers whose pytest process is gone (killed before its fixtures' teardown)."""
    found = []
    for path in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        try:
            owner = int((path / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if not _alive(owner):
            found.append(path)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self, bin_dir: Path, existing: Path | None = None) -> None:
        self.bin_dir = bin_dir
        self.dir = existing or Path(tempfile.mkdtemp(prefix="pgtest-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.user = "postgres"
        self._as_root = os.geteuid() == 0
        self._template: str | None = None

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> PostgresServer:
        for orphan in orphaned_dirs("pgtest-"):
            PostgresServer(self.bin_dir, orphan).stop()
        (self.dir / "owner.pid").write_text(str(os.getpid()))
        if self._as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        else:
            self.user = os.environ.get("USER") or "postgres"
        self.dir.chmod(0o700)
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            self.user,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        )
        options = " ".join(
            (
                f"-p {self.port}",
                f"-k {self.dir}",
                "-c listen_addresses=127.0.0.1",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=300",
                "-c shared_buffers=32MB",
            )
        )
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.dir / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    def stop(self) -> None:
        try:
            self._run(
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                "immediate",
                "-w",
                "-t",
                "10",
                "stop",
            )
        except (subprocess.SubprocessError, OSError):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{database}"

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=self.port, user=self.user, database="postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def create_database(self, *, migrated: bool = True) -> str:
        """A new, empty database (or one holding the migrated schema); returns its SQLAlchemy URL."""
        name = "t_" + uuid.uuid4().hex[:16]
        if not migrated:
            await self._admin(f'CREATE DATABASE "{name}"')
            return self.url(name)
        if self._template is None:
            from storage.db import Database

            template = "t_migrated_template"
            await self._admin(f'CREATE DATABASE "{template}"')
            db = Database(self.url(template))
            try:
                await db.upgrade()
            finally:
                await db.dispose()
            self._template = template
        await self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"')
        return self.url(name)
