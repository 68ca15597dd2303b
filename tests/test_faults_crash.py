"""Crash: ``kill -9`` of the service mid-call, then a restart on the same database (``uvicorn main:app``
in a subprocess, SQLite file).

What "a finished turn" means: the engine hands a turn to the store when it ends (a caller turn once it
is confirmed, an agent reply once the caller has heard it); the write-behind (``storage.batch_writer``)
has no timer, it commits each batch as soon as the previous one is done, so a turn is durable within
milliseconds. The test allows ``DURABLE_WITHIN_S`` and checks every turn finished longer ago than that
before the kill. SQLite runs in WAL mode: a committed transaction survives the process being killed.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from providers.instant import TONE_FRAME
from tests.phone_line import PhoneLine
from tests.service_process import ServiceProcess, service_env
from tests.test_multi_instance import eventually, make_agent
from tests.webhook_receiver import WebhookReceiver

NUMBER = "+15550100001"
SECRET = "whsec_crash_0123456789abcdef"
DURABLE_WITHIN_S = 0.5
UTTERANCE = TONE_FRAME * 30  # 0.6 s of "speech" (the echo STT hears it as "caller turn N.")


def stored(db_path: Path) -> dict[str, Any]:
    """What the database holds (read-only, as another process would see it)."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    try:
        return {
            "conversations": db.execute(
                "SELECT id, status, end_reason, call_state, ended_at FROM conversations"
            ).fetchall(),
            "turns": db.execute(
                "SELECT conversation_id, seq, role, text FROM conversation_turns ORDER BY conversation_id, seq"
            ).fetchall(),
            "events": db.execute("SELECT id, type FROM webhook_events ORDER BY created_at").fetchall(),
            "deliveries": db.execute("SELECT event_id, status FROM webhook_deliveries").fetchall(),
            "live_calls": db.execute("SELECT call_sid FROM live_calls").fetchall(),
        }
    finally:
        db.close()


