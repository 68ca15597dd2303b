"""The console's analytics and experiments pages in Debian's headless Chromium (Playwright).

A seeded set: an agent with two versions, campaign "Autumn push" running an experiment between them
(120 leads, each stamped with its variant the way the dialer does it; version 2 books more), and 8
inbound calls off the campaign; every call is counted as it ends, the way the service does. The page's
charts are Chart.js instances (``window.__charts``): what they draw must be what the API answers, for
the whole set and with the campaign and version filters picked in the page; the experiment page shows the
API's verdict and per-variant numbers; an experiment started from the form is created as filled in.
Screenshots land in ``artifacts/console/`` (docs/img/ holds copies).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from models import Agent, Campaign, CampaignRecipient, Conversation, ConversationTurn
from storage.agent_versions import stamp_call
from storage.analytics import count_ended_call
from tests.conftest import API_KEY, ROOT, LiveServer, make_settings

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = ROOT / "artifacts" / "console"
D1 = datetime(2026, 11, 2, tzinfo=UTC)
RANGE = {"from": "2026-11-01", "to": "2026-11-06"}
STEPS = ["dialled", "answered", "human", "conversations", "qualified", "meetings_booked"]
OUTCOMES = ["not_interested", "callback_requested", "interested", "voicemail"]
AGENT = {
    "name": "Orbit SDR",
    "system_prompt": "You sell Orbit.",
    "data_collection": [{"name": "budget", "qualifies": True}, {"name": "timeline", "qualifies": True}],
}
NUMBER = "+15550100001"
LEADS = 120  # the campaign's: ~54 a person answered per variant (a verdict needs 30 each)


async def seed(server: LiveServer, api: Any) -> dict[str, str]:
    created = await api.post("/v1/convai/agents", json=AGENT)
    assert created.status_code == 201, created.text
    agent_id = created.json()["agent_id"]
    assert (
        await api.patch(f"/v1/convai/agents/{agent_id}", json={"system_prompt": "Sell."})
    ).status_code == 200
    versions = (await api.get(f"/v1/convai/agents/{agent_id}/versions")).json()["versions"]
    ids = {"agent": agent_id, **{f"v{v['number']}": v["id"] for v in versions}}
    db = server.runtime.db
    async with db.session() as session:
        campaign = Campaign(name="Autumn push", agent_id=agent_id, timezone="America/New_York")
        session.add(campaign)
        await session.flush()
        ids["campaign"] = campaign.id
    body = {"agent_id": agent_id, "name": "Shorter opener", "campaign_id": ids["campaign"],
            "variants": [{"version_id": ids["v1"], "weight": 1}, {"version_id": ids["v2"], "weight": 1}]}  # fmt: skip
    experiment = await api.post("/v1/convai/experiments", json=body)
    assert experiment.status_code == 201, experiment.text
    ids["experiment"] = experiment.json()["id"]

    conversation_ids: list[str] = []
    async with db.session() as session:
        agent = await session.get(Agent, agent_id)
        assert agent is not None
        for n in range(LEADS + 8):
            inbound = n >= LEADS
            lead = f"+1202555{n:04d}"
            at = D1 + timedelta(days=n % 3, hours=9 + n % 8, minutes=n % 50)
            never = n % 11 == 5  # a few never connect
            recipient_id = None
            if not inbound:
                recipient = CampaignRecipient(
                    campaign_id=ids["campaign"], phone_number=lead, time_zones=["America/New_York"]
                )
                session.add(recipient)
                await session.flush()
                recipient_id = recipient.id
            conversation = Conversation(
                agent_id=agent_id,
                direction="inbound" if inbound else "outbound",
                from_number=lead if inbound else NUMBER,
                to_number=NUMBER if inbound else lead,
                campaign_id=None if inbound else ids["campaign"],
                campaign_recipient_id=recipient_id,
                created_at=at,
                turns=[] if never else [
                    ConversationTurn(seq=0, role="user", text="It's too expensive, call me next week"),
                    ConversationTurn(
                        seq=1, role="agent", text="Sure.", user_speech_end_ms=1000.0,
                        first_frame_sent_ms=1000.0 + 400 + (n % 10) * 60,
                    ),
                ],
            )  # fmt: skip
            session.add(conversation)
            await session.flush()
            if inbound:
                await stamp_call(session, conversation, agent, lead_number=lead, version_id=ids["v1"])
            else:
                await stamp_call(session, conversation, agent, lead_number=lead, campaign_id=ids["campaign"])
            b = conversation.agent_version_id == ids["v2"]
            booked = not never and (n % 3 != 0 if b else n % 9 == 0)
            seconds = 20 + (n * 7) % 150
            conversation.status = "no_answer" if never else "completed"
            conversation.started_at = None if never else at + timedelta(seconds=5)
            conversation.ended_at = at + timedelta(seconds=5 + seconds)
            conversation.duration_sec = None if never else float(seconds)
            conversation.answered_by = None if never or inbound else "human"
            conversation.outcome = None if never else "meeting_booked" if booked else OUTCOMES[n % 4]
            conversation.collected_data = {"budget": "5000", "timeline": "Q1"} if booked else {}
            conversation.ended_stage = None if never else "booking" if booked else "discovery"
            conversation.call_state = "ENDED"
            conversation.end_reason = "no_answer" if never else None
            conversation_ids.append(conversation.id)
    for conversation_id in conversation_ids:
        await count_ended_call(db, conversation_id)
    return ids


async def chart(page: Any, name: str) -> dict[str, Any]:
    """What a chart on the page draws: its labels and each dataset's numbers."""
    drawn = await page.evaluate(
        """(name) => { const c = window.__charts[name]; return JSON.stringify(c && { labels: c.data.labels,
             datasets: c.data.datasets.map((d) => ({ label: d.label, data: d.data })) }); }""",
        name,
    )
    return json.loads(drawn)


