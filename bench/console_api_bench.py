"""What the console's pages cost the service at scale: a 10,000-lead campaign's progress (polled every 2 s
by each open campaign page), a filtered page of its leads, its CSV export; a 10,000-number do-not-call
import and the list's search. The service on loopback (SQLite), the dialer off, leads given a realistic
mix of statuses and outcomes directly in the database.

    python -m bench.console_api_bench            # ~1 min
    python -m bench.console_api_bench --leads 2000

Output: a markdown table on stdout and bench/results/console_api.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import LiveServer, make_settings  # noqa: E402

RESULTS = ROOT / "bench" / "results"
OUTCOMES = ["not_interested", "no_answer", "voicemail", "meeting_booked", "interested", "busy"]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def timed(
    client: httpx.AsyncClient, method: str, url: str, times: int, **kwargs
) -> tuple[list[float], int]:  # type: ignore[no-untyped-def]
    spent: list[float] = []
    size = 0
    for _ in range(times):
        start = time.perf_counter()
        r = await client.request(method, url, **kwargs)
        spent.append((time.perf_counter() - start) * 1000)
        r.raise_for_status()
        size = len(r.content)
    return spent, size


async def mix_outcomes(server: LiveServer, batch_id: str) -> None:
    """Half the leads done (outcomes in turn), a tenth on a call, a tenth waiting for a retry."""
    from sqlalchemy import select

    from models import CampaignRecipient, Conversation
    from telephony.campaigns import status_for

    now = datetime.now(UTC)
    async with server.runtime.db.session() as session:
        session.add(Conversation(agent_id=None, campaign_id=batch_id, created_at=now - timedelta(minutes=30)))
        rows = (
            await session.scalars(select(CampaignRecipient).where(CampaignRecipient.campaign_id == batch_id))
        ).all()
        for i, row in enumerate(rows):
            if i % 10 < 5:
                outcome = OUTCOMES[i % len(OUTCOMES)]
                row.status, row.outcome, row.attempts = status_for(outcome), outcome, 1
                row.updated_at = now - timedelta(minutes=i % 9)
            elif i % 10 == 5:
                row.status, row.attempts = "in_progress", 1
            elif i % 10 == 6:
                row.status, row.outcome, row.attempts = "pending", "no_answer", 1


async def main(leads: int, repeat: int) -> list[tuple[str, list[float], int]]:
    rows: list[tuple[str, list[float], int]] = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = make_settings(Path(tmp), dialer_enabled=False)
        async with LiveServer(settings) as server, server.client() as client:
            r = await client.post(
                "/v1/convai/agents",
                json={"name": "Bench", "system_prompt": "Calling {{first_name}}.", "first_message": "Hi"},
            )
            agent_id = r.json()["agent_id"]
            zones = ["America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles"]
            recipients = [
                {
                    "phone_number": f"+1212{5550000 + i:07d}",
                    "timezone": zones[i % len(zones)],
                    "dynamic_variables": {"first_name": f"Lead {i}", "company": f"Co {i % 97}"},
                }
                for i in range(leads)
            ]
            start = time.perf_counter()
            r = await client.post(
                "/v1/convai/batch-calling/submit",
                json={
                    "call_name": "bench",
                    "agent_id": agent_id,
                    "recipients": recipients,
                    "calling_hours": {"start": "09:00", "end": "17:00", "days": [0, 1, 2, 3, 4]},
                },
                timeout=120,
            )
            r.raise_for_status()
            rows.append(
                (f"create the campaign ({leads} leads, JSON)", [(time.perf_counter() - start) * 1000], 0)
            )
            batch_id = r.json()["id"]
            await mix_outcomes(server, batch_id)
            async with server.runtime.db.session() as session:
                from models import Campaign

                campaign = await session.get(Campaign, batch_id)
                assert campaign is not None
                campaign.status = "in_progress"
            base = f"/v1/convai/batch-calling/{batch_id}"
            progress = (await client.get(f"{base}/progress")).json()
            assert progress["expected_finish_unix"], progress
            rows.append(
                (
                    "GET …/progress (pace, expected finish)",
                    *await timed(client, "GET", f"{base}/progress", repeat),
                )
            )
            rows.append(
                (
                    "GET …/recipients?outcome=not_interested (50)",
                    *await timed(
                        client, "GET", f"{base}/recipients?outcome=not_interested&page_size=50", repeat
                    ),
                )
            )
            rows.append(
                (
                    "GET …/recipients?search=5551 (50)",
                    *await timed(client, "GET", f"{base}/recipients?search=5551", repeat),
                )
            )
            rows.append(
                ("GET …/export.csv", *await timed(client, "GET", f"{base}/export.csv", max(3, repeat // 6)))
            )
            rows.append(
                (
                    "GET …/{id} (ElevenLabs detail, every lead)",
                    *await timed(client, "GET", base, max(3, repeat // 6)),
                )
            )

            text = "phone_number,reason\n" + "".join(f"+1646{5550000 + i:07d},bench\n" for i in range(leads))
            start = time.perf_counter()
            r = await client.post(
                "/v1/convai/dnc/import", files={"file": ("dnc.csv", text.encode(), "text/csv")}, timeout=120
            )
            r.raise_for_status()
            assert r.json()["added"] == leads
            rows.append((f"POST /dnc/import ({leads} numbers)", [(time.perf_counter() - start) * 1000], 0))
            rows.append(
                ("GET /dnc?page_size=25", *await timed(client, "GET", "/v1/convai/dnc?page_size=25", repeat))
            )
            rows.append(
                (
                    "GET /dnc?search=646555 (digits)",
                    *await timed(client, "GET", "/v1/convai/dnc?search=646555", repeat),
                )
            )
    return rows


def report(rows: list[tuple[str, list[float], int]], leads: int) -> str:
    lines = [
        "## Console API at scale",
        "",
        f"Machine: {os.cpu_count()} cores ({platform.machine()}), shared and noisy (other jobs running), "
        f"Python {platform.python_version()}, SQLite; {datetime.now(UTC):%Y-%m-%d}. "
        f"`python -m bench.console_api_bench --leads {leads}`.",
        "",
        "| request | runs | p50 ms | p95 ms | response KB |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, spent, size in rows:
        lines.append(
            f"| {name} | {len(spent)} | {statistics.median(spent):.1f} | {pct(spent, 0.95):.1f} | "
            f"{size / 1024:.1f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leads", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    table = report(asyncio.run(main(args.leads, args.repeat)), args.leads)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "console_api.md").write_text(table)
