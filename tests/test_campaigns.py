"""Campaigns (batch calling), the do-not-call list and phone-number handling, against the Twilio stand-in.

The dialer runs inside a real service (uvicorn on loopback) and dials through the real ``twilio`` SDK;
the stand-in plays each lead: a human who books a meeting or says no, an answering machine (async AMD
verdict), a line that rings out or is busy. "Answered" calls run no audio: the test plays the engine's
part (a transcript line or a booked meeting, then the real post-call analysis).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from models import CampaignRecipient, Conversation, ConversationTurn, ToolCallRecord
from tests.conftest import LiveServer, make_settings
from tests.twilio_standin import PlacedCall, Scenario, TwilioStandIn

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "twilio-campaign-token"
AGENT_NUMBER = "+14155550100"


def settings_for(tmp_path: Path, twilio: TwilioStandIn, **overrides: Any):  # type: ignore[no-untyped-def]
    return make_settings(
        tmp_path,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_base=twilio.url,
        **{"dialer_tick_sec": 0.05, "dialer_outcome_wait_sec": 5.0, **overrides},
    )


async def make_agent(client: httpx.AsyncClient) -> tuple[str, str]:
    r = await client.post(
        "/v1/convai/agents",
        json={
            "name": "Ava",
            "system_prompt": "You are Ava, calling {{first_name}} about the demo.",
            "first_message": "Hi {{first_name}}, this is Ava.",
            "builtin_tools": ["end_call", "book_meeting", "add_to_dnc"],
        },
    )
    assert r.status_code == 201, r.text
    agent_id = r.json()["agent_id"]
    r = await client.post(
        "/v1/convai/phone-numbers", json={"phone_number": AGENT_NUMBER, "agent_id": agent_id}
    )
    assert r.status_code == 201, r.text
    return agent_id, r.json()["id"]


def lead(n: int) -> str:
    """Valid New York numbers: +1 212 555 01xx … (phonenumbers knows their zone)."""
    return f"+1212555{n:04d}"


def zone_at_local_hour(hour: int) -> str:
    """An Etc/GMT zone whose local time now is about ``hour`` o'clock (calling hours independent of the clock)."""
    offset = (hour - datetime.now(UTC).hour) % 24
    if offset > 12:
        offset -= 24
    return "UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"  # Etc/GMT-3 is UTC+3


class Engine:
    """What the call engine would leave behind for an answered human: a transcript line, maybe a meeting."""

    def __init__(self) -> None:
        self.server: LiveServer | None = None
        self.behaviour: dict[str, str] = {}  # number -> meeting | no
        self.busy = 0  # answers being written

    async def answered(self, call: PlacedCall) -> None:
        # While the service restarts the call goes on at Twilio; the engine of the next process takes it.
        for _ in range(200):
            if self.server is not None:
                break
            await asyncio.sleep(0.05)
        assert self.server is not None, "no service came back to take the call"
        self.busy += 1
        try:
            await self._leave_behind(self.server.runtime, call)
        finally:
            self.busy -= 1

    async def _leave_behind(self, runtime: Any, call: PlacedCall) -> None:
        async with runtime.db.session() as session:
            conversation = await session.scalar(select(Conversation).where(Conversation.call_sid == call.sid))
            assert conversation is not None, "the status callback linked the call SID"
            conversation_id = conversation.id
            if self.behaviour.get(str(call.params["To"])) == "meeting":
                session.add(
                    ConversationTurn(conversation_id=conversation_id, seq=0, role="user", text="Sure.")
                )
                session.add(
                    ToolCallRecord(
                        conversation_id=conversation_id,
                        name="book_meeting",
                        arguments={"start_time": "2026-12-01T10:00:00"},
                        result={"meeting_id": "mtg_x"},
                    )
                )
            else:
                session.add(
                    ConversationTurn(
                        conversation_id=conversation_id, seq=0, role="user", text="No thanks, not interested."
                    )
                )
            conversation.call_state = "ENDED"
        await runtime.post_call(conversation_id)


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def batch(client: httpx.AsyncClient, batch_id: str) -> dict[str, Any]:
    r = await client.get(f"/v1/convai/batch-calling/{batch_id}")
    assert r.status_code == 200, r.text
    return r.json()


# ---------------------------------------------------------------- the 50-lead campaign


