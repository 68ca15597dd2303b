"""REST rate-limit cost: what counting each request adds, per mode, with the service on loopback.

    python -m bench.rate_limit_bench              # ~1 min: 4 modes x 600 requests (2 clients x 300)

Modes: the limit off and in-memory buckets (one instance, SQLite); the limit off and the shared buckets
(several instances on PostgreSQL: one upsert per request). Each mode is its own
service (real uvicorn, Debian's PostgreSQL started on a temp dir); requests are ``GET /v1/convai/agents``
with a limit far above the load, so none is refused and only the counting is measured.
Output: a markdown table on stdout and bench/results/rate_limit.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import pcts, write_result  # noqa: E402
from tests.conftest import LiveServer, make_settings  # noqa: E402
from tests.pg_server import PostgresServer, find_bin_dir  # noqa: E402

HIGH = {"api_rate_limit_per_min": 10**7, "api_rate_limit_burst": 10**6}


async def measure(settings: Any, requests: int, clients: int) -> list[float]:
    async with LiveServer(settings) as server:
        async with server.client() as warm:
            for _ in range(20):
                (await warm.get("/v1/convai/agents")).raise_for_status()
        latencies: list[float] = []

        async def client_loop() -> None:
            async with server.client() as client:
                for _ in range(requests // clients):
                    started = time.perf_counter()
                    r = await client.get("/v1/convai/agents")
                    latencies.append(time.perf_counter() - started)
                    assert r.status_code == 200, r.text

        await asyncio.gather(*(client_loop() for _ in range(clients)))
        return latencies


async def main(requests: int, clients: int) -> None:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise SystemExit("PostgreSQL is not installed (Debian package postgresql)")
    postgres = PostgresServer(bin_dir).start()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp)
            for name in "abcd":
                (base / name).mkdir()
            pg = {"multi_instance": True, "chroma_host": "127.0.0.1"}
            modes = [
                ("off (SQLite)", make_settings(base / "a", api_rate_limit_per_min=0)),
                ("in memory (SQLite)", make_settings(base / "b", **HIGH)),
                (
                    "off (PostgreSQL)",
                    make_settings(
                        base / "c",
                        database_url=await postgres.create_database(),
                        api_rate_limit_per_min=0,
                        **pg,
                    ),
                ),
                (
                    "shared (PostgreSQL)",
                    make_settings(base / "d", database_url=await postgres.create_database(), **HIGH, **pg),
                ),
            ]
            for name, settings in modes:
                stats = pcts(await measure(settings, requests, clients))
                rows.append((name, stats))
                print(name, stats, flush=True)
    finally:
        postgres.stop()
    table = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
        f"{requests} requests a mode from {clients} concurrent clients (`GET /v1/convai/agents`, "
        "nothing refused), service on loopback.",
        "",
        "| rate limit | requests | latency p50 / p95 / p99 ms |",
        "|---|---|---|",
        *(f"| {name} | {s['n']} | {s['p50']} / {s['p95']} / {s['p99']} |" for name, s in rows),
    ]
    write_result("rate_limit", "REST rate limit: cost per request", "\n".join(table))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--clients", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.clients))
