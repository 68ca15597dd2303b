"""The API the console's pages stand on: the do-not-call import, search and sources; the agent's
{{variables}} checked against a campaign's columns before it starts; pause, resume, progress, the lead
list and its CSV export; the scenario starter pack served by the API."""

from __future__ import annotations

import asyncio
import csv
import io
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update

from models import Campaign, CampaignRecipient
from tests.campaign_helpers import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    Engine,
    batch,
    lead,
    make_agent,
    settings_for,
    wait_for,
)
from tests.conftest import SQLITE_ONLY, LiveServer
from tests.twilio_standin import Scenario, TwilioStandIn

DNC_CSV = (
    "phone_number,reason,name\n"
    "+1 (212) 555-0101,asked by email,Dana\n"
    "212-555-0102,,Lee\n"  # national: needs default_region
    "not a number,,X\n"
    "+12125550101,again,Dana\n"  # a repeat in the file
    "\n"
    "+999 123,,Y\n"  # unknown country code
    "+12125550199,,Kim\n"  # listed already, by a person
)


async def _import(client: httpx.AsyncClient, text: str, **form: str) -> httpx.Response:
    return await client.post(
        "/v1/convai/dnc/import", data=form, files={"file": ("dnc.csv", text.encode(), "text/csv")}
    )


# ---------------------------------------------------------------- do-not-call