@pytest.mark.asyncio
async def test_a_campaign_of_50_leads_ends_every_lead_in_the_right_state(tmp_path: Path) -> None:
    engine = Engine()
    plan: dict[str, str] = {}
    for i in range(12):
        plan[lead(100 + i)] = "meeting"
    for i in range(8):
        plan[lead(200 + i)] = "no"
    for i in range(8):
        plan[lead(300 + i)] = "machine"
    for i in range(8):
        plan[lead(400 + i)] = "no_answer"
    for i in range(4):
        plan[lead(500 + i)] = "busy_then_meeting"
    dnc_numbers = [lead(600 + i) for i in range(4)]
    late = [lead(700 + i) for i in range(4)]  # local time 01:00: outside 09:00-17:00
    invalid = ["+1555", "call me maybe"]
    engine.behaviour = {n: ("meeting" if "meeting" in b else "no") for n, b in plan.items()}

    def scenario(call: PlacedCall) -> Scenario:
        number = str(call.params["To"])
        kind = plan.get(number, "failed")
        if kind == "busy_then_meeting":
            kind = "busy" if twilio.per_number[number] == 1 else "meeting"
        if kind in ("meeting", "no"):
            return Scenario("human", ring_sec=0.1, talk_sec=0.2, on_answer=engine.answered)
        if kind == "machine":
            return Scenario("machine", ring_sec=0.1, talk_sec=0.2)
        return Scenario(kind, ring_sec=0.2)  # type: ignore[arg-type]

    async with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, scenario=scenario) as twilio:
        async with LiveServer(settings_for(tmp_path, twilio)) as server, server.client() as client:
            engine.server = server
            agent_id, number_id = await make_agent(client)
            r = await client.post("/v1/convai/dnc", json={"phone_numbers": dnc_numbers, "reason": "asked"})
            assert r.status_code == 201 and r.json()["added"] == 4, r.text
            hook = await client.post("/v1/convai/webhooks", json={"url": "http://127.0.0.1:9/hook"})
            assert hook.status_code == 201

            inside = zone_at_local_hour(12)
            recipients = [
                {
                    "phone_number": n,
                    "timezone": inside,
                    "conversation_initiation_client_data": {
                        "dynamic_variables": {"first_name": f"Lead {n[-3:]}"}
                    },
                }
                for n in [*plan, *dnc_numbers]
            ]
            recipients += [
                {
                    "phone_number": n,
                    "timezone": zone_at_local_hour(1),
                    "dynamic_variables": {"first_name": "Late"},
                }
                for n in late
            ]
            recipients += [{"phone_number": n, "dynamic_variables": {"first_name": "X"}} for n in invalid]
            assert len(recipients) == 50
            started = time.monotonic()
            r = await client.post(
                "/v1/convai/batch-calling/submit",
                json={
                    "call_name": "Q4 follow-up",
                    "agent_id": agent_id,
                    "agent_phone_number_id": number_id,
                    "recipients": recipients,
                    "target_concurrency_limit": 5,
                    "calls_per_minute": 600,
                    "calling_hours": {"start": "09:00", "end": "17:00", "days": []},
                    "retry": {"outcomes": ["no_answer", "busy"], "delay_sec": 1, "max_attempts": 2},
                },
            )
            assert r.status_code == 200, r.text
            batch_id = r.json()["id"]
            assert r.json()["total_calls_scheduled"] == 50

            async def settled() -> bool:
                body = await batch(client, batch_id)
                return all(
                    x["status"] not in ("dispatched", "in_progress") for x in body["recipients"]
                ) and all(x["status"] != "pending" or x["phone_number"] in late for x in body["recipients"])

            await wait_for(settled, 60, "every lead inside calling hours to reach an outcome")
            await twilio.settled()
            body = await batch(client, batch_id)
            by_number = {x["phone_number"]: x for x in body["recipients"]}

            for n, kind in plan.items():
                got = by_number[n]
                expected = {
                    "meeting": ("completed", "meeting_booked", 1),
                    "no": ("completed", "not_interested", 1),
                    "machine": ("voicemail", "voicemail", 1),
                    "no_answer": ("failed", "no_answer", 2),
                    "busy_then_meeting": ("completed", "meeting_booked", 2),
                }[kind]
                assert (got["status"], got["outcome"], got["attempts"]) == expected, (n, kind, got)
                assert twilio.per_number[n] == expected[2], (n, "dialled", twilio.per_number[n])
                assert got["conversation_id"]
            for n in dnc_numbers:
                assert (by_number[n]["status"], by_number[n]["outcome"]) == ("skipped", "dnc")
            for n in late:
                assert by_number[n]["status"] == "pending" and by_number[n]["attempts"] == 0
                opens = datetime.fromtimestamp(by_number[n]["next_attempt_unix"], UTC)
                assert timedelta(hours=7) < opens - datetime.now(UTC) < timedelta(hours=9), opens
            invalid_rows = [x for x in body["recipients"] if x["outcome"] == "invalid_number"]
            assert [x["status"] for x in invalid_rows] == ["skipped", "skipped"]
            # nobody on the DNC list, outside calling hours or invalid was dialled
            assert not set(twilio.per_number) & {*dnc_numbers, *late}
            assert sum(twilio.per_number.values()) == 12 + 8 + 8 + 16 + 8
            # the concurrency cap held at Twilio's end, and every call asked for async AMD
            assert 1 < twilio.max_live <= 5, twilio.max_live
            for call in twilio.calls.values():
                assert call.params["MachineDetection"] == "DetectMessageEnd"
                assert (
                    call.params["AsyncAmd"] == "true"
                    and "/twiml/amd?" in call.params["AsyncAmdStatusCallback"]
                )
            # retries came after the delay: a second call starts >= 1 s after the first one ended
            for n in [*(k for k, v in plan.items() if v in ("no_answer", "busy_then_meeting"))]:
                first, second = sorted(
                    (c for c in twilio.calls.values() if c.params["To"] == n), key=lambda c: c.created_at
                )
                assert first.ended_at is not None and second.created_at - first.ended_at >= 0.9, n
            # the machines were recorded as such on their conversations
            async with server.runtime.db.session() as session:
                machines = (
                    await session.scalars(
                        select(Conversation.answered_by).where(
                            Conversation.to_number.in_([n for n, k in plan.items() if k == "machine"])
                        )
                    )
                ).all()
            assert machines and set(machines) == {"machine"}
            totals = body["totals"]
            assert totals["recipients"] == 50 and totals["by_outcome"]["meeting_booked"] == 16
            assert body["status"] == "in_progress"  # the late leads are still waiting for their morning

            r = await client.post(f"/v1/convai/batch-calling/{batch_id}/cancel")
            assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
            body = await batch(client, batch_id)
            assert {by_number[n]["id"] for n in late} == {
                x["id"] for x in body["recipients"] if x["status"] == "cancelled"
            }
            assert time.monotonic() - started < 60


