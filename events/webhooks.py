"""Webhook events with an outbox: durable, signed, retried, visible.

``emit()`` writes the event and one delivery row per subscribed config inside the caller's transaction,
so an event exists exactly when the change it describes does. A background worker delivers due rows:
JSON ``{id, type, created_at, data}``, signed ``X-Signature: t=<unix>,v1=<hex HMAC-SHA256("<t>.<body>")>``,
retried with exponential backoff and jitter until it succeeds or the event is older than the maximum
age. Pending rows survive restarts (at-least-once; receivers dedupe on the event id).

A call's ``call.started``, ``call.completed`` and ``call.failed`` happen once per call: the first emit
sets the conversation's ``*_event_at`` column with a conditional UPDATE (``… WHERE it IS NULL``) and
only the transaction whose UPDATE changed the row records the event. A replayed or retried Twilio
callback, a second post-call run, or another instance on the same database finds it set and emits
nothing. (``call.interrupted`` and ``tool.executed`` happen many times in a call and are not deduped.)
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import time
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import httpx
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from config import Settings
from core.http import read_capped
from core.net_guard import UnsafeURLError, ensure_public_url, guarded_client
from core.sandbox import Sandbox
from models import Conversation, WebhookConfig, WebhookDelivery, WebhookEvent
from storage.db import Database
from utils import utcnow

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 64 * 1024
BATCH = 50

# Events a call has at most once, and the conversation column that records that it was emitted.
ONCE_PER_CALL = {
    "call.started": Conversation.started_event_at,
    "call.completed": Conversation.completed_event_at,
    "call.failed": Conversation.failed_event_at,
}


async def claim_call_event(session: AsyncSession, event_type: str, conversation_id: str) -> bool:
    """True when this transaction is the first to emit ``event_type`` for the call. One conditional
    UPDATE decides: on PostgreSQL a concurrent transaction waits on the row lock, then finds the column
    set and changes nothing; SQLite has a single writer."""
    column = ONCE_PER_CALL[event_type]
    result = await session.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id, column.is_(None))
        .values({column.key: utcnow()})
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 1:  # type: ignore[attr-defined]
        return True
    # Not changed: emitted before, unless there is no such conversation (nothing to dedupe against).
    exists = await session.scalar(select(Conversation.id).where(Conversation.id == conversation_id))
    return exists is None


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify(secret: str, body: bytes, header: str, tolerance_s: int = 300) -> bool:
    """What a receiver does (documented in the README): check the HMAC and the timestamp's freshness."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        t = int(fields["t"])
    except (ValueError, KeyError):
        return False
    expected = sign(secret, body, t).split("v1=", 1)[1]
    return abs(time.time() - t) <= tolerance_s and hmac.compare_digest(expected, fields.get("v1", ""))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


# The longest wait between two attempts. With the defaults (2 s base, 100 attempts, 24 h maximum age) a
# receiver that is down gets retried for about a day, and once back gets everything within ~15 min.
BACKOFF_CAP_S = 900.0


def backoff_s(attempt: int, base_s: float = 2.0) -> float:
    """base·2^(n-1): 2, 4, 8 … s (capped at 15 min), ±25 % jitter so retries do not arrive in lockstep."""
    return min(BACKOFF_CAP_S, base_s * 2.0 ** min(attempt - 1, 30)) * random.uniform(0.75, 1.25)


class Claim(NamedTuple):
    """A delivery attempt this worker owns until ``lease_until``."""

    delivery_id: str
    attempt: int
    lease_until: datetime
    event_id: str
    event_type: str
    created_at: datetime
    data: dict[str, Any]
    url: str
    secret: str