@pytest.mark.asyncio
async def test_kill_9_mid_call_then_restart_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    db_path = tmp_path / "agents.db"
    env = service_env(tmp_path, webhook_retry_base_sec=0.2, log_level="INFO")
    first = ServiceProcess(tmp_path, env)
    seen: dict[tuple[int, str], float] = {}  # (seq, role) -> when the turn was first seen stored

    async with WebhookReceiver(SECRET) as receiver, httpx.AsyncClient(timeout=30) as http:
        receiver.down = True  # down through the crash: call.started is pending when the process dies
        async with first, first.client() as client:
            await make_agent(client)
            hook = await client.post("/v1/convai/webhooks", json={"url": receiver.url, "secret": SECRET})
            assert hook.status_code == 201, hook.text
            line = await PhoneLine(first.base_url, "CA" + "c9" * 16, NUMBER).start(http)

            async def watch() -> None:  # the turns as they become durable, from another process's view
                while True:
                    snapshot = await asyncio.to_thread(stored, db_path)
                    now = time.perf_counter()
                    for _, seq, role, _ in snapshot["turns"]:
                        seen.setdefault((seq, role), now)
                    await asyncio.sleep(0.05)

            watcher = asyncio.create_task(watch())
            await line.wait_reply(1)  # the greeting
            finished: dict[str, float] = {}  # what the caller knows has finished, and when
            for n in (1, 2):
                line.say(UTTERANCE)
                reply = await line.wait_reply(n + 1)
                finished[f"agent {n}"] = reply.last_frame_at
            line.say(UTTERANCE)
            await line.wait_speech_sent()
            while len(line.replies) < 4:  # the third reply has started playing: kill it mid-sentence
                await asyncio.sleep(0.01)
            await asyncio.sleep(1.0)  # of a 2.1 s reply
            assert line.replies[3].last_frame_at > time.perf_counter() - 0.1  # still speaking
            first.proc.kill()  # SIGKILL: no teardown, no drain, no flush
            killed_at = time.perf_counter()
            await first.wait_exit(10)
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await asyncio.wait_for(line.closed_by_server.wait(), 5)
            await line.hang_up()

        at_kill = await asyncio.to_thread(stored, db_path)
        [(conversation_id, status, _, call_state, _)] = at_kill["conversations"]
        assert conversation_id == line.conversation_id and (status, call_state) != ("failed", "ENDED")
        assert at_kill["live_calls"], "the live row of the cut call is left behind"
        pending = [e for e, s in at_kill["deliveries"] if s == "pending"]
        assert pending, "call.started was waiting for the receiver at the kill"

        # Every turn finished long enough before the kill is stored: greeting, 3 caller turns, 2 replies.
        durable = {k for k, at in seen.items() if at < killed_at - DURABLE_WITHIN_S}
        roles = [(seq, role) for _, seq, role, _ in at_kill["turns"]]
        assert roles[:6] == [(0, "agent"), (1, "user"), (2, "agent"), (3, "user"), (4, "agent"), (5, "user")]
        assert durable >= set(roles[:6]), (durable, roles)
        for n in (1, 2):
            assert finished[f"agent {n}"] < killed_at - DURABLE_WITHIN_S
        texts = [text for _, _, _, text in at_kill["turns"]]
        assert texts[1] == "caller turn 1." and texts[3] == "caller turn 2." and texts[5] == "caller turn 3."
        assert texts[2] == "You said: caller turn 1. Anything else?"

        # Restart on the same database (another port: nothing may depend on the old one).
        receiver.down = False
        second = ServiceProcess(tmp_path, dict(env))
        spawned = time.perf_counter()
        async with second, second.client() as client:
            up_s = time.perf_counter() - spawned

            async def closed() -> dict[str, Any] | None:
                body = (await client.get(f"/v1/convai/conversations/{conversation_id}")).json()
                return body if body.get("call_state") == "ENDED" else None

            body = await eventually(closed, timeout=10)
            closed_s = time.perf_counter() - spawned

            async def completed() -> bool:
                return (
                    len(receiver.of_type("call.completed")) == 1
                    and len(receiver.of_type("call.started")) == 1
                )

            await eventually(completed, timeout=15)
            delivered_s = time.perf_counter() - spawned
            await asyncio.sleep(1.0)  # a duplicate would come within this
        assert body["status"] == "failed" and body["metadata"]["termination_reason"] == "server_restart", body
        [recovered] = [
            json.loads(line) for line in second.output().splitlines() if "recovered after an unclean" in line
        ]
        assert recovered["closed"] == 1
        assert "Traceback" not in second.output(), second.output()[-3000:]

        # A third start finds nothing to recover: the call is closed and its event sent exactly once.
        third = ServiceProcess(tmp_path, dict(env))
        async with third:
            await asyncio.sleep(1.5)
        assert "recovered after an unclean stop" not in third.output()

    after = await asyncio.to_thread(stored, db_path)
    [(_, status, end_reason, call_state, ended_at)] = after["conversations"]
    assert (status, end_reason, call_state) == ("failed", "server_restart", "ENDED") and ended_at
    assert after["turns"] == at_kill["turns"]  # nothing lost, nothing added twice
    seqs = [seq for _, seq, _, _ in after["turns"]]
    assert seqs == list(range(len(seqs)))
    assert after["live_calls"] == []
    assert [t for _, t in after["events"]] == ["call.started", "call.completed"]
    assert sorted(s for _, s in after["deliveries"]) == ["delivered", "delivered"]
    assert dict(receiver.deliveries) == {e: 1 for e, _ in after["events"]}  # each event once
    [event] = receiver.of_type("call.completed")
    assert event["data"]["status"] == "failed" and event["data"]["end_reason"] == "server_restart"
    assert [t["text"] for t in event["data"]["transcript"]][:2] == ["Hi, this is Ava.", "caller turn 1."]
    assert receiver.bad_signatures == 0 and receiver.refused >= 1
    print(
        f"\ncrash recovery: {recovered['ms']} ms at start; up {up_s:.2f} s, call closed {closed_s:.2f} s, "
        f"pending + post-call webhooks delivered {delivered_s:.2f} s after restart; "
        f"turns stored {len(after['turns'])}/{len(at_kill['turns'])}, deliveries {len(receiver.deliveries)}"
    )


# ---------------------------------------------------------------- which calls a restart closes


