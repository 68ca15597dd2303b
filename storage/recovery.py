"""Start-up recovery after a crash: close the calls a dead process left open, free its webhook leases.

A process killed mid-call (``kill -9``, OOM, power) never runs its call teardown: the conversation stays
open (``call_state`` not ``ENDED``), its post-call event never comes, and the webhook deliveries it had
claimed stay leased. Turns are not at risk: the write-behind commits each one within milliseconds of the
engine handing it over (see ``storage.batch_writer``), so only a turn finished in the last moments
before the kill can be missing.

Which open conversations are "interrupted", i.e. are this restart's to close:

- one instance (``MULTI_INSTANCE`` off, e.g. SQLite): every conversation whose Media Stream was admitted
  (``stream_jti`` set) and that never ended. No other process serves calls on this database, and a
  process that has just started has no call of its own yet.
- several instances: only the calls of the ``live_calls`` rows this instance's id left behind (its
  previous run), and those of rows whose heartbeat is stale (their instance died and may never come
  back). A call another live instance is serving keeps a fresh heartbeat and is never touched.

Closing is one conditional UPDATE per conversation (still not ended): when instances recover at the same
moment, exactly one closes each call, and only that one runs its post-call (``call.completed`` once).
The conversation ends ``failed`` with ``end_reason`` ``server_restart``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update

from models import Conversation, ConversationTurn, LiveCallRecord, WebhookDelivery
from storage.db import Database
from utils import utcnow

log = logging.getLogger(__name__)

END_REASON = "server_restart"
LOST_REASON = "instance_lost"  # closed by a surviving instance while the service went on
LIVE_STATUSES = ("initiated", "ringing", "in_progress")
STALE_BEATS = 3  # as call.live_calls: a row this many beats old belongs to a dead instance


@dataclass
class Recovery:
    closed: list[str] = field(default_factory=list)  # conversation ids closed by this run
    leases_released: int = 0
    seconds: float = 0.0


async def interrupted_conversations(
    db: Database, *, multi_instance: bool, instance_id: str, heartbeat_sec: float
) -> dict[str, datetime | None]:
    """Open conversations this start should close -> the last sign of life of each (or None)."""
    async with db.session() as session:
        if not multi_instance:
            ids = (
                await session.scalars(
                    select(Conversation.id).where(
                        Conversation.stream_jti.is_not(None),
                        Conversation.call_state != "ENDED",
                        Conversation.status.in_(LIVE_STATUSES),
                    )
                )
            ).all()
            beats: dict[str, datetime | None] = dict.fromkeys(ids)
        else:
            stale_before = utcnow() - timedelta(seconds=STALE_BEATS * heartbeat_sec)
            rows = (
                await session.execute(
                    select(LiveCallRecord.conversation_id, LiveCallRecord.heartbeat_at).where(
                        LiveCallRecord.conversation_id.is_not(None),
                        or_(
                            LiveCallRecord.instance_id == instance_id,
                            LiveCallRecord.heartbeat_at < stale_before,
                        ),
                    )
                )
            ).all()
            beats = {cid: beat for cid, beat in rows if cid}
        if not beats:
            return {}
        # The last turn stored is a closer estimate of when the call died than "now".
        last_turns = dict(
            (
                await session.execute(
                    select(ConversationTurn.conversation_id, func.max(ConversationTurn.created_at))
                    .where(ConversationTurn.conversation_id.in_(list(beats)))
                    .group_by(ConversationTurn.conversation_id)
                )
            ).all()
        )
    return {
        cid: max((t for t in (beat, last_turns.get(cid)) if t is not None), default=None)
        for cid, beat in beats.items()
    }


async def close_interrupted(
    db: Database, candidates: dict[str, datetime | None], reason: str = END_REASON
) -> list[str]:
    """Close each still-open conversation as failed with ``reason``; the ids this call closed."""
    closed: list[str] = []
    now = utcnow()
    for conversation_id, last_seen in candidates.items():
        ended_at = min(last_seen, now) if last_seen is not None else now
        async with db.session() as session:
            started = await session.scalar(
                select(Conversation.started_at).where(Conversation.id == conversation_id)
            )
            duration = round((ended_at - started).total_seconds(), 2) if started is not None else None
            result = await session.execute(
                update(Conversation)
                .where(Conversation.id == conversation_id, Conversation.call_state != "ENDED")
                .values(
                    status="failed",
                    end_reason=func.coalesce(Conversation.end_reason, reason),
                    call_state="ENDED",
                    ended_at=ended_at,
                    duration_sec=duration if duration is None else max(0.0, duration),
                )
                .execution_options(synchronize_session=False)
            )
            if result.rowcount == 1:
                closed.append(conversation_id)
    if candidates:
        async with db.session() as session:  # their live rows are history now (whoever closed them)
            await session.execute(
                LiveCallRecord.__table__.delete().where(LiveCallRecord.conversation_id.in_(list(candidates)))
            )
    return closed


async def close_lost_calls(db: Database, *, instance_id: str, heartbeat_sec: float) -> list[str]:
    """Several instances, while running: close the calls of the other instances whose heartbeat went
    stale (killed, OOM, their host gone) as failed/instance_lost, and drop their live rows. Without this
    such a call stays open until some instance restarts. Each is closed once, whoever sweeps with us;
    the caller runs post-call for the ids returned."""
    stale_before = utcnow() - timedelta(seconds=STALE_BEATS * heartbeat_sec)
    async with db.session() as session:
        ids = (
            await session.scalars(
                select(LiveCallRecord.conversation_id).where(
                    LiveCallRecord.conversation_id.is_not(None),
                    LiveCallRecord.instance_id != instance_id,
                    LiveCallRecord.heartbeat_at < stale_before,
                )
            )
        ).all()
    if not ids:
        return []
    candidates = await interrupted_conversations(
        db, multi_instance=True, instance_id=instance_id, heartbeat_sec=heartbeat_sec
    )
    closed = await close_interrupted(db, {cid: candidates.get(cid) for cid in ids}, LOST_REASON)
    if closed:
        log.warning("closed the calls of a lost instance", extra={"fields": {"closed": len(closed)}})
    return closed


async def release_webhook_leases(db: Database) -> int:
    """Make every pending delivery due now. Only for a single instance at start: no other worker can
    hold a lease, and the leases the dead process took would otherwise hold their rows for the whole
    lease time. A delivery waiting out a backoff is retried once early (it stays at-least-once)."""
    now = utcnow()
    async with db.session() as session:
        result = await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at > now)
            .values(next_attempt_at=now)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)


async def recover(db: Database, *, multi_instance: bool, instance_id: str, heartbeat_sec: float) -> Recovery:
    """Run at start, before this instance takes calls. The caller runs post-call for ``closed``."""
    started = time.perf_counter()
    candidates = await interrupted_conversations(
        db, multi_instance=multi_instance, instance_id=instance_id, heartbeat_sec=heartbeat_sec
    )
    result = Recovery()
    result.closed = await close_interrupted(db, candidates)
    if not multi_instance:
        result.leases_released = await release_webhook_leases(db)
    result.seconds = round(time.perf_counter() - started, 3)
    if result.closed or result.leases_released:
        fields = {
            "closed": len(result.closed),
            "leases_released": result.leases_released,
            "ms": round(result.seconds * 1000, 1),
        }
        log.warning("recovered after an unclean stop", extra={"fields": fields})
    return result