async def drawn_again(page: Any) -> None:
    """The page for the address now shown has drawn its charts."""
    await page.wait_for_function(
        "document.querySelector('#analytics[data-ready]')?.dataset.hash === location.hash"
    )


async def assert_charts_match_the_api(page: Any, api: Any, filters: dict[str, str]) -> dict[str, Any]:
    async def get(path: str, **params: str) -> dict[str, Any]:
        r = await api.get(f"/v1/convai/analytics/{path}", params={**RANGE, **filters, **params})
        assert r.status_code == 200, r.text
        return r.json()

    funnel = await get("funnel")
    assert (await chart(page, "funnel"))["datasets"][0]["data"] == [funnel[s] for s in STEPS]
    rows = await page.eval_on_selector_all(
        "#funnel-table tr[data-step] td:nth-child(2)", "tds => tds.map(t => +t.textContent)"
    )
    assert rows == [funnel[s] for s in STEPS]

    def values(body: dict[str, Any], i: int = 0) -> list[Any]:
        return [p["value"] for p in body["series"][i]["points"]]

    calls, booked = await get("timeseries", metric="calls"), await get("timeseries", metric="meetings_booked")
    volume = await chart(page, "volume")
    assert volume["labels"] == [p["t"][:10] for p in calls["series"][0]["points"]]
    assert volume["datasets"][0]["data"] == values(calls) and volume["datasets"][2]["data"] == values(booked)
    rates = await chart(page, "rates")
    assert rates["datasets"][1]["data"] == values(await get("timeseries", metric="booking_rate"))
    latency = await chart(page, "latency")
    assert latency["datasets"][1]["data"] == values(await get("timeseries", metric="v2v_p95"))
    outcomes = await get("timeseries", metric="outcomes")
    drawn = {d["label"]: d["data"] for d in (await chart(page, "outcomes"))["datasets"]}
    assert drawn == {s["name"]: [p["value"] for p in s["points"]] for s in outcomes["series"]}
    for by in ("local_hour", "campaign", "version", "stage", "objection", "outcome"):
        rows = (await get(f"breakdowns/{by}"))["rows"]
        drawn_by = await chart(page, f"by_{by}")
        assert drawn_by["labels"] == [r["label"] or "(none)" for r in rows], by
        assert drawn_by["datasets"][0]["data"] == [r["calls"] for r in rows], by
        assert drawn_by["datasets"][1]["data"] == [r["meetings_booked"] for r in rows], by
    return funnel