# ---------------------------------------------------------------- pacing, retries, restarts


async def submit(client: httpx.AsyncClient, agent_id: str, numbers: list[str], **rules: Any) -> str:
    r = await client.post(
        "/v1/convai/batch-calling/submit",
        json={
            "call_name": "test",
            "agent_id": agent_id,
            "recipients": [{"phone_number": n, "dynamic_variables": {"first_name": "Sam"}} for n in numbers],
            **rules,
        },
    )
    assert r.status_code == 200, r.text
    return r.json()["id"]


@pytest.mark.asyncio
async def test_retries_come_after_the_delay_and_stop_at_max_attempts(tmp_path: Path) -> None:
    numbers = [lead(800 + i) for i in range(3)]
    async with TwilioStandIn(
        ACCOUNT_SID, AUTH_TOKEN, scenario=lambda c: Scenario("no_answer", 0.05)
    ) as twilio:
        async with LiveServer(settings_for(tmp_path, twilio)) as server, server.client() as client:
            agent_id, _ = await make_agent(client)
            batch_id = await submit(
                client,
                agent_id,
                numbers,
                target_concurrency_limit=10,
                retry={"outcomes": ["no_answer"], "delay_sec": 2, "max_attempts": 3},
            )

            async def done() -> bool:
                return (await batch(client, batch_id))["status"] == "completed"

            await wait_for(done, 30, "the campaign to complete")
            body = await batch(client, batch_id)
    assert {(x["status"], x["outcome"], x["attempts"]) for x in body["recipients"]} == {
        ("failed", "no_answer", 3)
    }
    for n in numbers:
        calls = sorted((c for c in twilio.calls.values() if c.params["To"] == n), key=lambda c: c.created_at)
        assert len(calls) == 3
        for before, after in itertools.pairwise(calls):
            assert before.ended_at is not None
            gap = after.created_at - before.ended_at
            assert 2.0 <= gap < 3.0, (n, gap)  # the delay, plus at most a tick or two


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("requeue", "unreachable", "retry", "expected"),
    [
        # our failure: called again once, not counted, whatever the retry policy
        (True, 1, {"max_attempts": 1}, ("completed", "meeting_booked", 1, "never_connected", 2)),
        (True, 9, {"max_attempts": 1}, ("failed", "failed", 1, "never_connected", 2)),  # once only
        # CAMPAIGN_REQUEUE_OWN_FAILURES off: a failed attempt, retried as the policy says
        (
            False,
            1,
            {"outcomes": ["failed"], "delay_sec": 0, "max_attempts": 2},
            ("completed", "meeting_booked", 2, None, 2),
        ),
        (False, 1, {"max_attempts": 1}, ("failed", "failed", 1, None, 1)),
    ],
)
async def test_a_call_that_never_reached_the_agent_is_our_failure_not_the_leads(
    tmp_path: Path, requeue: bool, unreachable: int, retry: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    """Answered while Twilio could not reach the service (error 11205): no media stream, nothing to
    analyse. The lead goes back to the queue once (the reason recorded, no attempt used); settled at once,
    not after the outcome wait."""
    engine = Engine()
    number = lead(860)
    engine.behaviour = {number: "meeting"}

    def scenario(call: PlacedCall) -> Scenario:
        cut = twilio.per_number[number] <= unreachable
        return Scenario("human", 0.05, 0.1, on_answer=engine.answered, twiml_unreachable=cut)

    async with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, scenario=scenario) as twilio:
        # An outcome wait far longer than the test: a never-connected call must not sit in it.
        settings = settings_for(
            tmp_path, twilio, dialer_outcome_wait_sec=300.0, campaign_requeue_own_failures=requeue
        )
        async with LiveServer(settings) as server, server.client() as client:
            engine.server = server
            agent_id, _ = await make_agent(client)
            batch_id = await submit(client, agent_id, [number], retry=retry)

            async def done() -> bool:
                return (await batch(client, batch_id))["status"] == "completed"

            await wait_for(done, 20, "the campaign to complete")
            body = await batch(client, batch_id)
            first = min((c for c in twilio.calls.values()), key=lambda c: c.created_at)
            assert first.twiml == "application error" and first.callbacks[-1] == ("completed", 200)
            await asyncio.sleep(0.5)  # a third call would be placed within this
    (recipient,) = body["recipients"]
    got = (recipient["status"], recipient["outcome"], recipient["attempts"], recipient["requeued_reason"])
    assert (*got, twilio.per_number[number]) == expected, recipient
    assert body["totals"]["by_outcome"] == {recipient["outcome"]: 1}  # the requeued call is no outcome


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("heard", "callback", "expected"),
    [
        (False, False, ("completed", "meeting_booked", 1, "server_restart", 2)),  # heard nothing: again
        (True, False, ("failed", "failed", 1, None, 1)),  # heard the agent: not redialled
        (True, True, ("completed", "meeting_booked", 1, "server_restart", 2)),  # one call-back allowed
    ],
)
async def test_a_call_cut_by_our_restart_is_redialled_only_if_the_lead_heard_nothing(
    tmp_path: Path, heard: bool, callback: bool, expected: tuple[Any, ...]
) -> None:
    """A restart closed the call (failed / server_restart, as ``storage.recovery`` leaves it). A retry
    policy that names ``failed`` does not apply: this failure is ours."""
    engine = Engine()
    number = lead(880)
    engine.behaviour = {number: "meeting"}

    async def cut_by_restart(call: PlacedCall) -> None:
        assert engine.server is not None
        async with engine.server.runtime.db.session() as session:
            conversation = await session.scalar(select(Conversation).where(Conversation.call_sid == call.sid))
            assert conversation is not None
            conversation_id = conversation.id
            if heard:
                session.add(
                    ConversationTurn(conversation_id=conversation_id, seq=0, role="agent", text="Hi Sam.")
                )
                session.add(
                    ConversationTurn(conversation_id=conversation_id, seq=1, role="user", text="Hi, who?")
                )
            conversation.status, conversation.end_reason, conversation.call_state = (
                "failed",
                "server_restart",
                "ENDED",
            )
        await engine.server.runtime.post_call(conversation_id)

    def scenario(call: PlacedCall) -> Scenario:
        first = twilio.per_number[number] == 1
        return Scenario("human", 0.05, 0.1, on_answer=cut_by_restart if first else engine.answered)

    async with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, scenario=scenario) as twilio:
        settings = settings_for(tmp_path, twilio, campaign_callback_after_cut=callback)
        async with LiveServer(settings) as server, server.client() as client:
            engine.server = server
            agent_id, _ = await make_agent(client)
            retry = {"outcomes": ["failed"], "delay_sec": 0, "max_attempts": 3}
            batch_id = await submit(client, agent_id, [number], retry=retry)

            async def done() -> bool:
                return (await batch(client, batch_id))["status"] == "completed"

            await wait_for(done, 20, "the campaign to complete")
            await asyncio.sleep(0.5)  # a further call would be placed within this
            body = await batch(client, batch_id)
    (recipient,) = body["recipients"]
    got = (recipient["status"], recipient["outcome"], recipient["attempts"], recipient["requeued_reason"])
    assert (*got, twilio.per_number[number]) == expected, recipient
    if heard and not callback:
        assert "not called again" in recipient["error"]


