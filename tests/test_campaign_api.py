"""The batch calling API from its clients: the ElevenLabs SDK, a lead CSV, bad submissions, Twilio's AMD
callback, and the web console.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
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
    wait_for,
)
from tests.conftest import LiveServer
from tests.twilio_standin import Scenario, TwilioStandIn

# ---------------------------------------------------------------- the ElevenLabs SDK, CSV upload, webhooks


@pytest.mark.asyncio
async def test_the_elevenlabs_sdk_submits_lists_gets_cancels_and_retries_a_batch(tmp_path: Path) -> None:
    from elevenlabs import AsyncElevenLabs
    from elevenlabs.types import (
        BatchCallDetailedResponse,
        BatchCallResponse,
        ConversationInitiationClientDataRequestInput,
        OutboundCallRecipient,
        WorkspaceBatchCallsResponse,
    )

    from tests.conftest import API_KEY

    numbers = [lead(40 + i) for i in range(3)]
    async with TwilioStandIn(
        ACCOUNT_SID, AUTH_TOKEN, scenario=lambda c: Scenario("no_answer", 0.05)
    ) as twilio:
        async with (
            LiveServer(settings_for(tmp_path, twilio)) as server,
            server.client() as raw,
            httpx.AsyncClient(timeout=30) as http,
        ):
            sdk = AsyncElevenLabs(
                api_key=API_KEY, base_url=server.base_url, httpx_client=http
            ).conversational_ai
            agent_id, number_id = await make_agent(raw)
            created = await sdk.batch_calls.create(
                call_name="SDK batch",
                agent_id=agent_id,
                agent_phone_number_id=number_id,
                recipients=[
                    OutboundCallRecipient(
                        phone_number=n,
                        conversation_initiation_client_data=ConversationInitiationClientDataRequestInput(
                            dynamic_variables={"first_name": f"Lead {i}"}
                        ),
                    )
                    for i, n in enumerate(numbers)
                ],
                target_concurrency_limit=2,
            )
            assert isinstance(created, BatchCallResponse) and created.id.startswith("btcal_")
            assert (created.name, created.agent_id, created.agent_name) == ("SDK batch", agent_id, "Ava")
            assert created.phone_number_id == number_id and created.target_concurrency_limit == 2
            assert created.total_calls_scheduled == 3

            async def done() -> bool:
                return (await sdk.batch_calls.get(created.id)).status == "completed"

            await wait_for(done, 20, "the batch to complete")
            got = await sdk.batch_calls.get(created.id)
            assert isinstance(got, BatchCallDetailedResponse)
            assert [r.phone_number for r in got.recipients] == numbers
            assert {r.status for r in got.recipients} == {"failed"} and got.total_calls_finished == 3
            assert got.recipients[1].conversation_initiation_client_data.dynamic_variables == {
                "first_name": "Lead 1"
            }
            assert got.recipients[0].conversation_id
            listed = await sdk.batch_calls.list()
            assert isinstance(listed, WorkspaceBatchCallsResponse)
            assert [b.id for b in listed.batch_calls] == [created.id] and listed.has_more is False

            retried = await sdk.batch_calls.retry(created.id)
            assert retried.retry_count == 1 and retried.status == "in_progress"
            await wait_for(done, 20, "the retried batch to complete")
            assert sum(twilio.per_number.values()) == 6  # each lead once more
            for path, model in (
                (f"/v1/convai/batch-calling/{created.id}", BatchCallDetailedResponse),
                ("/v1/convai/batch-calling/workspace", WorkspaceBatchCallsResponse),
            ):
                r = await raw.get(path)
                model.model_validate(r.json())  # strictly, not just the SDK's lenient construct
            r = await raw.post(f"/v1/convai/batch-calling/{created.id}/cancel")
            assert r.status_code == 409 and "already completed" in r.json()["detail"]

            second = await sdk.batch_calls.create(
                call_name="later",
                agent_id=agent_id,
                recipients=[
                    OutboundCallRecipient(
                        phone_number=numbers[0],
                        conversation_initiation_client_data=ConversationInitiationClientDataRequestInput(
                            dynamic_variables={"first_name": "Sam"}
                        ),
                    )
                ],
                scheduled_time_unix=int(time.time()) + 3600,
            )
            assert second.status == "pending"
            cancelled = await sdk.batch_calls.cancel(second.id)
            assert cancelled.status == "cancelled"
            assert (await sdk.batch_calls.get(second.id)).recipients[0].status == "cancelled"
            r = await raw.get("/v1/convai/batch-calling/workspace", params={"limit": 1})
            assert r.json()["has_more"] and r.json()["batch_calls"][0]["id"] == second.id
            r2 = await raw.get(
                "/v1/convai/batch-calling/workspace", params={"last_doc": r.json()["next_doc"]}
            )
            assert [b["id"] for b in r2.json()["batch_calls"]] == [created.id]
            assert (await raw.get("/v1/convai/batch-calling/btcal_missing")).status_code == 404
    assert sum(twilio.per_number.values()) == 6  # the scheduled-then-cancelled batch dialled no one


@pytest.mark.asyncio
async def test_a_lead_csv_starts_a_campaign_with_variables_zones_and_rules(tmp_path: Path) -> None:
    from models import WebhookEvent

    csv_text = (
        "phone_number,first_name,company,timezone\n"
        "+1 212 555 0161,Dana,Acme,\n"
        "(415) 555-0162,Lee,Globex,America/Chicago\n"
        "not a number,X,Y,\n"
        "\n"
    )
    engine = Engine()
    async with TwilioStandIn(
        ACCOUNT_SID,
        AUTH_TOKEN,
        scenario=lambda c: Scenario("human", 0.05, 0.1, on_answer=engine.answered),
    ) as twilio:
        async with LiveServer(settings_for(tmp_path, twilio)) as server, server.client() as client:
            engine.server = server
            agent_id, _ = await make_agent(client)
            hook = await client.post(
                "/v1/convai/webhooks",
                json={"url": "http://127.0.0.1:9/hook", "events": ["campaign.completed"]},
            )
            assert hook.status_code == 201, hook.text
            form = {
                "call_name": "CSV leads",
                "agent_id": agent_id,
                "default_region": "US",
                "target_concurrency_limit": "2",
                "calls_per_minute": "20",
                "calling_hours_start": "00:00",
                "calling_hours_end": "23:59",
                "calling_days": "0,1,2,3,4,5,6",
                "retry_outcomes": "no_answer,busy",
                "retry_delay_sec": "60",
                "max_attempts": "2",
            }
            r = await client.post(
                "/v1/convai/batch-calling/upload",
                data=form,
                files={"file": ("leads.csv", csv_text.encode(), "text/csv")},
            )
            assert r.status_code == 200, r.text
            created = r.json()
            assert created["calling_hours"] == {
                "start": "00:00",
                "end": "23:59",
                "days": [0, 1, 2, 3, 4, 5, 6],
            }
            assert created["retry"] == {"outcomes": ["no_answer", "busy"], "delay_sec": 60, "max_attempts": 2}
            assert (created["target_concurrency_limit"], created["calls_per_minute"]) == (2, 20)

            async def done() -> bool:
                return (await batch(client, created["id"]))["status"] == "completed"

            await wait_for(done, 20, "the CSV campaign to complete")
            body = await batch(client, created["id"])
            async with server.runtime.db.session() as session:
                events = (
                    await session.scalars(
                        select(WebhookEvent).where(WebhookEvent.type == "campaign.completed")
                    )
                ).all()
                dialled = (
                    await session.scalars(
                        select(Conversation).where(Conversation.campaign_id == created["id"])
                    )
                ).all()
    rows = body["recipients"]
    assert [r["phone_number"] for r in rows[:2]] == ["+12125550161", "+14155550162"]
    assert rows[0]["time_zones"] == ["America/New_York"] and rows[1]["time_zones"] == ["America/Chicago"]
    assert rows[0]["conversation_initiation_client_data"]["dynamic_variables"] == {
        "first_name": "Dana",
        "company": "Acme",
    }
    assert (rows[2]["status"], rows[2]["outcome"]) == ("skipped", "invalid_number")
    assert {c.dynamic_variables["first_name"] for c in dialled} == {"Dana", "Lee"}
    assert len(events) == 1
    data = events[0].data
    assert data["campaign_id"] == created["id"] and data["recipients"] == 3 and data["dialled"] == 2
    assert data["by_outcome"] == {"invalid_number": 1, "not_interested": 2}


@pytest.mark.asyncio
async def test_bad_submissions_say_what_is_wrong(tmp_path: Path) -> None:
    async with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, answer=False) as twilio:
        settings = settings_for(tmp_path, twilio, dialer_enabled=False)
        async with LiveServer(settings) as server, server.client() as client:
            agent_id, _ = await make_agent(client)
            lead_row = {"phone_number": "+12125550100", "dynamic_variables": {"first_name": "Sam"}}
            base = {"call_name": "x", "agent_id": agent_id, "recipients": [lead_row]}
            cases: list[tuple[dict[str, Any], int, str]] = [
                ({**base, "agent_id": "agent_nope"}, 404, "agent not found"),
                ({**base, "agent_phone_number_id": "pn_nope"}, 404, "phone number not found"),
                ({**base, "recipients": []}, 422, "recipients"),
                ({**base, "calling_hours": {"start": "17:00", "end": "09:00"}}, 422, "before"),
                ({**base, "calling_hours": {"start": "9am", "end": "17:00"}}, 422, "start"),
                ({**base, "timezone": "Mars/Olympus"}, 422, "unknown time zone"),
                ({**base, "retry": {"outcomes": ["meeting_booked"]}}, 422, "outcomes"),
                ({**base, "calls_per_minute": 0}, 422, "calls_per_minute"),
                # the agent's {{first_name}}: checked against the leads before anyone is called
                ({**base, "recipients": [{"phone_number": "+12125550100"}]}, 422, "uses {{first_name}}"),
            ]
            for body, code, text in cases:
                r = await client.post("/v1/convai/batch-calling/submit", json=body)
                assert r.status_code == code and text in r.text, (body, r.status_code, r.text)
            for csv_text, text in (
                ("number,name\n+12125550100,A\n", "phone_number column"),
                ("phone_number,timezone\n+12125550100,Nowhere/Else\n", "CSV line 2"),
                ("phone_number\n", "no leads"),
            ):
                r = await client.post(
                    "/v1/convai/batch-calling/upload",
                    data={"call_name": "x", "agent_id": agent_id},
                    files={"file": ("l.csv", csv_text.encode(), "text/csv")},
                )
                assert r.status_code == 422 and text in r.text, (csv_text, r.text)
            r = await client.post(
                "/v1/convai/batch-calling/upload",
                data={"call_name": "x", "agent_id": agent_id},
                files={"file": ("l.csv", b"\xff\xfe\x00bad", "text/csv")},
            )
            assert r.status_code == 422 and "UTF-8" in r.text


@pytest.mark.asyncio
async def test_twilio_amd_callback_records_who_answered(tmp_path: Path) -> None:
    from twilio.request_validator import RequestValidator

    async with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, answer=False) as twilio:
        async with LiveServer(settings_for(tmp_path, twilio)) as server, server.client() as client:
            agent_id, _ = await make_agent(client)
            r = await client.post(
                "/v1/convai/outbound",
                json={
                    "agent_id": agent_id,
                    "to_number": "+12125550177",
                    "dynamic_variables": {"first_name": "S"},
                },
            )
            assert r.status_code == 201
            placed = r.json()
            params = twilio.calls[placed["call_sid"]].params
            url = params["AsyncAmdStatusCallback"]
            assert params["MachineDetection"] == "DetectMessageEnd" and params["AsyncAmd"] == "true"

            async def post(answered_by: str, signed: bool = True) -> httpx.Response:
                form = {"CallSid": placed["call_sid"], "AccountSid": ACCOUNT_SID, "AnsweredBy": answered_by}
                sig = RequestValidator(AUTH_TOKEN).compute_signature(url, form) if signed else "bad"
                async with httpx.AsyncClient() as http:
                    return await http.post(url, data=form, headers={"X-Twilio-Signature": sig})

            assert (await post("machine_end_beep", signed=False)).status_code == 403
            assert (await post("robot")).status_code == 400
            r = await post("machine_end_beep")
            assert r.status_code == 200 and r.json()["answered_by"] == "machine"
            conv = (await client.get(f"/v1/convai/conversations/{placed['conversation_id']}")).json()
            async with server.runtime.db.session() as session:
                row = await session.get(Conversation, placed["conversation_id"])
                assert row is not None
                assert (row.answered_by, row.answered_by_method) == ("machine", "twilio_amd")
                assert row.answered_by_at is not None and row.outcome == "voicemail"
            assert conv["outcome"] == "voicemail"


# ---------------------------------------------------------------- the console


@pytest.mark.asyncio
async def test_console_uploads_a_csv_starts_a_campaign_and_shows_each_lead(tmp_path: Path) -> None:
    import shutil

    from playwright.async_api import async_playwright

    from tests.conftest import API_KEY, ROOT

    screenshots = ROOT / "artifacts" / "console"
    screenshots.mkdir(parents=True, exist_ok=True)
    leads = tmp_path / "leads.csv"
    leads.write_text(
        "phone_number,first_name\n+12125550181,Dana\n+12125550182,Lee\n(212) 555-0183,Kim\nnope,X\n"
    )
    engine = Engine()
    async with TwilioStandIn(
        ACCOUNT_SID,
        AUTH_TOKEN,
        scenario=lambda c: Scenario("human", 0.05, 0.1, on_answer=engine.answered),
    ) as twilio:
        async with (
            LiveServer(settings_for(tmp_path, twilio)) as server,
            server.client() as client,
            async_playwright() as pw,
        ):
            engine.server = server
            await make_agent(client)
            browser = await pw.chromium.launch(
                executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                headless=True,
                args=["--no-sandbox"],
            )
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # A deep link opened signed out lands on its page once signed in.
            await page.goto(server.base_url + "/#/campaigns")
            assert not await page.is_visible("nav"), "the signed-out page shows no navigation"
            await page.fill("#api-key", API_KEY)
            await page.click("#sign-in")
            await page.wait_for_selector("#new-campaign")
            await page.fill("#campaign-call_name", "Browser campaign")
            await page.set_input_files("#campaign-file", str(leads))
            await page.fill("#campaign-default_region", "US")
            await page.fill("#campaign-calling_hours_start", "00:00")
            await page.fill("#campaign-calling_hours_end", "23:59")
            await page.click("#start-campaign")
            await page.wait_for_selector("#recipients")
            await page.wait_for_function(
                "document.querySelector('#campaign-finished')?.textContent === '4 / 4'", timeout=30_000
            )
            await page.wait_for_selector("#retry-campaign")
            text = await page.inner_text("#recipients")
            await page.screenshot(path=str(screenshots / "campaign.png"), full_page=True)
            await page.click("nav a[data-page=campaigns]")
            await page.wait_for_selector("#campaigns tr.clickable")
            listed = await page.inner_text("#campaigns")
            await browser.close()
    assert errors == []
    assert text.count("not interested") == 3 and "invalid number" in text and "+12125550183" in text
    assert "first_name=Kim" in text
    assert "Browser campaign" in listed and "completed" in listed
    assert sorted(twilio.per_number) == ["+12125550181", "+12125550182", "+12125550183"]
