"""Sales playbooks: stored on agents and checked (422 with the path of the problem), the starter playbook,
the stage state machine (intents, fields, detours, a second no), and calls on the text path: the
stage path and collected fields recorded, in the conversation and in ``call.completed``, the outcome
read from the stages, the scenario runner's stage criteria, and a tool-calling model's transitions.
"""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from call.playbook import PlaybookRun, starter_playbook
from call.playbook_check import check_playbook
from models import Conversation, WebhookEvent
from scenarios.runner import Scenario, run_suite
from simulator.scenario import ScenarioSpec
from tests.api_helpers import running_app
from tests.conftest import API_KEY, SQLITE_ONLY

AGENTS = "/v1/convai/agents"
SAM = {
    "name": "Sam",
    "system_prompt": "You are Sam, a friendly sales rep for Acme Analytics",
    "playbook": "starter",
}
REASON = "We help sales teams cut their weekly pipeline reporting"


def run_of(playbook: dict[str, Any] | None = None, **variables: Any) -> PlaybookRun:
    return PlaybookRun(playbook or starter_playbook(), {"agent_name": "Sam", **variables})


# ---------------------------------------------------------------- the state machine


def test_the_starter_playbook_passes_its_own_check() -> None:
    playbook = starter_playbook()
    assert check_playbook(playbook, ["book_meeting", "end_call"]) == []
    # every branch a cold call meets is there
    for stage in ("gatekeeper", "wrong_person", "robot", "who_are_you", "how_got_number", "competitor"):
        assert stage in playbook["nodes"]
    for stage in ("price", "timing", "send_email", "callback", "not_interested", "do_not_call", "booking"):
        assert stage in playbook["nodes"]


def test_transitions_on_intents_fields_detours_and_a_second_no() -> None:
    run = run_of()
    assert run.greeting("").startswith("Hi, this is Sam from Acme Analytics.")
    step = run.on_turn("Sure, but I only have a minute. What is this about?")
    assert step.entered == ["reason"] and step.lines[0].startswith(REASON)
    assert run.on_turn("Spreadsheets, mostly.").entered == ["discovery"]
    step = run.on_turn("About ten hours a week.")
    assert step.entered == ["ask"] and run.collected["weekly_hours"] == 10
    # a time said at the ask: the field is collected and the call moves on by it
    step = run.on_turn("Thursday at 2 works.")
    assert step.entered == ["email"] and run.collected["meeting_time"].endswith("T14:00+00:00")
    step = run.on_turn("It's jane at acme dot com")
    assert step.entered == ["booking"] and step.ends_call
    assert step.tools[0].name == "book_meeting"
    assert step.tools[0].arguments["attendee_contact"] == "jane@acme.com"
    assert "jane@acme.com" in step.lines[0]
    assert run.path == ["opener", "reason", "discovery", "ask", "email", "booking"]

    # a detour answers and goes back to the question it interrupted
    run = run_of()
    step = run.on_turn("Wait, is this a robot?")
    assert step.lines[0].startswith("Yes, I'm an AI assistant calling for Acme Analytics.")
    assert step.lines[-1] == "Do you have thirty seconds for why I'm calling?"
    assert run.stage == "opener" and run.path == ["opener", "robot", "opener"]

    # the first no is acknowledged with one question, the second ends the call
    run = run_of()
    assert run.on_turn("Not interested.").entered == ["not_interested"]
    step = run.on_turn("Nope, not interested.")
    assert step.entered == ["polite_close"] and step.ends_call

    # what the caller says on entering a stage counts: a time given with the request ends it at once
    run = run_of()
    step = run.on_turn("Bad time, call me back tomorrow afternoon.")
    assert step.entered == ["callback", "callback_confirm"] and step.ends_call
    assert "tomorrow afternoon" in step.lines[0]


