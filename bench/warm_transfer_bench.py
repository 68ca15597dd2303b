"""Warm transfer: the service's own time at each step, against the Twilio stand-in.

    python -m bench.warm_transfer_bench            # ~1 min: 10 transfers one at a time, then 40, 10 at a time

The real service (uvicorn on loopback, SQLite) and the Twilio stand-in (``tests/twilio_standin.py``,
driven by the official SDK). Each transfer is ``ToolRunner.transfer(mode="warm")`` on a call the
stand-in holds; the rep rings ``RING_S`` and answers; the announcement takes no time in the stand-in,
so what is measured is this service plus loopback HTTP, never Twilio's own latency or a phone ringing:

- *start*: the tool's call until it returns (the caller's TwiML is replaced: the conference);
- *rep dialled*: from the request to the Participants request having returned (after the caller's
  ``participant-join`` callback and the hold);
- *answered → bridged*: from the rep's ``in-progress`` callback to the caller taken off hold (the
  announcement's TwiML fetched and its ``announcement-end`` callback handled), minus nothing: the
  stand-in's announcement is instant here.

Output: a markdown table on stdout and bench/results/warm_transfer.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import pcts, write_result  # noqa: E402
from models import Agent, CallTransfer, Conversation  # noqa: E402
from tests.conftest import LiveServer, make_settings  # noqa: E402
from tests.twilio_conferences import RepBehaviour  # noqa: E402
from tests.twilio_standin import Scenario, TwilioStandIn  # noqa: E402
from tools.runner import ToolContext  # noqa: E402

ACCOUNT, TOKEN = "AC" + "4" * 32, "bench-twilio-token"
AGENT_NUMBER, REP = "+15550100001", "+14155550199"
RING_S = 0.2


async def one(server: LiveServer, twilio: TwilioStandIn, agent: Any, i: int) -> dict[str, Any]:
    sid = f"CA{i:032x}"
    caller = f"+1212555{i:04d}"
    async with server.runtime.db.session() as session:
        conversation = Conversation(
            agent_id=agent.id, call_sid=sid, direction="inbound", from_number=caller, to_number=AGENT_NUMBER,
            status="in_progress", stream_jti="bench",
        )  # fmt: skip
        session.add(conversation)
        await session.flush()
        cid = conversation.id
    twilio.incoming(sid, caller, AGENT_NUMBER, Scenario("human"))
    history = [("user", "This is Dana from Northwind Traders and we need pricing for forty seats.")]
    ctx = ToolContext(cid, sid, caller, AGENT_NUMBER, {}, history=lambda: history)
    started = time.perf_counter()
    outcome = await server.runtime.tool_runner.transfer(agent, ctx, number=REP, mode="warm")
    returned = time.perf_counter() - started
    assert outcome.handed_over, outcome
    while True:
        async with server.runtime.db.session() as session:
            row = await session.get(CallTransfer, outcome.result["transfer_id"])
        if row is not None and row.result != "dialing":
            break
        await asyncio.sleep(0.02)
    if row.result != "bridged":
        return {"failed": 1.0, "error": row.error or row.result}
    conf = twilio.conference(f"transfer-{row.id}")
    assert conf is not None and conf.bridged
    seen = {what: t for t, what in conf.timeline}
    answered, unhold = seen.get(f"join {row.rep_call_sid}"), seen.get(f"unhold {sid}")
    assert answered is not None and unhold is not None, (conf.timeline, row.error, row.rep_call_sid)
    assert row.rep_answered_at is not None and row.bridged_at is not None
    return {
        "start": returned,
        "dialled": (row.rep_answered_at - row.requested_at).total_seconds() - RING_S,
        "bridge": unhold - answered,
    }


async def run(count: int, concurrency: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        async with TwilioStandIn(ACCOUNT, TOKEN, answer=False) as twilio:
            twilio.rep = RepBehaviour(answers=True, ring_sec=RING_S)
            twilio.announce_s_per_word = 0.0
            settings = make_settings(
                Path(tmp), twilio_account_sid=ACCOUNT, twilio_auth_token=TOKEN, twilio_api_base=twilio.url,
                dialer_enabled=False, transfer_hold_music_url="",
            )  # fmt: skip
            async with LiveServer(settings) as server:
                async with server.runtime.db.session() as session:
                    agent = Agent(name="Ava", transfer_number=REP)
                    session.add(agent)
                    await session.flush()
                    await session.refresh(agent)
                gate = asyncio.Semaphore(concurrency)

                async def bounded(i: int) -> dict[str, Any]:
                    async with gate:
                        return await one(server, twilio, agent, i)

                began = time.perf_counter()
                load_before = os.getloadavg()[0]
                results = await asyncio.gather(*(bounded(i) for i in range(1, count + 1)))
                took = time.perf_counter() - began
                load = max(load_before, os.getloadavg()[0])
    failed = [r for r in results if "failed" in r]
    results = [r for r in results if "failed" not in r]
    rows = []
    for key, label in (
        ("start", "tool call → it returns (caller's TwiML replaced)"),
        ("dialled", "request → rep answered, minus the ring (join callback, hold, Participants create)"),
        ("bridge", "rep answered → caller off hold (announce TwiML fetched, announcement-end handled)"),
    ):
        p = pcts([r[key] for r in results])
        rows.append(f"| {label} | {p['n']} | {p['p50']} / {p['p95']} / {p['p99']} |")
    return (
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. {count} warm transfers, {concurrency} at "
        f"a time, in {took:.1f} s; the service on SQLite and the Twilio stand-in in one process on loopback "
        f"(shared, noisy machine: 1-minute load average up to {load:.1f} on 2 cores during the run). Rep rings {RING_S} s; the stand-in's announcement takes no time. Command: "
        "`python -m bench.warm_transfer_bench`.\n\n"
        "| step (the service's own time) | transfers | p50 / p95 / p99 ms |\n|---|---|---|\n"
        + "\n".join(rows)
        + (
            f"\n\n{len(failed)} of {count} did not bridge: "
            + "; ".join(sorted({str(r["error"])[:120] for r in failed}))
            if failed
            else f"\n\nAll {count} bridged."
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args()
    # one at a time first (each step's own cost), then ``concurrency`` at once
    bodies = [asyncio.run(run(min(10, args.count), 1)), asyncio.run(run(args.count, args.concurrency))]
    write_result("warm_transfer", "Warm transfer: the service's own time per step", "\n\n".join(bodies))


if __name__ == "__main__":
    main()
