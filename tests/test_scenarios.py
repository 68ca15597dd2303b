"""Scenario tests: the runner's verdicts and messages, the REST CRUD and runs, the CLI's exit codes, and
the SDR starter pack on the embedded default models (text mode)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from scenarios.runner import Scenario, run_suite
from simulator.scenario import ScenarioFile, ScenarioSpec
from tests.conftest import API_KEY, QUICK_ECHO_VOICE, ROOT, LiveServer, make_settings

PACK = ROOT / "scenarios" / "starter_pack.json"
AGENT = {
    "name": "Booker",
    "system_prompt": "You book demos.",
    "first_message": "Hi, this is Booker.",
    "builtin_tools": ["book_meeting", "transfer_call", "end_call"],
    "transfer_number": "+14155550100",
}
BOOK_AT_3 = {
    "name": "books at three",
    "caller": [{"say": "Can we book a demo tomorrow at 3pm?"}],
    "criteria": {
        "tools_called": [{"name": "book_meeting", "arguments": {"start_time": {"contains": "T15:00"}}}],
        "ended_by": "caller",
    },
}


def spec(raw: dict[str, Any], **changes: Any) -> ScenarioSpec:
    return ScenarioSpec.model_validate({**raw, **changes})


async def make_agent(client: httpx.AsyncClient, body: dict[str, Any] = AGENT) -> str:
    created = await client.post("/v1/convai/agents", json=body)
    assert created.status_code == 201, created.text
    return created.json()["agent_id"]


@pytest.mark.asyncio
async def test_runner_passes_a_good_scenario_and_says_exactly_why_a_broken_one_fails(
    app_client: httpx.AsyncClient,
) -> None:
    agent_id = await make_agent(app_client)
    runtime = app_client.app.state.runtime  # type: ignore[attr-defined]
    wrong_slot = spec(
        BOOK_AT_3,
        name="wrong slot",
        criteria={
            "tools_called": [{"name": "book_meeting", "arguments": {"start_time": {"contains": "T16:00"}}}]
        },
    )
    no_tool = spec(
        BOOK_AT_3,
        name="no booking words",
        caller=[{"say": "What's the weather like?"}],
    )
    said_never = spec(BOOK_AT_3, name="never says booked", criteria={"agent_never_says": ["booked"]})
    result = await run_suite(
        runtime,
        agent_id,
        [Scenario(spec(BOOK_AT_3)), Scenario(wrong_slot), Scenario(no_tool), Scenario(said_never)],
    )
    rates = {s["scenario"]: s["pass_rate"] for s in result["summary"]}
    assert rates == {
        "books at three": 1.0,
        "wrong slot": 0.0,
        "no booking words": 0.0,
        "never says booked": 0.0,
    }
    assert result["passed"] is False
    failures = {s["scenario"]: s["failures"] for s in result["summary"]}
    [wrong] = failures["wrong slot"]
    assert wrong.startswith(
        "expected tool book_meeting with start_time containing 'T16:00', got book_meeting with "
    )
    assert "T15:00" in wrong
    [none] = failures["no booking words"]
    assert none.startswith(
        "expected tool book_meeting with start_time containing 'T15:00', got none; agent said: \""
    )
    assert "weather" in none  # the echo model repeats the caller: what the agent said is quoted
    [never] = failures["never says booked"]
    assert never.startswith("expected the agent never to say 'booked'; agent said: \"You're booked for")
    good = next(r for r in result["runs"] if r["scenario"] == "books at three")
    assert [c["name"] for c in good["tool_calls"]] == ["book_meeting"]
    assert [t["role"] for t in good["transcript"]] == ["agent", "user", "agent"]


@pytest.mark.asyncio
async def test_text_mode_leaves_no_trace_and_places_nothing(app_client: httpx.AsyncClient) -> None:
    """A test call's conversation, meeting and do-not-call entry are removed; a transfer is not placed."""
    agent_id = await make_agent(app_client)
    runtime = app_client.app.state.runtime  # type: ignore[attr-defined]
    scenarios = [
        Scenario(spec(BOOK_AT_3)),
        Scenario(
            spec(
                BOOK_AT_3,
                name="dnc",
                caller=[{"say": "Take me off your list."}],
                criteria={"on_dnc_list": True, "ended_by": "agent"},
            )
        ),
        Scenario(
            spec(
                BOOK_AT_3,
                name="human",
                caller=[{"say": "Can I talk to a real person?"}],
                criteria={
                    "end_reason": "transferred",
                    "tools_called": [{"name": "transfer_call", "success": True}],
                },
            )
        ),
    ]
    result = await run_suite(runtime, agent_id, scenarios)
    assert result["passed"], result["summary"]
    for path in ("/v1/convai/conversations", "/v1/convai/dnc"):
        listed = (await app_client.get(path)).json()
        assert not listed.get("conversations") and not listed.get("entries"), listed