def test_scripted_lines_are_templated_and_the_disclosure_setting_is_kept() -> None:
    playbook = starter_playbook()
    run = run_of(playbook, company="Orbit CRM")  # a call's dynamic variables win over the playbook's
    assert run.greeting("") == (
        "Hi, this is Sam from Orbit CRM. I'm calling about sales reporting. "
        "Do you have thirty seconds for why I'm calling?"
    )
    playbook["ai_disclosure"] = "up_front"
    greeting = run_of(playbook).greeting("")
    assert greeting.startswith("Hi, this is Sam from Acme Analytics. Just so you know, I'm an AI assistant")
    assert "{{" not in greeting


# ---------------------------------------------------------------- the API


@SQLITE_ONLY
@pytest.mark.asyncio
async def test_agents_carry_a_playbook_and_bad_ones_are_422_with_the_path(
    app_client: httpx.AsyncClient,
) -> None:
    starter = (await app_client.get("/v1/convai/playbooks/starter")).json()
    assert starter["start"] == "opener"
    created = await app_client.post(AGENTS, json=SAM)
    assert created.status_code == 201, created.text
    agent = created.json()
    assert agent["playbook"]["nodes"]["robot"]["returns"] is True
    assert "book_meeting" in agent["builtin_tools"]  # the starter's booking needs it
    assert agent["workflow"]["nodes"]["opener"]["lines"]  # the ElevenLabs name for it

    async def refused(playbook: dict[str, Any], **body: Any) -> list[dict[str, Any]]:
        r = await app_client.post(AGENTS, json={"name": "x", "playbook": playbook, **body})
        assert r.status_code == 422, r.text
        return r.json()["detail"]

    broken = copy.deepcopy(starter)
    broken["edges"]["opener_to_reason"]["target"] = "pitch"
    [error] = await refused(broken, builtin_tools=["book_meeting"])
    assert error["loc"] == ["body", "playbook", "edges", "opener_to_reason", "target"]
    assert "unknown stage 'pitch'" in error["msg"]

    errors = await refused(starter)  # no book_meeting tool on this agent
    assert ["body", "playbook", "nodes", "ask", "tools", 0] in [e["loc"] for e in errors]
    assert ["body", "playbook", "nodes", "booking", "run_tool", "name"] in [e["loc"] for e in errors]
    assert all("unknown tool 'book_meeting'" in e["msg"] for e in errors)

    broken = copy.deepcopy(starter)
    broken["nodes"]["reason"]["lines"] = ["{{reason_for_cal}} Tell me more."]
    broken["nodes"]["opener"]["lines"] = ["Hi {{ first name }}!"]
    broken["edges"]["any_to_robot"]["forward_condition"]["intents"] = ["robot", "is_bot"]
    errors = await refused(broken, builtin_tools=["book_meeting"])
    found = {tuple(e["loc"][2:]): e["msg"] for e in errors}
    assert "unknown template variable {{reason_for_cal}}" in found[("nodes", "reason", "lines", 0)]
    assert "malformed template" in found[("nodes", "opener", "lines", 0)]
    assert "unknown intent 'is_bot'" in found[("edges", "any_to_robot", "forward_condition", "intents", 1)]

    broken = copy.deepcopy(starter)
    broken["nodes"]["opener"]["collect"] = [{"name": "x", "type": "colour"}]
    error = (await refused(broken, builtin_tools=["book_meeting"]))[0]
    assert error["loc"][:6] == ["body", "playbook", "nodes", "opener", "collect", 0]

    # PATCH: taking away a tool the playbook uses is refused; null removes the playbook
    agent_id = agent["agent_id"]
    r = await app_client.patch(f"{AGENTS}/{agent_id}", json={"builtin_tools": ["end_call"]})
    assert r.status_code == 422 and "unknown tool 'book_meeting'" in r.text
    edited = copy.deepcopy(starter)
    edited["variables"]["company"] = "Orbit CRM"
    r = await app_client.patch(f"{AGENTS}/{agent_id}", json={"playbook": edited})
    assert r.status_code == 200 and r.json()["playbook"]["variables"]["company"] == "Orbit CRM"
    r = await app_client.patch(f"{AGENTS}/{agent_id}", json={"playbook": None})
    assert r.status_code == 200 and r.json()["playbook"] is None

    check = await app_client.post("/v1/convai/playbooks/check", json={"playbook": starter})
    assert check.status_code == 422 and "book_meeting" in check.text
    check = await app_client.post(
        "/v1/convai/playbooks/check", json={"playbook": starter, "builtin_tools": ["book_meeting"]}
    )
    assert check.status_code == 200 and check.json()["ok"] is True

    # the editor's "try it": caller lines through a playbook, no model
    tried = await app_client.post(
        "/v1/convai/playbooks/try",
        json={
            "playbook": starter,
            "say": ["Is this a robot?", "What is this about?"],
            "variables": {"agent_name": "Sam"},
        },
    )
    assert tried.status_code == 200, tried.text
    robot, about = tried.json()["turns"]
    assert (
        robot["entered"] == ["robot"]
        and robot["stage"] == "opener"
        and robot["lines"][0].startswith("Yes, I'm an AI assistant")
    )
    assert about["entered"] == ["reason"] and about["lines"][0].startswith(REASON)
    assert tried.json()["greeting"].startswith("Hi, this is Sam from Acme Analytics.")
    bad = await app_client.post(
        "/v1/convai/playbooks/try", json={"playbook": starter, "stage": "nope", "say": ["hi"]}
    )
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "stage"]


