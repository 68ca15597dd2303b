"""The live calls of every instance, in the shared database: the ``live_calls`` table.

Each instance's call registry reports the calls it takes and lets go; the rows are written through the
write-behind (in order with the call's other writes, never on the call path) and refreshed every
heartbeat with the call's state. A row whose heartbeat is older than ``STALE_BEATS`` beats belongs to an
instance that died: it is left out of the list, and the instance deletes its own rows when it starts.
With several instances, each heartbeat also closes the calls of a dead instance (``close_lost_calls``):
they end ``failed``/``instance_lost`` and get their post-call (``call.completed``) at once.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from call.registry import ConnectionManager, LiveCall
from models import ConversationTurn, LiveCallRecord
from storage.batch_writer import BatchWriter
from storage.db import Database
from storage.recovery import close_lost_calls
from utils import utcnow

log = logging.getLogger(__name__)

STALE_BEATS = 3


class LiveCallDirectory:
    def __init__(
        self,
        db: Database,
        writer: BatchWriter,
        instance_id: str,
        heartbeat_sec: float,
        close_lost: bool = False,
        instance_url: str | None = None,
    ) -> None:
        self.db = db
        self.close_lost = close_lost  # several instances: close the calls of a dead one
        self.writer = writer
        self.instance_id = instance_id
        self.instance_url = instance_url  # where the other instances reach this one (seat relay)
        self.heartbeat_sec = heartbeat_sec
        self.registry: ConnectionManager | None = None
        self._started: dict[str, datetime] = {}
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ registry hook (sync, on the call path)

    def changed(self, change: str, call: LiveCall) -> None:
        if change == "register":
            self._started[call.call_sid] = now = utcnow()
            row = self._row(call.snapshot(), now, now)
            self.writer.submit(lambda session: _put(session, row))
        else:
            self._started.pop(call.call_sid, None)
            sid, instance = call.call_sid, self.instance_id
            # this instance's row only: a call redirected to a new stream may be on another one by now
            self.writer.submit(lambda session: _remove(session, [sid], instance))

    def _row(self, snap: dict[str, Any], started: datetime, now: datetime) -> dict[str, Any]:
        return {
            "call_sid": snap["call_sid"],
            "instance_id": self.instance_id,
            "instance_url": self.instance_url,
            "conversation_id": snap.get("conversation_id"),
            "agent_id": snap.get("agent_id"),
            "state": str(snap.get("state") or "CALL_START")[:16],
            "agent_speaking": bool(snap.get("agent_speaking")),
            "started_at": started,
            "heartbeat_at": now,
        }

    # ------------------------------------------------------------ heartbeat

    async def start(self, registry: ConnectionManager) -> None:
        self.registry = registry
        async with self.db.session() as session:  # rows a previous run of this instance left behind
            await session.execute(
                delete(LiveCallRecord).where(LiveCallRecord.instance_id == self.instance_id)
            )
        self._task = asyncio.create_task(self._beat(), name="live-calls-heartbeat")

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_sec)
            try:
                await self.heartbeat()
                if self.close_lost:
                    await self.close_lost_calls()
            except Exception as exc:
                log.warning("live-calls heartbeat failed", extra={"fields": {"error": type(exc).__name__}})

    async def heartbeat(self) -> None:
        """Refresh this instance's rows (state, agent, heartbeat) and drop any it no longer has."""
        assert self.registry is not None
        now = utcnow()
        rows = [
            self._row(snap, self._started.get(snap["call_sid"], now), now)
            for snap in self.registry.snapshot()
        ]
        instance = self.instance_id

        async def write(session: AsyncSession) -> None:
            live = {r["call_sid"] for r in rows}
            stored = set(
                (
                    await session.scalars(
                        select(LiveCallRecord.call_sid).where(LiveCallRecord.instance_id == instance)
                    )
                ).all()
            )
            await _remove(session, list(stored - live), instance)
            for row in rows:
                await _put(session, row)

        await self.writer.submit(write)

    async def close_lost_calls(self) -> list[str]:
        assert self.registry is not None
        closed = await close_lost_calls(
            self.db, instance_id=self.instance_id, heartbeat_sec=self.heartbeat_sec
        )
        for conversation_id in closed:  # call.completed, and the dialer frees the lead
            self.registry.schedule_post_call(conversation_id)
        return closed

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        instance = self.instance_id

        async def forget(session: AsyncSession) -> None:
            await session.execute(delete(LiveCallRecord).where(LiveCallRecord.instance_id == instance))

        await asyncio.shield(self.writer.submit(forget))

    # ------------------------------------------------------------ read side

    async def holder(self, conversation_id: str) -> LiveCallRecord | None:
        """The live row of the call (a recent heartbeat): which instance holds it, and where it is."""
        fresh_after = utcnow() - timedelta(seconds=STALE_BEATS * self.heartbeat_sec)
        async with self.db.session() as session:
            return await session.scalar(
                select(LiveCallRecord)
                .where(
                    LiveCallRecord.conversation_id == conversation_id,
                    LiveCallRecord.heartbeat_at >= fresh_after,
                )
                .order_by(LiveCallRecord.started_at.desc())
                .limit(1)
            )

    async def held_elsewhere(self, call_sid: str) -> bool:
        """Another live instance still holds a stream of this call (its row, heartbeat fresh)."""
        fresh_after = utcnow() - timedelta(seconds=STALE_BEATS * self.heartbeat_sec)
        async with self.db.session() as session:
            other = await session.scalar(
                select(LiveCallRecord.instance_id)
                .where(
                    LiveCallRecord.call_sid == call_sid,
                    LiveCallRecord.instance_id != self.instance_id,
                    LiveCallRecord.heartbeat_at >= fresh_after,
                )
                .limit(1)
            )
        return other is not None

    async def list_all(self) -> list[LiveCallRecord]:
        """Every instance's live calls (rows with a recent heartbeat), oldest first."""
        fresh_after = utcnow() - timedelta(seconds=STALE_BEATS * self.heartbeat_sec)
        async with self.db.session() as session:
            return list(
                (
                    await session.scalars(
                        select(LiveCallRecord)
                        .where(LiveCallRecord.heartbeat_at >= fresh_after)
                        .order_by(LiveCallRecord.started_at, LiveCallRecord.call_sid)
                    )
                ).all()
            )

    async def caller_words(self, conversation_ids: list[str], turns: int = 3) -> dict[str, list[str]]:
        """The latest ``turns`` things each caller said (latest first), for the live list's sentiment."""
        if not conversation_ids:
            return {}
        rank = (
            func.row_number()
            .over(partition_by=ConversationTurn.conversation_id, order_by=ConversationTurn.seq.desc())
            .label("rank")
        )
        latest = (
            select(ConversationTurn.conversation_id, ConversationTurn.text, rank)
            .where(
                ConversationTurn.conversation_id.in_(conversation_ids),
                ConversationTurn.role == "user",
                ConversationTurn.text != "",
            )
            .subquery()
        )
        query = select(latest.c.conversation_id, latest.c.text).where(latest.c.rank <= turns)
        words: dict[str, list[str]] = {}
        async with self.db.session() as session:
            for conversation_id, text in (await session.execute(query.order_by(latest.c.rank))).all():
                words.setdefault(conversation_id, []).append(text)
        return words


async def _put(session: AsyncSession, row: dict[str, Any]) -> None:
    await session.merge(LiveCallRecord(**row))


async def _remove(session: AsyncSession, call_sids: list[str], instance_id: str) -> None:
    if call_sids:
        await session.execute(
            delete(LiveCallRecord).where(
                LiveCallRecord.call_sid.in_(call_sids), LiveCallRecord.instance_id == instance_id
            )
        )
