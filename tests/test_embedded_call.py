"""One whole call on the embedded default, as `make run` serves it: Whisper hears the caller (real
synthesized speech), the knowledge base answers a question, the caller books a meeting, the call ends,
and a CRM receiving the webhooks gets `call.started`, `tool.executed` and `call.completed`, signed,
with the summary, outcome and collected data that the conversation also shows."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from simulator.caller import SimulatedCaller, Utterance, frames_of
from tests.conftest import LiveServer, make_settings
from tests.webhook_receiver import WebhookReceiver

SECRET = "whsec_embedded_call"
NUMBER = "+15550104242"
KNOWLEDGE = """# Orbit CRM pricing

Orbit CRM costs 49 dollars per seat per month on the Growth plan, with a 14 day free trial.

Orbit CRM integrates with Gmail, Outlook, Slack and HubSpot.
"""


@pytest.mark.asyncio
async def test_embedded_call_answers_from_knowledge_books_and_reports(tmp_path: Path) -> None:
    from simulator.speech import synthesize_caller

    lines = [
        "How much does Orbit cost per seat?",
        "Can we book a meeting tomorrow at 3 pm?",
        "Great, thanks, bye.",
    ]
    script = [Utterance(frames_of(synthesize_caller(line))) for line in lines]
    settings = make_settings(
        tmp_path,
        stt_provider="local",
        tts_provider="local",
        llm_provider="local",
        turn_model_early=True,  # the real turn-end model judges every pause of this call
    )
    async with WebhookReceiver(SECRET) as receiver, LiveServer(settings) as server, server.client() as client:
        agent = await client.post(
            "/v1/convai/agents",
            json={
                "name": "Ava",
                "system_prompt": "You are Ava, a friendly sales rep for Orbit CRM. Keep replies short.",
                "first_message": "Hi {{customer_name}}, this is Ava from Orbit CRM.",
                "builtin_tools": ["book_meeting", "end_call"],
                "stt_keywords": ["Orbit CRM"],
                "data_collection": [
                    {"name": "budget", "type": "string", "description": "Budget the caller mentions"}
                ],
            },
        )
        assert agent.status_code == 201, agent.text
        agent_id = agent.json()["agent_id"]
        await client.post("/v1/convai/phone-numbers", json={"phone_number": NUMBER, "agent_id": agent_id})
        upload = await client.post(
            f"/v1/convai/agents/{agent_id}/knowledge/upload",
            files={"file": ("pricing.md", KNOWLEDGE.encode(), "text/markdown")},
        )
        assert upload.status_code == 201, upload.text
        for _ in range(1200):  # indexed in the background
            document = (
                await client.get(f"/v1/convai/agents/{agent_id}/knowledge/{upload.json()['id']}")
            ).json()
            if document["status"] != "pending" and document["status"] != "indexing":
                break
            await asyncio.sleep(0.1)
        assert document["status"] == "ready", document
        hook = await client.post(
            "/v1/convai/webhooks",
            json={
                "url": receiver.url,
                "secret": SECRET,
                "agent_id": agent_id,
                "events": ["call.started", "tool.executed", "call.completed"],
            },
        )
        assert hook.status_code == 201, hook.text
        for _ in range(600):  # the models load in the background at start-up
            if (await client.get("/readyz")).status_code == 200:
                break
            await asyncio.sleep(0.1)

        caller = SimulatedCaller(server.base_url, "CA" + "e1" * 16, NUMBER, script)
        async with httpx.AsyncClient() as http:
            result = await caller.run(http)
        assert result.error is None, result.error
        assert result.hung_up_by_agent  # "bye" → the agent says goodbye and hangs up
        # the real turn-end model (Smart Turn v3, warmed at start) judged the caller's pauses, each
        # decision well under a second of CPU, and the turns below still end where the caller stopped
        judge = server.app.state.runtime.turn_judge
        assert judge is not None and judge.ready and len(judge.seconds) >= 3
        assert max(judge.seconds) < 1.0

        for _ in range(600):
            detail = (await client.get(f"/v1/convai/conversations/{result.conversation_id}")).json()
            if detail.get("outcome"):
                break
            await asyncio.sleep(0.1)
        turns = [(t["role"], t["text"]) for t in detail["transcript"]]
        assert turns[0] == (
            "agent",
            "Hi, this is Ava from Orbit CRM.",
        )  # no variable given: no "{{…}}" spoken
        user = [text.lower() for role, text in turns if role == "user"]
        assert "cost" in user[0] and "meeting" in user[1]
        answer = turns[2][1]
        assert "49 dollars" in answer, turns  # answered from the uploaded document
        assert "booked" in turns[4][1].lower()
        # how each reply was produced, each stage timed under its own name
        agent_turns = [t for t in detail["transcript"] if t["role"] == "agent"]
        assert [t["source"] for t in agent_turns[:3]] == ["fixed_line", "knowledge", "tool"], agent_turns
        knowledge = agent_turns[1]
        assert knowledge["llm_first_token_ms"] is None and knowledge["retrieval_ms"] > 0
        assert (
            knowledge["user_speech_end_ms"]
            < knowledge["knowledge_answer_ms"]
            <= knowledge["first_frame_sent_ms"]
        )
        assert agent_turns[2]["tool_result_ms"] is not None
        assert [c["name"] for c in detail["tool_calls"]] == ["book_meeting"] and detail["tool_calls"][0][
            "success"
        ]
        assert detail["outcome"] == "meeting_booked"
        # Post-call analysis ran on this call: a summary of what was said, and every data-collection
        # field present, null here since the caller never names a budget.
        summary = detail["summary"]
        assert isinstance(summary, str) and any(
            word in summary.lower() for word in ("meeting", "orbit", "book", "3 pm")
        ), summary
        assert detail["collected_data"] == {"budget": None}

        await asyncio.wait_for(_events(receiver, 3), 30)
        by_type = {event["type"]: event for event in receiver.events.values()}
        assert set(by_type) == {"call.started", "tool.executed", "call.completed"}
        assert receiver.bad_signatures == 0
        completed = by_type["call.completed"]["data"]
        assert completed["outcome"] == "meeting_booked" and completed["summary"] == detail["summary"]
        assert completed["collected_data"] == detail["collected_data"]
        assert [t["text"] for t in completed["transcript"]][:1] == ["Hi, this is Ava from Orbit CRM."]
        assert completed["recording_url"].endswith(
            f"/v1/convai/conversations/{result.conversation_id}/recording"
        )
        assert by_type["tool.executed"]["data"]["name"] == "book_meeting"


async def _events(receiver: WebhookReceiver, count: int) -> None:
    while len(receiver.events) < count:
        await asyncio.sleep(0.1)