@SQLITE_ONLY
@pytest.mark.asyncio
async def test_the_elevenlabs_sdk_carries_the_playbook(app_client: httpx.AsyncClient) -> None:
    from elevenlabs import AsyncElevenLabs

    agent_id = (await app_client.post(AGENTS, json=SAM)).json()["agent_id"]
    transport = httpx.ASGITransport(app=app_client.app)  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        sdk = AsyncElevenLabs(api_key=API_KEY, base_url="http://test", httpx_client=http)
        agent = await sdk.conversational_ai.agents.get(agent_id)
    workflow = agent.workflow.model_dump(mode="json", exclude_none=True, warnings=False)
    # the ElevenLabs create route takes it too
    created = await app_client.post(
        "/v1/convai/agents/create",
        json={"conversation_config": {"agent": {"prompt": {"prompt": "Be brief."}}}, "playbook": "starter"},
    )
    assert created.status_code == 200, created.text
    fetched = (await app_client.get(f"{AGENTS}/{created.json()['agent_id']}")).json()
    assert fetched["playbook"]["start"] == "opener" and "book_meeting" in fetched["builtin_tools"]
    assert workflow["nodes"]["robot"]["lines"][0].startswith("Yes, I'm an AI assistant")
    assert workflow["edges"]["any_to_robot"]["forward_condition"]["intents"] == ["robot"]
    assert workflow["start"] == "opener"


# ---------------------------------------------------------------- calls (text path)

NEVER_DENIES = [
    "not a robot",
    "not an ai",
    "i'm a real person",
    "i am a real person",
    "i'm human",
    "not a bot",
]


def scenario(name: str, lines: list[str], **criteria: Any) -> Scenario:
    return Scenario(
        ScenarioSpec.model_validate(
            {"name": name, "caller": [{"say": s} for s in lines], "criteria": criteria}
        )
    )


