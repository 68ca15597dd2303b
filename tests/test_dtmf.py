"""Phone menus navigated with keypad tones (an agent's ``dtmf_navigation``): which key the agent picks,
the ``send_dtmf`` tool through the official Twilio SDK (``<Play digits>`` then a new Media Stream), and a
whole outbound call through the Twilio stand-in: the menu answers, the agent presses 1, the call goes on
on a new stream of the same conversation, and the person who answers there is greeted."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from call.menu import menu_digit
from models import Agent, Conversation, ToolCallRecord
from providers.base import ToolCall
from speech.audio import silence
from tests.conftest import LiveServer
from tests.phone_line import PhoneLine
from tests.test_command_channel import ACCOUNT_SID, AUTH_TOKEN, ended, twilio_settings
from tests.test_multi_instance import eventually
from tests.twilio_standin import PlacedCall, Scenario, TwilioStandIn
from tools.runner import ToolContext

AGENT_NUMBER = "+14155550100"
LEAD = "+12125550142"
MENU = "Thank you for calling Northwind. For sales, press 1. For support, press 2."
JORDAN = "This is Jordan in sales."  # one utterance (a comma's pause would make two)
GREETING = "Hi Dana, this is Ava from Orbit CRM."


@pytest.mark.parametrize(
    ("menu", "contact", "key"),
    [
        (MENU, "", "1"),
        ("For support press 2, for sales press 3.", "", "3"),
        ("Press 4 for billing. To reach an operator, press 0.", "", "0"),
        ("For billing press 1, to speak with a representative press 9.", "", "9"),
        ("For Dana Smith, press three. For sales, press one.", "Dana", "3"),  # the named contact first
        ("If you know your party's extension, dial it now.", "", "0"),  # no option for us: the operator
        ("For billing press 1. For support press 2.", "", "0"),
    ],
)
def test_the_key_that_reaches_a_person(menu: str, contact: str, key: str) -> None:
    assert menu_digit(menu, contact) == key


async def _agent(client: httpx.AsyncClient, **fields: Any) -> str:
    r = await client.post(
        "/v1/convai/agents",
        json={
            "name": "Ava",
            "system_prompt": "You are Ava from Orbit CRM.",
            "first_message": "Hi {{first_name}}, this is Ava from Orbit CRM.",
            **fields,
        },
    )
    assert r.status_code == 201, r.text
    return r.json()["agent_id"]


@pytest.mark.asyncio
async def test_send_dtmf_plays_the_keys_and_hands_the_call_to_a_new_stream(tmp_path: Path) -> None:
    """Through the SDK: ``<Play digits>`` then ``<Connect><Stream>`` for the same conversation, whose token
    claims the conversation once; invalid keys are refused; no tool without ``dtmf_navigation``."""
    from telephony.stream_auth import admit_stream

    sid = "CA" + "d" * 32
    async with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, answer=False) as twilio:
        settings = twilio_settings(tmp_path, twilio)
        async with LiveServer(settings) as server, server.client() as client:
            navigating = await _agent(client, dtmf_navigation=True)
            plain = await _agent(client)
            shown = (await client.get(f"/v1/convai/agents/{plain}")).json()
            assert shown["dtmf_navigation"] is False
            runtime = server.runtime
            async with runtime.db.session() as session:
                conversation = Conversation(
                    agent_id=navigating, call_sid=sid, direction="outbound",
                    from_number=AGENT_NUMBER, to_number=LEAD, stream_jti="first-stream",
                )  # fmt: skip
                session.add(conversation)
                await session.flush()
                cid = conversation.id
                agents = {
                    a.id: a for a in await session.scalars(select(Agent).options(selectinload(Agent.tools)))
                }
            twilio.calls[sid] = PlacedCall(sid=sid, params={"To": LEAD}, status="in-progress")
            ctx = ToolContext(cid, sid, LEAD, AGENT_NUMBER)
            runner = runtime.tool_runner

            async def press(agent_id: str, digits: str) -> Any:
                return await runner.execute(agents[agent_id], ToolCall("send_dtmf", {"digits": digits}), ctx)

            refused = await press(navigating, "1; rm")
            assert not refused.success and "invalid arguments" in (refused.error or "")
            off = await press(plain, "1")
            assert not off.success and "unknown tool" in (off.error or "")
            assert "send_dtmf" not in {spec.name for spec in runner.specs_for(agents[plain])}
            assert twilio.calls[sid].updates == []  # nothing reached Twilio
            pressed = await press(navigating, "1w2")
            assert pressed.success and pressed.redirected
            async with runtime.db.session() as session:
                records = (await session.scalars(select(ToolCallRecord.name))).all()
            assert records.count("send_dtmf") == 3
            assert twilio.calls[sid].digits == ["1w2"]
            twiml = twilio.calls[sid].updates[-1]["Twiml"]
            stream = r'<Play digits="1w2" />\s*<Connect><Stream url="ws://[^"]+/ws/voice/' + sid
            assert re.search(stream, twiml), twiml
            params = dict(re.findall(r'<Parameter name="([^"]+)" value="([^"]*)"', twiml))
            assert params["conversation_id"] == cid
            assert (params["from"], params["to"]) == (AGENT_NUMBER, LEAD)
            # the new stream's token (and only it) claims the conversation, once
            assert await admit_stream(runtime.db, settings, params["token"], sid) == cid
            assert await admit_stream(runtime.db, settings, params["token"], sid) is None
            # a menu that only repeats itself is not navigated forever: three presses a call
            assert all([(await press(navigating, "0")).success for _ in range(2)])
            fourth = await press(navigating, "0")
            assert not fourth.success and "3 times" in (fourth.error or "")
            assert twilio.calls[sid].digits == ["1w2", "0", "0"]


@pytest.mark.asyncio
async def test_a_phone_menu_is_navigated_and_the_person_behind_it_is_greeted(tmp_path: Path) -> None:
    """The menu answers; the agent presses 1; Twilio ends the stream and opens a new one on the same
    conversation, where Jordan answers and is greeted. One transcript across both streams."""
    from simulator.speech import synthesize_caller
    from tests.deepgram_standin import DeepgramStandIn

    menu_voice, jordan_voice = (synthesize_caller(text, steady=True) for text in (MENU, JORDAN))
    lines: list[PhoneLine] = []

    async def menu_answers(call: PlacedCall) -> None:
        lines.append(await PhoneLine("", call.sid, LEAD).start(None, twiml=call.twiml))
        lines[-1].say(silence(300) + menu_voice)

    async def keys_pressed(call: PlacedCall, twiml: str) -> None:
        await lines[-1].hang_up()  # Twilio ends the stream whose TwiML was replaced ("stop")
        deepgram.transcripts, deepgram.utterances = [JORDAN], 0  # what is said on the new stream
        lines.append(await PhoneLine("", call.sid, LEAD).start(None, twiml=twiml))
        lines[-1].say(silence(600) + jordan_voice)

    def scenario(call: PlacedCall) -> Scenario:
        return Scenario("human", 0.05, 30.0, on_answer=menu_answers, on_redirect=keys_pressed)

    async with (
        DeepgramStandIn("dg-key", transcripts=[MENU]) as deepgram,
        TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, scenario=scenario) as twilio,
    ):
        settings = twilio_settings(
            tmp_path, twilio, stt_provider="deepgram", deepgram_api_key="dg-key", deepgram_url=deepgram.url,
            twilio_machine_detection=False,  # the engine's own detection decides (menu, then a person)
        )  # fmt: skip
        async with LiveServer(settings) as server, server.client() as client:
            agent_id = await _agent(client, dtmf_navigation=True)
            r = await client.post(
                "/v1/convai/phone-numbers", json={"phone_number": AGENT_NUMBER, "agent_id": agent_id}
            )
            assert r.status_code == 201, r.text
            r = await client.post(
                "/v1/convai/outbound",
                json={"agent_id": agent_id, "to_number": LEAD, "dynamic_variables": {"first_name": "Dana"}},
            )
            assert r.status_code == 201, r.text
            cid, sid = r.json()["conversation_id"], r.json()["call_sid"]

            async def greeted() -> dict[str, Any] | None:
                detail = (await client.get(f"/v1/convai/conversations/{cid}")).json()
                said = [t["text"] for t in detail.get("transcript", []) if t["role"] == "agent"]
                return detail if GREETING in said else None

            live = await eventually(greeted, timeout=40)
            async with server.runtime.db.session() as session:
                row = await session.get(Conversation, cid)
                assert row is not None
                answered = (row.answered_by, row.outcome)
            await lines[-1].hang_up()
            final = await ended(client, cid, timeout=10)
    assert twilio.calls[sid].digits == ["1"]
    assert len(lines) == 2 and {line.conversation_id for line in lines} == {cid}
    assert live["call_state"] != "ENDED"  # the first stream's end did not end the call
    turns = [(t["role"], t["text"]) for t in final["transcript"]]
    assert turns == [("user", MENU), ("user", JORDAN), ("agent", GREETING)], turns  # no goodbye to the menu
    assert answered == ("human", None)  # ivr while the menu held the call, a person's call after
    assert final["metadata"]["termination_reason"] == "caller_hung_up"


@pytest.mark.asyncio
async def test_keys_pressed_on_one_instance_the_call_goes_on_on_the_other_and_both_legs_are_recorded(
    tmp_path: Path, postgres: Any
) -> None:
    """Two instances on PostgreSQL. The menu's stream is on A; A presses 1; the new stream (Twilio, through
    the balancer) lands on B, which goes on with the same conversation: one transcript (turn numbers
    continue), the live call listed on B, one end. The recording (one volume for both) holds both legs,
    the menu's and the person's, not only the last."""
    import wave

    from simulator.speech import synthesize_caller
    from tests.deepgram_standin import DeepgramStandIn
    from tests.test_multi_instance import two_instances

    menu_voice, jordan_voice = (synthesize_caller(text, steady=True) for text in (MENU, JORDAN))
    lines: list[PhoneLine] = []
    servers: list[LiveServer] = []

    async def menu_answers(call: PlacedCall) -> None:
        lines.append(await PhoneLine("", call.sid, LEAD).start(None, twiml=call.twiml))
        lines[-1].say(silence(300) + menu_voice)

    async def keys_pressed(call: PlacedCall, twiml: str) -> None:
        a, b = servers
        assert a.ws_url in twiml  # A's TwiML names A; the balancer sends the new stream to B
        await lines[-1].hang_up()
        deepgram.transcripts, deepgram.utterances = [JORDAN], 0
        lines.append(await PhoneLine("", call.sid, LEAD).start(None, twiml=twiml.replace(a.ws_url, b.ws_url)))
        lines[-1].say(silence(600) + jordan_voice)

    def scenario(call: PlacedCall) -> Scenario:
        return Scenario("human", 0.05, 30.0, on_answer=menu_answers, on_redirect=keys_pressed)

    url = await postgres.create_database()
    async with (
        DeepgramStandIn("dg-key", transcripts=[MENU]) as deepgram,
        TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, scenario=scenario) as twilio,
    ):
        shared = {
            "twilio_account_sid": ACCOUNT_SID, "twilio_auth_token": AUTH_TOKEN, "twilio_api_base": twilio.url,
            "dialer_enabled": False, "twilio_machine_detection": False, "stt_provider": "deepgram",
            "deepgram_api_key": "dg-key", "deepgram_url": deepgram.url, "record_calls": True,
            "recordings_dir": str(tmp_path / "recordings"),  # one volume for every instance
            "live_call_heartbeat_sec": 30.0,  # the listing below is the calls' own register/unregister
        }  # fmt: skip
        async with two_instances(tmp_path, url, **shared) as (a, b, client_a, client_b):
            servers.extend([a, b])
            agent_id = await _agent(client_a, dtmf_navigation=True)
            r = await client_a.post(
                "/v1/convai/phone-numbers", json={"phone_number": AGENT_NUMBER, "agent_id": agent_id}
            )
            assert r.status_code == 201, r.text
            r = await client_a.post(
                "/v1/convai/outbound",
                json={"agent_id": agent_id, "to_number": LEAD, "dynamic_variables": {"first_name": "Dana"}},
            )
            assert r.status_code == 201, r.text
            cid, sid = r.json()["conversation_id"], r.json()["call_sid"]

            async def greeted_on_b() -> dict[str, Any] | None:
                detail = (await client_a.get(f"/v1/convai/conversations/{cid}")).json()
                said = [t["text"] for t in detail.get("transcript", []) if t["role"] == "agent"]
                live = (await client_a.get("/v1/convai/calls/live")).json()["calls"]
                where = [(c["conversation_id"], c["instance_id"]) for c in live]
                return detail if GREETING in said and where == [(cid, "app-b")] else None

            live = await eventually(greeted_on_b, timeout=40)
            await asyncio.sleep(0.5)
            await lines[-1].hang_up()
            final = await ended(client_b, cid, timeout=10)
            sent = [len(line.sent) for line in lines]
    assert twilio.calls[sid].digits == ["1"]
    assert len(lines) == 2 and {line.conversation_id for line in lines} == {cid}
    assert live["call_state"] != "ENDED"
    turns = [(t["role"], t["text"]) for t in final["transcript"]]
    assert turns == [("user", MENU), ("user", JORDAN), ("agent", GREETING)], turns
    assert [t["seq"] for t in final["transcript"]] == sorted({t["seq"] for t in final["transcript"]})
    assert final["metadata"]["termination_reason"] == "caller_hung_up"
    with wave.open(str(tmp_path / "recordings" / f"{cid}.wav")) as wav:
        recorded = wav.getnframes()
        caller = np.frombuffer(wav.readframes(recorded), dtype=np.int16)[0::2].astype(np.float32)
    # both legs, in order: as long as what the far end sent on both streams, the menu's words at the start
    assert recorded >= 0.95 * sum(sent), (recorded, sent)
    menu_s = len(menu_voice) / 8000
    start = caller[: int((0.3 + menu_s) * 8000)]
    assert np.sqrt(np.mean(start**2)) > 300, "the first leg (the menu) is not in the recording"


class _Stream:
    """A call's stream as the registry sees it."""

    def __init__(self, call_sid: str) -> None:
        self.call_sid, self.end_reason = call_sid, "dtmf_redirect"

    def snapshot(self) -> dict[str, Any]:
        return {"call_sid": self.call_sid, "conversation_id": None, "state": "ACTIVE"}

    async def hang_up(self, reason: str, *, heard_first: bool = True) -> None:
        return None

    async def wait_closed(self) -> None:
        return None


