"""Several instances of the service on one database: shared configuration checked at start, live calls
visible from every instance, and SIGTERM draining an instance (``uvicorn main:app`` in a subprocess).
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from sqlalchemy import select

from config import ConfigError
from storage.db import Database
from tests.conftest import QUICK_ECHO_VOICE, LiveServer, make_settings
from tests.phone_line import open_stream
from tests.service_process import ServiceProcess, service_env

NUMBER = "+15550100001"
PG_URL = "postgresql+asyncpg://app@127.0.0.1:1/app"  # never connected to: the check comes first
SHARED = ("DATABASE_URL", "JWT_SECRET", "API_KEYS", "CHROMA_HOST", "TWILIO_AUTH_TOKEN")


# ---------------------------------------------------------------- shared configuration


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (
            {"database_url": PG_URL, "jwt_secret": "", "api_keys": ""},
            {"JWT_SECRET", "API_KEYS", "CHROMA_HOST"},
        ),
        ({"database_url": PG_URL, "chroma_host": ""}, {"CHROMA_HOST"}),
        (
            {"database_url": PG_URL, "chroma_host": "chroma", "twilio_account_sid": "AC" + "1" * 32},
            {"TWILIO_AUTH_TOKEN"},
        ),
        ({"multi_instance": True, "chroma_host": "chroma"}, {"DATABASE_URL"}),
        (
            {"instance_id": "app-2", "database_url": PG_URL, "chroma_host": "chroma", "jwt_secret": ""},
            {"JWT_SECRET"},
        ),
    ],
)
def test_several_instances_without_shared_settings_refuse_to_start(
    tmp_path: Path, overrides: dict[str, Any], named: set[str]
) -> None:
    from main import create_app

    settings = make_settings(tmp_path, **{"multi_instance": None, **overrides})
    with pytest.raises(ConfigError) as refused:
        create_app(settings)
    message = refused.value.message
    assert {name for name in SHARED if f"{name} must" in message} == named, message
    assert "test-jwt-secret" not in message and "test-key" not in message  # names, never values


@pytest.mark.asyncio
async def test_shared_settings_or_a_single_instance_on_postgresql_start(
    tmp_path: Path, postgres: Any
) -> None:
    """Settings that pass the check do start and serve: with the shared settings an instance starts as one
    of several (API limits counted in the database); MULTI_INSTANCE=false serves PostgreSQL alone without
    them (limits in memory, a generated key)."""
    from api.rate_limit import SharedTokenBuckets
    from main import create_app

    url = await postgres.create_database()
    shared = make_settings(tmp_path, multi_instance=None, database_url=url, chroma_host="127.0.0.1")
    single = make_settings(tmp_path, multi_instance=False, database_url=url, jwt_secret="", api_keys="")
    for settings, several in ((shared, True), (single, False)):
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                assert (await client.get("/healthz")).status_code == 200
            assert app.state.runtime.settings.is_multi_instance is several
            assert isinstance(app.state.rate_limiter, SharedTokenBuckets) is several
    assert (tmp_path / ".api_key").read_text().strip()  # the single instance generated its key


@pytest.mark.asyncio
async def test_uvicorn_exits_at_start_with_one_message_naming_the_settings(tmp_path: Path) -> None:
    env = service_env(tmp_path, database_url=PG_URL, jwt_secret="", api_keys="", chroma_host="")
    service = ServiceProcess(tmp_path, env)
    proc = service.spawn()
    code = await asyncio.to_thread(proc.wait, 60)
    output = service.output()
    assert code != 0
    assert "JWT_SECRET must be set" in output and "API_KEYS must be set" in output, output
    assert "CHROMA_HOST must be set" in output and "DATABASE_URL is PostgreSQL" in output
    assert "Traceback" not in output, output


# ---------------------------------------------------------------- a call held open by a test


class HeldCall:
    """A Media Stream kept open (silence, marks echoed) until ``hang_up()``: a live call for as long as
    the test needs one."""

    def __init__(self, client: httpx.AsyncClient, call_sid: str) -> None:
        self.client = client
        self.call_sid = call_sid
        self.conversation_id = ""
        self.closed_by_server = asyncio.Event()
        self._ws: Any = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> HeldCall:
        self._ws, self.conversation_id = await open_stream(
            self.client, "/twiml/voice", self.call_sid, "+15550001111", NUMBER
        )
        self._tasks = [asyncio.create_task(self._silence()), asyncio.create_task(self._receive())]
        return self

    async def _silence(self) -> None:
        frame = json.dumps({"event": "media", "media": {"payload": base64.b64encode(b"\xff" * 160).decode()}})
        try:
            while True:
                await self._ws.send(frame)
                await asyncio.sleep(0.02)
        except websockets.ConnectionClosed:
            self.closed_by_server.set()

    async def _receive(self) -> None:
        try:
            async for raw in self._ws:
                msg = json.loads(raw)
                if msg["event"] == "mark":
                    await self._ws.send(json.dumps({"event": "mark", "mark": msg["mark"]}))
        except websockets.ConnectionClosed:
            pass
        self.closed_by_server.set()

    @property
    def open(self) -> bool:
        return not self.closed_by_server.is_set()

    async def hang_up(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self._ws.send(json.dumps({"event": "stop", "stop": {"callSid": self.call_sid}}))
            await self._ws.close()
        except websockets.ConnectionClosed:
            pass


async def make_agent(client: httpx.AsyncClient) -> str:
    agent = await client.post(
        "/v1/convai/agents",
        json={"name": "Ava", "system_prompt": "Hello.", "first_message": "Hi, this is Ava."},
    )
    assert agent.status_code == 201, agent.text
    number = await client.post(
        "/v1/convai/phone-numbers", json={"phone_number": NUMBER, "agent_id": agent.json()["agent_id"]}
    )
    assert number.status_code == 201, number.text
    return agent.json()["agent_id"]


async def eventually(check, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    """Poll ``check()`` (async, returns a value or None) until it returns something."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