@pytest.mark.asyncio
async def test_silence_runs_the_watchdog_and_a_rubric_is_not_judged_on_the_embedded(
    app_client: httpx.AsyncClient,
) -> None:
    agent_id = await make_agent(app_client)
    runtime = app_client.app.state.runtime  # type: ignore[attr-defined]
    silent = spec(
        BOOK_AT_3,
        name="silent",
        caller=[{"silence_s": 45}],
        criteria={"agent_says": ["are you still there"], "end_reason": "silence_timeout", "rubric": "polite"},
    )
    only_rubric = spec(BOOK_AT_3, name="only a rubric", criteria={"rubric": "The agent is polite."})
    result = await run_suite(runtime, agent_id, [Scenario(silent), Scenario(only_rubric)])
    by_name = {s["scenario"]: s for s in result["summary"]}
    assert by_name["silent"]["pass_rate"] == 1.0 and by_name["silent"]["not_judged"]
    # "not judged" is never a pass: a scenario with nothing else checked does not pass
    assert by_name["only a rubric"]["pass_rate"] == 0.0
    run = next(r for r in result["runs"] if r["scenario"] == "only a rubric")
    assert run["criteria"] == [
        {
            "criterion": "rubric",
            "status": "not_judged",
            "message": "not judged: needs an LLM other than the embedded one (set LLM_PROVIDER=ollama)",
        }
    ]


@pytest.mark.asyncio
async def test_tests_crud_and_run_over_rest(app_client: httpx.AsyncClient) -> None:
    agent_id = await make_agent(app_client)
    base = f"/v1/convai/agents/{agent_id}/tests"
    for bad in (
        {**BOOK_AT_3, "caller": []},
        {**BOOK_AT_3, "caller": [{"say": "hi", "dtmf": "1"}]},
        {**BOOK_AT_3, "criteria": {}},
        {**BOOK_AT_3, "surprise": 1},
    ):
        refused = await app_client.post(base, json=bad)
        assert refused.status_code == 422, bad
        assert "detail" in refused.json()
    assert (await app_client.post("/v1/convai/agents/agent_nope/tests", json=BOOK_AT_3)).status_code == 404
    created = await app_client.post(base, json=BOOK_AT_3)
    assert created.status_code == 201, created.text
    test_id = created.json()["id"]
    assert (await app_client.get(f"{base}/{test_id}")).json()["name"] == "books at three"
    renamed = await app_client.patch(f"{base}/{test_id}", json={"name": "books at 3pm"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "books at 3pm"
    assert renamed.json()["criteria"]["tools_called"][0]["name"] == "book_meeting"
    assert (await app_client.patch(f"{base}/{test_id}", json={"caller": []})).status_code == 422
    assert (await app_client.patch(f"{base}/{test_id}", json={"name": None})).status_code == 422
    broken = await app_client.post(base, json={**BOOK_AT_3, "name": "wrong slot", "criteria": {
        "tools_called": [{"name": "book_meeting", "arguments": {"start_time": {"contains": "T16:00"}}}]}})  # fmt: skip
    assert broken.status_code == 201
    listed = (await app_client.get(base)).json()["tests"]
    assert [t["name"] for t in listed] == ["books at 3pm", "wrong slot"]

    ran = await app_client.post(f"{base}/run?wait=true", json={"repeat": 2})
    assert ran.status_code == 200, ran.text
    run = ran.json()
    assert run["status"] == "failed" and run["pass_rate"] == 0.5
    assert {s["scenario"]: s["pass_rate"] for s in run["summary"]} == {"books at 3pm": 1.0, "wrong slot": 0.0}
    assert len(run["results"]) == 4
    assert all(r["transcript"] and r["criteria"] for r in run["results"])
    stored = await app_client.get(f"{base}/runs/{run['id']}")
    assert stored.status_code == 200 and stored.json()["results"] == run["results"]
    assert (await app_client.get(f"{base}/runs")).json()["runs"][0]["id"] == run["id"]

    only_good = await app_client.post(f"{base}/run", json={"test_ids": [test_id]})
    assert only_good.status_code == 202 and only_good.json()["status"] == "running"
    for _ in range(100):
        polled = (await app_client.get(f"{base}/runs/{only_good.json()['id']}")).json()
        if polled["status"] != "running":
            break
        await asyncio.sleep(0.05)
    assert polled["status"] == "passed" and polled["pass_rate"] == 1.0

    assert (await app_client.post(f"{base}/run", json={"test_ids": ["test_nope"]})).status_code == 404
    assert (await app_client.post(f"{base}/run", json={"repeat": 0})).status_code == 422
    assert (await app_client.delete(f"{base}/{test_id}")).status_code == 204
    assert (await app_client.get(f"{base}/{test_id}")).status_code == 404
    assert (await app_client.get(f"{base}/runs/testrun_nope")).status_code == 404
    other = await make_agent(app_client)
    assert (await app_client.get(f"/v1/convai/agents/{other}/tests/runs/{run['id']}")).status_code == 404
    empty = await app_client.post(f"/v1/convai/agents/{other}/tests/run", json={})
    assert empty.status_code == 422 and "no tests" in empty.json()["detail"]


async def _cli(server: LiveServer, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulator", "test", *args, "--url", server.base_url, "--api-key", API_KEY,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, out.decode()


@pytest.mark.asyncio
async def test_cli_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"agent": AGENT, "scenarios": [BOOK_AT_3]}))
    bad = tmp_path / "bad.json"
    wrong = {**BOOK_AT_3, "name": "wrong slot", "criteria": {
        "tools_called": [{"name": "book_meeting", "arguments": {"start_time": {"contains": "T16:00"}}}]}}  # fmt: skip
    bad.write_text(json.dumps({"agent": AGENT, "scenarios": [BOOK_AT_3, wrong]}))
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"scenarios": [{"name": "x"}]}))
    async with LiveServer(make_settings(tmp_path)) as server:
        code, out = await _cli(server, str(good), "--repeat", "2")
        assert code == 0, out
        assert "books at three" in out and "2/2  100%  ok" in out
        code, out = await _cli(server, str(bad))
        assert code == 1, out
        assert "wrong slot" in out and "0/1    0%  FAIL" in out
        assert "✗ wrong slot: expected tool book_meeting with start_time containing 'T16:00'" in out
        code, out = await _cli(server, str(broken))
        assert code == 2 and "caller" in out, out
        async with server.client() as client:  # the file's agents were created for the run, then deleted
            assert (await client.get("/v1/convai/agents")).json()["agents"] == []