@pytest.mark.asyncio
async def test_recovery_closes_only_this_instances_and_dead_instances_calls(database_url: str) -> None:
    """Several instances on one database: a restarting instance closes the calls its previous run left
    (its id) and those of instances whose heartbeat is stale, never a call another live instance holds;
    two instances recovering at once close each call once. One instance alone closes every open call
    and frees the webhook leases the dead process held."""
    from datetime import timedelta

    from sqlalchemy import select

    from models import Conversation, LiveCallRecord, WebhookConfig, WebhookDelivery, WebhookEvent
    from storage.db import Database
    from storage.recovery import recover
    from utils import utcnow

    db = Database(database_url)
    await db.upgrade()
    now = utcnow()
    old = now - timedelta(seconds=30)
    calls = {  # conversation -> (live row's instance, its last heartbeat, call_state)
        "conv_mine": ("app-1", now, "ACTIVE"),
        "conv_theirs": ("app-2", now, "ACTIVE"),
        "conv_dead": ("app-3", old, "ACTIVE"),
        "conv_ended": ("app-1", now, "ENDED"),
    }
    try:
        async with db.session() as session:
            for cid, (instance, beat, state) in calls.items():
                session.add(
                    Conversation(
                        id=cid, call_sid=f"CA{cid}", status="in_progress", call_state=state,
                        stream_jti=f"jti-{cid}", started_at=old,
                    )
                )  # fmt: skip
                session.add(
                    LiveCallRecord(
                        call_sid=f"CA{cid}", instance_id=instance, conversation_id=cid,
                        started_at=old, heartbeat_at=beat,
                    )
                )  # fmt: skip
            config = WebhookConfig(url="http://127.0.0.1:9/hook", secret="s")
            event = WebhookEvent(type="call.started", data={})
            session.add_all([config, event])
            await session.flush()
            leased = WebhookDelivery(
                event_id=event.id,
                webhook_id=config.id,
                attempts=1,
                next_attempt_at=now + timedelta(seconds=40),
            )
            session.add(leased)

        multi = {"multi_instance": True, "heartbeat_sec": 1.0}
        both = await asyncio.gather(
            recover(db, instance_id="app-1", **multi), recover(db, instance_id="app-1", **multi)
        )
        assert sorted(both[0].closed + both[1].closed) == ["conv_dead", "conv_mine"]  # each once
        assert both[0].leases_released == both[1].leases_released == 0  # others' leases run out alone

        async with db.session() as session:
            rows = {c.id: c for c in (await session.scalars(select(Conversation))).all()}
            live = set((await session.scalars(select(LiveCallRecord.conversation_id))).all())
            delivery = await session.get(WebhookDelivery, leased.id)
        for cid in ("conv_mine", "conv_dead"):
            assert (rows[cid].status, rows[cid].end_reason, rows[cid].call_state) == (
                "failed", "server_restart", "ENDED",
            )  # fmt: skip
            assert rows[cid].ended_at is not None and rows[cid].duration_sec is not None
        assert (rows["conv_theirs"].status, rows["conv_theirs"].call_state) == ("in_progress", "ACTIVE")
        assert rows["conv_ended"].status == "in_progress"  # ended by its own teardown: not ours to touch
        assert live == {"conv_theirs"}
        assert delivery is not None and delivery.next_attempt_at > utcnow()

        alone = await recover(db, instance_id="solo", multi_instance=False, heartbeat_sec=1.0)
        assert alone.closed == ["conv_theirs"] and alone.leases_released == 1
        async with db.session() as session:
            delivery = await session.get(WebhookDelivery, leased.id)
        assert delivery is not None and delivery.next_attempt_at <= utcnow()
    finally:
        await db.dispose()


# ---------------------------------------------------------------- an instance lost while the others go on