# ---------------------------------------------------------------- live calls on every instance


@asynccontextmanager
async def two_instances(
    tmp_path: Path, database_url: str, **settings: Any
) -> AsyncIterator[tuple[LiveServer, LiveServer, httpx.AsyncClient, httpx.AsyncClient]]:
    """Instances app-a and app-b on one PostgreSQL database and the same settings, each with an API
    client (the ChromaDB host is named, as several instances require, but not used)."""
    shared = {"database_url": database_url, "multi_instance": True, "chroma_host": "127.0.0.1", **settings}
    async with (
        LiveServer(make_settings(tmp_path / "a", instance_id="app-a", **shared)) as a,
        LiveServer(make_settings(tmp_path / "b", instance_id="app-b", **shared)) as b,
        a.client() as client_a,
        b.client() as client_b,
    ):
        yield a, b, client_a, client_b


@pytest.mark.asyncio
async def test_live_calls_of_every_instance_are_listed_by_each(tmp_path: Path, postgres: Any) -> None:
    from models import LiveCallRecord
    from utils import utcnow

    url = await postgres.create_database()
    calls = {"live_call_heartbeat_sec": 0.5, "max_concurrent_calls": 5}
    async with two_instances(tmp_path, url, **calls) as (a, b, client_a, client_b):
        agent_id = await make_agent(client_a)
        async with a.runtime.db.session() as session:  # a row left by an instance that died long ago
            old = utcnow() - timedelta(minutes=5)
            session.add(
                LiveCallRecord(call_sid="CAghost", instance_id="app-dead", started_at=old, heartbeat_at=old)
            )
        held = [
            await HeldCall(client_a, "CA" + "a1" * 16).start(),
            await HeldCall(client_b, "CA" + "b1" * 16).start(),
            await HeldCall(client_b, "CA" + "b2" * 16).start(),
        ]
        expected = {
            (h.call_sid, h.conversation_id): inst
            for h, inst in zip(held, ("app-a", "app-b", "app-b"), strict=True)
        }

        async def listed_by(client: httpx.AsyncClient) -> dict[str, Any] | None:
            body = (await client.get("/v1/convai/calls/live")).json()
            got = {(c["call_sid"], c["conversation_id"]): c["instance_id"] for c in body["calls"]}
            agents = {c["agent_id"] for c in body["calls"]}
            return body if got == expected and agents == {agent_id} else None

        for client, here, mine in ((client_a, "app-a", 1), (client_b, "app-b", 2)):
            body = await eventually(lambda client=client: listed_by(client))
            assert body["count"] == 3 and body["instance_id"] == here and body["instance_count"] == mine
            assert body["instances"] == [
                {"instance_id": "app-a", "count": 1},
                {"instance_id": "app-b", "count": 2},
            ]
            assert body["max_concurrent_calls"] == 5 and body["accepting_calls"] is True
            assert all(c["state"] and c["duration_sec"] >= 0 for c in body["calls"])

        # Capacity is per instance: B at its limit refuses, A still takes calls.
        b.runtime.settings.max_concurrent_calls = 2
        refused = await client_b.post("/twiml/voice", data={"CallSid": "CA" + "b3" * 16, "To": NUMBER})
        assert "<Stream" not in refused.text
        accepted = await client_a.post("/twiml/voice", data={"CallSid": "CA" + "a3" * 16, "To": NUMBER})
        assert "<Stream" in accepted.text

        # A draining instance behind the balancer answers 503 before doing anything (nginx then retries
        # on another instance), for the webhook and for the Media Stream alike.
        b.runtime.draining = True
        moved = await client_b.post("/twiml/voice", data={"CallSid": "CA" + "b4" * 16, "To": NUMBER})
        assert moved.status_code == 503 and moved.json()["detail"].startswith("this instance is draining")
        with pytest.raises(websockets.InvalidStatus) as denied:
            await websockets.connect(f"{b.ws_url}/ws/voice/CA{'b5' * 16}")
        assert denied.value.response.status_code == 503
        assert (await client_b.get("/v1/convai/calls/live")).json()["accepting_calls"] is False
        b.runtime.draining = False

        for call in held:
            await call.hang_up()

        async def none_listed() -> bool:
            bodies = [(await c.get("/v1/convai/calls/live")).json() for c in (client_a, client_b)]
            return all(body["count"] == 0 and body["calls"] == [] for body in bodies)

        await eventually(none_listed)
    db = Database(url)  # each instance removed its rows as it stopped; the dead one's stay, ignored
    try:
        async with db.session() as session:
            assert (await session.scalars(select(LiveCallRecord.instance_id))).all() == ["app-dead"]
    finally:
        await db.dispose()


