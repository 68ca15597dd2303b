"""Campaign dialer benchmark: dialing throughput and how well the concurrency cap and the calls-per-minute
rate hold, with the service on loopback and the Twilio stand-in playing the leads.

    python -m bench.dialer_bench                 # both runs, ~40 s
    python -m bench.dialer_bench --leads 400     # a bigger throughput run

Run 1 (throughput): answering machines that ring 0.1 s and play 0.3-0.9 s, a cap of 10, no effective rate limit: how
many dials per second the dialer sustains, and the most calls live at once at Twilio's end (<= cap).
Run 2 (rate): a cap of 50 and 30 calls per minute, 60 instant-busy leads, watched for 20 s: the dials in
the first minute must stop at 30 however free the cap is.
Output: a markdown table on stdout and bench/results/dialer.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import LiveServer, make_settings  # noqa: E402
from tests.twilio_standin import PlacedCall, Scenario, TwilioStandIn  # noqa: E402

ACCOUNT_SID = "AC" + "b" * 32
AUTH_TOKEN = "bench-token"
RESULTS = ROOT / "bench" / "results"


async def setup(client: httpx.AsyncClient) -> str:
    r = await client.post("/v1/convai/agents", json={"name": "Bench", "system_prompt": "Hi"})
    r.raise_for_status()
    agent_id = r.json()["agent_id"]
    r = await client.post(
        "/v1/convai/phone-numbers", json={"phone_number": "+14155550100", "agent_id": agent_id}
    )
    r.raise_for_status()
    return agent_id


async def run(leads: int, cap: int, cpm: int, scenario, watch_sec: float | None) -> dict[str, float]:  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory() as tmp:
        async with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, scenario=scenario) as twilio:
            settings = make_settings(
                Path(tmp),
                twilio_account_sid=ACCOUNT_SID,
                twilio_auth_token=AUTH_TOKEN,
                twilio_api_base=twilio.url,
                dialer_tick_sec=0.05,
            )
            async with LiveServer(settings) as server, server.client() as client:
                agent_id = await setup(client)
                numbers = [f"+1212555{n:04d}" for n in range(1000, 1000 + leads)]
                started = time.monotonic()
                r = await client.post(
                    "/v1/convai/batch-calling/submit",
                    json={
                        "call_name": "bench",
                        "agent_id": agent_id,
                        "recipients": [{"phone_number": n} for n in numbers],
                        "target_concurrency_limit": cap,
                        "calls_per_minute": cpm,
                    },
                )
                r.raise_for_status()
                batch_id = r.json()["id"]
                while True:
                    await asyncio.sleep(0.2)
                    elapsed = time.monotonic() - started
                    if watch_sec is not None and elapsed >= watch_sec:
                        break
                    body = (await client.get(f"/v1/convai/batch-calling/{batch_id}")).json()
                    if body["status"] == "completed":
                        break
                elapsed = time.monotonic() - started
            await twilio.settled(30)
    calls = sorted(twilio.calls.values(), key=lambda c: c.created_at)
    created = [c.created_at - started for c in calls]
    gaps = [b - a for a, b in itertools.pairwise(created)]
    in_first_minute = sum(1 for t in created if t < 60)
    return {
        "leads": leads,
        "cap": cap,
        "cpm": cpm,
        "dialled": len(calls),
        "seconds": elapsed,
        "dials_per_sec": len(calls) / elapsed if elapsed else 0.0,
        "first_dial_sec": created[0] if created else float("nan"),
        "median_gap_ms": statistics.median(gaps) * 1000 if gaps else float("nan"),
        "max_live": twilio.max_live,
        "first_minute": in_first_minute,
        "twice": sum(1 for n in twilio.per_number.values() if n > 1),
    }


def talk(call: PlacedCall) -> Scenario:
    return Scenario("machine", ring_sec=0.1, talk_sec=random.uniform(0.3, 0.9))  # AMD: outcome at once


def busy(call: PlacedCall) -> Scenario:
    return Scenario("busy", ring_sec=0.02)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leads", type=int, default=200)
    parser.add_argument("--cap", type=int, default=10)
    args = parser.parse_args()
    random.seed(7)
    throughput = await run(args.leads, args.cap, 6000, talk, None)
    rate = await run(60, 50, 30, busy, 20.0)
    rows = [
        "| run | leads | cap | calls/min | dialled | time (s) | dials/s | first dial (s) | max live | "
        "dials in 1st min | dialled twice |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in (("throughput", throughput), ("rate limit (20 s watched)", rate)):
        rows.append(
            f"| {name} | {r['leads']} | {r['cap']} | {r['cpm']} | {r['dialled']} | {r['seconds']:.1f} | "
            f"{r['dials_per_sec']:.1f} | {r['first_dial_sec']:.2f} | {r['max_live']} | {r['first_minute']} | "
            f"{r['twice']} |"
        )
    verdict = [
        "",
        f"- cap held: max live {throughput['max_live']} <= {throughput['cap']}: "
        f"{'yes' if throughput['max_live'] <= throughput['cap'] else 'NO'}",
        f"- rate held: {rate['first_minute']} dials in the first minute <= {rate['cpm']}: "
        f"{'yes' if rate['first_minute'] <= rate['cpm'] else 'NO'}",
        f"- nobody dialled twice: {'yes' if throughput['twice'] == rate['twice'] == 0 else 'NO'}",
    ]
    text = "\n".join(["## Campaign dialer", "", *rows, *verdict, ""])
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dialer.md").write_text(text)


if __name__ == "__main__":
    asyncio.run(main())
