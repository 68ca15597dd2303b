"""Campaign pacing against the Twilio stand-in: retries after the delay up to max attempts, calls that never
reached the agent, the calls-per-minute cap, restarts and crashed claims never dialling anyone twice.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from models import CampaignRecipient, Conversation, ConversationTurn
from tests.campaign_helpers import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    Engine,
    batch,
    lead,
    make_agent,
    settings_for,
    submit,
    wait_for,
)
from tests.conftest import LiveServer
from tests.twilio_standin import PlacedCall, Scenario, TwilioStandIn

# ---------------------------------------------------------------- pacing, retries, restarts


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
async def test_a_person_who_talked_is_dialled_once_even_if_the_llm_calls_it_a_no_answer(
    tmp_path: Path,
) -> None:
    """Outcomes are facts first: a person answered ("Hello?", "What is this about?"), the LLM would file
    it as a no-answer (as the embedded model did), and the retry policy retries no-answers. The facts
    allow no no_answer, so the LLM is not offered it, and the lead is dialled exactly once."""
    from tests.ollama_standin import DEFAULT_MODEL, OllamaStandIn

    server: LiveServer | None = None

    async def talked(call: PlacedCall) -> None:
        assert server is not None
        runtime = server.runtime
        async with runtime.db.session() as session:
            conversation = await session.scalar(select(Conversation).where(Conversation.call_sid == call.sid))
            assert conversation is not None
            for seq, (role, text) in enumerate(
                [("agent", "Hi Sam, this is Ava."), ("user", "Hello?"), ("agent", "Do you have a minute?"),
                 ("user", "What is this about?")]
            ):  # fmt: skip
                session.add(ConversationTurn(conversation_id=conversation.id, seq=seq, role=role, text=text))
            conversation.call_state, conversation_id = "ENDED", conversation.id
        await runtime.post_call(conversation_id)

    number = lead(900)
    async with (
        OllamaStandIn() as ollama,
        TwilioStandIn(
            ACCOUNT_SID, AUTH_TOKEN, scenario=lambda c: Scenario("human", 0.05, 0.1, on_answer=talked)
        ) as twilio,
    ):
        ollama.wishes = {"outcome": "no_answer"}
        settings = settings_for(
            tmp_path, twilio, llm_provider="ollama", ollama_host=ollama.url, ollama_model=DEFAULT_MODEL
        )
        async with LiveServer(settings) as server, server.client() as client:
            agent_id, _ = await make_agent(client)
            batch_id = await submit(
                client,
                agent_id,
                [number],
                retry={"outcomes": ["no_answer"], "delay_sec": 0, "max_attempts": 3},
            )

            async def done() -> bool:
                return (await batch(client, batch_id))["status"] == "completed"

            await wait_for(done, 30, "the campaign to complete")
            await asyncio.sleep(0.5)  # a wrongly scheduled retry (delay 0) would be dialled by now
            [recipient] = (await batch(client, batch_id))["recipients"]
        analyses = [c for c in ollama.chats if c.get("format")]
    assert twilio.per_number[number] == 1
    assert recipient["attempts"] == 1 and recipient["outcome"] == "interested", recipient
    [analysis] = analyses
    assert analysis["format"]["properties"]["outcome"]["enum"] == [
        "interested", "not_interested", "callback_requested"
    ]  # fmt: skip


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
