"""Warm transfer through the Twilio stand-in (conferences) and the official SDK: the caller asks for a
person on a phone call (PhoneLine, Deepgram stand-in, spoken audio); the caller is moved into a
conference and held, the rep is dialled; the rep alone hears a summary naming the caller's company and
need, then the two are bridged and the agent's stream is over (``transferred``). A rep who does not
answer: the caller comes back to the agent on a new Media Stream, is told, and books a meeting. Cold
mode and the tool's arguments (mode, an allowed number) through the tool runner."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload
from twilio.request_validator import RequestValidator

from models import Agent
from providers.base import ToolCall
from speech.audio import silence
from telephony.warm_transfer import BACK_LINE, COLD_LINE, WARM_LINE
from tests.conftest import QUICK_ECHO_VOICE, LiveServer
from tests.phone_line import PhoneLine
from tests.telephony_helpers import NUMBER, make_agent
from tests.test_command_channel import ACCOUNT_SID, AUTH_TOKEN, ended, twilio_settings
from tests.test_multi_instance import eventually
from tests.twilio_conferences import RepBehaviour
from tests.twilio_standin import PlacedCall, Scenario, TwilioStandIn
from tools.runner import ToolContext
from tools.transfer_summary import build_summary

CALLER = "+12125550142"
REP = "+14155550199"
SID = "CA" + "7" * 32
DANA = "This is Dana from Northwind Traders and we need pricing for forty seats."  # one utterance
ASK = "Can I speak to a person please?"
BOOK = "Can we book a meeting tomorrow at 3 pm?"
AGENT = {
    "builtin_tools": ["transfer_call", "book_meeting"],
    "transfer_number": REP,
    "data_collection": [{"name": "seats", "description": "how many seats they need"}],
}


def test_the_summary_names_who_their_company_and_what_they_want() -> None:
    turns = [("assistant", "Hi, this is Ava."), ("user", DANA), ("assistant", "Sure."), ("user", ASK)]
    text = build_summary(
        turns=turns,
        variables={},
        caller_number=CALLER,
        data_fields=AGENT["data_collection"],
        agent_name="Ava",
    )
    assert text.startswith("Transfer from Ava. Dana from Northwind Traders.")
    assert "pricing for forty seats" in text and "seats:" in text and "speak to a person" not in text
    named = build_summary(
        turns=[("user", ASK)], variables={"customer_name": "Sam Lee", "company": "Acme"}, caller_number=CALLER,
        reason="wants a quote for the Growth plan",
    )  # fmt: skip
    assert "Sam Lee from Acme" in named and "wants a quote for the Growth plan" in named


async def _inbound_twiml(server: LiveServer, http: httpx.AsyncClient) -> str:
    """The voice webhook, signed as Twilio signs it (TWILIO_AUTH_TOKEN is set)."""
    url = f"{server.base_url}/twiml/voice"
    params = {"CallSid": SID, "From": CALLER, "To": NUMBER, "AccountSid": ACCOUNT_SID}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
    r = await http.post(url, data=params, headers={"X-Twilio-Signature": signature})
    assert r.status_code == 200, r.text
    return r.text


async def _call_and_ask_for_a_person(
    server: LiveServer, twilio: TwilioStandIn, lines: list[PhoneLine], moved: Any, *, introduce: bool = True
) -> str:
    """An inbound call: Dana says who she is and what she wants (``introduce``), then asks for a person."""
    from simulator.speech import synthesize_caller

    twilio.incoming(SID, CALLER, NUMBER, Scenario("human", on_redirect=moved))
    async with httpx.AsyncClient() as http:
        twiml = await _inbound_twiml(server, http)
    line = await PhoneLine(server.base_url, SID, NUMBER, from_number=CALLER).start(None, twiml=twiml)
    lines.append(line)
    await line.wait_reply(1, timeout=15)  # the greeting
    if introduce:
        line.say(silence(300) + synthesize_caller(DANA, steady=True))
        await line.wait_reply(2, timeout=20)
    line.say(silence(300) + synthesize_caller(ASK, steady=True))
    return line.conversation_id


async def _within(event: asyncio.Event, timeout: float, twilio: TwilioStandIn) -> None:
    """Until ``event``; on time-out, what the stand-in saw (for the failure message)."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        seen = {sid: (c.updates, c.callbacks) for sid, c in twilio.calls.items()}
        conferences = {c.name: c.timeline for c in twilio.conferences.values()}
        raise AssertionError(f"timed out; calls {seen}; conferences {conferences}") from None


def _settings(tmp_path: Path, twilio: TwilioStandIn, deepgram_url: str, **overrides: Any) -> Any:
    return twilio_settings(
        tmp_path, twilio, stt_provider="deepgram", deepgram_api_key="dg-key", deepgram_url=deepgram_url,
        transfer_default_mode="warm", transfer_hold_music_url="", **{**QUICK_ECHO_VOICE, **overrides},
    )  # fmt: skip