@pytest.mark.asyncio
async def test_analytics_and_experiment_pages_show_the_apis_numbers(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    settings = make_settings(tmp_path)
    async with LiveServer(settings) as server, server.client() as api, async_playwright() as pw:
        ids = await seed(server, api)
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on(
            "console",
            lambda msg: errors.append(f"{msg.text} {msg.location}") if msg.type == "error" else None,
        )
        await page.goto(server.base_url + "/")
        await page.fill("#api-key", API_KEY)
        await page.click("#sign-in")
        await page.wait_for_selector("#new-agent")

        # The whole set, then the campaign, then one version: picked in the page's filters.
        await page.click("nav a[data-page=analytics]")
        await page.wait_for_selector("#analytics[data-ready]")
        await page.fill("#an-from", RANGE["from"])
        await page.fill("#an-to", RANGE["to"])
        await page.click("#an-apply")
        await page.wait_for_function(f"location.hash.includes('from={RANGE['from']}')")
        await drawn_again(page)
        everything = await assert_charts_match_the_api(page, api, {})
        assert everything["dialled"] == LEADS + 8 and everything["meetings_booked"] > 0
        await page.screenshot(path=str(SCREENSHOTS / "analytics.png"), full_page=True)
        # a chart's CSV button downloads the API's CSV of the same numbers
        async with page.expect_download() as info:
            await page.click("[data-chart=funnel] button")
        download = await info.value
        saved = tmp_path / "funnel.csv"
        await download.save_as(saved)
        rows = list(csv.DictReader(io.StringIO(await asyncio.to_thread(saved.read_text))))
        assert download.suggested_filename == "funnel.csv"
        assert [(r["step"], int(r["count"])) for r in rows] == [(s, everything[s]) for s in STEPS]

        await page.select_option("#an-campaign", ids["campaign"])
        await page.click("#an-apply")
        await page.wait_for_function(f"location.hash.includes('campaign_id={ids['campaign']}')")
        await drawn_again(page)
        campaign = await assert_charts_match_the_api(page, api, {"campaign_id": ids["campaign"]})
        assert campaign["dialled"] == LEADS

        await page.select_option("#an-agent", ids["agent"])  # picking an agent applies it: its versions load
        await page.wait_for_selector(f"#an-version option[value={ids['v2']}]", state="attached")
        await page.select_option("#an-version", ids["v2"])
        await page.click("#an-apply")
        await page.wait_for_function(f"location.hash.includes('version_id={ids['v2']}')")
        await drawn_again(page)
        assert "campaign_id" in page.url
        v2 = await assert_charts_match_the_api(
            page, api, {"agent_id": ids["agent"], "campaign_id": ids["campaign"], "version_id": ids["v2"]}
        )
        assert 0 < v2["dialled"] < LEADS

        # The experiment: the verdict and the per-variant numbers are the API's.
        result = (await api.get(f"/v1/convai/experiments/{ids['experiment']}")).json()
        assert result["verdict"] == "challenger_better", result
        await page.click("nav a[data-page=experiments]")
        listed = f"#experiments tr[data-experiment={ids['experiment']}]"
        assert await page.inner_text(f"{listed} .verdict-cell") == result["verdict"].replace("_", " ")
        await page.click(listed)
        await page.wait_for_selector("#experiment")
        assert await page.get_attribute("#experiment", "data-verdict") == result["verdict"]
        assert await page.inner_text("#verdict-text") == result["verdict_text"]
        for variant in result["variants"]:
            row = f"#variants tr[data-variant={variant['label']}]"
            for key in ("calls", "human", "meetings_booked"):
                assert await page.inner_text(f"{row} td[data-field={key}]") == str(variant[key])
        drawn = await chart(page, "experiment")
        assert drawn["datasets"][0]["data"] == [v["booking_rate"] for v in result["variants"]]
        assert drawn["datasets"][1]["data"] == [
            [v["booking_rate_ci95"]["low"], v["booking_rate_ci95"]["high"]] for v in result["variants"]
        ]
        # hovering B's point: the tooltip says its booking rate as a percentage
        point = await page.evaluate(
            "window.__charts.experiment.getDatasetMeta(0).data[1].getProps(['x', 'y'])"
        )
        await page.hover("#chart-experiment", position={"x": point["x"], "y": point["y"]})
        await page.wait_for_function("window.__charts.experiment.tooltip.getActiveElements().length > 0")
        lines = await page.evaluate("window.__charts.experiment.tooltip.body.flatMap((b) => b.lines)")
        b_rate = result["variants"][1]["booking_rate"]
        assert f"booking rate: {b_rate * 100:.1f} %" in lines, lines
        await page.screenshot(path=str(SCREENSHOTS / "experiment.png"), full_page=True)

        # Start one from the form: on an inbound number of the agent, v1 against v2 weighted 1:3.
        number = await api.post(
            "/v1/convai/phone-numbers", json={"phone_number": NUMBER, "agent_id": ids["agent"]}
        )
        assert number.status_code == 201, number.text
        await page.click("nav a[data-page=experiments]")
        await page.wait_for_selector("#new-experiment")
        await page.select_option("#exp-agent", ids["agent"])
        await page.wait_for_selector(f"#exp-target option[value='number:{NUMBER}']", state="attached")
        await page.fill("#exp-name", "Inbound opener")
        await page.select_option("#exp-target", f"number:{NUMBER}")
        await page.select_option("[data-variant='0'] .exp-version", ids["v1"])
        await page.select_option("[data-variant='1'] .exp-version", ids["v2"])
        await page.fill("[data-variant='1'] .exp-weight", "3")
        await page.click("#start-experiment")
        await page.wait_for_selector("#experiment[data-verdict=not_enough_data]")
        new_id = page.url.rsplit("/", 1)[-1]
        created = (await api.get(f"/v1/convai/experiments/{new_id}")).json()
        assert created["name"] == "Inbound opener" and created["phone_number"] == NUMBER
        assert [(v["version_id"], v["weight"]) for v in created["variants"]] == [
            (ids["v1"], 1),
            (ids["v2"], 3),
        ]
        page.once("dialog", lambda dialog: dialog.accept())
        await page.click("#stop-experiment")
        await page.wait_for_selector("#experiment:not(:has(#stop-experiment))")
        assert (await api.get(f"/v1/convai/experiments/{new_id}")).json()["status"] == "stopped"
        assert not errors, errors
        await browser.close()