# ---------------------------------------------------------------- SIGTERM drains


@pytest.mark.asyncio
async def test_sigterm_drains_live_calls_then_exits(tmp_path: Path) -> None:
    """``/readyz`` turns 503 at once and new calls are refused; a live call may finish, one that goes on
    past DRAIN_TIMEOUT_SEC is ended then; every turn is in the database when the process exits."""
    drain_s = 4.0
    service = ServiceProcess(tmp_path, service_env(tmp_path, drain_timeout_sec=drain_s))
    async with service, service.client() as client:
        await make_agent(client)
        finishes = await HeldCall(client, "CA" + "d1" * 16).start()
        outlasts = await HeldCall(client, "CA" + "d2" * 16).start()

        async def both_live() -> bool:
            return (await client.get("/v1/convai/calls/live")).json()["count"] == 2

        await eventually(both_live)
        await asyncio.sleep(0.5)  # the greetings are spoken and stored
        assert (await client.get("/readyz")).status_code == 200

        service.sigterm()
        loop = asyncio.get_running_loop()
        signalled = loop.time()

        async def not_ready() -> dict[str, Any] | None:
            r = await client.get("/readyz")
            return r.json() if r.status_code == 503 else None

        body = await eventually(not_ready, timeout=2)
        assert body["checks"]["accepting_calls"] is False
        refused = await client.post("/twiml/voice", data={"CallSid": "CA" + "d3" * 16, "To": NUMBER})
        assert "<Say>" in refused.text and "<Stream" not in refused.text
        await asyncio.sleep(1.0)
        assert finishes.open and outlasts.open and service.running  # live calls go on while draining

        await finishes.hang_up()
        await asyncio.wait_for(outlasts.closed_by_server.wait(), drain_s + 10)
        ended_after = loop.time() - signalled
        await service.wait_exit(30)
    assert drain_s - 0.5 <= ended_after <= drain_s + 5, ended_after
    output = service.output()
    assert "drained" in output and "Traceback" not in output, output[-3000:]

    db = sqlite3.connect(tmp_path / "agents.db")
    try:
        rows = db.execute(
            "SELECT c.call_sid, c.call_state, c.end_reason, COUNT(t.id) FROM conversations c "
            "LEFT JOIN conversation_turns t ON t.conversation_id = c.id GROUP BY c.id"
        ).fetchall()
        live = db.execute("SELECT COUNT(*) FROM live_calls").fetchone()[0]
    finally:
        db.close()
    by_sid = {sid: (state, reason, turns) for sid, state, reason, turns in rows}
    assert by_sid[finishes.call_sid][:2] == ("ENDED", "caller_hung_up"), by_sid
    assert by_sid[outlasts.call_sid][:2] == ("ENDED", "server_shutdown"), by_sid
    assert by_sid[finishes.call_sid][2] >= 1 and by_sid[outlasts.call_sid][2] >= 1  # the greetings
    assert live == 0


