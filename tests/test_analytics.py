"""Analytics: the funnel, time series and breakdowns match a hand count of a seeded set of twelve calls
(each added to the rollup as it ends, the way the service does), on SQLite and PostgreSQL; the CSV says
the same; a call is counted once however often its end is reported; bad filters are a 422.

The twelve calls (D1 = 2026-11-02, D2 = 2026-11-03, UTC; campaign leads in America/New_York, UTC-5):

| # | dir | ver | campaign | placed | answered by / status | outcome | s | collected | stage | caller said |
|---|-----|-----|----|-------------|------------------|-------------------|-----|----------|-----------|----------------------|
| 1 | out | v1 | C1 | D1 09:10 | no_answer | - | - | | | |
| 2 | out | v1 | C1 | D1 09:20 | busy | - | - | | | |
| 3 | out | v1 | C1 | D1 10:05 | machine | voicemail | 20 | | | Hi, you've reached John. Leave a message. |
| 4 | out | v1 | C1 | D1 10:30 | human | not_interested | 15 | | intro | No thanks, not interested |
| 5 | out | v1 | C1 | D1 14:00 | human | callback_requested | 45 | | discovery | It's a bad time, call me back next week |
| 6 | out | v2 | C1 | D1 14:30 | human | meeting_booked | 120 | budget, timeline | booking | Too expensive maybe but ok |
| 7 | out | v2 | C1 | D2 09:00 | human | interested | 90 | budget only | discovery | We already use Salesforce |
| 8 | out | v2 | C1 | D2 15:00 | (caller spoke) | meeting_booked | 200 | budget, timeline | booking | Sounds good (intent CALLBACK_LATER) |
| 9 | in  | v1 | -  | D2 16:00 | (inbound, +1415…) | meeting_booked | 60 | all three | booking | |
| 10 | in | v2 | -  | D2 16:30 | (inbound, +1212…) | - | 10 | | | how did you get my number |
| 11 | out | v2 | C1 | D2 17:00 | failed | - | - | | | |
| 12 | web | v1 | - | D2 18:00 | (browser) | not_interested | 35 | | | send me an email |

budget and timeline are the agent's qualification fields (``qualifies``); notes is not.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from models import Campaign, CampaignRecipient, Conversation, ConversationTurn
from storage.analytics import backfill, count_ended_call
from tests.api_helpers import db_of
from tests.conftest import SQLITE_ONLY

A = "/v1/convai/analytics"
D1 = datetime(2026, 11, 2, tzinfo=UTC)
D2 = D1 + timedelta(days=1)
RANGE = {"from": "2026-11-01T00:00:00Z", "to": "2026-11-05T00:00:00Z"}
BOTH = {"budget": "5000", "timeline": "Q1"}

CALLS: list[dict[str, Any]] = [
    {"n": 1, "dir": "outbound", "v": 1, "c": True, "at": D1 + timedelta(hours=9, minutes=10), "status": "no_answer"},
    {"n": 2, "dir": "outbound", "v": 1, "c": True, "at": D1 + timedelta(hours=9, minutes=20), "status": "busy"},
    {"n": 3, "dir": "outbound", "v": 1, "c": True, "at": D1 + timedelta(hours=10, minutes=5),
     "by": "machine", "outcome": "voicemail", "s": 20, "said": "Hi, you've reached John. Leave a message."},
    {"n": 4, "dir": "outbound", "v": 1, "c": True, "at": D1 + timedelta(hours=10, minutes=30), "by": "human",
     "outcome": "not_interested", "s": 15, "stage": "intro", "said": "No thanks, not interested", "v2v": [800]},
    {"n": 5, "dir": "outbound", "v": 1, "c": True, "at": D1 + timedelta(hours=14), "by": "human",
     "outcome": "callback_requested", "s": 45, "stage": "discovery",
     "said": "It's a bad time, call me back next week", "v2v": [600, 700]},
    {"n": 6, "dir": "outbound", "v": 2, "c": True, "at": D1 + timedelta(hours=14, minutes=30), "by": "human",
     "outcome": "meeting_booked", "s": 120, "data": BOTH, "stage": "booking",
     "said": "Too expensive maybe but ok", "v2v": [500, 900]},
    {"n": 7, "dir": "outbound", "v": 2, "c": True, "at": D2 + timedelta(hours=9), "by": "human",
     "outcome": "interested", "s": 90, "data": {"budget": "1000", "timeline": None}, "stage": "discovery",
     "said": "We already use Salesforce", "v2v": [1200]},
    {"n": 8, "dir": "outbound", "v": 2, "c": True, "at": D2 + timedelta(hours=15), "outcome": "meeting_booked",
     "s": 200, "data": BOTH, "stage": "booking", "said": "Sounds good", "intent": "CALLBACK_LATER",
     "v2v": [650]},
    {"n": 9, "dir": "inbound", "v": 1, "at": D2 + timedelta(hours=16), "from": "+14155550100",
     "outcome": "meeting_booked", "s": 60, "data": {**BOTH, "notes": "call on Monday"}, "stage": "booking"},
    {"n": 10, "dir": "inbound", "v": 2, "at": D2 + timedelta(hours=16, minutes=30), "from": "+12125550100",
     "s": 10, "said": "how did you get my number"},
    {"n": 11, "dir": "outbound", "v": 2, "c": True, "at": D2 + timedelta(hours=17), "status": "failed"},
    {"n": 12, "dir": "web", "v": 1, "at": D2 + timedelta(hours=18), "from": "browser",
     "outcome": "not_interested", "s": 35, "said": "send me an email"},
]  # fmt: skip

AGENT = {
    "name": "Counted",
    "system_prompt": "You sell Orbit.",
    "data_collection": [
        {"name": "budget", "qualifies": True},
        {"name": "timeline", "qualifies": True},
        {"name": "notes"},
    ],
}


async def seed(client: httpx.AsyncClient) -> dict[str, str]:
    """The agent, its two versions, campaign C1 and the twelve calls, each counted as it ends."""
    created = await client.post("/v1/convai/agents", json=AGENT)
    assert created.status_code == 201, created.text
    agent_id = created.json()["agent_id"]
    assert (
        await client.patch(f"/v1/convai/agents/{agent_id}", json={"system_prompt": "Sell."})
    ).status_code == 200
    versions = (await client.get(f"/v1/convai/agents/{agent_id}/versions")).json()["versions"]
    ids = {"agent": agent_id, **{f"v{v['number']}": v["id"] for v in versions}}
    db = db_of(client)
    async with db.session() as session:
        campaign = Campaign(name="Q4 push", agent_id=agent_id, timezone="America/New_York")
        session.add(campaign)
        await session.flush()
        ids["C1"] = campaign.id
    for call in CALLS:
        async with db.session() as session:
            recipient_id = None
            if call.get("c"):
                recipient = CampaignRecipient(
                    campaign_id=ids["C1"], phone_number="+12025550123", time_zones=["America/New_York"]
                )
                session.add(recipient)
                await session.flush()
                recipient_id = recipient.id
            status = call.get("status", "completed")
            answered = status == "completed"
            conversation = Conversation(
                agent_id=agent_id,
                agent_version_id=ids[f"v{call['v']}"],
                direction=call["dir"],
                status=status,
                from_number=call.get("from", "+15550100001"),
                to_number="+12025550123" if call["dir"] == "outbound" else "+15550100001",
                campaign_id=ids["C1"] if call.get("c") else None,
                campaign_recipient_id=recipient_id,
                created_at=call["at"],
                started_at=call["at"] + timedelta(seconds=5) if answered else None,
                ended_at=call["at"] + timedelta(seconds=5 + call.get("s", 0)),
                duration_sec=float(call["s"]) if "s" in call else None,
                answered_by=call.get("by"),
                outcome=call.get("outcome"),
                collected_data=call.get("data", {}),
                ended_stage=call.get("stage"),
                call_state="ENDED",
                end_reason=None if answered else status,
            )
            turns: list[ConversationTurn] = []
            if "said" in call:
                turns.append(
                    ConversationTurn(seq=0, role="user", text=call["said"], intent=call.get("intent"))
                )
            for i, ms in enumerate(call.get("v2v", [])):
                turns.append(
                    ConversationTurn(
                        seq=len(turns), role="agent", text="Sure.", user_speech_end_ms=1000.0 * (i + 1),
                        first_frame_sent_ms=1000.0 * (i + 1) + ms,
                    )
                )  # fmt: skip
            conversation.turns = turns
            session.add(conversation)
            await session.flush()
            ids[f"call{call['n']}"] = conversation.id
        await count_ended_call(db, ids[f"call{call['n']}"])
    return ids


def funnel_counts(body: dict[str, Any]) -> list[int]:
    return [
        body[k] for k in ("dialled", "answered", "human", "conversations", "qualified", "meetings_booked")
    ]


@pytest.mark.asyncio
async def test_funnel_timeseries_and_breakdowns_match_the_hand_count(app_client: httpx.AsyncClient) -> None:
    ids = await seed(app_client)

    async def get(path: str, **params: Any) -> dict[str, Any]:
        r = await app_client.get(f"{A}/{path}", params={**RANGE, **params})
        assert r.status_code == 200, r.text
        return r.json()

    everything = await get("funnel")
    assert funnel_counts(everything) == [12, 9, 8, 6, 3, 3]
    assert everything["call_minutes"] == round(595 / 60, 2)
    assert everything["answer_rate"] == 0.75 and everything["booking_rate"] == 0.375
    assert [s["rate_of_previous"] for s in everything["steps"]] == [None, 0.75, 0.8889, 0.75, 0.5, 1.0]
    assert funnel_counts(await get("funnel", campaign_id=ids["C1"])) == [9, 6, 5, 4, 2, 2]
    assert funnel_counts(await get("funnel", version_id=ids["v2"])) == [5, 4, 4, 3, 2, 2]
    assert funnel_counts(await get("funnel", agent_id=ids["agent"], version_id=ids["v1"])) == [
        7,
        5,
        4,
        3,
        1,
        1,
    ]
    assert funnel_counts(await get("funnel", **{"from": "2026-11-03T00:00:00Z"})) == [6, 5, 5, 4, 2, 2]
    # widened to whole hours: 09:30 → 09:00 takes calls 1 and 2 of D1 09:10/09:20; 10:01 → 11:00 takes 3 and 4
    assert funnel_counts(await get("funnel", **{"from": "2026-11-02T09:30:00Z", "to": "2026-11-02T10:01:00Z"})) == [
        4, 2, 1, 0, 0, 0,
    ]  # fmt: skip

    # hour rows for D1 14:00-24:00 and D3 00:00-01:00, day rows for D2: calls 5 to 12
    mixed = await get("funnel", **{"from": "2026-11-02T14:00:00Z", "to": "2026-11-04T01:00:00Z"})
    assert funnel_counts(mixed) == [8, 7, 7, 6, 3, 3]
    # month rows for November, day rows for Oct 30-31 and Dec 1, hour rows for Oct 29 23:00 and Dec 2 00:00
    months = await get("funnel", **{"from": "2026-10-29T23:00:00Z", "to": "2026-12-02T01:00:00Z"})
    assert funnel_counts(months) == [12, 9, 8, 6, 3, 3]
    october = await get("funnel", **{"from": "2026-10-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"})
    assert funnel_counts(october) == [0, 0, 0, 0, 0, 0]

    days = await get(
        "timeseries", metric="calls", bucket="day", **{"from": "2026-11-02T00:00:00Z", "to": "2026-11-04"}
    )
    assert [(p["t"][:10], p["value"]) for p in days["series"][0]["points"]] == [
        ("2026-11-02", 6),
        ("2026-11-03", 6),
    ]
    rates = await get(
        "timeseries", metric="booking_rate", **{"from": "2026-11-02T00:00:00Z", "to": "2026-11-04"}
    )
    assert [p["value"] for p in rates["series"][0]["points"]] == [0.3333, 0.4]
    hours = await get(
        "timeseries",
        metric="calls",
        bucket="hour",
        **{"from": "2026-11-02T09:00:00Z", "to": "2026-11-02T12:00:00Z"},
    )
    assert [p["value"] for p in hours["series"][0]["points"]] == [2, 2, 0]
    p50 = await get("timeseries", metric="v2v_p50", **{"from": "2026-11-01T00:00:00Z", "to": "2026-11-02"})
    assert [p["value"] for p in p50["series"][0]["points"]] == [None]  # no turns that day
    whole = {"from": "2026-11-02T00:00:00Z", "to": "2026-11-04"}
    # D1 500 600 700 800 900: the median in the 700-750 ms bin; D2 650 1200: in 650-700
    assert [p["value"] for p in (await get("timeseries", metric="v2v_p50", **whole))["series"][0]["points"]] == [
        725.0, 675.0,
    ]  # fmt: skip
    minutes = await get("timeseries", metric="call_minutes", **whole)
    assert [p["value"] for p in minutes["series"][0]["points"]] == [round(200 / 60, 2), round(395 / 60, 2)]
    outcomes = await get("timeseries", metric="outcomes", **whole)
    by_outcome = {s["name"]: [p["value"] for p in s["points"]] for s in outcomes["series"]}
    assert by_outcome == {
        "callback_requested": [1, 0],
        "interested": [0, 1],
        "meeting_booked": [1, 2],
        "not_interested": [1, 1],
        "unknown": [2, 2],
        "voicemail": [1, 0],
    }
    p95 = await get(
        "timeseries", metric="v2v_p95", bucket="day", **{"from": "2026-11-02T00:00:00Z", "to": "2026-11-04"}
    )
    assert [p["value"] for p in p95["series"][0]["points"]] == [925.0, 1225.0]
    # with a filter: version 2's turns only (calls 6, 7, 8: 500 900 | 1200 650); by agent: every turn
    p50_v2 = await get("timeseries", metric="v2v_p50", version_id=ids["v2"], **whole)
    assert [p["value"] for p in p50_v2["series"][0]["points"]] == [525.0, 675.0]
    p50_agent = await get("timeseries", metric="v2v_p50", agent_id=ids["agent"], **whole)
    assert [p["value"] for p in p50_agent["series"][0]["points"]] == [725.0, 675.0]

    local = {r["key"]: r["calls"] for r in (await get("breakdowns/local_hour"))["rows"] if r["calls"]}
    assert local == {"4": 3, "5": 2, "9": 2, "10": 1, "12": 1, "8": 1, "11": 1}
    campaigns = [
        (r["label"], r["calls"], r["meetings_booked"]) for r in (await get("breakdowns/campaign"))["rows"]
    ]
    assert campaigns == [("Q4 push", 9, 2), ("(none)", 3, 1)]
    versions = [
        (r["label"], r["calls"], r["human"], r["meetings_booked"])
        for r in (await get("breakdowns/version"))["rows"]
    ]
    assert versions == [("v1", 7, 4, 1), ("v2", 5, 4, 2)]
    stages = {r["key"]: r["calls"] for r in (await get("breakdowns/stage"))["rows"]}
    assert stages == {"": 6, "booking": 3, "discovery": 2, "intro": 1}
    objections = {r["key"]: r["calls"] for r in (await get("breakdowns/objection"))["rows"]}
    assert objections == {
        "timing": 2, "not_interested": 1, "price": 1, "competitor": 1, "trust": 1, "send_info": 1,
    }  # fmt: skip
    top = (await get("breakdowns/objection", limit=1))["rows"]
    assert [r["key"] for r in top] == ["timing"]
    outcome_rows = {r["key"]: r["calls"] for r in (await get("breakdowns/outcome"))["rows"]}
    assert outcome_rows["unknown"] == 4 and outcome_rows["meeting_booked"] == 3

    # CSV: the same numbers
    r = await app_client.get(f"{A}/funnel", params={**RANGE, "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(row["step"], int(row["count"])) for row in rows] == [
        ("dialled", 12), ("answered", 9), ("human", 8), ("conversations", 6), ("qualified", 3), ("meetings_booked", 3),
    ]  # fmt: skip
    r = await app_client.get(f"{A}/breakdowns/version", params={**RANGE, "format": "csv"})
    assert [(row["label"], row["calls"]) for row in csv.DictReader(io.StringIO(r.text))] == [
        ("v1", "7"),
        ("v2", "5"),
    ]
    r = await app_client.get(
        f"{A}/timeseries",
        params={"metric": "calls", "format": "csv", "from": "2026-11-02", "to": "2026-11-04"},
    )
    assert [(row["t"][:10], row["value"]) for row in csv.DictReader(io.StringIO(r.text))] == [
        ("2026-11-02", "6"), ("2026-11-03", "6"),
    ]  # fmt: skip

    # a call's end reported again is not counted again
    await count_ended_call(db_of(app_client), ids["call9"])
    assert funnel_counts(await get("funnel")) == [12, 9, 8, 6, 3, 3]


@SQLITE_ONLY
@pytest.mark.asyncio
async def test_bad_filters_are_refused_with_what_is_wrong(app_client: httpx.AsyncClient) -> None:
    bad = [
        ("funnel", {"from": "2026-11-05T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, "from"),
        ("funnel", {"from": "not a date"}, "from"),
        ("funnel", {"format": "xml"}, "format"),
        ("funnel", {"to": "9999-12-31T23:30:00Z"}, "to"),
        ("funnel", {"to": "0001-01-01T00:00:00Z"}, "to"),
        ("funnel", {"agent_id": "x" * 41}, "agent_id"),
        ("funnel", {"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from"),
        ("timeseries", {"metric": "revenue"}, "metric"),
        ("timeseries", {}, "metric"),
        ("timeseries", {"metric": "calls", "bucket": "week"}, "bucket"),
        ("timeseries", {"metric": "calls", "bucket": "hour", "from": "2026-01-01", "to": "2026-12-01"}, "bucket"),
        ("breakdowns/weekday", {}, "by"),
        ("breakdowns/objection", {"limit": 0}, "limit"),
    ]  # fmt: skip
    for path, params, where in bad:
        r = await app_client.get(f"{A}/{path}", params=params)
        assert r.status_code == 422, (path, params, r.text)
        assert where in [str(part) for e in r.json()["detail"] for part in e["loc"]], (path, r.text)
        assert "Traceback" not in r.text
    for params in ({"agent_id": "agent_nope"}, {"campaign_id": "btcal_nope"}, {"version_id": "agver_nope"}):
        r = await app_client.get(f"{A}/funnel", params=params)
        assert r.status_code == 404 and "not found" in r.json()["detail"], r.text
    empty = await app_client.get(f"{A}/funnel")
    assert empty.status_code == 200 and empty.json()["dialled"] == 0 and empty.json()["answer_rate"] is None


@SQLITE_ONLY
@pytest.mark.asyncio
async def test_calls_are_counted_when_they_end_by_status_callback_or_post_call(
    app_client: httpx.AsyncClient,
) -> None:
    """A call that never connected is counted when Twilio says so; a call the engine ran, by its post-call
    work (once, even if that runs twice); a call still going is not counted yet."""
    created = await app_client.post("/v1/convai/agents", json={"name": "Ava", "first_message": "Hi."})
    agent_id = created.json()["agent_id"]
    db = db_of(app_client)
    runtime = app_client.app.state.runtime  # type: ignore[attr-defined]
    now = datetime.now(UTC)
    async with db.session() as session:
        rang = Conversation(
            agent_id=agent_id,
            direction="outbound",
            status="ringing",
            call_sid="CA" + "1" * 32,
            to_number="+12025550123",
        )
        talked = Conversation(
            agent_id=agent_id, direction="inbound", status="completed", call_sid="CA" + "2" * 32,
            from_number="+12025550124", started_at=now, ended_at=now, duration_sec=40.0, call_state="ENDED",
            end_reason="caller_hung_up",
        )  # fmt: skip
        talked.turns = [ConversationTurn(seq=0, role="user", text="Can you send me some information?")]
        live = Conversation(
            agent_id=agent_id, direction="inbound", status="in_progress", call_sid="CA" + "3" * 32
        )
        silent = Conversation(  # answered, but nobody said a word and nothing said who it was
            agent_id=agent_id, direction="outbound", status="completed", call_sid="CA" + "4" * 32,
            to_number="+12025550125", started_at=now, ended_at=now, duration_sec=40.0, call_state="ENDED",
            answered_by="unknown", end_reason="silence_timeout",
        )  # fmt: skip
        session.add_all([rang, talked, live, silent])
    await count_ended_call(db, silent.id)
    status = await app_client.post(
        "/twiml/status", data={"CallSid": rang.call_sid, "CallStatus": "no-answer"}
    )
    assert status.status_code == 200, status.text
    funnel = (await app_client.get(f"{A}/funnel", params={"agent_id": agent_id})).json()
    assert funnel_counts(funnel) == [2, 1, 0, 0, 0, 0]
    await runtime.post_call(talked.id)
    await runtime.post_call(talked.id)
    funnel = (await app_client.get(f"{A}/funnel", params={"agent_id": agent_id})).json()
    assert funnel_counts(funnel)[:4] == [3, 2, 1, 1]
    objections = (await app_client.get(f"{A}/breakdowns/objection", params={"agent_id": agent_id})).json()
    assert [(r["key"], r["calls"]) for r in objections["rows"]] == [("send_info", 1)]


@SQLITE_ONLY
@pytest.mark.asyncio
async def test_backfill_counts_calls_that_ended_before_analytics(app_client: httpx.AsyncClient) -> None:
    created = await app_client.post("/v1/convai/agents", json={"name": "Old"})
    agent_id = created.json()["agent_id"]
    db = db_of(app_client)
    now = datetime.now(UTC)
    async with db.session() as session:
        session.add_all(
            [
                Conversation(agent_id=agent_id, status="completed", call_state="ENDED", started_at=now, duration_sec=50.0,
                             outcome="meeting_booked", from_number="+12025550100"),
                Conversation(agent_id=agent_id, direction="outbound", status="busy", to_number="+12025550101"),
                Conversation(agent_id=agent_id, status="in_progress", started_at=now),  # still going: not yet
            ]
        )  # fmt: skip
    assert await backfill(db, batch=1) == 2
    assert await backfill(db) == 0  # counted once
    funnel = (await app_client.get(f"{A}/funnel", params={"agent_id": agent_id})).json()
    assert funnel_counts(funnel) == [2, 1, 1, 1, 0, 1]