class WebhookDispatcher:
    def __init__(self, db: Database, settings: Settings, sandbox: Sandbox | None = None) -> None:
        self.db = db
        self.settings = settings
        self.sandbox = sandbox  # a scenario-test call's events are recorded there, never delivered
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._stopping = False

    # ------------------------------------------------------------ producer side

    async def emit(
        self,
        session: AsyncSession,
        event_type: str,
        data: dict[str, Any],
        *,
        agent_id: str | None,
        conversation_id: str | None,
    ) -> str | None:
        """Record an event for every active config subscribed to it (in ``session``'s transaction).
        A once-per-call event already emitted for ``conversation_id`` is not recorded again (None)."""
        if conversation_id and event_type in ONCE_PER_CALL:
            if not await claim_call_event(session, event_type, conversation_id):
                log.info(
                    "call event already emitted",
                    extra={"fields": {"type": event_type, "conversation_id": conversation_id}},
                )
                return None
        configs = (
            await session.scalars(
                select(WebhookConfig).where(
                    WebhookConfig.active.is_(True),
                    or_(WebhookConfig.agent_id.is_(None), WebhookConfig.agent_id == agent_id),
                )
            )
        ).all()
        targets = [c for c in configs if not c.events or event_type in c.events]
        sandboxed = self.sandbox.of_conversation(conversation_id) if self.sandbox else None
        if not targets and sandboxed is None:
            return None
        as_json = json.loads(json.dumps(data, default=_json_default))
        if sandboxed is not None:  # a scenario-test call: recorded with the requests it would have made
            body = {"type": event_type, "data": as_json}
            sandboxed.record(
                "webhook_event", event_type, [{"method": "POST", "url": c.url, "body": body} for c in targets]
            )
            return None
        event = WebhookEvent(
            type=event_type, agent_id=agent_id, conversation_id=conversation_id, data=as_json
        )
        session.add(event)
        await session.flush()
        for config in targets:
            session.add(WebhookDelivery(event_id=event.id, webhook_id=config.id))
        return event.id

    def notify(self) -> None:
        self._wake.set()

    # ------------------------------------------------------------ worker

    async def start(self, *, worker: bool = True) -> None:
        """Open the HTTP client and start the delivery worker (``worker=False``: deliveries happen only
        when ``deliver_due()`` is called, e.g. a test moving the clock)."""
        self._client = guarded_client(
            lambda: self.settings.webhook_allow_private,
            timeout=httpx.Timeout(self.settings.webhook_timeout_sec),
            headers={"user-agent": "ai-sdr-webhooks/1.0"},
        )
        if worker:
            self._task = asyncio.create_task(self._run(), name="webhook-worker")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 10)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
        if self._client is not None:
            await self._client.aclose()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                delivered = await self.deliver_due()
            except Exception as exc:
                log.error("webhook worker error", extra={"fields": {"error": type(exc).__name__}})
                delivered = 0
            if delivered >= BATCH:
                continue
            if self._stopping:
                break
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
            except TimeoutError:
                pass

    @property
    def lease_s(self) -> float:
        """How long a claimed attempt is ours: past it (the instance died mid-attempt) anyone may retry."""
        return 2 * self.settings.webhook_timeout_sec + 30.0

    async def claim_due(self, limit: int = BATCH) -> list[Claim]:
        """Take up to ``limit`` due deliveries for this worker, so no other worker attempts them now.

        One statement: the due rows are locked (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so concurrent
        workers on other instances pass over them instead of waiting; SQLite has a single writer, the
        clause is left out) and their next attempt moved to the end of a lease. The lease end is the
        claim's token: the attempt's outcome is recorded only while the row still carries it.
        """
        now = utcnow()
        lease_until = now + timedelta(seconds=self.lease_s)
        due = (
            select(WebhookDelivery.id)
            .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        async with self.db.session() as session:
            claimed = (
                await session.execute(
                    update(WebhookDelivery)
                    .where(WebhookDelivery.id.in_(due))
                    .values(next_attempt_at=lease_until, attempts=WebhookDelivery.attempts + 1)
                    .returning(WebhookDelivery.id, WebhookDelivery.attempts)
                    .execution_options(synchronize_session=False)
                )
            ).all()
            if not claimed:
                return []
            attempts = dict(claimed)
            rows = (
                await session.execute(
                    select(WebhookDelivery.id, WebhookEvent, WebhookConfig.url, WebhookConfig.secret)
                    .join(WebhookEvent, WebhookDelivery.event_id == WebhookEvent.id)
                    .join(WebhookConfig, WebhookDelivery.webhook_id == WebhookConfig.id)
                    .where(WebhookDelivery.id.in_(list(attempts)))
                )
            ).all()
        return [
            Claim(did, attempts[did], lease_until, e.id, e.type, e.created_at, e.data, url, secret)
            for did, e, url, secret in rows
        ]

    async def deliver_due(self) -> int:
        work = await self.claim_due()
        await asyncio.gather(*(self._attempt(claim) for claim in work))
        return len(work)

    async def _attempt(self, claim: Claim) -> None:
        event_id, event_type, created_at, url = claim.event_id, claim.event_type, claim.created_at, claim.url
        data, secret = claim.data, claim.secret
        body = json.dumps(
            {"id": event_id, "type": event_type, "created_at": created_at.isoformat(), "data": data},
            default=_json_default,
            separators=(",", ":"),
        ).encode()
        status_code: int | None = None
        error: str | None = None
        started = time.perf_counter()
        try:
            await ensure_public_url(url, self.settings.webhook_allow_private)
            assert self._client is not None
            async with self._client.stream(
                "POST",
                url,
                content=body,
                headers={
                    "content-type": "application/json",
                    "x-signature": sign(secret, body),
                    "x-event-id": event_id,
                    "x-event-type": event_type,
                },
            ) as response:
                status_code = response.status_code
                # we only need the status; do not let a receiver stream at us
                await read_capped(response, MAX_RESPONSE_BYTES)
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
        except UnsafeURLError as exc:
            error = f"refused: {exc}"
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        ms = round((time.perf_counter() - started) * 1000, 1)
        async with self.db.session() as session:
            delivery = await session.get(WebhookDelivery, claim.delivery_id, with_for_update=True)
            ours = delivery is not None and delivery.next_attempt_at == claim.lease_until
            if delivery is None or not ours or delivery.status != "pending":
                # The lease ran out meanwhile and another worker claimed the row: its outcome counts.
                log.warning("webhook attempt outlived its lease", extra={"fields": {"event_id": event_id}})
                return
            delivery.last_status_code = status_code
            delivery.last_error = error[:500] if error else None
            if error is None:
                delivery.status = "delivered"
                delivery.delivered_at = utcnow()
            else:
                too_old = utcnow() - created_at > timedelta(seconds=self.settings.webhook_max_age_sec)
                out_of_attempts = delivery.attempts >= self.settings.webhook_max_attempts
                if out_of_attempts or too_old or error.startswith("refused"):
                    delivery.status = "dead"
                else:
                    wait = backoff_s(delivery.attempts, self.settings.webhook_retry_base_sec)
                    delivery.next_attempt_at = utcnow() + timedelta(seconds=wait)
            fields = {
                "event_id": event_id,
                "type": event_type,
                "attempt": delivery.attempts,
                "status": delivery.status,
                "code": status_code,
                "ms": ms,
            }
        if error:  # the kind of failure, not the refusal's text (it names the address)
            fields["error"] = "refused" if error.startswith("refused") else error
        log.info("webhook attempt", extra={"fields": fields})