@pytest.mark.asyncio
async def test_kill_9_of_one_instance_its_call_is_closed_by_the_survivor_and_the_lead_requeued(
    tmp_path: Path, postgres: Any
) -> None:
    """Two instances on PostgreSQL dial one campaign; the one holding the call is killed (``kill -9``)
    before the lead heard anything. The survivor closes the call once the dead one's heartbeat is stale
    (failed / instance_lost, one ``call.completed``, the live row gone) and the lead, freed at once, is
    called again once without using an attempt."""
    from sqlalchemy import select

    from models import LiveCallRecord
    from storage.db import Database
    from tests.test_campaigns import ACCOUNT_SID, AUTH_TOKEN, lead, submit
    from tests.test_campaigns import make_agent as make_campaign_agent
    from tests.twilio_standin import PlacedCall, Scenario, TwilioStandIn

    heartbeat = 0.5
    number = lead(870)
    lines: dict[str, PhoneLine] = {}  # call sid -> the lead's end of its stream
    stream_port: dict[str, int] = {}

    async def pick_up(call: PlacedCall) -> None:
        assert call.twiml and "<Stream" in call.twiml, call.twiml
        stream_port[call.sid] = int(call.twiml.split("ws://127.0.0.1:", 1)[1].split("/", 1)[0])
        lines[call.sid] = await PhoneLine("", call.sid, number).start(None, twiml=call.twiml)
        if len(lines) > 1:  # the second call: the lead listens a moment, then hangs up
            await asyncio.sleep(1.0)
            await lines[call.sid].hang_up()

    def scenario(call: PlacedCall) -> Scenario:  # nobody speaks, Twilio cannot tell: the agent waits
        return Scenario("human", 0.05, 30.0, on_answer=pick_up, answered_by="unknown")

    url = await postgres.create_database()
    async with (
        TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, scenario=scenario) as twilio,
        WebhookReceiver(SECRET) as receiver,
    ):
        shared = {
            "database_url": url,
            "chroma_host": "127.0.0.1",
            "twilio_account_sid": ACCOUNT_SID,
            "twilio_auth_token": AUTH_TOKEN,
            "twilio_api_base": twilio.url,
            "live_call_heartbeat_sec": heartbeat,
            "dialer_tick_sec": 0.2,
            "dialer_outcome_wait_sec": 2.0,
            "webhook_retry_base_sec": 0.2,
        }
        instances = [
            ServiceProcess(tmp_path / name, service_env(tmp_path / name, instance_id=name, **shared))
            for name in ("app-1", "app-2")
        ]
        await asyncio.gather(*(i.__aenter__() for i in instances))
        try:
            async with instances[0].client() as client:
                agent_id, _ = await make_campaign_agent(client)
                hook = await client.post("/v1/convai/webhooks", json={"url": receiver.url, "secret": SECRET})
                assert hook.status_code == 201, hook.text
                batch_id = await submit(client, agent_id, [number], retry={"max_attempts": 1})

                async def first_call_live() -> str | None:
                    calls = (await client.get("/v1/convai/calls/live")).json()["calls"]
                    return calls[0]["conversation_id"] if calls else None

                first_id = await eventually(first_call_live, timeout=20)
            [first_sid] = lines
            victim = next(i for i in instances if i.port == stream_port[first_sid])
            survivor = next(i for i in instances if i is not victim)
            await asyncio.sleep(1.0)  # the call goes on; the agent waits for someone to speak
            victim.proc.kill()
            killed_at = time.perf_counter()
            await victim.wait_exit(10)

            async with survivor.client() as client:

                async def closed() -> dict[str, Any] | None:
                    body = (await client.get(f"/v1/convai/conversations/{first_id}")).json()
                    return body if body.get("call_state") == "ENDED" else None

                body = await eventually(closed, timeout=15)
                closed_after = time.perf_counter() - killed_at

                async def requeued_and_called_again() -> dict[str, Any] | None:
                    (recipient,) = (await client.get(f"/v1/convai/batch-calling/{batch_id}")).json()[
                        "recipients"
                    ]
                    return recipient if twilio.per_number[number] == 2 and recipient["status"] in (
                        "completed", "failed",
                    ) else None  # fmt: skip

                recipient = await eventually(requeued_and_called_again, timeout=30)

                async def completed_once() -> bool:
                    return any(
                        e["data"]["conversation_id"] == first_id for e in receiver.of_type("call.completed")
                    )

                await eventually(completed_once, timeout=15)
                await asyncio.sleep(1.5)  # a duplicate would come within this
        finally:
            for line in lines.values():
                await line.hang_up()
            await asyncio.gather(*(i.__aexit__() for i in instances))
    db = Database(url)
    try:
        async with db.session() as session:
            rows = (await session.scalars(select(LiveCallRecord.conversation_id))).all()
    finally:
        await db.dispose()
    assert body["status"] == "failed" and body["metadata"]["termination_reason"] == "instance_lost", body
    assert closed_after < 3 * heartbeat + 3.0, closed_after
    mine = [e for e in receiver.of_type("call.completed") if e["data"]["conversation_id"] == first_id]
    assert len(mine) == 1 and receiver.deliveries[mine[0]["id"]] == 1
    assert mine[0]["data"]["end_reason"] == "instance_lost"
    assert first_id not in rows
    assert twilio.per_number[number] == 2  # called again once
    assert (recipient["attempts"], recipient["requeued_reason"]) == (1, "instance_lost"), recipient
    assert "Traceback" not in survivor.output(), survivor.output()[-3000:]
    print(f"\ninstance lost: call closed by the survivor {closed_after:.2f} s after the kill")