@pytest.mark.asyncio
async def test_a_new_stream_on_another_instance_waits_for_the_previous_one_to_let_go(postgres: Any) -> None:
    """The redirected call's new stream lands on B while A still holds the old one: B starts once A let
    go (A has written that leg's turns by then, so B's turn numbers go on from them), at most 5 s."""
    from call.live_calls import LiveCallDirectory
    from call.registry import ConnectionManager
    from storage.batch_writer import BatchWriter
    from storage.db import Database

    url = await postgres.create_database()
    dbs = [Database(url), Database(url)]
    await dbs[0].upgrade()
    writers = [BatchWriter(db) for db in dbs]
    for writer in writers:
        writer.start()
    dirs = [
        LiveCallDirectory(db, w, name, 30.0)
        for db, w, name in zip(dbs, writers, ("app-a", "app-b"), strict=True)
    ]
    a, b = (ConnectionManager(lambda: 5, on_change=d.changed, held_elsewhere=d.held_elsewhere) for d in dirs)
    sid = "CA" + "e" * 32
    try:
        old = _Stream(sid)
        assert a.register(old)
        await writers[0].flush()
        waiting = asyncio.create_task(b.wait_gone(sid, 5.0))
        await asyncio.sleep(0.5)
        assert not waiting.done()  # A still holds the call
        a.unregister(old)
        await asyncio.wait_for(waiting, 2.0)
        assert b.register(_Stream(sid))
        await writers[1].flush()
        assert [r.instance_id for r in await dirs[0].list_all()] == ["app-b"]
        # A lets go only after B took the call (B gave up waiting): A's let-go leaves B's row alone
        again = _Stream("CA" + "d" * 32)
        assert a.register(again)
        await writers[0].flush()
        assert b.register(_Stream(again.call_sid))
        await writers[1].flush()
        a.unregister(again)
        await writers[0].flush()
        listed = {(r.call_sid, r.instance_id) for r in await dirs[0].list_all()}
        assert listed == {(sid, "app-b"), (again.call_sid, "app-b")}, listed
        started = asyncio.get_running_loop().time()
        await a.wait_gone("CA" + "f" * 32, 5.0)  # a call nobody holds: at once
        assert asyncio.get_running_loop().time() - started < 1.0
    finally:
        for writer in writers:
            await writer.stop()
        for db in dbs:
            await db.dispose()


