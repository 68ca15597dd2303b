"""The per-call command channel: a command addressed to a live call reaches the instance holding its stream.

``send(conversation_id, type, payload)`` writes a row to ``call_commands`` (the durable record) and, on
PostgreSQL, ``NOTIFY call_commands, '<conversation id>'`` in the same transaction (delivered at commit).
Each instance ``LISTEN``s on one connection of its own; the instance holding the call (the engine runs
``serve`` for the life of the stream) claims the call's pending commands oldest first, each with one
conditional UPDATE (``consumed_at IS NULL``): a command is handled once, by one instance, in order.
On SQLite (a single instance) ``send`` wakes the serving task in-process. A poll every
``CALL_COMMAND_POLL_SEC`` covers a lost notification or a dropped listener connection, and a command sent
before the stream started (Twilio's verdict can beat the WebSocket) is claimed when ``serve`` starts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, text

from models import CallCommand
from storage.db import Database
from utils import utcnow

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "call_commands"
KEEP_FOR = timedelta(days=1)  # rows older than this are deleted (handled or not: the call is long over)
PURGE_EVERY_S = 600.0


@dataclass(slots=True, frozen=True)
class Command:
    id: int
    conversation_id: str
    type: str
    payload: dict[str, Any]
    created_at: datetime


Handler = Callable[[Command], Awaitable[None]]


class CommandChannel:
    def __init__(self, db: Database, instance_id: str, poll_sec: float = 1.0) -> None:
        self.db = db
        self.instance_id = instance_id
        self.poll_sec = poll_sec
        self.postgres = db.url.startswith("postgresql")
        self._wakes: dict[str, asyncio.Event] = {}  # conversation id -> its serving task's wake-up
        self._listener: Any = None  # asyncpg connection (PostgreSQL)
        self._poller: asyncio.Task[None] | None = None
        self._purged_at = 0.0

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self.postgres:
            await self._listen()
        self._poller = asyncio.create_task(self._poll(), name="call-commands-poll")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None
        if self._listener is not None:
            listener, self._listener = self._listener, None
            try:
                await asyncio.wait_for(listener.close(), 5)
            except Exception:
                listener.terminate()

    async def _listen(self) -> None:
        import asyncpg

        dsn = self.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            listener = await asyncpg.connect(dsn, timeout=10)
            await listener.add_listener(NOTIFY_CHANNEL, self._notified)
        except Exception as exc:  # polling still delivers, a beat later
            log.warning("call commands: LISTEN failed", extra={"fields": {"error": type(exc).__name__}})
            return
        self._listener = listener

    def _notified(self, _connection: Any, _pid: int, _channel: str, conversation_id: str) -> None:
        if (wake := self._wakes.get(conversation_id)) is not None:
            wake.set()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_sec)
            try:
                if self.postgres and (self._listener is None or self._listener.is_closed()):
                    self._listener = None
                    await self._listen()
                await self._wake_pending()
                if time.monotonic() - self._purged_at > PURGE_EVERY_S:
                    self._purged_at = time.monotonic()
                    async with self.db.session() as session:
                        await session.execute(
                            delete(CallCommand).where(CallCommand.created_at < utcnow() - KEEP_FOR)
                        )
            except Exception as exc:
                log.warning("call commands poll failed", extra={"fields": {"error": type(exc).__name__}})

    async def _wake_pending(self) -> None:
        ids = list(self._wakes)
        if not ids:
            return
        async with self.db.session() as session:
            pending = (
                await session.scalars(
                    select(CallCommand.conversation_id)
                    .where(CallCommand.conversation_id.in_(ids), CallCommand.consumed_at.is_(None))
                    .distinct()
                )
            ).all()
        for conversation_id in pending:
            if (wake := self._wakes.get(conversation_id)) is not None:
                wake.set()

    # ------------------------------------------------------------ the two ends

    async def serve(self, conversation_id: str, handlers: Mapping[str, Handler]) -> None:
        """Hand the call's commands (those already waiting too) to ``handlers`` by type, one at a time in
        the order sent, until cancelled: the engine runs this for the life of the call's stream."""
        wake = self._wakes[conversation_id] = asyncio.Event()
        wake.set()
        try:
            while True:
                await wake.wait()
                wake.clear()
                try:
                    while (command := await self.claim(conversation_id)) is not None:
                        await self._handle(command, handlers.get(command.type))
                except Exception as exc:  # the database is away: the poll wakes us again
                    log.warning("call commands not read", extra={"fields": {"error": type(exc).__name__}})
        finally:
            if self._wakes.get(conversation_id) is wake:
                del self._wakes[conversation_id]

    @staticmethod
    async def _handle(command: Command, handler: Handler | None) -> None:
        fields = {"conversation_id": command.conversation_id, "command_id": command.id, "type": command.type}
        if handler is None:
            log.info("call command ignored: this call has no handler for it", extra={"fields": fields})
            return
        try:
            await handler(command)
        except Exception as exc:
            log.warning("call command failed", extra={"fields": {**fields, "error": type(exc).__name__}})

    async def send(self, conversation_id: str, type: str, payload: dict[str, Any] | None = None) -> int:
        """Record a command for the call; the instance holding it (this one or another) acts on it."""
        async with self.db.session() as session:
            row = CallCommand(conversation_id=conversation_id, type=type, payload=dict(payload or {}))
            session.add(row)
            await session.flush()
            if self.postgres:  # delivered to every listener when this transaction commits
                notify = text("SELECT pg_notify(:channel, :id)")
                await session.execute(notify, {"channel": NOTIFY_CHANNEL, "id": conversation_id})
            command_id = row.id
        if (wake := self._wakes.get(conversation_id)) is not None:
            wake.set()
        return command_id

    async def claim(self, conversation_id: str) -> Command | None:
        """The call's oldest pending command, now this instance's (None when none is left to claim).
        Looked up first (a read: no write on the common path, where nothing is waiting), then taken with
        a conditional UPDATE; one another server took first is skipped for the next."""
        table = CallCommand.__table__
        async with self.db.session() as session:
            while True:
                oldest = await session.scalar(
                    select(table.c.id)
                    .where(table.c.conversation_id == conversation_id, table.c.consumed_at.is_(None))
                    .order_by(table.c.id)
                    .limit(1)
                )
                if oldest is None:
                    return None
                claim = (
                    table.update()
                    .where(table.c.id == oldest, table.c.consumed_at.is_(None))
                    .values(consumed_at=utcnow(), consumed_by=self.instance_id)
                    .returning(table.c.type, table.c.payload, table.c.created_at)
                )
                row = (await session.execute(claim)).first()
                if row is not None:
                    break
        return Command(oldest, conversation_id, row.type, dict(row.payload or {}), row.created_at)
