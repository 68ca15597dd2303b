"""The playbook editor in a real browser (Debian's Chromium, Playwright): pick the starter playbook, see
every stage in the graph (Cytoscape.js, vendored), edit a scripted line and save it, see a 422 listed by
its path, and test a stage through ``POST /v1/convai/playbooks/try``. The screenshot lands in docs/img/."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import API_KEY, ROOT, LiveServer, make_settings

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT = ROOT / "docs" / "img" / "playbook-editor.png"
EDITED = "Quick version: {{reason_for_call}} {{discovery_question}}"


@pytest.mark.asyncio
async def test_playbook_editor(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    settings = make_settings(tmp_path)
    async with LiveServer(settings) as server, async_playwright() as pw, server.client() as api:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # Chromium logs every 4xx response as an error: the 422 this test provokes is the one expected.
        page.on(
            "console",
            lambda msg: (
                errors.append(f"{msg.text} {msg.location.get('url')}") if msg.type == "error" else None
            ),
        )
        page.on("requestfailed", lambda req: errors.append(f"request failed: {req.url}"))

        await page.goto(server.base_url + "/")
        await page.fill("#api-key", API_KEY)
        await page.click("#sign-in")

        # Create an agent, open its playbook page: no playbook yet; pick the starter.
        await page.click("#new-agent")
        await page.fill("#agent-name", "Sam")
        await page.fill("#agent-system_prompt", "You are Sam, a friendly sales rep for Acme Analytics.")
        await page.click("#save-agent")
        await page.wait_for_selector("#agent-playbook")
        agent_id = page.url.rsplit("/", 1)[-1]
        await page.click("#agent-playbook")
        await page.wait_for_selector("#starter-select")
        await page.click("#use-starter")

        # The graph draws every stage the API stored (plus one "any stage" node for the global branches).
        await page.wait_for_function(
            "window.__playbookGraph && window.__playbookGraph.nodes('.stage').length > 0"
        )
        stored = (await api.get(f"/v1/convai/agents/{agent_id}")).json()["playbook"]
        drawn = await page.evaluate("window.__playbookGraph.nodes('.stage').map((n) => n.id())")
        assert sorted(drawn) == sorted(stored["nodes"]) and len(drawn) == len(stored["nodes"]) > 10
        assert await page.evaluate("window.__playbookGraph.edges().length") == len(stored["edges"])

        # Click the "reason" stage on the canvas: its fields open; edit its first line and save.
        box = await page.locator("#playbook-graph").bounding_box()
        assert box is not None
        pos = await page.evaluate("window.__playbookGraph.getElementById('reason').renderedPosition()")
        await page.mouse.click(box["x"] + pos["x"], box["y"] + pos["y"])
        await page.wait_for_function(
            "document.querySelector('#stage-label')?.value === 'Reason for the call'"
        )
        await page.fill("#stage-line-0", EDITED)
        await page.click("#save-playbook")
        await page.wait_for_selector("#toast:has-text('Playbook saved')")
        saved = (await api.get(f"/v1/convai/agents/{agent_id}")).json()["playbook"]
        assert saved["nodes"]["reason"]["lines"][0] == EDITED

        # A transition to a stage that does not exist: not saved, the 422 listed by its path.
        edge_id = await page.get_attribute("#stage-edges tr[data-edge]", "data-edge")
        await page.evaluate(
            "(id) => { const s = document.querySelector(`tr[data-edge='${id}'] .edge-target`);"
            "s.append(new Option('pitch', 'pitch')); s.value = 'pitch'; s.dispatchEvent(new Event('change')); }",
            edge_id,
        )
        await page.click("#save-playbook")
        await page.wait_for_selector("#playbook-errors:not([hidden])")
        listed = await page.inner_text("#playbook-errors")
        assert f"playbook › edges › {edge_id} › target" in listed and "pitch" in listed, listed
        assert (await api.get(f"/v1/convai/agents/{agent_id}")).json()["playbook"] == saved
        # The transitions from any stage are edited as one list; a new stage joins the graph.
        await page.select_option("#stage-select", "*")
        rows = await page.locator("#stage-edges tr[data-edge]").count()
        assert rows == sum(e["source"] == "*" for e in saved["edges"].values()) > 5
        await page.fill("input[name=id]", "budget_check")
        await page.click("text=Add a stage")
        await page.wait_for_function(f"window.__playbookGraph.nodes('.stage').length === {len(drawn) + 1}")
        # Back to the saved playbook through the JSON view.
        await page.evaluate(
            "(json) => { const t = document.querySelector('#playbook-json'); t.value = json; }",
            json.dumps(saved),
        )
        await page.click("details.card summary")
        await page.click("#apply-json")

        # Test a stage: at the opener, "What is this about?" → the (edited) reason for the call.
        await page.select_option("#try-stage", "opener")
        await page.fill("#try-line", "Sure, but I only have a minute. What is this about?")
        await page.click("#try-run")
        await page.wait_for_selector("#try-reply")
        reply = await page.inner_text("#try-reply")
        assert reply.startswith("Quick version: We help sales teams cut their weekly pipeline reporting"), (
            reply
        )
        assert await page.inner_text("#try-next") == "reason"
        await page.evaluate("window.scrollTo(0, 0)")
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOT), full_page=True)
        provoked = [e for e in errors if "status of 422" in e and e.endswith(f"/v1/convai/agents/{agent_id}")]
        assert len(provoked) == 1 and len(errors) == 1, errors
        await browser.close()