@pytest.mark.asyncio
async def test_starter_pack_passes_on_the_embedded_default(tmp_path: Path) -> None:
    """CI runs what the docs report: the SDR starter pack on the embedded LLM, text mode, K=5 (every run of
    every expected scenario must pass; K=5 took 38-50 s, K=1 27-37 s, on a loaded 2-core machine)."""
    from main import create_app

    pack = ScenarioFile.model_validate_json(PACK.read_bytes())
    app = create_app(
        make_settings(tmp_path, llm_provider="local", stt_provider="local", tts_provider="local")
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers={"xi-api-key": API_KEY}
        ) as client:
            agent_id = await make_agent(client, pack.agent or {})
            for document in pack.knowledge:
                assert (
                    await client.post(f"/v1/convai/agents/{agent_id}/knowledge", json=document)
                ).status_code == 201
            for _ in range(600):
                docs = (await client.get(f"/v1/convai/agents/{agent_id}/knowledge")).json()["documents"]
                if all(d["status"] == "ready" for d in docs):
                    break
                await asyncio.sleep(0.2)
            expected = [Scenario(s) for s in pack.scenarios if s.expect_on_embedded]
            assert len(expected) >= 8
            result = await run_suite(app.state.runtime, agent_id, expected, repeat=5)
    failing = {s["scenario"]: s["failures"] for s in result["summary"] if s["pass_rate"] < 1.0}
    assert not failing, failing


@pytest.mark.asyncio
async def test_audio_mode_runs_the_real_call_path(tmp_path: Path) -> None:
    """Audio mode: spoken lines over the Media Streams socket, heard by the service's STT (echo here)."""
    scenario = {
        "name": "spoken",
        "caller": [{"say": "Hello, who is this?"}, {"say": "Take me off your list.", "pause_s": 0.5}],
        "criteria": {"agent_says": ["you said"], "ended_by": "caller", "max_v2v_p95_ms": 5000},
    }
    async with LiveServer(make_settings(tmp_path, **QUICK_ECHO_VOICE)) as server, server.client() as client:
        agent_id = await make_agent(client)
        ran = await client.post(
            f"/v1/convai/agents/{agent_id}/tests/run?wait=true",
            json={"mode": "audio", "scenarios": [scenario]},
            headers={"host": "192.0.2.1:9"},  # a spoofed Host: the server still calls itself
        )
        assert ran.status_code == 200, ran.text
        run = ran.json()
    [result] = run["results"]
    assert result["mode"] == "audio" and "conversation_id" not in result  # removed with its call
    assert run["status"] == "passed", result
    assert [t["role"] for t in result["transcript"]][:3] == ["agent", "user", "agent"]
    assert "caller turn 1" in result["transcript"][1]["text"]  # what the echo STT heard, not the script
    assert result["v2v_ms"]


