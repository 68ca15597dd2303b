"""Write-behind for the call path: live calls queue their writes, one task commits them in batches.

A call must not wait on the database between the caller's last word and the agent's first: with a
hundred calls, each turn's own commit queues behind the others on SQLite's single write lock. Here a
turn is queued in microseconds, and whatever has queued meanwhile (every call's turns, state changes
and webhook events) goes into one transaction. Writes stay in submission order, so a call's turns land
in sequence; ``flush()`` (or awaiting a write's future) waits until they are committed.

A failed batch is retried one write per transaction, so one bad write cannot cost the others.

Durability: there is no flush timer. A write joins the next batch, committed as soon as the one before
it is done, so a finished turn is on disk within milliseconds (a batch's commit time, longer only when
the database is slow). A ``kill -9`` loses at most the batch being committed and what queued behind it;
``tests/test_faults_crash.py`` checks that every turn finished 0.5 s or more before a kill is stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from storage.db import Database

log = logging.getLogger(__name__)

Write = Callable[[AsyncSession], Awaitable[Any]]


class BatchWriter:
    MAX_BATCH = 500

    def __init__(self, db: Database, after_commit: Callable[[], None] | None = None) -> None:
        self.db = db
        self._after_commit = after_commit  # e.g. wake the webhook worker for events just committed
        self._queue: asyncio.Queue[tuple[Write, asyncio.Future[Any]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.writes = 0
        self.failures = 0

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="batch-writer")

    def submit(self, write: Write) -> asyncio.Future[Any]:
        """Queue ``write(session)``; the future resolves to its result once committed."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.start()
        self._queue.put_nowait((write, future))
        return future

    async def flush(self) -> None:
        """Wait until everything submitted so far is committed (or has failed and been logged)."""
        marker = self.submit(_nothing)
        await asyncio.shield(marker)

    async def stop(self) -> None:
        if self._task is None:
            return
        await self.flush()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < self.MAX_BATCH:
                batch.append(self._queue.get_nowait())
            try:
                await self._commit(batch)
            except Exception as exc:  # never let the writer die: calls would queue forever
                log.error("batch write failed", extra={"fields": {"error": type(exc).__name__}})

    async def _commit(self, batch: list[tuple[Write, asyncio.Future[Any]]]) -> None:
        results: list[Any] = []
        try:
            async with self.db.session() as session:
                for write, _ in batch:
                    results.append(await write(session))
        except Exception as exc:
            log.warning(
                "batched write failed; retrying one by one",
                extra={"fields": {"error": type(exc).__name__, "writes": len(batch)}},
            )
            for write, future in batch:
                await self._write_one(write, future)
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
            self.batches += 1
            self.writes += len(batch)
        if self._after_commit is not None:
            self._after_commit()

    async def _write_one(self, write: Write, future: asyncio.Future[Any]) -> None:
        try:
            async with self.db.session() as session:
                result = await write(session)
        except Exception as exc:
            self.failures += 1
            # The exception type only: its message can carry row values (transcripts, phone numbers).
            log.error("write failed", extra={"fields": {"error": type(exc).__name__}})
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: nobody may be awaiting a fire-and-forget write
            return
        if not future.done():
            future.set_result(result)


async def _nothing(session: AsyncSession) -> None:
    return None