@pytest.mark.asyncio
async def test_dnc_import_reports_each_bad_row_and_the_list_searches_pages_and_shows_sources(
    app_client: httpx.AsyncClient,
) -> None:
    client = app_client
    r = await client.post("/v1/convai/dnc", json={"phone_number": "+12125550199", "reason": "phoned us"})
    assert r.status_code == 201, r.text

    r = await _import(client, DNC_CSV, reason="list from the CRM", default_region="US")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["rows"], body["added"], body["already_listed"], body["duplicates"], body["invalid"]) == (
        6,
        2,
        1,
        1,
        2,
    )
    assert [(e["line"], e["value"]) for e in body["errors"]] == [(4, "not a number"), (7, "+999 123")]
    assert "not a phone number" in body["errors"][0]["error"]
    assert "country code" in body["errors"][1]["error"]

    # Normalised as the API does: the national number became E.164 with the region given.
    listed = (await client.get("/v1/convai/dnc?page_size=100")).json()
    by_number = {e["phone_number"]: e for e in listed["entries"]}
    assert set(by_number) == {"+12125550101", "+12125550102", "+12125550199"} and listed["total"] == 3
    assert by_number["+12125550101"]["reason"] == "asked by email"  # the row's own reason
    assert by_number["+12125550102"]["reason"] == "list from the CRM"  # the import's reason
    assert (by_number["+12125550101"]["source"], by_number["+12125550199"]["source"]) == ("csv", "api")
    assert by_number["+12125550199"]["reason"] == "phoned us"  # an import keeps an entry as it was

    # Without the region the national number is an error of its row, the rest is imported.
    r = await _import(client, "phone_number\n212-555-0103\n+12125550104\n")
    assert r.status_code == 200 and r.json()["added"] == 1
    assert r.json()["errors"][0]["line"] == 2 and "international" in r.json()["errors"][0]["error"]
    # A file of bare numbers, no header.
    r = await _import(client, "+12125550105\n+12125550106\n")
    assert r.status_code == 200 and r.json()["added"] == 2, r.text

    # Search by digits in any notation, or by the reason's words; filter by source; page through.
    found = (await client.get("/v1/convai/dnc", params={"search": "(212) 555-0102"})).json()
    assert [e["phone_number"] for e in found["entries"]] == ["+12125550102"] and found["total"] == 1
    found = (await client.get("/v1/convai/dnc", params={"search": "EMAIL"})).json()
    assert [e["phone_number"] for e in found["entries"]] == ["+12125550101"]
    people = (await client.get("/v1/convai/dnc", params={"source": "api"})).json()
    assert [e["phone_number"] for e in people["entries"]] == ["+12125550199"]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"page_size": 2, "source": "csv", **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/convai/dnc", params=params)).json()
        assert page["total"] == 5
        seen += [e["phone_number"] for e in page["entries"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert sorted(seen) == ["+12125550101", "+12125550102", "+12125550104", "+12125550105", "+12125550106"]

    # Whole-file problems are a 422 saying what is wrong; nothing is added.
    for text, words in [
        ("name,email\nDana,d@x.io\n", "phone_number column"),
        ("", "empty"),
        ("phone_number\n\n", "no numbers"),
    ]:
        r = await _import(client, text)
        assert r.status_code == 422 and words in r.json()["detail"], r.text
    r = await client.post(
        "/v1/convai/dnc/import", files={"file": ("dnc.csv", b"\xff\xfe\x00bad", "text/csv")}
    )
    assert r.status_code == 422 and "UTF-8" in r.json()["detail"]
    r = await client.get("/v1/convai/dnc", params={"source": "robot"})
    assert r.status_code == 422


# ---------------------------------------------------------------- variables checked before a campaign


@SQLITE_ONLY
@pytest.mark.asyncio
async def test_a_campaign_missing_a_column_the_voicemail_message_uses_is_refused_before_it_starts(
    app_client: httpx.AsyncClient,
) -> None:
    client = app_client
    r = await client.post(
        "/v1/convai/agents",
        json={
            "name": "Ava",
            "system_prompt": "You are Ava, calling {{first_name}}.",
            "first_message": "Hi {{first_name}}, this is Ava.",
            "voicemail_action": "leave_message",
            "voicemail_message": "Hi {{first_name}}, Ava from Orbit about {{company}}'s reports. Bye!",
        },
    )
    agent_id = r.json()["agent_id"]

    async def upload(text: str) -> httpx.Response:
        return await client.post(
            "/v1/convai/batch-calling/upload",
            data={"call_name": "Leads", "agent_id": agent_id},
            files={"file": ("leads.csv", text.encode(), "text/csv")},
        )

    r = await upload("phone_number,first_name\n+12125550181,Dana\n+12125550182,Lee\n")
    assert r.status_code == 422, r.text
    [problem] = r.json()["detail"]
    assert problem["loc"][-1] == "company" and problem["type"] == "missing_variable"
    assert "voicemail message uses {{company}}" in problem["msg"] and "no lead has it" in problem["msg"]
    assert (await client.get("/v1/convai/batch-calling/workspace")).json()["batch_calls"] == []

    # Some leads lack it (JSON submit): the message says how many and which first.
    r = await client.post(
        "/v1/convai/batch-calling/submit",
        json={
            "call_name": "x",
            "agent_id": agent_id,
            "recipients": [
                {"phone_number": lead(1), "dynamic_variables": {"first_name": "A", "company": "Acme"}},
                {"phone_number": lead(2), "dynamic_variables": {"company": "Beta"}},
            ],
        },
    )
    assert r.status_code == 422
    [problem] = r.json()["detail"]
    assert problem["loc"] == ["body", "recipients", 1, "dynamic_variables", "first_name"]
    assert "system prompt and first message and voicemail message" in problem["msg"]
    assert "1 of 2 leads lack it, the first is lead 2 (+12125550002)" in problem["msg"]

    # Hanging up on machines: the message is never said, so its variables are not needed.
    r = await client.patch(f"/v1/convai/agents/{agent_id}", json={"voicemail_action": "hang_up"})
    assert r.status_code == 200
    r = await upload("phone_number,first_name\n+12125550181,Dana\n")
    assert r.status_code == 200, r.text


# ---------------------------------------------------------------- pause, resume, progress, export


@pytest.mark.asyncio
async def test_a_paused_campaign_dials_nobody_until_resumed_and_its_progress_and_export_follow_it(
    tmp_path: Path,
) -> None:
    numbers = [lead(300 + i) for i in range(5)]
    engine = Engine()
    engine.behaviour = {numbers[0]: "meeting"}
    plans = {numbers[3]: "no_answer"}

    def scenario(call):  # type: ignore[no-untyped-def]
        kind = plans.get(str(call.params["To"]), "human")
        if kind == "human":
            return Scenario("human", ring_sec=0.05, talk_sec=0.3, on_answer=engine.answered)
        return Scenario(kind, ring_sec=0.05)  # type: ignore[arg-type]

    async with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, scenario=scenario) as twilio:
        async with LiveServer(settings_for(tmp_path, twilio)) as server, server.client() as client:
            engine.server = server
            agent_id, _ = await make_agent(client)
            later = int((datetime.now(UTC) + timedelta(hours=1)).timestamp())
            r = await client.post(
                "/v1/convai/batch-calling/submit",
                json={
                    "call_name": "Pause me, =cmd",
                    "agent_id": agent_id,
                    "scheduled_time_unix": later,
                    "target_concurrency_limit": 1,
                    "recipients": [
                        {"phone_number": n, "dynamic_variables": {"first_name": f"=HYPERLINK({i})"}}
                        for i, n in enumerate(numbers)
                    ]
                    + [{"phone_number": "nope", "dynamic_variables": {"first_name": "X"}}],
                },
            )
            assert r.status_code == 200, r.text
            batch_id = r.json()["id"]
            base = f"/v1/convai/batch-calling/{batch_id}"
            # Scheduled: pausing and resuming keeps it scheduled.
            assert (await client.post(f"{base}/pause")).json()["status"] == "paused"
            assert (await client.post(f"{base}/pause")).status_code == 409
            assert (await client.post(f"{base}/resume")).json()["status"] == "pending"
            assert (await client.post(f"{base}/resume")).status_code == 409
            before = (await client.get(f"{base}/progress")).json()
            assert (before["total"], before["left"], before["finished"], before["pace_per_min"]) == (
                6,
                5,
                1,
                None,
            )
            assert before["by_outcome"] == {"invalid_number": 1} and before["expected_finish_unix"] is None

            # Start it now (resume of a paused campaign whose time has come), then pause after the first call.
            assert (await client.post(f"{base}/pause")).status_code == 200
            async with server.runtime.db.session() as session:
                campaign = await session.get(Campaign, batch_id)
                assert campaign is not None
                campaign.scheduled_at = datetime.now(UTC)
                await session.execute(
                    update(CampaignRecipient)
                    .where(CampaignRecipient.campaign_id == batch_id)
                    .values(next_attempt_at=campaign.scheduled_at)
                )
            assert (await client.post(f"{base}/resume")).json()["status"] == "in_progress"

            async def first_dialled() -> bool:
                return len(twilio.calls) >= 1

            await wait_for(first_dialled, 10, "the first call")
            assert (await client.post(f"{base}/pause")).json()["status"] == "paused"
            await asyncio.sleep(0.3)  # a lead claimed just before the pause is still dialled
            dialled = len(twilio.calls)
            await asyncio.sleep(1.5)  # dozens of dialer ticks
            assert len(twilio.calls) == dialled, "a paused campaign placed a call"
            paused = (await client.get(f"{base}/progress")).json()
            assert paused["status"] == "paused" and paused["expected_finish_unix"] is None
            assert (await client.post(f"{base}/retry")).status_code == 409
            assert (await client.delete(base)).status_code == 409

            assert (await client.post(f"{base}/resume")).json()["status"] == "in_progress"
            watched: list[dict] = []

            async def done() -> bool:
                watched.append((await client.get(f"{base}/progress")).json())
                return (await batch(client, batch_id))["status"] == "completed"

            await wait_for(done, 30, "the campaign to complete")
            progress = (await client.get(f"{base}/progress")).json()

            # The lead list, filtered and paged.
            page = (await client.get(f"{base}/recipients", params={"page_size": 2})).json()
            assert page["total"] == 6 and page["has_more"] and len(page["recipients"]) == 2
            nxt = (
                await client.get(f"{base}/recipients", params={"page_size": 2, "cursor": page["next_cursor"]})
            ).json()
            assert [r["phone_number"] for r in nxt["recipients"]] == numbers[2:4]
            booked = (await client.get(f"{base}/recipients", params={"outcome": "meeting_booked"})).json()
            assert [r["phone_number"] for r in booked["recipients"]] == [numbers[0]]
            skipped = (await client.get(f"{base}/recipients", params={"status": "skipped"})).json()
            assert [r["outcome"] for r in skipped["recipients"]] == ["invalid_number"]
            by_digits = (await client.get(f"{base}/recipients", params={"search": "555-0302"})).json()
            assert [r["phone_number"] for r in by_digits["recipients"]] == [numbers[2]]
            assert (await client.get(f"{base}/recipients", params={"cursor": "x"})).status_code == 400

            export = await client.get(f"{base}/export.csv")
        await twilio.settled()

    assert progress["finished"] == 6 and progress["left"] == 0 and progress["calling_now"] == 0
    assert (progress["booked"], progress["reached"]) == (1, 4)
    assert progress["by_outcome"] == {
        "invalid_number": 1,
        "meeting_booked": 1,
        "no_answer": 1,
        "not_interested": 3,
    }
    # While it ran, a pace was measured and a finish time expected.
    assert any(w["pace_per_min"] and w["expected_finish_unix"] for w in watched), watched
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    assert (
        "attachment" in export.headers["content-disposition"]
        and batch_id in export.headers["content-disposition"]
    )
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert [r["phone_number"] for r in rows] == [*numbers, "nope"]
    assert Counter(r["outcome"] for r in rows) == progress["by_outcome"]
    assert rows[0]["first_name"] == "'=HYPERLINK(0)"  # never a formula in a spreadsheet
    assert rows[0]["conversation_id"].startswith("conv_") and rows[0]["attempts"] == "1"
    assert sorted(twilio.per_number.values()) == [1] * 5


def test_the_expected_finish_counts_only_calling_hours() -> None:
    from telephony.campaign_reports import expected_finish

    now = datetime(2026, 12, 7, 16, 50, tzinfo=UTC)  # a Monday
    zones = Counter({("UTC",): 20})
    # 10 leads fit before 17:00; the other 10 wait for 09:00 the next day.
    assert expected_finish(now, zones, 20, 1.0, ("09:00", "17:00", [])) == datetime(
        2026, 12, 8, 9, 10, tzinfo=UTC
    )
    # No calling hours: just the pace.
    assert expected_finish(now, zones, 20, 1.0, None) == now + timedelta(minutes=20)
    # Weekdays only, from Friday afternoon: Monday morning.
    friday = datetime(2026, 12, 11, 16, 55, tzinfo=UTC)
    assert expected_finish(friday, zones, 10, 1.0, ("09:00", "17:00", [0, 1, 2, 3, 4])) == datetime(
        2026, 12, 14, 9, 5, tzinfo=UTC
    )
    # Two zones open at different hours share the pace only while both are open.
    # (UTC's 5 are done by 16:55; UTC-8's 5 wait for their 09:00, 17:00 UTC.)
    two = Counter({("UTC",): 5, ("Etc/GMT+8",): 5})
    finish = expected_finish(now, two, 10, 1.0, ("09:00", "17:00", []))
    assert finish == datetime(2026, 12, 7, 17, 5, tzinfo=UTC), finish


# ---------------------------------------------------------------- the starter pack


@SQLITE_ONLY
@pytest.mark.asyncio
async def test_the_starter_pack_is_served_and_added_once(app_client: httpx.AsyncClient) -> None:
    from scenarios.starter_pack import PACK_PATH
    from simulator.scenario import ScenarioFile

    client = app_client
    agent_id = (await client.post("/v1/convai/agents", json={"name": "Ava"})).json()["agent_id"]
    expected = [s.name for s in ScenarioFile.model_validate_json(PACK_PATH.read_bytes()).scenarios]
    pack = (await client.get(f"/v1/convai/agents/{agent_id}/tests/starter-pack")).json()
    assert [s["name"] for s in pack["scenarios"]] == expected and pack["agent"]["name"]
    r = await client.post(f"/v1/convai/agents/{agent_id}/tests/starter-pack")
    assert r.status_code == 201 and [t["name"] for t in r.json()["added"]] == expected
    tests = (await client.get(f"/v1/convai/agents/{agent_id}/tests")).json()["tests"]
    assert sorted(t["name"] for t in tests) == sorted(expected)
    assert tests[0]["criteria"] and tests[0]["caller"]
    again = (await client.post(f"/v1/convai/agents/{agent_id}/tests/starter-pack")).json()
    assert again["added"] == [] and again["skipped"] == expected
    assert (await client.post("/v1/convai/agents/agent_nope/tests/starter-pack")).status_code == 404


@pytest.mark.asyncio
async def test_progress_groups_the_waiting_leads_by_zone_for_the_calling_hours(
    app_client: httpx.AsyncClient,
) -> None:
    """On each backend: the waiting leads' zones decide whether calling hours are open and the finish."""
    from models import Conversation
    from tests.campaign_helpers import zone_at_local_hour

    client = app_client
    agent_id = (await client.post("/v1/convai/agents", json={"name": "Ava"})).json()["agent_id"]
    asleep, awake = zone_at_local_hour(3), zone_at_local_hour(12)
    later = int((datetime.now(UTC) + timedelta(hours=2)).timestamp())
    r = await client.post(
        "/v1/convai/batch-calling/submit",
        json={
            "call_name": "zones",
            "agent_id": agent_id,
            "scheduled_time_unix": later,  # the dialer leaves it alone
            "calling_hours": {"start": "09:00", "end": "17:00", "days": []},
            "recipients": [
                {"phone_number": lead(10 + i), "timezone": asleep if i < 3 else awake} for i in range(5)
            ],
        },
    )
    assert r.status_code == 200, r.text
    batch_id = r.json()["id"]
    url = f"/v1/convai/batch-calling/{batch_id}/progress"
    body = (await client.get(url)).json()
    assert body["campaign"]["name"] == "zones" and "recipients" not in body["campaign"]
    assert (body["left"], body["calling_hours_open"], body["expected_finish_unix"]) == (5, True, None)

    # The awake leads are done (a pace of 2 a minute): the rest wait for 09:00 where they are.
    now = datetime.now(UTC)
    async with client.app.state.runtime.db.session() as session:  # type: ignore[attr-defined]
        session.add(Conversation(campaign_id=batch_id, created_at=now - timedelta(minutes=1)))
        campaign = await session.get(Campaign, batch_id)
        assert campaign is not None
        campaign.status = "in_progress"
        for row in (
            await session.scalars(select(CampaignRecipient).where(CampaignRecipient.campaign_id == batch_id))
        ).all():
            if row.time_zones == [awake]:
                row.status, row.outcome, row.attempts = "completed", "not_interested", 1
    body = (await client.get(url)).json()
    assert (body["left"], body["finished"], body["reached"]) == (3, 2, 2)
    assert body["calling_hours_open"] is False and body["pace_per_min"] == pytest.approx(2, rel=0.2)
    opens = body["next_opening_unix"] - now.timestamp()
    assert 5 * 3600 < opens < 7 * 3600, opens  # 03:xx -> 09:00
    assert 0 < body["expected_finish_unix"] - body["next_opening_unix"] < 300  # 3 leads at ~2 a minute