@SQLITE_ONLY
@pytest.mark.asyncio
async def test_calls_follow_the_playbook_and_the_runner_asserts_stage_paths(
    app_client: httpx.AsyncClient,
) -> None:
    agent_id = (await app_client.post(AGENTS, json=SAM)).json()["agent_id"]
    runtime = app_client.app.state.runtime  # type: ignore[attr-defined]
    scenarios = [
        scenario(
            "what is this about",
            ["Sure, but I only have a minute. What is this about?"],
            agent_says=[REASON],
            agent_never_says=["Sam", "I'm not sure", "you've got a great idea"],
            stage_path=["opener", "reason"],
        ),
        scenario(
            "robot",
            ["Hang on, is this a robot?", "Am I talking to a real person?"],
            agent_says=["I'm an AI assistant", "an AI assistant"],
            agent_never_says=NEVER_DENIES,
            stage_path=["opener", "robot", "opener", "robot", "opener"],
            ended_stage="opener",
        ),
        scenario(
            "books the demo",
            ["Okay, go ahead.", "Spreadsheets.", "Five hours.", "Tuesday at 10 works.", "jane@acme.com"],
            tools_called=[{"name": "book_meeting", "arguments": {"start_time": {"contains": "T10:00"}}}],
            stage_path=["reason", "discovery", "ask", "email", "booking"],
            collected_data={"email": "jane@acme.com", "weekly_hours": 5},
            ended_by="agent",
            outcome="meeting_booked",
        ),
        scenario(
            "do not call",
            ["How did you get my number?", "Please take me off your list."],
            on_dnc_list=True,
            ended_stage="do_not_call",
            ended_by="agent",
        ),
        scenario("a wrong expectation", ["Not interested."], stage_path=["opener", "ask"]),
    ]
    result = await run_suite(runtime, agent_id, scenarios)
    rates = {s["scenario"]: s["pass_rate"] for s in result["summary"]}
    assert rates == {
        "what is this about": 1.0,
        "robot": 1.0,
        "books the demo": 1.0,
        "do not call": 1.0,
        "a wrong expectation": 0.0,
    }, [r["criteria"] for r in result["runs"] if not r["passed"]]
    wrong = next(s for s in result["summary"] if s["scenario"] == "a wrong expectation")
    assert "expected the stages opener → ask in order, got opener → not_interested" in wrong["failures"][0]


@pytest.mark.asyncio
async def test_the_stage_path_and_fields_reach_the_conversation_and_call_completed(tmp_path: Path) -> None:
    from events.post_call import run_post_call
    from scenarios.text_call import _converse

    async with running_app(tmp_path) as client:
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        agent_id = (await client.post(AGENTS, json=SAM)).json()["agent_id"]
        hook = await client.post(
            "/v1/convai/webhooks", json={"url": "http://127.0.0.1:9/hook", "secret": "s" * 24}
        )
        assert hook.status_code == 201, hook.text
        async with runtime.db.session() as session:
            conversation = Conversation(
                agent_id=agent_id,
                call_sid="CA" + uuid.uuid4().hex,
                from_number="+15550101234",
                to_number="+15550109999",
                status="in_progress",
            )
            session.add(conversation)
            await session.flush()
            conversation_id = conversation.id
        spec = ScenarioSpec.model_validate(
            {
                "name": "callback",
                "caller": [{"say": "Who is this?"}, {"say": "Not a good time, call me back next week."}],
                "criteria": {"ended_by": "agent"},
            }
        )
        from scenarios.evaluate import CallRecord

        await _converse(
            runtime, conversation_id, conversation.call_sid, "+15550101234", spec, CallRecord("text")
        )
        await runtime.writer.flush()
        await run_post_call(runtime, conversation_id)
        detail = (await client.get(f"/v1/convai/conversations/{conversation_id}")).json()
        assert detail["stage_path"] == ["opener", "who_are_you", "opener", "callback", "callback_confirm"]
        assert detail["ended_stage"] == "callback_confirm"
        assert detail["collected_data"]["callback_time"] == "next week"
        assert detail["outcome"] == "callback_requested"  # the stage says it; the facts allow it
        async with runtime.db.session() as session:
            event = await session.scalar(
                select(WebhookEvent).where(
                    WebhookEvent.type == "call.completed", WebhookEvent.conversation_id == conversation_id
                )
            )
        assert event is not None
        assert event.data["stage_path"] == detail["stage_path"]
        assert event.data["ended_stage"] == "callback_confirm"
        assert event.data["collected_data"]["callback_time"] == "next week"
        assert event.data["outcome"] == "callback_requested"