@pytest.mark.asyncio
async def test_calls_per_minute_caps_the_dials_in_any_minute(tmp_path: Path) -> None:
    numbers = [lead(820 + i) for i in range(6)]
    async with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, scenario=lambda c: Scenario("busy", 0.05)) as twilio:
        async with LiveServer(settings_for(tmp_path, twilio)) as server, server.client() as client:
            agent_id, _ = await make_agent(client)
            batch_id = await submit(
                client, agent_id, numbers, target_concurrency_limit=10, calls_per_minute=3
            )
            await asyncio.sleep(2.5)
            body = await batch(client, batch_id)
    assert len(twilio.calls) == 3
    assert sorted(x["status"] for x in body["recipients"]) == ["failed"] * 3 + ["pending"] * 3
    assert body["total_calls_dispatched"] == 3


@pytest.mark.asyncio
async def test_a_restart_mid_campaign_calls_no_one_twice(tmp_path: Path) -> None:
    engine = Engine()
    numbers = [lead(900 + i) for i in range(16)]
    engine.behaviour = {n: "meeting" if i % 2 else "no" for i, n in enumerate(numbers)}

    def scenario(call: PlacedCall) -> Scenario:
        return Scenario("human", ring_sec=0.2, talk_sec=0.8, on_answer=engine.answered)

    async with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, scenario=scenario) as twilio:
        settings = settings_for(tmp_path, twilio)
        async with LiveServer(settings) as server, server.client() as client:
            engine.server = server
            port = server.port
            agent_id, _ = await make_agent(client)
            batch_id = await submit(client, agent_id, numbers, target_concurrency_limit=4)

            async def some_dialled() -> bool:
                return len(twilio.calls) >= 6

            await wait_for(some_dialled, 20, "the first calls")
            engine.server = None  # the service goes down: let answers being written finish first

            async def idle() -> bool:
                return engine.busy == 0

            await wait_for(idle, 10, "answers in flight to be written")
        dialled_before = len(twilio.calls)
        assert dialled_before < len(numbers)
        # The service is down; calls in progress go on at Twilio and their callbacks wait for it.
        await asyncio.sleep(0.5)
        async with LiveServer(settings_for(tmp_path, twilio), port=port) as server, server.client() as client:
            engine.server = server

            async def done() -> bool:
                return (await batch(client, batch_id))["status"] == "completed"

            await wait_for(done, 40, "the campaign to complete after the restart")
            body = await batch(client, batch_id)
        await twilio.settled()
    assert sorted(twilio.per_number.values()) == [1] * len(numbers), twilio.per_number
    assert {x["status"] for x in body["recipients"]} == {"completed"}
    assert sorted(x["outcome"] for x in body["recipients"]) == ["meeting_booked"] * 8 + ["not_interested"] * 8
    assert twilio.max_live <= 4


