"""Campaigns (batch calling), the do-not-call list and phone-number handling, against the Twilio stand-in.

The dialer runs inside a real service (uvicorn on loopback) and dials through the real ``twilio`` SDK;
the stand-in plays each lead: a human who books a meeting or says no, an answering machine (async AMD
verdict), a line that rings out or is busy. "Answered" calls run no audio: the test plays the engine's
part (a transcript line or a booked meeting, then the real post-call analysis).

Here: a whole campaign, two instances sharing one, a lost status callback. Pacing, retries and restarts are
in test_campaign_pacing.py, numbers and the do-not-call list in test_campaign_numbers.py, the API's clients
(SDK, CSV, console) in test_campaign_api.py; shared helpers in campaign_helpers.py.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from models import Conversation
from tests.campaign_helpers import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    Engine,
    batch,
    lead,
    make_agent,
    settings_for,
    submit,
    wait_for,
    zone_at_local_hour,
)
from tests.conftest import LiveServer
from tests.twilio_standin import PlacedCall, Scenario, TwilioStandIn

# ---------------------------------------------------------------- the 50-lead campaign


@pytest.mark.asyncio
async def test_a_campaign_of_50_leads_ends_every_lead_in_the_right_state(tmp_path: Path) -> None:
    engine = Engine()
    plan: dict[str, str] = {}
    for i in range(12):
        plan[lead(100 + i)] = "meeting"
    for i in range(8):
        plan[lead(200 + i)] = "no"
    for i in range(8):
        plan[lead(300 + i)] = "machine"
    for i in range(8):
        plan[lead(400 + i)] = "no_answer"
    for i in range(4):
        plan[lead(500 + i)] = "busy_then_meeting"
    dnc_numbers = [lead(600 + i) for i in range(4)]
    late = [lead(700 + i) for i in range(4)]  # local time 01:00: outside 09:00-17:00
    invalid = ["+1555", "call me maybe"]
    engine.behaviour = {n: ("meeting" if "meeting" in b else "no") for n, b in plan.items()}

    def scenario(call: PlacedCall) -> Scenario:
        number = str(call.params["To"])
        kind = plan.get(number, "failed")
        if kind == "busy_then_meeting":
            kind = "busy" if twilio.per_number[number] == 1 else "meeting"
        if kind in ("meeting", "no"):
            return Scenario("human", ring_sec=0.1, talk_sec=0.2, on_answer=engine.answered)
        if kind == "machine":
            return Scenario("machine", ring_sec=0.1, talk_sec=0.2)
        return Scenario(kind, ring_sec=0.2)  # type: ignore[arg-type]

    async with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, scenario=scenario) as twilio:
        async with LiveServer(settings_for(tmp_path, twilio)) as server, server.client() as client:
            engine.server = server
            agent_id, number_id = await make_agent(client)
            r = await client.post("/v1/convai/dnc", json={"phone_numbers": dnc_numbers, "reason": "asked"})
            assert r.status_code == 201 and r.json()["added"] == 4, r.text
            hook = await client.post("/v1/convai/webhooks", json={"url": "http://127.0.0.1:9/hook"})
            assert hook.status_code == 201

            inside = zone_at_local_hour(12)
            recipients = [
                {
                    "phone_number": n,
                    "timezone": inside,
                    "conversation_initiation_client_data": {
                        "dynamic_variables": {"first_name": f"Lead {n[-3:]}"}
                    },
                }
                for n in [*plan, *dnc_numbers]
            ]
            recipients += [
                {
                    "phone_number": n,
                    "timezone": zone_at_local_hour(1),
                    "dynamic_variables": {"first_name": "Late"},
                }
                for n in late
            ]
            recipients += [{"phone_number": n, "dynamic_variables": {"first_name": "X"}} for n in invalid]
            assert len(recipients) == 50
            started = time.monotonic()
            r = await client.post(
                "/v1/convai/batch-calling/submit",
                json={
                    "call_name": "Q4 follow-up",
                    "agent_id": agent_id,
                    "agent_phone_number_id": number_id,
                    "recipients": recipients,
                    "target_concurrency_limit": 5,
                    "calls_per_minute": 600,
                    "calling_hours": {"start": "09:00", "end": "17:00", "days": []},
                    "retry": {"outcomes": ["no_answer", "busy"], "delay_sec": 1, "max_attempts": 2},
                },
            )
            assert r.status_code == 200, r.text
            batch_id = r.json()["id"]
            assert r.json()["total_calls_scheduled"] == 50

            async def settled() -> bool:
                body = await batch(client, batch_id)
                return all(
                    x["status"] not in ("dispatched", "in_progress") for x in body["recipients"]
                ) and all(x["status"] != "pending" or x["phone_number"] in late for x in body["recipients"])

            await wait_for(settled, 60, "every lead inside calling hours to reach an outcome")
            await twilio.settled()
            body = await batch(client, batch_id)
            by_number = {x["phone_number"]: x for x in body["recipients"]}

            for n, kind in plan.items():
                got = by_number[n]
                expected = {
                    "meeting": ("completed", "meeting_booked", 1),
                    "no": ("completed", "not_interested", 1),
                    "machine": ("voicemail", "voicemail", 1),
                    "no_answer": ("failed", "no_answer", 2),
                    "busy_then_meeting": ("completed", "meeting_booked", 2),
                }[kind]
                assert (got["status"], got["outcome"], got["attempts"]) == expected, (n, kind, got)
                assert twilio.per_number[n] == expected[2], (n, "dialled", twilio.per_number[n])
                assert got["conversation_id"]
            for n in dnc_numbers:
                assert (by_number[n]["status"], by_number[n]["outcome"]) == ("skipped", "dnc")
            for n in late:
                assert by_number[n]["status"] == "pending" and by_number[n]["attempts"] == 0
                opens = datetime.fromtimestamp(by_number[n]["next_attempt_unix"], UTC)
                assert timedelta(hours=7) < opens - datetime.now(UTC) < timedelta(hours=9), opens
            invalid_rows = [x for x in body["recipients"] if x["outcome"] == "invalid_number"]
            assert [x["status"] for x in invalid_rows] == ["skipped", "skipped"]
            # nobody on the DNC list, outside calling hours or invalid was dialled
            assert not set(twilio.per_number) & {*dnc_numbers, *late}
            assert sum(twilio.per_number.values()) == 12 + 8 + 8 + 16 + 8
            # the concurrency cap held at Twilio's end, and every call asked for async AMD
            assert 1 < twilio.max_live <= 5, twilio.max_live
            for call in twilio.calls.values():
                assert call.params["MachineDetection"] == "DetectMessageEnd"
                assert (
                    call.params["AsyncAmd"] == "true"
                    and "/twiml/amd?" in call.params["AsyncAmdStatusCallback"]
                )
            # retries came after the delay: a second call starts >= 1 s after the first one ended
            for n in [*(k for k, v in plan.items() if v in ("no_answer", "busy_then_meeting"))]:
                first, second = sorted(
                    (c for c in twilio.calls.values() if c.params["To"] == n), key=lambda c: c.created_at
                )
                assert first.ended_at is not None and second.created_at - first.ended_at >= 0.9, n
            # the machines were recorded as such on their conversations
            async with server.runtime.db.session() as session:
                machines = (
                    await session.scalars(
                        select(Conversation.answered_by).where(
                            Conversation.to_number.in_([n for n, k in plan.items() if k == "machine"])
                        )
                    )
                ).all()
            assert machines and set(machines) == {"machine"}
            totals = body["totals"]
            assert totals["recipients"] == 50 and totals["by_outcome"]["meeting_booked"] == 16
            assert body["status"] == "in_progress"  # the late leads are still waiting for their morning

            r = await client.post(f"/v1/convai/batch-calling/{batch_id}/cancel")
            assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
            body = await batch(client, batch_id)
            assert {by_number[n]["id"] for n in late} == {
                x["id"] for x in body["recipients"] if x["status"] == "cancelled"
            }
            assert time.monotonic() - started < 60


@pytest.mark.asyncio
async def test_two_instances_dialling_one_campaign_call_each_lead_once_within_the_cap(
    tmp_path: Path, postgres: Any
) -> None:
    """Two instances' dialers on one PostgreSQL database work through the same campaign: every lead is
    dialled once, and the campaign's concurrency cap holds across both."""
    engine = Engine()
    numbers = [lead(700 + i) for i in range(16)]
    engine.behaviour = {n: "meeting" if i % 2 else "no" for i, n in enumerate(numbers)}

    def scenario(call: PlacedCall) -> Scenario:
        return Scenario("human", ring_sec=0.2, talk_sec=0.6, on_answer=engine.answered)

    url = await postgres.create_database()
    async with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, scenario=scenario) as twilio:
        shared = {"database_url": url, "multi_instance": False}
        async with (
            LiveServer(settings_for(tmp_path / "a", twilio, instance_id="app-a", **shared)) as a,
            LiveServer(settings_for(tmp_path / "b", twilio, instance_id="app-b", **shared)) as b,
            a.client() as client,
        ):
            engine.server = a
            agent_id, _ = await make_agent(client)
            batch_id = await submit(client, agent_id, numbers, target_concurrency_limit=3)

            async def done() -> bool:
                return (await batch(client, batch_id))["status"] == "completed"

            await wait_for(done, 60, "the campaign to complete")
            body = await batch(client, batch_id)
            assert b.runtime.dialer is not a.runtime.dialer
        await twilio.settled()
    assert sorted(twilio.per_number.values()) == [1] * len(numbers), twilio.per_number
    assert {x["status"] for x in body["recipients"]} == {"completed"}
    assert twilio.max_live <= 3, twilio.max_live