@pytest.mark.asyncio
async def test_without_dtmf_navigation_a_menu_still_ends_politely_through_twilio(tmp_path: Path) -> None:
    """The same menu, the setting off: no keys, the polite goodbye, outcome ivr, hung up via the REST API."""
    from simulator.speech import synthesize_caller
    from tests.deepgram_standin import DeepgramStandIn

    menu_voice = synthesize_caller(MENU, steady=True)
    lines: list[PhoneLine] = []

    async def menu_answers(call: PlacedCall) -> None:
        lines.append(await PhoneLine("", call.sid, LEAD).start(None, twiml=call.twiml))
        lines[-1].say(silence(300) + menu_voice)

    async with (
        DeepgramStandIn("dg-key", transcripts=[MENU]) as deepgram,
        TwilioStandIn(
            ACCOUNT_SID, AUTH_TOKEN, scenario=lambda c: Scenario("human", 0.05, 30.0, on_answer=menu_answers)
        ) as twilio,
    ):
        settings = twilio_settings(
            tmp_path, twilio, stt_provider="deepgram", deepgram_api_key="dg-key", deepgram_url=deepgram.url,
            twilio_machine_detection=False,
        )  # fmt: skip
        async with LiveServer(settings) as server, server.client() as client:
            agent_id = await _agent(client)
            await client.post(
                "/v1/convai/phone-numbers", json={"phone_number": AGENT_NUMBER, "agent_id": agent_id}
            )
            r = await client.post(
                "/v1/convai/outbound",
                json={"agent_id": agent_id, "to_number": LEAD, "dynamic_variables": {"first_name": "Dana"}},
            )
            assert r.status_code == 201, r.text
            cid, sid = r.json()["conversation_id"], r.json()["call_sid"]
            final = await ended(client, cid, timeout=30)
            for line in lines:
                await line.hang_up()
    assert twilio.calls[sid].digits == []
    agent_turns = [t["text"] for t in final["transcript"] if t["role"] == "agent"]
    assert agent_turns == ["Sorry, I'll try again another time. Goodbye."]
    assert final["metadata"]["termination_reason"] == "ivr"
    assert twilio.calls[sid].status == "completed"