@pytest.mark.asyncio
async def test_a_claim_left_by_a_crashed_process_is_never_dialled_twice(tmp_path: Path) -> None:
    """Claimed, then the process died: no conversation -> dialled (once); a conversation without a
    call SID (Twilio may have been asked) -> failed, not dialled again; a call SID -> the call is live."""
    async with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, answer=False) as twilio:
        settings = settings_for(tmp_path, twilio, dialer_enabled=False)
        async with LiveServer(settings) as server, server.client() as client:
            agent_id, _ = await make_agent(client)
            numbers = [lead(950 + i) for i in range(3)]
            batch_id = await submit(client, agent_id, numbers)
            db = server.runtime.db
            long_ago = datetime.now(UTC) - timedelta(hours=1)
            async with db.session() as session:
                rows = (
                    await session.scalars(
                        select(CampaignRecipient)
                        .where(CampaignRecipient.campaign_id == batch_id)
                        .order_by(CampaignRecipient.position)
                    )
                ).all()
                for row in rows:
                    row.status, row.attempts, row.claimed_at, row.last_attempt_at = (
                        "dispatched",
                        1,
                        long_ago,
                        long_ago,
                    )
                session.add(
                    Conversation(
                        agent_id=agent_id,
                        direction="outbound",
                        to_number=numbers[1],
                        campaign_id=batch_id,
                        campaign_recipient_id=rows[1].id,
                        created_at=long_ago + timedelta(seconds=1),
                    )
                )
                session.add(
                    Conversation(
                        agent_id=agent_id,
                        direction="outbound",
                        to_number=numbers[2],
                        campaign_id=batch_id,
                        campaign_recipient_id=rows[2].id,
                        call_sid="CA" + "9" * 32,
                        status="in_progress",
                        created_at=long_ago + timedelta(seconds=1),
                    )
                )
        settings = settings_for(tmp_path, twilio)
        async with LiveServer(settings) as server, server.client() as client:

            async def first_redialled() -> bool:
                return twilio.per_number[numbers[0]] == 1

            await wait_for(first_redialled, 10, "the unplaced claim to be dialled")
            await asyncio.sleep(0.5)
            body = await batch(client, batch_id)
    by_number = {x["phone_number"]: x for x in body["recipients"]}
    assert (by_number[numbers[0]]["status"], by_number[numbers[0]]["attempts"]) == ("in_progress", 1)
    assert by_number[numbers[1]]["status"] == "failed" and "not redialled" in by_number[numbers[1]]["error"]
    assert by_number[numbers[2]]["status"] == "in_progress"
    assert twilio.per_number[numbers[1]] == 0 and twilio.per_number[numbers[2]] == 0


