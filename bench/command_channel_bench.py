"""Per-call command delivery latency: from Twilio's AMD callback (POST) to the call's handler.

    python -m bench.command_channel_bench            # ~1 min: 4 modes x 200 commands

Modes, each with the real service (uvicorn on loopback, Debian's PostgreSQL started on a temp dir):

- two instances on PostgreSQL: ``POST /twiml/amd`` (signed) on B, the call served on A (LISTEN/NOTIFY);
- the same, posted on A (the instance holding the call);
- one instance on SQLite (in-process wake-up);
- the fallback: the channel alone, A without a LISTEN connection, found by the poll (every 1 s).

Commands go one at a time (each waits for the previous one's handler): latency, not throughput. Both
instances run in this one process (one event loop), so the figures include no second machine's network.
Output: a markdown table on stdout and bench/results/command_channel.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from twilio.request_validator import RequestValidator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import pcts, write_result  # noqa: E402
from call.amd import CARRIER_VERDICT  # noqa: E402
from models import Conversation  # noqa: E402
from storage.commands import Command, CommandChannel  # noqa: E402
from storage.db import Database  # noqa: E402
from tests.conftest import LiveServer, make_settings  # noqa: E402
from tests.pg_server import PostgresServer, find_bin_dir  # noqa: E402

TOKEN = "bench-twilio-token"
TWILIO = {"twilio_account_sid": "AC" + "3" * 32, "twilio_auth_token": TOKEN, "dialer_enabled": False}
CALLS = 5  # conversations served at once on the receiving instance; commands go round-robin


class Served:
    """Handlers of ``CALLS`` conversations on one channel; ``arrived`` is set when a command lands."""

    def __init__(self, channel: CommandChannel, conversation_ids: list[str]) -> None:
        self.arrived = asyncio.Event()
        self.at = 0.0
        self.tasks = [
            asyncio.create_task(channel.serve(cid, {CARRIER_VERDICT: self._handle}))
            for cid in conversation_ids
        ]

    async def _handle(self, _command: Command) -> None:
        self.at = time.perf_counter()
        self.arrived.set()

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def conversations(db: Database) -> list[tuple[str, str]]:
    rows = [
        Conversation(call_sid=f"CA{uuid.uuid4().hex}", direction="outbound", status="in_progress")
        for _ in range(CALLS)
    ]
    async with db.session() as session:
        session.add_all(rows)
    return [(r.id, r.call_sid or "") for r in rows]


async def over_http(post_to: LiveServer, served_on: LiveServer, commands: int) -> list[float]:
    calls = await conversations(served_on.runtime.db)
    served = Served(served_on.runtime.commands, [cid for cid, _ in calls])
    latencies: list[float] = []
    try:
        async with httpx.AsyncClient() as http:
            for n in range(commands + 10):  # the first 10 warm up
                cid, sid = calls[n % CALLS]
                url = f"{post_to.base_url}/twiml/amd?conversation_id={cid}"
                form = {"CallSid": sid, "AccountSid": TWILIO["twilio_account_sid"], "AnsweredBy": "human"}
                signature = RequestValidator(TOKEN).compute_signature(url, form)
                served.arrived.clear()
                started = time.perf_counter()
                r = await http.post(url, data=form, headers={"X-Twilio-Signature": signature})
                assert r.status_code == 200, r.text
                await asyncio.wait_for(served.arrived.wait(), 10)
                if n >= 10:
                    latencies.append(served.at - started)
    finally:
        await served.stop()
    return latencies


async def poll_only(url: str, commands: int) -> list[float]:
    """The fallback: a receiver with no LISTEN connection finds each command by its poll."""
    dbs = [Database(url), Database(url)]
    sender = CommandChannel(dbs[0], "sender")
    receiver = CommandChannel(dbs[1], "receiver", poll_sec=1.0)
    receiver.postgres = False  # as if its LISTEN connection were down
    await sender.start()
    await receiver.start()
    calls = await conversations(dbs[0])
    served = Served(receiver, [cid for cid, _ in calls])
    latencies: list[float] = []
    try:
        for n in range(commands):
            served.arrived.clear()
            started = time.perf_counter()
            await sender.send(calls[n % CALLS][0], CARRIER_VERDICT, {"answered_by": "human"})
            await asyncio.wait_for(served.arrived.wait(), 10)
            latencies.append(served.at - started)
            await asyncio.sleep(random.uniform(0.0, 1.0))  # sent at any moment of the poll's period
    finally:
        await served.stop()
        await sender.stop()
        await receiver.stop()
        for db in dbs:
            await db.dispose()
    return latencies


async def main(commands: int) -> None:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise SystemExit("PostgreSQL is not installed (Debian package postgresql)")
    postgres = PostgresServer(bin_dir).start()
    rows: list[tuple[str, dict[str, Any]]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp)
            for name in "abs":
                (base / name).mkdir()
            url = await postgres.create_database()
            shared = {"database_url": url, "multi_instance": True, "chroma_host": "127.0.0.1", **TWILIO}
            async with (
                LiveServer(make_settings(base / "a", instance_id="app-a", **shared)) as a,
                LiveServer(make_settings(base / "b", instance_id="app-b", **shared)) as b,
            ):
                rows.append(
                    ("PostgreSQL, POST on B, call on A (NOTIFY)", pcts(await over_http(b, a, commands)))
                )
                print(rows[-1], flush=True)
                rows.append(("PostgreSQL, POST on A, call on A", pcts(await over_http(a, a, commands))))
                print(rows[-1], flush=True)
            async with LiveServer(make_settings(base / "s", **TWILIO)) as solo:
                rows.append(
                    ("SQLite, one instance (in-process)", pcts(await over_http(solo, solo, commands)))
                )
                print(rows[-1], flush=True)
            fallback = await poll_only(await postgres.create_database(), max(20, commands // 5))
            rows.append(("PostgreSQL, no LISTEN, `send()` → handler: poll every 1 s", pcts(fallback)))
            print(rows[-1], flush=True)
    finally:
        postgres.stop()
    table = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Twilio's AMD callback "
        f"(`POST /twiml/amd`, signed) to the handler of the live call, one command at a time, {CALLS} calls "
        "served; instances in one process on loopback. Command: `python -m bench.command_channel_bench`.",
        "",
        "| path | commands | POST → handler p50 / p95 / p99 ms |",
        "|---|---|---|",
        *(f"| {name} | {s['n']} | {s['p50']} / {s['p95']} / {s['p99']} |" for name, s in rows),
    ]
    write_result("command_channel", "Per-call command channel: delivery latency", "\n".join(table))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=200)
    asyncio.run(main(parser.parse_args().commands))