@pytest.mark.asyncio
async def test_a_model_that_calls_tools_chooses_the_keys_and_the_rule_backs_it(tmp_path: Path) -> None:
    """Through the Ollama SDK (its stand-in): the menu goes to the model with send_dtmf as its only tool,
    and its keys are pressed; keys that are not keys fall back to the rule."""
    from types import SimpleNamespace

    from call.menu import choose_digits
    from providers.ollama_llm import OllamaLLMProvider
    from tests.conftest import make_settings
    from tests.ollama_standin import DEFAULT_MODEL, OllamaStandIn

    profile = SimpleNamespace(agent=SimpleNamespace(llm_model=None), variables={"first_name": "Dana"})
    async with OllamaStandIn() as ollama:
        llm = OllamaLLMProvider(make_settings(tmp_path, ollama_host=ollama.url, ollama_model=DEFAULT_MODEL))
        try:
            ollama.tool_script = [("send_dtmf", {"digits": "2"}), ("send_dtmf", {"digits": "1; rm"})]
            assert await choose_digits(llm, profile, MENU, timeout_s=5) == ("2", "llm")
            assert await choose_digits(llm, profile, MENU, timeout_s=5) == ("1", "rule")
        finally:
            await llm.aclose()
        asked = ollama.chats[0]
    assert [t["function"]["name"] for t in asked["tools"]] == ["send_dtmf"]
    assert asked["messages"][-1] == {"role": "user", "content": MENU}
    assert "Dana by name" in asked["messages"][0]["content"]
