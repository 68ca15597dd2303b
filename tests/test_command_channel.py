"""The per-call command channel (``storage.commands``) and what rides on it first: Twilio's asynchronous AMD
verdict reaching the live call, on the instance that holds its stream (one instance on SQLite; two
instances on PostgreSQL, the callback landing on the one without the stream)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from storage.commands import Command, CommandChannel
from storage.db import Database
from tests.conftest import LiveServer
from tests.phone_line import PhoneLine
from tests.test_multi_instance import eventually
from tests.twilio_standin import PlacedCall, Scenario, TwilioStandIn

ACCOUNT_SID = "AC" + "2" * 32
AUTH_TOKEN = "twilio-amd-token"
AGENT_NUMBER = "+14155550100"
LEAD = "+12125550142"
MESSAGE = "Hi Dana, this is Ava from Orbit. I will email you the details. Bye!"
GREETING = "Hi Dana, this is Ava."
NO_SPEECH_S = 6.0  # the engine's own detector: a silent line is "unknown" (then greeted) after this


# ---------------------------------------------------------------- the channel itself


@pytest.mark.asyncio
async def test_commands_reach_the_serving_instance_in_order_and_once(database_url: str) -> None:
    """Commands sent from one instance reach the call served by another, in the order sent, each once,
    also those sent before the call was served; two servers of one call never both handle a command."""
    dbs = [Database(database_url) for _ in range(3)]
    await dbs[0].upgrade()
    sender, one, other = (CommandChannel(db, name, poll_sec=0.2) for db, name in zip(dbs, "sab", strict=True))
    handled: list[tuple[str, int]] = []

    def handler(name: str) -> dict[str, Any]:
        async def record(command: Command) -> None:
            handled.append((name, command.payload["n"]))
            await asyncio.sleep(0.001)

        return {"test": record}

    try:
        for channel in (sender, one, other):
            await channel.start()
        early = await sender.send("conv_1", "test", {"n": 0})  # before anyone serves the call
        serving = [
            asyncio.create_task(one.serve("conv_1", handler("a"))),
            asyncio.create_task(other.serve("conv_1", handler("b"))),
            asyncio.create_task(one.serve("conv_2", handler("x"))),
        ]
        for n in range(1, 30):
            await sender.send("conv_1", "test", {"n": n})
        await sender.send("conv_1", "unknown_type", {"n": -1})  # consumed, no handler: ignored

        async def all_handled() -> bool:
            return len(handled) >= 30

        await eventually(all_handled, timeout=10)
        await asyncio.sleep(0.5)  # a duplicate would arrive within this
        for task in serving:
            task.cancel()
        await asyncio.gather(*serving, return_exceptions=True)
        assert sorted(n for _, n in handled) == list(range(30))  # each once, none to conv_2's server
        for name in ("a", "b"):  # each server handles its share in the order sent
            mine = [n for who, n in handled if who == name]
            assert mine == sorted(mine)
        async with dbs[0].session() as session:
            from models import CallCommand

            rows = (await session.scalars(select(CallCommand).order_by(CallCommand.id))).all()
        assert rows[0].id == early and all(r.consumed_at is not None for r in rows)
        assert {r.consumed_by for r in rows} <= {"a", "b"}
    finally:
        for channel in (sender, one, other):
            await channel.stop()
        for db in dbs:
            await db.dispose()


# ---------------------------------------------------------------- Twilio's verdict drives the call


def test_the_carrier_verdict_settles_only_what_the_audio_has_not() -> None:
    from call.amd import AmdDecision, AnsweredBy, AnsweringMachineDetector, GreetingOver

    fresh = AnsweringMachineDetector()
    assert fresh.on_carrier_verdict("machine_end_beep") == [
        AmdDecision(AnsweredBy.MACHINE, "twilio_amd", 0.0),
        GreetingOver("carrier", 0.0),
    ]
    assert fresh.on_carrier_verdict("machine_end_beep") == []  # the message is already on its way
    started = AnsweringMachineDetector()
    assert started.on_carrier_verdict("machine_start") == [AmdDecision(AnsweredBy.MACHINE, "twilio_amd", 0.0)]
    assert started.on_carrier_verdict("machine_end_silence") == [GreetingOver("carrier", 0.0)]
    person = AnsweringMachineDetector()
    assert person.on_carrier_verdict("human") == [AmdDecision(AnsweredBy.HUMAN, "twilio_amd", 0.0)]
    for verdict in ("machine_end_beep", "fax", "human", "unknown"):  # a person is never hung up on
        assert person.on_carrier_verdict(verdict) == []
    assert AnsweringMachineDetector().on_carrier_verdict("unknown") == []
    assert AnsweringMachineDetector().on_carrier_verdict("fax")[0].answered_by is AnsweredBy.FAX


def twilio_settings(server_dir: Path, twilio: TwilioStandIn, **overrides: Any) -> Any:
    from tests.conftest import make_settings

    return make_settings(
        server_dir,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_base=twilio.url,
        dialer_enabled=False,
        **overrides,
    )


async def make_agent(client: httpx.AsyncClient, voicemail_action: str) -> str:
    r = await client.post(
        "/v1/convai/agents",
        json={
            "name": "Ava",
            "system_prompt": "You are Ava from Orbit.",
            "first_message": "Hi {{first_name}}, this is Ava.",
            "voicemail_action": voicemail_action,
            "voicemail_message": "Hi {{first_name}}, this is Ava from Orbit. I will email you the details. Bye!",
        },
    )
    assert r.status_code == 201, r.text
    agent_id = r.json()["agent_id"]
    r = await client.post(
        "/v1/convai/phone-numbers", json={"phone_number": AGENT_NUMBER, "agent_id": agent_id}
    )
    assert r.status_code == 201, r.text
    return agent_id


async def call_lead(client: httpx.AsyncClient, agent_id: str) -> dict[str, Any]:
    r = await client.post(
        "/v1/convai/outbound",
        json={"agent_id": agent_id, "to_number": LEAD, "dynamic_variables": {"first_name": "Dana"}},
    )
    assert r.status_code == 201, r.text
    return r.json()


async def ended(client: httpx.AsyncClient, conversation_id: str, timeout: float) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        body = (await client.get(f"/v1/convai/conversations/{conversation_id}")).json()
        return body if body.get("call_state") == "ENDED" else None

    return await eventually(check, timeout=timeout)


async def answered_by(server: LiveServer, conversation_id: str) -> tuple[str | None, str | None]:
    from models import Conversation

    async with server.runtime.db.session() as session:
        row = await session.get(Conversation, conversation_id)
        assert row is not None
        return row.answered_by, row.answered_by_method


def agent_lines(detail: dict[str, Any]) -> list[tuple[str, float]]:
    return [(t["text"], t["start_ms"]) for t in detail["transcript"] if t["role"] == "agent"]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("verdict", "action", "spoken", "reason"),
    [
        ("machine_end_beep", "leave_message", [MESSAGE], "voicemail"),
        ("machine_end_silence", "hang_up", [], "voicemail"),
        ("machine_end_other", "leave_message", [MESSAGE], "voicemail"),
        ("fax", "leave_message", [], "fax"),
        ("human", "leave_message", [GREETING], None),
    ],
)
async def test_twilios_amd_verdict_drives_the_live_call(
    tmp_path: Path, verdict: str, action: str, spoken: list[str], reason: str | None
) -> None:
    """One instance (SQLite). The line stays silent, so the engine's own detector would not decide for
    6 s; Twilio's verdict, posted (signed) 1 s into the call by the stand-in, decides at once."""
    lines: list[PhoneLine] = []

    async def pick_up(call: PlacedCall) -> None:
        assert call.twiml and "<Stream" in call.twiml, call.twiml
        lines.append(await PhoneLine("", call.sid, LEAD).start(None, twiml=call.twiml))

    def scenario(call: PlacedCall) -> Scenario:
        kind = "human" if verdict == "human" else "machine"
        return Scenario(kind, 0.05, 20.0, on_answer=pick_up, answered_by=verdict, amd_after_sec=1.0)

    async with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, scenario=scenario) as twilio:
        async with LiveServer(twilio_settings(tmp_path, twilio)) as server, server.client() as client:
            agent_id = await make_agent(client, action)
            placed = await call_lead(client, agent_id)
            cid = placed["conversation_id"]
            if reason is None:  # a person: greeted at once, and the call goes on
                await eventually(lambda: _agent_said(client, cid, GREETING), timeout=NO_SPEECH_S)
                detail = (await client.get(f"/v1/convai/conversations/{cid}")).json()
            else:
                detail = await ended(client, cid, timeout=NO_SPEECH_S)
            by = await answered_by(server, cid)
            amd_code = next(
                code for what, code in twilio.calls[placed["call_sid"]].callbacks if what == "amd"
            )
            for line in lines:
                await line.hang_up()
    assert amd_code == 200
    said = agent_lines(detail)
    assert [text for text, _ in said] == spoken, detail["transcript"]
    # spoken soon after the verdict (1 s), long before the engine's own detector would have decided
    assert all(start_ms < 3500 for _, start_ms in said), said
    expected_by = {"human": "human", "fax": "fax"}.get(verdict, "machine")
    assert by == (expected_by, "twilio_amd")
    if reason is not None:
        assert detail["metadata"]["termination_reason"] == reason
        assert twilio.calls[placed["call_sid"]].status == "completed"  # hung up through the REST API