@pytest.mark.asyncio
async def test_a_judged_rubric_counts_and_says_what_was_expected() -> None:
    from scenarios.evaluate import CallRecord, evaluate, passed
    from simulator.scenario import Criteria

    record = CallRecord(mode="text", transcript=[{"role": "agent", "text": "Go away.", "kind": "speech"}])
    asked: list[str] = []

    async def strict_judge(rubric: str, transcript: list[dict[str, Any]]) -> tuple[bool, str]:
        asked.append(rubric)
        return False, "the agent was rude"

    criteria = Criteria(rubric="The agent is polite.", agent_says=["go away"])
    results = await evaluate(criteria, record, strict_judge)
    assert asked == ["The agent is polite."]
    assert [r.as_dict() for r in results][-1] == {
        "criterion": "rubric",
        "status": "failed",
        "message": "expected: The agent is polite.; judge: the agent was rude",
    }
    assert not passed(results)


@pytest.mark.asyncio
async def test_console_tests_page_writes_runs_and_shows_results(tmp_path: Path) -> None:
    import shutil

    from playwright.async_api import async_playwright

    async with LiveServer(make_settings(tmp_path)) as server, async_playwright() as pw:
        async with server.client() as client:
            agent_id = await make_agent(client)
        browser = await pw.chromium.launch(
            executable_path=shutil.which("chromium") or "/usr/bin/chromium",
            headless=True,
            args=["--no-sandbox"],
        )
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(server.base_url + "/")
        await page.fill("#api-key", API_KEY)
        await page.click("#sign-in")
        await page.wait_for_selector("#new-agent")
        await page.goto(f"{server.base_url}/#/agents/{agent_id}")
        await page.click("#agent-tests")
        await page.click("#test-tab-json")  # the test's form opens first; its JSON is a tab away
        await page.fill("#test-json", json.dumps(BOOK_AT_3))
        await page.click("#save-test")
        await page.wait_for_selector("#tests-list table")
        await page.fill("#test-repeat", "2")
        await page.click("#run-tests")
        await page.wait_for_function(
            "document.querySelector('#run-status')?.textContent === 'passed'", timeout=20_000
        )
        summary = await page.inner_text("#test-summary")
        assert "books at three" in summary and "2/2 (100%)" in summary
        await page.wait_for_selector("#test-results details")
        await page.click("#test-results details >> nth=0")
        call = await page.inner_text("#test-results details >> nth=0")
        assert "passed: tool book_meeting" in call and "You're booked for" in call
        assert not errors, errors
        await browser.close()


def test_audio_runs_call_the_socket_that_took_the_request_not_the_host_header() -> None:
    from starlette.requests import Request

    from api.routers.agent_tests import own_url

    scope = {
        "type": "http",
        "server": ("127.0.0.1", 9137),
        "headers": [(b"host", b"169.254.169.254")],
        "path": "/",
        "query_string": b"",
    }
    assert own_url(Request(scope), "https://sdr.example.com") == "http://127.0.0.1:9137"
    assert own_url(Request({**scope, "server": ("::1", 80)}), "x") == "http://[::1]:80"
    assert (
        own_url(Request({**scope, "server": None}), "https://sdr.example.com/") == "https://sdr.example.com"
    )