@pytest.mark.asyncio
async def test_a_lost_final_status_callback_is_recovered_from_twilios_api(tmp_path: Path) -> None:
    """Twilio's ``no-answer`` callback never arrives: the dialer looks the call up and retries the lead."""
    numbers = [lead(900 + i) for i in range(2)]
    async with TwilioStandIn(
        ACCOUNT_SID, AUTH_TOKEN, scenario=lambda c: Scenario("no_answer", 0.05, lose_final_callback=True)
    ) as twilio:
        settings = settings_for(tmp_path, twilio, dialer_status_poll_sec=0.5)
        async with LiveServer(settings) as server, server.client() as client:
            agent_id, _ = await make_agent(client)
            batch_id = await submit(
                client,
                agent_id,
                numbers,
                target_concurrency_limit=10,
                retry={"outcomes": ["no_answer"], "delay_sec": 1, "max_attempts": 2},
            )

            async def done() -> bool:
                return (await batch(client, batch_id))["status"] == "completed"

            await wait_for(done, 20, "the campaign to complete without a single final callback")
            body = await batch(client, batch_id)
            async with server.runtime.db.session() as session:
                statuses = (await session.scalars(select(Conversation.status))).all()
    assert all(
        code == 0 for c in twilio.calls.values() for status, code in c.callbacks if status == "no-answer"
    )
    assert {(x["status"], x["outcome"], x["attempts"]) for x in body["recipients"]} == {
        ("failed", "no_answer", 2)
    }
    assert sorted(statuses) == ["no_answer"] * 4
    assert len(twilio.calls) == 4