# ---------------------------------------------------------------- phone numbers, do-not-call list, tools


def test_numbers_are_parsed_normalised_and_placed_in_time_zones() -> None:
    from telephony.numbers import InvalidPhoneNumber, describe, normalize

    assert normalize("+1 (415) 555-0123") == "+14155550123"
    assert normalize("(415) 555-0123", "US") == "+14155550123"
    assert normalize("+44 20 7183 8750") == "+442071838750"
    info = describe("+12125550123")
    assert (info.region, info.valid, info.time_zones) == ("US", True, ("America/New_York",))
    assert describe("+33 6 12 34 56 78").time_zones == ("Europe/Paris",)
    for bad, why in (
        ("+1555", "too short"),
        ("4155550123", "start it with +"),
        ("+999123456", "unknown country code"),
        ("+4420718387501234", "too long"),
        ("hello", "not a phone number"),
    ):
        with pytest.raises(InvalidPhoneNumber, match=why):
            normalize(bad)


@pytest.mark.asyncio
async def test_numbers_entering_the_api_are_checked_and_normalised(tmp_path: Path) -> None:
    async with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, answer=False) as twilio:
        async with LiveServer(settings_for(tmp_path, twilio)) as server, server.client() as client:
            r = await client.post("/v1/convai/phone-numbers", json={"phone_number": "+1 (415) 555-0177"})
            assert r.status_code == 201 and r.json()["phone_number"] == "+14155550177"
            r = await client.post("/v1/convai/phone-numbers", json={"phone_number": "+1 415 555"})
            assert r.status_code == 422
            assert r.json()["detail"][0]["loc"] == ["body", "phone_number"]
            assert "invalid phone number (E.164 expected)" in r.json()["detail"][0]["msg"]
            r = await client.post("/v1/convai/agents", json={"name": "A", "transfer_number": "555-0100"})
            assert r.status_code == 422 and "start it with +" in r.text
            r = await client.post(
                "/v1/convai/agents", json={"name": "A", "transfer_number": "+1 212-555-0199"}
            )
            assert r.status_code == 201 and r.json()["transfer_number"] == "+12125550199"
            agent_id = r.json()["agent_id"]
            r = await client.post(
                f"/v1/convai/agents/{agent_id}/tools",
                json={"name": "to_sales", "kind": "transfer_call", "config": {"number": "twelve"}},
            )
            assert r.status_code == 422 and "config.number" in r.text
            r = await client.post("/v1/convai/outbound", json={"agent_id": agent_id, "to_number": "+1212"})
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "to_number"]