@pytest.mark.asyncio
async def test_the_rep_hears_the_summary_alone_then_is_bridged_with_the_caller(tmp_path: Path) -> None:
    from tests.deepgram_standin import DeepgramStandIn

    lines: list[PhoneLine] = []
    stream_moved = asyncio.Event()

    async def moved(call: PlacedCall, twiml: str) -> None:
        assert "<Conference" in twiml, twiml
        await lines[-1].hang_up()  # Twilio ends the Media Stream whose TwiML was replaced
        stream_moved.set()

    async with (
        DeepgramStandIn("dg-key", transcripts=[DANA, ASK]) as deepgram,
        TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, answer=False) as twilio,
    ):
        twilio.rep = RepBehaviour(answers=True, ring_sec=0.5)
        async with LiveServer(_settings(tmp_path, twilio, deepgram.url)) as server, server.client() as client:
            await make_agent(client, **AGENT)
            cid = await _call_and_ask_for_a_person(server, twilio, lines, moved)
            await _within(stream_moved, 20, twilio)
            final = await ended(client, cid, timeout=20)

            async def analysed() -> dict[str, Any] | None:
                body = (await client.get(f"/v1/convai/conversations/{cid}")).json()
                return body if body.get("outcome") else None

            detail = await eventually(analysed, timeout=15)
            live_calls = server.runtime.calls.active
    agent_said = [t["text"] for t in final["transcript"] if t["role"] == "agent"]
    assert agent_said[-1] == WARM_LINE  # the caller heard the line before the hold
    assert final["metadata"]["termination_reason"] == "transferred"
    assert detail["outcome"] == "transferred" and live_calls == 0  # the agent's stream is over
    # the conference: the caller joined, was held, the rep dialled from the agent's number
    (conf,) = twilio.conferences.values()
    caller = conf.participants[SID]
    (rep_sid,) = [sid for sid, p in conf.participants.items() if p.label == "rep"]
    rep = conf.participants[rep_sid]
    assert twilio.calls[rep_sid].params["To"] == REP and twilio.calls[rep_sid].params["From"] == NUMBER
    assert caller.heard[0].startswith("wait") and caller.heard[1].startswith("hold: ")
    # the rep alone heard the summary (the caller on hold), then the two were bridged
    assert rep.heard[0].startswith("announce: ") and rep.heard[1:] == ["bridged"], rep.heard
    summary = rep.heard[0]
    assert "Dana from Northwind Traders" in summary and "pricing for forty seats" in summary, summary
    assert not any(h.startswith("announce") for h in caller.heard) and caller.heard[-1] == "bridged"
    timeline = [what for _, what in conf.timeline]
    assert f"announce to {rep_sid} (also heard by: nobody)" in timeline, timeline
    assert conf.bridged == [{SID, rep_sid}]  # bridged once, after the announcement
    assert timeline.index(f"unhold {SID}") > timeline.index(f"announce to {rep_sid} (also heard by: nobody)")
    (transfer,) = detail["transfers"]
    assert (transfer["mode"], transfer["to"], transfer["result"]) == ("warm", REP, "bridged")
    assert transfer["summary"] == summary.removeprefix("announce: ")
    assert 0 < transfer["rep_answered_ms"] <= transfer["bridged_ms"] and transfer["returned_ms"] is None


@pytest.mark.asyncio
async def test_no_answer_brings_the_caller_back_to_the_agent_who_books_a_meeting(tmp_path: Path) -> None:
    from simulator.speech import synthesize_caller
    from tests.deepgram_standin import DeepgramStandIn

    lines: list[PhoneLine] = []
    back = asyncio.Event()

    async def moved(call: PlacedCall, twiml: str) -> None:
        if "<Conference" in twiml:
            await lines[-1].hang_up()
            return
        assert "<Stream" in twiml  # the agent takes the call back on a new stream of the conversation
        lines.append(await PhoneLine("", SID, NUMBER, from_number=CALLER).start(None, twiml=twiml))
        back.set()

    async with (
        DeepgramStandIn("dg-key", transcripts=[ASK, BOOK]) as deepgram,
        TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, answer=False) as twilio,
    ):
        twilio.rep = RepBehaviour(answers=False)
        settings = _settings(tmp_path, twilio, deepgram.url, transfer_ring_timeout_sec=5)
        async with LiveServer(settings) as server, server.client() as client:
            await make_agent(client, **AGENT)
            cid = await _call_and_ask_for_a_person(server, twilio, lines, moved, introduce=False)
            await _within(back, 30, twilio)
            returned = lines[-1]
            assert returned.conversation_id == cid
            await returned.wait_reply(1, timeout=15)  # the agent: not available, a meeting instead?
            returned.say(silence(300) + synthesize_caller(BOOK, steady=True))
            await returned.wait_reply(2, timeout=20)
            await returned.hang_up()
            final = await ended(client, cid, timeout=15)
    turns = [(t["role"], t["text"]) for t in final["transcript"]]
    agent_said = [text for role, text in turns if role == "agent"]
    assert agent_said[-3] == WARM_LINE and agent_said[-2] == BACK_LINE, agent_said
    assert agent_said[-1].startswith("You're booked for"), agent_said
    assert ("user", BOOK) in turns and final["metadata"]["termination_reason"] == "caller_hung_up"
    (conf,) = twilio.conferences.values()
    (rep_sid,) = [sid for sid, p in conf.participants.items() if p.label == "rep"]
    assert conf.participants[rep_sid].heard == [] and conf.bridged == []  # nobody answered, nothing bridged
    assert twilio.calls[rep_sid].callbacks[-1][0] == "no-answer"
    (transfer,) = final["transfers"]
    assert (transfer["mode"], transfer["result"]) == ("warm", "no_answer")
    assert transfer["returned_ms"] is not None and transfer["bridged_ms"] is None
    assert len(lines) == 2  # one conversation, two streams


