"""A team runs a campaign end to end in the console, in Debian's Chromium driven by Playwright, without curl:
set the agent's voicemail, import its do-not-call list, add the scenario starter pack and run a test
written in the form, start the campaign (refused first: the voicemail message needs a column the leads
lack), pause and resume it, watch it finish against the Twilio stand-in, filter its leads and export them.

Every page is also opened at phone width (nothing wider than the screen) and reached by keyboard; no page
logs an error. The screenshots in docs/console.md are written here, to docs/img/ (small palette PNGs).
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.campaign_helpers import ACCOUNT_SID, AUTH_TOKEN, Engine, make_agent, settings_for
from tests.conftest import API_KEY, ROOT, LiveServer
from tests.twilio_standin import PlacedCall, Scenario, TwilioStandIn

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
IMAGES = ROOT / "docs" / "img"
LAPTOP = {"width": 1200, "height": 820}
PHONE = {"width": 390, "height": 844}
LEADS = ["+12125550401", "+12125550402", "+12125550403", "+12125550404", "+12125550405"]
NO_ANSWER = LEADS[3]
ON_DNC = LEADS[4]


async def shot(page: Any, name: str, *, full_page: bool = False) -> None:
    """A screenshot for the docs, quantized to a 64-colour palette to stay small."""
    from PIL import Image

    IMAGES.mkdir(parents=True, exist_ok=True)
    raw = await page.screenshot(full_page=full_page)
    image = Image.open(io.BytesIO(raw)).convert("RGB")
    if full_page and image.height > 2400:
        image = image.crop((0, 0, image.width, 2400))
    image.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(IMAGES / name, optimize=True)


async def fits_the_screen(page: Any) -> None:
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"{page.url} is {overflow}px wider than the window"


async def tab_until(page: Any, selector: str, presses: int = 40) -> None:
    """Tab through the page until the element has the focus (it is reachable by keyboard)."""
    for _ in range(presses):
        await page.keyboard.press("Tab")
        if await page.evaluate(f"document.activeElement === document.querySelector({selector!r})"):
            return
    raise AssertionError(f"{selector} is not reached by Tab on {page.url}")


@pytest.mark.asyncio
async def test_a_team_runs_a_campaign_end_to_end_in_the_console(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    engine = Engine()
    engine.behaviour = {LEADS[0]: "meeting"}

    def scenario(call: PlacedCall) -> Scenario:
        if call.params["To"] == NO_ANSWER:
            return Scenario("no_answer", ring_sec=0.3)
        return Scenario("human", ring_sec=0.2, talk_sec=2.0, on_answer=engine.answered)

    dnc_csv = tmp_path / "dnc.csv"
    dnc_csv.write_text(f"phone_number,reason\n{ON_DNC},asked by email\n(646) 555-0188,\nnot a number,\n")
    missing_company = tmp_path / "leads-no-company.csv"
    missing_company.write_text(
        "phone_number,first_name\n" + "".join(f"{n},Lead{i}\n" for i, n in enumerate(LEADS))
    )
    leads = tmp_path / "leads.csv"
    leads.write_text(
        "phone_number,first_name,company\n" + "".join(f"{n},Lead{i},Co{i}\n" for i, n in enumerate(LEADS))
    )

    async with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, scenario=scenario) as twilio:
        async with (
            async_playwright() as pw,
            LiveServer(settings_for(tmp_path, twilio)) as server,
            server.client() as client,
        ):
            engine.server = server
            agent_id, _ = await make_agent(client)  # the agent and its number (no console page for numbers)
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            context = await browser.new_context(viewport=LAPTOP, accept_downloads=True)
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
            page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("dialog", lambda d: asyncio.ensure_future(d.accept()))
            failed: list[str] = []
            page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            base = server.base_url

            await page.goto(base + "/")
            await page.fill("#api-key", API_KEY)
            await page.click("#sign-in")
            await page.wait_for_selector("#agents")

            # ------------------------------------------------------------ 1. the agent's voicemail
            await page.goto(f"{base}/#/agents/{agent_id}")
            await page.wait_for_selector("#voicemail-settings")
            assert await page.is_disabled("#agent-voicemail_message")  # hang_up: the message is unused
            await page.select_option("#agent-voicemail_action", "leave_message")
            await page.fill(
                "#agent-voicemail_message",
                "Hi {{first_name}}, Ava from Orbit about {{company}}'s reports. Bye!",
            )
            hint = await page.inner_text("#voicemail-variables")
            assert "first_name" in hint and "company" in hint
            await page.click("#save-agent")
            await page.wait_for_selector("#toast:not([hidden])")
            saved = (await client.get(f"/v1/convai/agents/{agent_id}")).json()
            assert (
                saved["voicemail_action"] == "leave_message" and "{{company}}" in saved["voicemail_message"]
            )
            await page.locator("#voicemail-settings").scroll_into_view_if_needed()
            await page.locator("#voicemail-settings").screenshot(path=str(tmp_path / "vm.png"))
            await shot(page, "console-agent-voicemail.png")

            # ------------------------------------------------------------ 2. the do-not-call list
            await page.click("nav a[data-page=dnc]")
            await page.wait_for_selector("#dnc-list")
            assert "The list is empty" in await page.inner_text("#dnc-list")
            await page.set_input_files("#dnc-file", str(dnc_csv))
            await page.fill("#dnc-import-reason", "CRM suppression list")
            await page.fill("#dnc-region", "us")
            await page.click("#dnc-import-button")
            await page.wait_for_selector("#dnc-import-errors")
            report = await page.inner_text("#dnc-import-report")
            assert "2 added" in report and "1 rejected" in report
            assert "4" in await page.inner_text("#dnc-import-errors tbody td >> nth=0")  # line 4
            assert "not a number" in await page.inner_text("#dnc-import-errors")
            await page.wait_for_selector("#dnc-entries tr[data-number='+16465550188']")
            await page.fill("#dnc-numbers", "+1 415 555 0199\n+44 20 7946 0958")
            await page.fill("#dnc-reason", "asked on the phone")
            await page.click("#dnc-add-button")
            await page.wait_for_function(
                "document.querySelector('#dnc-count').textContent.startsWith('4 numbers')"
            )
            listed = await page.inner_text("#dnc-entries")
            assert "an import" in listed and "a person" in listed and "CRM suppression list" in listed
            await page.fill("#dnc-search", "415 555")
            await page.wait_for_function(
                "document.querySelector('#dnc-count').textContent.startsWith('1 number ')"
            )
            await page.click("#dnc-entries button.danger")  # remove it (the confirm is accepted)
            await page.wait_for_function(
                "document.querySelector('#dnc-count').textContent.startsWith('0 number')"
            )
            await page.fill("#dnc-search", "")
            await page.select_option("#dnc-source", "csv")
            await page.wait_for_function(
                "document.querySelector('#dnc-count').textContent.startsWith('2 numbers')"
            )
            await page.select_option("#dnc-source", "")
            await page.wait_for_function(
                "document.querySelector('#dnc-count').textContent.startsWith('3 numbers')"
            )
            await shot(page, "console-dnc.png", full_page=True)
            # keyboard: from the top of the page to the search, the import and its button
            await page.evaluate("document.activeElement?.blur()")
            await tab_until(page, "#dnc-search")
            await tab_until(page, "#dnc-import-button")

            # ------------------------------------------------------------ 3. scenario tests
            await page.goto(f"{base}/#/agents/{agent_id}/tests")
            await page.wait_for_selector("#add-starter-pack")
            await page.click("#add-starter-pack")
            await page.wait_for_selector("#tests-list tr[data-test]")
            pack = await page.locator("#tests-list tr[data-test]").count()
            assert pack >= 8
            # Edit one in its form: the fields hold its steps and criteria.
            await page.click("#tests-list tr[data-test] >> nth=0 >> button:has-text('Edit')")
            await page.wait_for_function(
                "document.querySelector('#test-editor-title').textContent.startsWith('Edit')"
            )
            assert await page.input_value("#test-name") != ""
            assert await page.locator("#test-steps .step").count() >= 1
            # A new test, written in the form.
            await page.click("#new-test-button")
            await page.wait_for_function(
                "document.querySelector('#test-editor-title').textContent === 'New test'"
            )
            await page.fill("#test-name", "books a demo at three")
            await page.fill("#test-description", "")
            await page.fill("#test-steps .step >> nth=0 >> .step-value", "Sure, I have a minute.")
            await page.fill(
                "#test-steps .step >> nth=1 >> .step-value", "Can we book a demo tomorrow at 3pm?"
            )
            await page.fill("#test-variables", "first_name=Dana")
            await page.fill("#test-agent_never_says", "I can't help")
            await page.fill("#test-agent_says", "booked | scheduled")
            await page.click("#test-tab-json")  # the JSON tab shows what the form says
            spec = await page.input_value("#test-json")
            assert '"scheduled"' in spec and '"first_name": "Dana"' in spec, spec
            await page.click("#test-tab-form")
            await page.click("#save-test")
            await page.wait_for_selector("#tests-list tr[data-test='books a demo at three']")
            await page.fill("#test-repeat", "1")
            await page.click("#tests-list tr[data-test='books a demo at three'] button:has-text('Run')")
            await page.wait_for_function(
                "['passed','failed','error'].includes(document.querySelector('#run-status')?.textContent)",
                timeout=30_000,
            )
            assert await page.inner_text("#run-status") == "passed", await page.inner_text("#test-results")
            details = page.locator("#test-results details >> nth=0")
            await details.locator("summary").click()
            grid = details.locator(".result-grid")
            criteria = await grid.locator(".criteria-list").inner_text()
            transcript = await grid.locator(".transcript").inner_text()
            assert "passed: tool book_meeting" in criteria and "passed: agent says" in criteria, criteria
            assert "booked" in transcript.lower()
            await details.scroll_into_view_if_needed()
            await shot(page, "console-tests.png")

            # ------------------------------------------------------------ 4. the campaign
            await page.click("nav a[data-page=campaigns]")
            await page.wait_for_selector("#new-campaign")
            await page.fill("#campaign-call_name", "December webinar")
            await page.set_input_files("#campaign-file", str(missing_company))
            await page.fill("#campaign-calling_hours_start", "")  # any time: the test may run at night
            await page.fill("#campaign-calling_hours_end", "")
            await page.fill("#campaign-target_concurrency_limit", "1")
            await page.fill("#campaign-max_attempts", "1")  # no retry of the unanswered lead
            await page.click("#start-campaign")
            await page.wait_for_selector("#toast.error:not([hidden])")
            refused = await page.inner_text("#toast")
            assert "voicemail message uses {{company}}" in refused, refused
            assert (await client.get("/v1/convai/batch-calling/workspace")).json()["batch_calls"] == []
            await page.set_input_files("#campaign-file", str(leads))
            await page.click("#start-campaign")
            await page.wait_for_selector("#campaign-progress")
            await page.click("#pause-campaign")
            await page.wait_for_selector("#resume-campaign")
            assert "paused" in await page.inner_text("#campaign-status")
            await shot(page, "console-campaign-paused.png")
            await page.click("#resume-campaign")
            await page.wait_for_selector("#pause-campaign")
            seen_eta = ""
            for _ in range(400):  # watch it live, up to 40 s
                status = await page.inner_text("#campaign-status")
                eta = await page.inner_text("#campaign-eta")
                if re.search(r"\d:\d\d", eta) and "paused" not in eta:
                    seen_eta = eta
                if "completed" in status:
                    break
                await asyncio.sleep(0.1)
            assert "completed" in status, status
            await page.wait_for_function(
                "document.querySelector('#campaign-finished').textContent === '5 / 5'"
            )
            assert seen_eta, "no expected finish time was shown while it ran"
            assert await page.inner_text("#campaign-eta") == "finished"
            assert "false" not in await page.inner_text("#campaign")
            outcomes = await page.inner_text("#campaign-by-outcome")
            assert "meeting booked 1" in outcomes and "dnc 1" in outcomes and "no answer 1" in outcomes
            assert await page.inner_text("#campaign-booked") == "1"
            assert await page.inner_text("#campaign-reached") == "3"
            width = await page.evaluate("document.querySelector('.seg-booked').style.width")
            assert width == "20%", width
            await page.select_option("#lead-outcome", "not_interested")
            await page.wait_for_function(
                "document.querySelector('#lead-count').textContent.startsWith('2 leads')"
            )
            assert await page.locator("#recipients tbody tr").count() == 2
            await page.select_option("#lead-outcome", "")
            await page.wait_for_function(
                "document.querySelector('#lead-count').textContent.startsWith('5 leads')"
            )
            await shot(page, "console-campaign.png", full_page=True)
            async with page.expect_download() as download_info:
                await page.click("#export-campaign")
            download = await download_info.value
            saved_csv = tmp_path / "export.csv"
            await download.save_as(str(saved_csv))
            exported = list(csv.DictReader(io.StringIO(saved_csv.read_text())))
            assert download.suggested_filename.endswith(".csv")
            assert {r["phone_number"]: r["outcome"] for r in exported} == {
                LEADS[0]: "meeting_booked",
                LEADS[1]: "not_interested",
                LEADS[2]: "not_interested",
                NO_ANSWER: "no_answer",
                ON_DNC: "dnc",
            }
            assert exported[0]["company"] == "Co0"
            campaign_url = page.url
            # The campaign list: a row is reached by Tab and opened with Enter.
            await page.click("nav a[data-page=campaigns]")
            await page.wait_for_selector("#campaigns tr.clickable")
            await page.evaluate("document.activeElement?.blur()")
            await tab_until(page, "#campaigns tr.clickable")
            await page.keyboard.press("Enter")
            await page.wait_for_selector("#campaign-progress")

            # ------------------------------------------------------------ 5. phone width, every page
            phone = await context.new_page()
            phone.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
            phone.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            await phone.set_viewport_size(PHONE)
            await phone.goto(base + "/")
            await phone.fill("#api-key", API_KEY)
            await phone.click("#sign-in")
            await phone.wait_for_selector("#agents")
            await fits_the_screen(phone)
            for route, ready, image in [
                (f"#/agents/{agent_id}", "#voicemail-settings", None),
                ("#/dnc", "#dnc-entries", "console-dnc-phone.png"),
                (f"#/agents/{agent_id}/tests", "#test-results details", "console-tests-phone.png"),
                ("#/campaigns", "#campaigns", None),
                (
                    campaign_url.split("/", 3)[3].lstrip("/"),
                    "#campaign-progress",
                    "console-campaign-phone.png",
                ),
                ("#/conversations", "#conversations", None),
                (f"#/conversations/{exported[0]['conversation_id']}", "#transcript", None),
                ("#/live", "#live", None),
            ]:
                await phone.goto(
                    f"{base}/{route.lstrip('/')}" if route.startswith("#") else f"{base}/{route}"
                )
                await phone.wait_for_selector(ready)
                await phone.wait_for_timeout(150)
                await fits_the_screen(phone)
                if image:
                    await shot(phone, image)
            await browser.close()
        await twilio.settled()

    # The only errors the browser logged: the refused campaign's 422 (the request the toast explained).
    unexpected = [e for e in errors if "status of 422" not in e]
    assert unexpected == [] and len(errors) == 1, (errors, failed)
    assert sorted(twilio.per_number) == sorted(LEADS[:4])  # the number on the do-not-call list never rang