@pytest.mark.asyncio
async def test_do_not_call_list_crud_and_outbound_calls_refuse_listed_numbers(tmp_path: Path) -> None:
    async with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, answer=False) as twilio:
        async with LiveServer(settings_for(tmp_path, twilio)) as server, server.client() as client:
            agent_id, _ = await make_agent(client)
            r = await client.post(
                "/v1/convai/dnc", json={"phone_number": "+1 212 555 0101", "reason": "asked"}
            )
            assert r.status_code == 201 and r.json()["added"] == 1
            first = r.json()["entries"][0]
            assert (first["phone_number"], first["reason"], first["source"]) == (
                "+12125550101",
                "asked",
                "api",
            )
            r = await client.post(
                "/v1/convai/dnc", json={"phone_numbers": ["+12125550101", "+12125550102", "+12125550103"]}
            )
            assert r.status_code == 201 and r.json()["added"] == 2  # the first was already listed
            assert r.json()["entries"][0]["id"] == first["id"]
            for bad in ({}, {"phone_number": "+12125550104", "phone_numbers": ["+12125550105"]}):
                assert (await client.post("/v1/convai/dnc", json=bad)).status_code == 422
            r = await client.post("/v1/convai/dnc", json={"phone_numbers": ["+12125550106", "nope"]})
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "phone_numbers", 1]

            page = (await client.get("/v1/convai/dnc", params={"page_size": 2})).json()
            assert len(page["entries"]) == 2 and page["has_more"]
            rest = (await client.get("/v1/convai/dnc", params={"cursor": page["next_cursor"]})).json()
            assert {e["phone_number"] for e in page["entries"] + rest["entries"]} == {
                "+12125550101",
                "+12125550102",
                "+12125550103",
            }
            check = (
                await client.get("/v1/convai/dnc/check", params={"phone_number": "+1 (212) 555-0102"})
            ).json()
            assert check["on_list"] and check["phone_number"] == "+12125550102"
            r = await client.get("/v1/convai/dnc/check", params={"phone_number": "bogus"})
            assert r.status_code == 422

            for path, body in (
                ("/v1/convai/outbound", {"agent_id": agent_id, "to_number": "+12125550101"}),
                ("/v1/convai/twilio/outbound-call", {"agent_id": agent_id, "to_number": "+1 212 555 0101"}),
            ):
                body[
                    "dynamic_variables"
                    if path.endswith("outbound")
                    else "conversation_initiation_client_data"
                ] = (
                    {"first_name": "Sam"}
                    if path.endswith("outbound")
                    else {"dynamic_variables": {"first_name": "Sam"}}
                )
                r = await client.post(path, json=body)
                assert r.status_code == 409 and "do-not-call list" in r.json()["detail"], r.text
            assert twilio.calls == {}

            assert (await client.delete(f"/v1/convai/dnc/{first['id']}")).status_code == 204
            assert (await client.delete(f"/v1/convai/dnc/{first['id']}")).status_code == 404
            r = await client.post(
                "/v1/convai/outbound",
                json={
                    "agent_id": agent_id,
                    "to_number": "+12125550101",
                    "dynamic_variables": {"first_name": "Sam"},
                },
            )
            assert r.status_code == 201, r.text
            assert len(twilio.calls) == 1