@pytest.mark.asyncio
async def test_cold_mode_the_models_arguments_and_a_supervisors_transfer(tmp_path: Path) -> None:
    """On a live call: the tool runner's cold transfer (``<Dial>``), the model's mode over the tool's
    default, a number the tool does not allow refused before anything reaches Twilio; then a supervisor's
    transfer (``Replies.transfer``, the path a control command takes): the line, the ``<Dial>``, the call
    over for the agent (``transferred``)."""
    lines: list[PhoneLine] = []
    async with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, answer=False) as twilio:
        async with LiveServer(twilio_settings(tmp_path, twilio)) as server, server.client() as client:
            agent_id = await make_agent(client, transfer_number=REP)
            tools = f"/v1/convai/agents/{agent_id}/tools"
            config = {"mode": "warm", "numbers": [CALLER]}  # the tool's default, and a number it allows
            r = await client.post(tools, json={"name": "to_sales", "kind": "transfer_call", "config": config})
            assert r.status_code == 201, r.text
            bad = await client.post(
                tools, json={"name": "x", "kind": "transfer_call", "config": {"mode": "hot"}}
            )
            assert bad.status_code == 422 and "warm" in bad.text
            twilio.incoming(SID, CALLER, NUMBER, Scenario("human"))
            async with httpx.AsyncClient() as http:
                twiml = await _inbound_twiml(server, http)
            line = await PhoneLine(server.base_url, SID, NUMBER, from_number=CALLER).start(None, twiml=twiml)
            lines.append(line)
            await line.wait_reply(1, timeout=15)  # the greeting
            runtime = server.runtime
            cid = line.conversation_id
            async with runtime.db.session() as session:
                agent = await session.scalar(
                    select(Agent).where(Agent.id == agent_id).options(selectinload(Agent.tools))
                )
            ctx = ToolContext(cid, SID, CALLER, NUMBER)

            async def run(args: dict[str, Any]) -> Any:
                return await runtime.tool_runner.execute(agent, ToolCall("to_sales", args), ctx)

            refused = await run({"mode": "cold", "number": "+19998887777"})
            assert not refused.success and "not one this agent may transfer to" in (refused.error or "")
            assert twilio.calls[SID].updates == []
            cold = await run({"mode": "cold", "reason": "wants a human"})
            assert cold.success and cold.transferred and not cold.handed_over
            assert "<Dial>" + REP + "</Dial>" in twilio.calls[SID].updates[-1]["Twiml"]
            assert twilio.conferences == {}  # no conference for a cold transfer
            chosen = await run({"mode": "cold", "number": CALLER})  # one of the tool's numbers
            assert chosen.success and "<Dial>" + CALLER + "</Dial>" in twilio.calls[SID].updates[-1]["Twiml"]
            # a supervisor's transfer on the live call: the agent's number, cold
            runtime.calls.calls[SID].replies.transfer(None, "cold")  # type: ignore[attr-defined]

            async def dialled() -> bool | None:
                return len(twilio.calls[SID].updates) == 3 or None

            await eventually(dialled, timeout=15)
            await line.hang_up()  # Twilio ends the stream and dials
            final = await ended(client, cid, timeout=10)
    assert "<Dial>" + REP + "</Dial>" in twilio.calls[SID].updates[-1]["Twiml"]
    assert [t["text"] for t in final["transcript"] if t["role"] == "agent"][-1] == COLD_LINE
    assert final["metadata"]["termination_reason"] == "transferred"
    assert [(t["mode"], t["to"], t["result"], t["requested_by"]) for t in final["transfers"]] == [
        ("cold", REP, "dialed", "agent"),
        ("cold", CALLER, "dialed", "agent"),
        ("cold", REP, "dialed", "supervisor"),
    ]