async def _row_counts(runtime: Any) -> dict[str, int]:
    from sqlalchemy import func, select

    from models import (
        Conversation,
        ConversationTurn,
        DncEntry,
        LiveCallRecord,
        Meeting,
        PhoneNumber,
        ToolCallRecord,
        WebhookDelivery,
        WebhookEvent,
    )

    tables = (PhoneNumber, Conversation, ConversationTurn, ToolCallRecord, Meeting, DncEntry, LiveCallRecord,
              WebhookEvent, WebhookDelivery)  # fmt: skip
    async with runtime.db.session() as session:
        return {t.__tablename__: await session.scalar(select(func.count()).select_from(t)) for t in tables}


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["text", "audio"])
async def test_a_scenario_run_sends_nothing_and_says_what_it_would_have_sent(
    tmp_path: Path, mode: str
) -> None:
    """A webhook tool, a text message and the webhook events of a test call are recorded with their
    requests, and nothing leaves the service: the receiver (tool URL and webhook subscription) and Twilio
    get no request, and no row is left behind (no phone number, no conversation, no webhook delivery)."""
    from tests.ollama_standin import DEFAULT_MODEL, OllamaStandIn
    from tests.twilio_standin import TwilioStandIn
    from tests.webhook_receiver import WebhookReceiver

    account, token = "AC" + "7" * 32, "scenario-sandbox-token"
    async with (
        WebhookReceiver() as receiver,
        OllamaStandIn() as ollama,
        TwilioStandIn(account, token, answer=False) as twilio,
    ):
        ollama.tool_script = [
            ("crm_lookup", {"company": "Acme"}),
            ("send_sms", {"message": "Here is the link."}),
            ("end_call", {"reason": "done"}),
        ]
        settings = make_settings(
            tmp_path, llm_provider="ollama", ollama_host=ollama.url, ollama_model=DEFAULT_MODEL,
            twilio_account_sid=account, twilio_auth_token=token, twilio_api_base=twilio.url, record_calls=True,
            **QUICK_ECHO_VOICE,
        )  # fmt: skip
        async with LiveServer(settings) as server, server.client() as client:
            agent = {"name": "Sandy", "system_prompt": "You help.", "first_message": "Hi, this is Sandy.",
                     "builtin_tools": ["send_sms", "end_call"]}  # fmt: skip
            agent_id = await make_agent(client, agent)
            tool = await client.post(
                f"/v1/convai/agents/{agent_id}/tools",
                json={
                    "name": "crm_lookup",
                    "description": "Look up a company in the CRM",
                    "kind": "webhook",
                    "parameters": {"type": "object", "properties": {"company": {"type": "string"}}},
                    "config": {"url": receiver.url},
                },
            )
            assert tool.status_code == 201, tool.text
            assert (await client.post("/v1/convai/webhooks", json={"url": receiver.url})).status_code == 201
            before = await _row_counts(server.runtime)
            scenario = {
                "name": "sandboxed",
                "caller": [{"say": "Hi, can you look up Acme?"}, {"say": "Text me the link.", "pause_s": 0.5},
                           {"say": "That is all, bye.", "pause_s": 0.5}],
                "criteria": {"tools_called": [{"name": "crm_lookup", "success": True}, {"name": "send_sms", "success": True}]},
            }  # fmt: skip
            ran = await client.post(
                f"/v1/convai/agents/{agent_id}/tests/run?wait=true",
                json={"mode": mode, "scenarios": [scenario]},
            )
            assert ran.status_code == 200, ran.text
            await asyncio.sleep(0.5)  # a webhook delivery would be on its way by now
            after = await _row_counts(server.runtime)
    assert receiver.attempts == 0  # neither the webhook tool nor any event reached it
    assert twilio.rest_requests == 0 and not twilio.messages
    assert after == before, (before, after)
    assert not list((tmp_path / "recordings").glob("*.wav"))  # no recording left either
    [result] = ran.json()["results"]
    assert ran.json()["status"] == "passed", result
    sent = result["would_have_sent"]
    [lookup] = [s for s in sent if s["kind"] == "tool"]
    [request] = lookup["requests"]
    assert lookup["name"] == "crm_lookup" and (request["method"], request["url"]) == ("POST", receiver.url)
    assert request["body"]["arguments"] == {"company": "Acme"}
    twilio_requests = {s["name"]: s["requests"] for s in sent if s["kind"] == "twilio"}
    # the agent hanging up is a REST request only on the phone (audio); text mode has no call to end
    assert set(twilio_requests) == {"send_sms"} | ({"hang_up"} if mode == "audio" else set())
    if mode == "audio":
        [request] = twilio_requests["hang_up"]
        assert request["url"].endswith(".json") and request["body"] == {"Status": "completed"}
    [request] = twilio_requests["send_sms"]
    assert request["url"] == f"{twilio.url}/2010-04-01/Accounts/{account}/Messages.json"
    assert request["body"]["Body"] == "Here is the link." and request["method"] == "POST"
    events = {s["name"]: s["requests"] for s in sent if s["kind"] == "webhook_event"}
    expected = {"tool.executed"} | ({"call.started", "call.completed"} if mode == "audio" else set())
    assert expected <= set(events), sorted(events)
    for name in expected:
        [delivery] = events[name]
        assert delivery["url"] == receiver.url and delivery["body"]["type"] == name