@pytest.mark.asyncio
async def test_add_to_dnc_tool_lists_the_callee_and_ends_the_call(tmp_path: Path) -> None:
    from providers.base import ToolCall
    from tools.runner import ToolContext

    async with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, answer=False) as twilio:
        async with LiveServer(settings_for(tmp_path, twilio)) as server, server.client() as client:
            agent_id, _ = await make_agent(client)
            runtime = server.runtime
            async with runtime.db.session() as session:
                conversation = Conversation(
                    agent_id=agent_id,
                    direction="outbound",
                    from_number=AGENT_NUMBER,
                    to_number="+12125550142",
                )
                session.add(conversation)
                await session.flush()
                conversation_id = conversation.id
                from models import Agent

                agent = await session.get(Agent, agent_id)
            assert "add_to_dnc" in {s.name for s in runtime.tool_runner.specs_for(agent)}
            # The engine's caller_number of an outbound call is the agent's own number: the tool must not
            # list that one, but the callee.
            ctx = ToolContext(conversation_id, "CA" + "2" * 32, AGENT_NUMBER, "+12125550142")
            outcome = await runtime.tool_runner.execute(
                agent, ToolCall("add_to_dnc", {"reason": "stop calling"}), ctx
            )
            assert outcome.success and outcome.ends_call and outcome.say
            check = (await client.get("/v1/convai/dnc/check", params={"phone_number": "+12125550142"})).json()
            assert check["on_list"] and check["entry"]["source"] == "tool"
            assert (
                check["entry"]["conversation_id"] == conversation_id
                and check["entry"]["reason"] == "stop calling"
            )
            own = (await client.get("/v1/convai/dnc/check", params={"phone_number": AGENT_NUMBER})).json()
            assert not own["on_list"]
            r = await client.post(
                "/v1/convai/outbound",
                json={
                    "agent_id": agent_id,
                    "to_number": "+12125550142",
                    "dynamic_variables": {"first_name": "S"},
                },
            )
            assert r.status_code == 409


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
                recipients=[OutboundCallRecipient(phone_number=numbers[0])],
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
            base = {"call_name": "x", "agent_id": agent_id, "recipients": [{"phone_number": "+12125550100"}]}
            cases: list[tuple[dict[str, Any], int, str]] = [
                ({**base, "agent_id": "agent_nope"}, 404, "agent not found"),
                ({**base, "agent_phone_number_id": "pn_nope"}, 404, "phone number not found"),
                ({**base, "recipients": []}, 422, "recipients"),
                ({**base, "calling_hours": {"start": "17:00", "end": "09:00"}}, 422, "before"),
                ({**base, "calling_hours": {"start": "9am", "end": "17:00"}}, 422, "start"),
                ({**base, "timezone": "Mars/Olympus"}, 422, "unknown time zone"),
                ({**base, "retry": {"outcomes": ["meeting_booked"]}}, 422, "outcomes"),
                ({**base, "calls_per_minute": 0}, 422, "calls_per_minute"),
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


@pytest.mark.asyncio
async def test_two_instances_dialling_one_campaign_call_each_lead_once_within_the_cap(
    tmp_path: Path, postgres: Any
) -> None:
    """Two instances' dialers on one PostgreSQL database work through the same campaign: every lead is
    dialled once, and the campaign's concurrency cap holds across both."""
    engine = Engine()
    numbers = [lead(700 + i) for i in range(16)]
    engine.behaviour = {n: "meeting" if i % 2 else "no" for i, n in enumerate(numbers)}

    def scenario(call: PlacedCall) -> Scenario:
        return Scenario("human", ring_sec=0.2, talk_sec=0.6, on_answer=engine.answered)

    url = await postgres.create_database()
    async with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, scenario=scenario) as twilio:
        shared = {"database_url": url, "multi_instance": False}
        async with (
            LiveServer(settings_for(tmp_path / "a", twilio, instance_id="app-a", **shared)) as a,
            LiveServer(settings_for(tmp_path / "b", twilio, instance_id="app-b", **shared)) as b,
            a.client() as client,
        ):
            engine.server = a
            agent_id, _ = await make_agent(client)
            batch_id = await submit(client, agent_id, numbers, target_concurrency_limit=3)

            async def done() -> bool:
                return (await batch(client, batch_id))["status"] == "completed"

            await wait_for(done, 60, "the campaign to complete")
            body = await batch(client, batch_id)
            assert b.runtime.dialer is not a.runtime.dialer
        await twilio.settled()
    assert sorted(twilio.per_number.values()) == [1] * len(numbers), twilio.per_number
    assert {x["status"] for x in body["recipients"]} == {"completed"}
    assert twilio.max_live <= 3, twilio.max_live


@pytest.mark.asyncio
async def test_a_lost_final_status_callback_is_recovered_from_twilios_api(tmp_path: Path) -> None:
    """Twilio's ``no-answer`` callback never arrives: the dialer looks the call up and retries the lead."""
    numbers = [lead(900 + i) for i in range(2)]
    async with TwilioStandIn(
        ACCOUNT_SID, AUTH_TOKEN, scenario=lambda c: Scenario("no_answer", 0.05, lose_final_callback=True)
    ) as twilio:
        settings = settings_for(tmp_path, twilio, dialer_status_poll_sec=0.5)
        async with LiveServer(settings) as server, server.client() as client:
            agent_id, _ = await make_agent(client)
            batch_id = await submit(
                client,
                agent_id,
                numbers,
                target_concurrency_limit=10,
                retry={"outcomes": ["no_answer"], "delay_sec": 1, "max_attempts": 2},
            )

            async def done() -> bool:
                return (await batch(client, batch_id))["status"] == "completed"

            await wait_for(done, 20, "the campaign to complete without a single final callback")
            body = await batch(client, batch_id)
            async with server.runtime.db.session() as session:
                statuses = (await session.scalars(select(Conversation.status))).all()
    assert all(
        code == 0 for c in twilio.calls.values() for status, code in c.callbacks if status == "no-answer"
    )
    assert {(x["status"], x["outcome"], x["attempts"]) for x in body["recipients"]} == {
        ("failed", "no_answer", 2)
    }
    assert sorted(statuses) == ["no_answer"] * 4
    assert len(twilio.calls) == 4