async def _agent_said(client: httpx.AsyncClient, cid: str, text: str) -> bool:
    detail = (await client.get(f"/v1/convai/conversations/{cid}")).json()
    return any(t["role"] == "agent" and t["text"] == text for t in detail.get("transcript", []))


@pytest.mark.asyncio
async def test_the_verdict_landing_on_the_other_instance_reaches_the_call(
    tmp_path: Path, postgres: Any
) -> None:
    """Two instances on PostgreSQL: the stream is on A, Twilio's AMD callback lands on B (as a balancer may
    send it); A leaves the voicemail."""
    from models import CallCommand
    from tests.test_multi_instance import two_instances

    url = await postgres.create_database()
    async with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, answer=False) as twilio:
        twilio_on = {
            "twilio_account_sid": ACCOUNT_SID,
            "twilio_auth_token": AUTH_TOKEN,
            "twilio_api_base": twilio.url,
            "dialer_enabled": False,
            "call_command_poll_sec": 30.0,  # LISTEN/NOTIFY must carry it, not the poll
        }
        async with (
            two_instances(tmp_path, url, **twilio_on) as (_, b, client_a, client_b),
            httpx.AsyncClient() as http,
        ):
            agent_id = await make_agent(client_a, "leave_message")
            placed = await call_lead(client_a, agent_id)
            cid, sid = placed["conversation_id"], placed["call_sid"]
            form = {"CallSid": sid, "AccountSid": ACCOUNT_SID, "CallStatus": "in-progress"}
            twiml = await signed_post(http, twilio.calls[sid].params["Url"], form)  # A's URL
            line = await PhoneLine("", sid, LEAD).start(http, twiml=twiml.text)

            async def live_on_a() -> bool:
                calls = (await client_b.get("/v1/convai/calls/live")).json()["calls"]
                return [(c["conversation_id"], c["instance_id"]) for c in calls] == [(cid, "app-a")]

            await eventually(live_on_a)
            await asyncio.sleep(0.3)
            posted_at = time.monotonic()
            amd = await signed_post(
                http,
                f"{b.base_url}/twiml/amd?conversation_id={cid}",
                {**form, "AnsweredBy": "machine_end_beep"},
            )
            assert amd.status_code == 200, amd.text
            detail = await ended(client_b, cid, timeout=NO_SPEECH_S)
            await line.hang_up()
            reply_after_s = line.replies[0].first_frame_at - posted_at if line.replies else None
            async with b.runtime.db.session() as session:
                commands = (await session.scalars(select(CallCommand))).all()
    assert [(t["role"], t["text"]) for t in detail["transcript"]] == [("agent", MESSAGE)]
    assert detail["metadata"]["termination_reason"] == "voicemail"
    assert reply_after_s is not None and reply_after_s < 1.5, reply_after_s  # not the 30 s poll
    assert [(c.type, c.payload, c.consumed_by) for c in commands] == [
        ("amd_verdict", {"answered_by": "machine_end_beep"}, "app-a")
    ]


async def signed_post(http: httpx.AsyncClient, url: str, params: dict[str, str]) -> httpx.Response:
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
    return await http.post(url, data=params, headers={"X-Twilio-Signature": signature})
