"""A PostgreSQL server whose data directory outlives the run, for benchmarks whose data set takes long to
generate (``bench.analytics_bench``: ~16 min for 1,000,000 conversations). ``initdb`` runs only the first
time; ``stop`` stops the server and keeps the directory. The directories live in ``bench/data`` (git-ignored).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.pg_server import PostgresServer

KEPT = Path(__file__).resolve().parent / "data" / "analytics"


class KeptPostgres(PostgresServer):
    def __init__(self, bin_dir: Path, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        super().__init__(bin_dir, existing=path)
        for parent in (path.parent, path.parent.parent):  # runuser's postgres must reach it
            parent.chmod(0o755)

    def _run(self, *args: str) -> Any:
        if Path(args[0]).name == "initdb" and (self.data / "PG_VERSION").exists():
            return None
        return super()._run(*args)

    def stop(self) -> None:
        try:
            super()._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        except Exception:
            pass