@pytest.mark.asyncio
async def test_a_tool_calling_model_moves_the_stages_with_transition_functions(tmp_path: Path) -> None:
    from tests.ollama_standin import OllamaStandIn

    playbook = starter_playbook()
    playbook["edges"]["ask_to_objection"] = {
        "source": "ask",
        "target": "price",
        "forward_condition": {
            "type": "llm",
            "label": "worried about cost",
            "condition": "The caller worries about cost",
        },
    }
    async with OllamaStandIn() as ollama:
        async with running_app(tmp_path, llm_provider="ollama", ollama_host=ollama.url) as client:
            body = {**SAM, "playbook": playbook, "builtin_tools": ["book_meeting"]}
            created = await client.post(AGENTS, json=body)
            assert created.status_code == 201, created.text
            runtime = client.app.state.runtime  # type: ignore[attr-defined]
            # the model takes the named exit, then records the time the caller gave
            ollama.tool_script = [("goto_price", {}), ("record_fields", {"meeting_time": "Friday at 3pm"})]
            lines = [
                "Go ahead.",
                "Spreadsheets.",
                "Ten hours.",
                "Our CFO watches every dollar.",
                "Hmm, maybe Friday.",
            ]
            result = await run_suite(
                runtime,
                created.json()["agent_id"],
                [
                    scenario(
                        "llm exits",
                        lines,
                        stage_path=["ask", "price", "email"],
                        agent_says=["Pricing depends on team size", "best email address"],
                    )
                ],
            )
        run = result["runs"][0]
        assert run["passed"], run["criteria"]
        asked = [c for c in ollama.chats if c["messages"]]  # not the warm-up
        assert len(asked) == 2  # the rules moved the call until the ask; the model only where they did not
        assert "Current step of the call: The ask." in asked[0]["messages"][0]["content"]
        assert {t["function"]["name"] for t in asked[0]["tools"]} == {
            "book_meeting",
            "goto_price",
            "record_fields",
        }
        assert {t["function"]["name"] for t in asked[1]["tools"]} == {
            "record_fields"
        }  # price: its field only


def test_the_outcome_reads_the_stages_when_the_facts_allow_it() -> None:
    from events.analysis import rule_outcome

    turns = [("agent", "Hi, this is Sam."), ("user", "Hmm. I'd rather leave it there.")]
    assert rule_outcome(turns, [], "agent_goodbye") is None  # the words alone settle nothing
    assert rule_outcome(turns, [], "agent_goodbye", stage_outcome="not_interested") == "not_interested"
    # a booking stage reached without a booking that succeeded is not a booked meeting
    failed = [{"name": "book_meeting", "success": False}]
    assert rule_outcome(turns, failed, "agent_goodbye", stage_outcome="meeting_booked") is None


@pytest.mark.asyncio
async def test_a_phone_call_follows_the_playbook_and_records_its_stages(tmp_path: Path) -> None:
    """Audio mode: the real call path (Media Streams socket, STT, turn-taking, the speaker) runs the
    playbook: the greeting is the start stage's line, each turn moves a stage, the path is stored."""
    from tests.conftest import LiveServer, make_settings

    scenario = {
        "name": "spoken",
        "caller": [{"say": "Okay, go ahead."}, {"say": "We use spreadsheets.", "pause_s": 0.5}],
        "criteria": {"agent_says": ["We fix reporting."], "stage_path": ["opener", "reason", "discovery"]},
    }
    async with LiveServer(make_settings(tmp_path)) as server, server.client() as client:
        body = {**SAM, "playbook": starter_playbook()}
        short = {"company": "Acme", "topic": "reports", "reason_for_call": "We fix reporting."}
        body["playbook"]["variables"].update(short, discovery_question="How is it done now?")  # less to play
        body["playbook"]["nodes"]["discovery"]["lines"] = ["How many hours a week?"]
        body["playbook"]["nodes"]["opener"]["lines"] = ["Hi, this is Sam from Acme. Got a minute?"]
        created = await client.post(AGENTS, json={**body, "builtin_tools": ["book_meeting"]})
        assert created.status_code == 201, created.text
        ran = await client.post(
            f"{AGENTS}/{created.json()['agent_id']}/tests/run?wait=true",
            json={"mode": "audio", "scenarios": [scenario]},
        )
        assert ran.status_code == 200, ran.text
    [result] = ran.json()["results"]
    assert result["passed"], result["criteria"]
    assert result["transcript"][0]["text"].startswith("Hi, this is Sam from Acme.")
    assert result["stage_path"][:3] == ["opener", "reason", "discovery"]