# ---------------------------------------------------------------- migrations


@pytest.mark.asyncio
async def test_instances_starting_together_migrate_once(postgres: Any) -> None:
    """Three processes upgrade one empty PostgreSQL database at the same moment (as instances do at start):
    one migrates, the others wait on the migration lock and find the schema at head."""
    import sys

    from alembic.script import ScriptDirectory

    from storage.db import alembic_config
    from tests.conftest import ROOT

    url = await postgres.create_database(migrated=False)
    code = f"from storage.db import upgrade_schema; upgrade_schema({url!r})"
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        for _ in range(3)
    ]
    outputs = [(await asyncio.wait_for(p.communicate(), 120))[0].decode(errors="replace") for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    db = Database(url)
    try:
        async with db.engine.connect() as conn:
            versions = (await conn.exec_driver_sql("SELECT version_num FROM alembic_version")).scalars().all()
    finally:
        await db.dispose()
    assert versions == [ScriptDirectory.from_config(alembic_config(url)).get_current_head()]


# ---------------------------------------------------------------- two instances serving calls


class CrossCaller:
    """A simulator call whose webhook goes to one instance and whose Media Stream goes to another: with a
    balancer in front, any instance may get either."""

    def __new__(cls, webhook_base: str, stream_base: str, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        from simulator.caller import SimulatedCaller

        class _Caller(SimulatedCaller):
            async def _webhook(self, http: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
                url, params = await super()._webhook(http)
                ws_base = webhook_base.replace("http://", "ws://")
                return url.replace(ws_base, stream_base.replace("http://", "ws://")), params

        return _Caller(webhook_base, *args, **kwargs)


@pytest.mark.asyncio
async def test_two_instances_on_one_postgresql_serve_calls_exactly_once(
    tmp_path: Path, postgres: Any, chroma_server: Any
) -> None:
    """Two ``uvicorn main:app`` processes on one PostgreSQL database and one Chroma server; simulator calls
    ring one instance and stream to the other (both ways), concurrently. Every conversation, turn and
    webhook delivery is there exactly once, and each call was live on the instance holding its stream."""
    from simulator.caller import Utterance, frames_of
    from simulator.speech import synthesize_caller
    from tests.webhook_receiver import WebhookReceiver

    secret = "whsec_two_instances_0123456789"
    frames = frames_of(synthesize_caller("Hi, I got your message about the demo."))
    url = await postgres.create_database()
    shared = {
        "database_url": url,
        "chroma_host": chroma_server.host,
        "chroma_port": chroma_server.port,
        "live_call_heartbeat_sec": 0.5,
        "webhook_retry_base_sec": 0.2,
        **QUICK_ECHO_VOICE,
    }
    one = ServiceProcess(tmp_path / "one", service_env(tmp_path / "one", instance_id="app-1", **shared))
    two = ServiceProcess(tmp_path / "two", service_env(tmp_path / "two", instance_id="app-2", **shared))
    async with WebhookReceiver(secret, fail_first=3) as receiver:
        await asyncio.gather(one.__aenter__(), two.__aenter__())
        try:
            async with one.client() as client_one, two.client() as client_two:
                await make_agent(client_one)
                hook = await client_two.post(
                    "/v1/convai/webhooks", json={"url": receiver.url, "secret": secret}
                )
                assert hook.status_code == 201, hook.text

                routes = [(one, two), (two, one), (one, two), (two, one)]
                callers = [
                    CrossCaller(
                        a.base_url, b.base_url, f"CA{i:032d}", NUMBER, [Utterance(frames), Utterance(frames)]
                    )
                    for i, (a, b) in enumerate(routes)
                ]
                seen_live: dict[str, set[str]] = {}

                async def watch_live() -> None:
                    while True:
                        for client in (client_one, client_two):
                            for call in (await client.get("/v1/convai/calls/live")).json()["calls"]:
                                seen_live.setdefault(call["call_sid"], set()).add(call["instance_id"])
                        await asyncio.sleep(0.2)

                watcher = asyncio.create_task(watch_live())
                async with httpx.AsyncClient(timeout=30) as http:
                    results = await asyncio.gather(*(c.run(http) for c in callers))
                watcher.cancel()
                assert [r.error for r in results] == [None] * len(callers)

                conversations = {}
                for caller in callers:
                    conversation_id = caller.result.conversation_id

                    async def ended(client=client_one, cid=conversation_id):  # type: ignore[no-untyped-def]
                        body = (await client.get(f"/v1/convai/conversations/{cid}")).json()
                        return body if body.get("call_state") == "ENDED" else None

                    conversations[caller.call_sid] = await eventually(ended, timeout=20)

                async def all_completed_delivered() -> bool:
                    return len(receiver.of_type("call.completed")) == len(callers)

                await eventually(all_completed_delivered, timeout=30)
                await asyncio.sleep(1.0)  # a duplicate delivery would arrive within this
                listed = (await client_one.get("/v1/convai/conversations", params={"page_size": 100})).json()
        finally:
            await asyncio.gather(one.__aexit__(), two.__aexit__())

    # Conversations: one per call, each ended, its turns in one unbroken sequence.
    assert sorted(c["conversation_id"] for c in listed["conversations"]) == sorted(
        c.result.conversation_id for c in callers
    )
    db = Database(url)
    try:
        async with db.engine.connect() as conn:
            turns = (
                await conn.exec_driver_sql(
                    "SELECT c.call_sid, t.role, t.seq FROM conversation_turns t "
                    "JOIN conversations c ON c.id = t.conversation_id ORDER BY c.call_sid, t.seq"
                )
            ).all()
            leftover_live = (await conn.exec_driver_sql("SELECT COUNT(*) FROM live_calls")).scalar()
    finally:
        await db.dispose()
    for caller in callers:
        seqs = [seq for sid, _, seq in turns if sid == caller.call_sid]
        roles = [role for sid, role, _ in turns if sid == caller.call_sid]
        assert seqs == list(range(len(seqs))), (caller.call_sid, seqs)
        assert roles.count("user") == 2 and roles.count("agent") >= 3, roles  # greeting + two replies
    assert leftover_live == 0

    # Each call was live on the instance that held its stream, as both instances saw it.
    for caller, (_, stream) in zip(callers, routes, strict=True):
        expected = "app-1" if stream is one else "app-2"
        assert seen_live.get(caller.call_sid) == {expected}, seen_live

    # Webhooks: every event once, and every attempt made once (the receiver failed its first 3 requests).
    conversation_ids = {c.result.conversation_id for c in callers}
    for event_type in ("call.started", "call.completed"):
        got = [e["data"]["conversation_id"] for e in receiver.of_type(event_type)]
        assert sorted(got) == sorted(conversation_ids), (event_type, got)
    assert all(count == 1 for count in receiver.deliveries.values()), receiver.deliveries
    assert receiver.attempts == len(receiver.events) + 3
    assert receiver.bad_signatures == 0


@pytest.mark.asyncio
async def test_sigterm_on_one_instance_mid_call_lets_it_finish_while_new_calls_go_to_the_other(
    tmp_path: Path, postgres: Any, chroma_server: Any
) -> None:
    url = await postgres.create_database()
    shared = {"database_url": url, "chroma_host": chroma_server.host, "chroma_port": chroma_server.port}
    one = ServiceProcess(tmp_path / "one", service_env(tmp_path / "one", instance_id="app-1", **shared))
    two = ServiceProcess(tmp_path / "two", service_env(tmp_path / "two", instance_id="app-2", **shared))
    await asyncio.gather(one.__aenter__(), two.__aenter__())
    try:
        async with one.client() as client_one, two.client() as client_two:
            await make_agent(client_two)
            on_one = await HeldCall(client_one, "CA" + "e1" * 16).start()

            async def live_on_one() -> bool:
                calls = (await client_two.get("/v1/convai/calls/live")).json()["calls"]
                return [(c["call_sid"], c["instance_id"]) for c in calls] == [(on_one.call_sid, "app-1")]

            await eventually(live_on_one)
            one.sigterm()

            async def one_draining() -> bool:
                return (await client_one.get("/readyz")).status_code == 503

            await eventually(one_draining, timeout=2)
            # The balancer's view: one answers 503 (it would retry on two); two takes the new call.
            moved = await client_one.post("/twiml/voice", data={"CallSid": "CA" + "e2" * 16, "To": NUMBER})
            assert moved.status_code == 503
            on_two = await HeldCall(client_two, "CA" + "e2" * 16).start()

            async def both_live() -> bool:
                calls = (await client_two.get("/v1/convai/calls/live")).json()["calls"]
                return sorted((c["call_sid"], c["instance_id"]) for c in calls) == [
                    (on_one.call_sid, "app-1"),
                    (on_two.call_sid, "app-2"),
                ]

            await eventually(both_live)
            assert on_one.open and one.running  # the call on the draining instance goes on
            await on_one.hang_up()
            await one.wait_exit(30)  # its last call ended: it exits without waiting for the limit
            assert on_two.open
            await on_two.hang_up()

            async def ended(cid: str) -> dict[str, Any] | None:
                body = (await client_two.get(f"/v1/convai/conversations/{cid}")).json()
                return body if body.get("call_state") == "ENDED" else None

            for call in (on_one, on_two):
                body = await eventually(lambda call=call: ended(call.conversation_id))
                assert body["metadata"]["termination_reason"] == "caller_hung_up", body["metadata"]
    finally:
        await asyncio.gather(one.__aexit__(), two.__aexit__())
    assert "drained" in one.output() and "Traceback" not in one.output()


# ---------------------------------------------------------------- the rate limit, shared


@pytest.mark.asyncio
async def test_shared_buckets_refill_and_spend_like_the_in_memory_ones(tmp_path: Path, postgres: Any) -> None:
    """The database bucket (SQLite and PostgreSQL upserts) behaves as ``TokenBuckets`` does."""
    from api.rate_limit import SharedTokenBuckets

    for url in (f"sqlite+aiosqlite:///{tmp_path / 'rate.db'}", await postgres.create_database()):
        db = Database(url)
        await db.upgrade()
        now = [1000.0]
        buckets = SharedTokenBuckets(db, per_minute=60, burst=5, clock=lambda now=now: now[0])
        try:
            assert [await buckets.take("a") for _ in range(5)] == [0.0] * 5
            assert await buckets.take("a") == pytest.approx(1.0)  # one token a second: the next in 1 s
            assert await buckets.take("b") == 0.0  # another key has its own bucket
            now[0] += 0.5
            assert await buckets.take("a") == pytest.approx(0.5)  # a refusal spends nothing
            now[0] += 0.5
            assert await buckets.take("a") == 0.0 and await buckets.take("a") > 0
            now[0] -= 0.2  # another instance's clock, a little behind: no negative refill
            assert await buckets.take("a") == pytest.approx(1.0)
            now[0] += 100.0  # a long pause refills up to the burst, not beyond
            assert sum([await buckets.take("a") == 0.0 for _ in range(10)]) == 5
            assert await buckets.take("sub:" + "x" * 200) == 0.0  # a long caller name is hashed
        finally:
            await db.dispose()


@pytest.mark.asyncio
async def test_a_key_gets_the_limit_once_across_instances(tmp_path: Path, postgres: Any) -> None:
    """Two instances behind a balancer: 5 requests in a burst in all, not 5 per instance."""
    url = await postgres.create_database()
    # One token every 10 s: none comes back during the test.
    limit = {"api_rate_limit_per_min": 6, "api_rate_limit_burst": 5}
    async with two_instances(tmp_path, url, **limit) as (_, _, client_a, client_b):
        codes = [(await (client_a, client_b)[i % 2].get("/v1/convai/agents")).status_code for i in range(8)]
        assert codes == [200] * 5 + [429] * 3, codes
        refused = await client_a.get("/v1/convai/agents")
        assert refused.status_code == 429 and "rate limit exceeded" in refused.json()["detail"]
        assert int(refused.headers["Retry-After"]) >= 1
