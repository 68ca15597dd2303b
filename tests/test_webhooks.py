"""Webhook outbox: signed deliveries, retries with backoff, durability across a restart, URL policy;
several workers on one database (as with several instances) make each delivery attempt once.

Every test that touches the database runs on SQLite and on PostgreSQL (the ``database_url`` fixture).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from events.webhooks import backoff_s, sign, verify
from main import create_app
from tests.conftest import API_KEY, make_settings
from tests.webhook_receiver import WebhookReceiver

SECRET = "whsec_test_secret_0123456789"


class App:
    """The app in-process with its lifespan (so the delivery worker runs), plus an API client."""

    def __init__(self, settings) -> None:  # type: ignore[no-untyped-def]
        self.app = create_app(settings)

    async def __aenter__(self) -> App:
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://t", headers={"xi-api-key": API_KEY}
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        await self._lifespan.__aexit__(None, None, None)

    @property
    def runtime(self):  # type: ignore[no-untyped-def]
        return self.app.state.runtime

    async def emit(self, event_type: str, data: dict) -> str:
        async with self.runtime.db.session() as session:
            event_id = await self.runtime.webhooks.emit(
                session, event_type, data, agent_id=None, conversation_id=None
            )
        self.runtime.webhooks_notify()
        return event_id


async def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def test_signature_round_trip() -> None:
    body = b'{"id":"evt_1"}'
    header = sign(SECRET, body)
    assert verify(SECRET, body, header)
    assert not verify(SECRET, body + b" ", header)
    assert not verify("other", body, header)
    assert not verify(SECRET, body, sign(SECRET, body, timestamp=1))  # replayed long after
    assert not verify(SECRET, body, "garbage")
    assert 1.5 <= backoff_s(1) <= 2.5 and 6 <= backoff_s(3) <= 10


@pytest.mark.asyncio
async def test_signed_delivery_and_subscription_filter(tmp_path: Path, database_url: str) -> None:
    async with (
        WebhookReceiver(SECRET) as receiver,
        App(make_settings(tmp_path, database_url=database_url)) as app,
    ):
        created = await app.client.post(
            "/v1/convai/webhooks",
            json={"url": receiver.url, "events": ["call.started", "tool.executed"], "secret": SECRET},
        )
        assert created.status_code == 201, created.text
        started = await app.emit("call.started", {"conversation_id": "conv_1"})
        skipped = await app.emit("call.completed", {"conversation_id": "conv_1"})
        assert started and skipped is None  # nobody subscribed to call.completed
        await wait_for(lambda: started in receiver.events)
        event = receiver.events[started]
        assert event["type"] == "call.started" and event["data"] == {"conversation_id": "conv_1"}
        assert receiver.bad_signatures == 0
        url = f"/v1/convai/webhooks/{created.json()['id']}/deliveries"
        for _ in range(100):  # the worker records the attempt just after the receiver answered
            deliveries = (await app.client.get(url)).json()
            if deliveries["deliveries"][0]["status"] == "delivered":
                break
            await asyncio.sleep(0.05)
        assert deliveries["deliveries"][0]["status"] == "delivered"
        assert deliveries["deliveries"][0]["last_status_code"] == 200
        assert (await app.client.get("/v1/convai/webhooks/wh_nope/deliveries")).status_code == 404


@pytest.mark.asyncio
async def test_failing_receiver_gets_every_event_once_by_id(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url=database_url, webhook_retry_base_sec=0.05)
    async with WebhookReceiver(SECRET, fail_first=4) as receiver, App(settings) as app:
        config = (
            await app.client.post("/v1/convai/webhooks", json={"url": receiver.url, "secret": SECRET})
        ).json()
        ids = [await app.emit("tool.executed", {"n": i}) for i in range(3)]
        await wait_for(lambda: all(i in receiver.events for i in ids))
        assert set(receiver.deliveries) == set(ids)
        assert all(count == 1 for count in receiver.deliveries.values())
        assert receiver.attempts >= 3 + 4
        for _ in range(100):  # the last attempt is recorded just after the receiver answered
            listed = (await app.client.get(f"/v1/convai/webhooks/{config['id']}/deliveries")).json()[
                "deliveries"
            ]
            if {d["status"] for d in listed} == {"delivered"}:
                break
            await asyncio.sleep(0.05)
        assert {d["status"] for d in listed} == {"delivered"}
        assert max(d["attempts"] for d in listed) >= 2


@pytest.mark.asyncio
async def test_restart_between_event_and_delivery_loses_nothing(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url=database_url, webhook_retry_base_sec=0.05)
    async with WebhookReceiver(SECRET, fail_first=10**6) as receiver:
        async with App(settings) as first:
            await first.client.post("/v1/convai/webhooks", json={"url": receiver.url, "secret": SECRET})
            event_id = await first.emit("call.completed", {"conversation_id": "conv_9"})
            await wait_for(lambda: receiver.attempts >= 1)
        assert not receiver.events  # the first process never got it through
        receiver.fail_first = 0
        async with App(make_settings(tmp_path, database_url=database_url, webhook_retry_base_sec=0.05)):
            await wait_for(lambda: event_id in receiver.events)
        assert receiver.deliveries[event_id] == 1


@pytest.mark.asyncio
async def test_private_urls_are_refused_unless_allowed(tmp_path: Path, database_url: str) -> None:
    from core.net_guard import UnsafeURLError, ensure_public_url

    for url in (
        "http://127.0.0.1/x",
        "http://10.0.0.5/x",
        "http://[::1]/x",
        "http://169.254.169.254/latest",
        "ftp://example.com/x",
        "http://localhost/x",
    ):
        with pytest.raises(UnsafeURLError):
            await ensure_public_url(url, allow_private=False)
    await ensure_public_url("http://127.0.0.1/x", allow_private=True)
    await ensure_public_url("http://93.184.216.34/x", allow_private=False)

    async with (
        WebhookReceiver(SECRET) as receiver,
        App(make_settings(tmp_path, database_url=database_url, webhook_allow_private=False)) as app,
    ):
        config = (
            await app.client.post("/v1/convai/webhooks", json={"url": receiver.url, "secret": SECRET})
        ).json()
        await app.emit("call.failed", {"status": "busy"})
        await wait_for(lambda: False if not app.runtime else True)
        for _ in range(100):
            listed = (await app.client.get(f"/v1/convai/webhooks/{config['id']}/deliveries")).json()[
                "deliveries"
            ]
            if listed and listed[0]["status"] == "dead":
                break
            await asyncio.sleep(0.05)
        assert listed[0]["status"] == "dead" and "refused" in listed[0]["last_error"]
        assert receiver.attempts == 0


@pytest.mark.asyncio
async def test_several_dispatchers_on_one_database_attempt_each_delivery_once(
    tmp_path: Path, database_url: str
) -> None:
    """Three instances' workers share the outbox: every event reaches the receiver once, and with a
    receiver failing at first, every retry is made by one worker only (attempts = events + failures)."""
    from events.webhooks import WebhookDispatcher
    from models import WebhookConfig
    from storage.db import Database

    events, failures = 120, 7
    settings = make_settings(tmp_path, database_url=database_url, webhook_retry_base_sec=0.05)
    async with WebhookReceiver(SECRET, fail_first=failures) as receiver:
        dbs = [Database(database_url) for _ in range(3)]
        await dbs[0].upgrade()
        workers = [WebhookDispatcher(db, settings) for db in dbs]
        ids: list[str | None] = []
        try:
            async with dbs[0].session() as session:
                session.add(WebhookConfig(url=receiver.url, secret=SECRET))
            await asyncio.gather(*(w.start() for w in workers))
            for wave in range(6):  # events arrive while the workers race for them and for the retries
                async with dbs[0].session() as session:
                    for i in range(events // 6):
                        data = {"n": wave * 100 + i}
                        ids.append(
                            await workers[0].emit(
                                session, "tool.executed", data, agent_id=None, conversation_id=None
                            )
                        )
                for worker in workers:
                    worker.notify()
                await asyncio.sleep(0.02)
            await wait_for(lambda: len(receiver.events) == events, timeout=60)
            await asyncio.sleep(0.5)  # a duplicate attempt would arrive within this
        finally:
            for worker in workers:
                await worker.stop()
            for db in dbs:
                await db.dispose()
    assert set(receiver.events) == set(ids)
    assert all(count == 1 for count in receiver.deliveries.values()), receiver.deliveries.most_common(3)
    assert receiver.attempts == events + failures
    assert receiver.bad_signatures == 0
