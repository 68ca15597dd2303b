"""The call path's write-behind: order kept, batches committed together, one bad write costs nothing else.

On SQLite and on PostgreSQL (the ``database_url`` fixture)."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from sqlalchemy import select

from models import Agent, Conversation, ConversationTurn
from storage.batch_writer import BatchWriter
from storage.call_store import CallStore, TurnRecord
from storage.db import Database
from tests.conftest import SQLITE_ONLY
from utils import JsonLogFormatter


async def fresh_db(database_url: str) -> tuple[Database, str]:
    db = Database(database_url)
    await db.upgrade()
    async with db.session() as session:
        agent = Agent(name="Ava", system_prompt="Hello.")
        session.add(agent)
        await session.flush()
        conversation = Conversation(agent_id=agent.id, status="in_progress")
        session.add(conversation)
        await session.flush()
        return db, conversation.id


@pytest.mark.asyncio
async def test_turns_of_many_calls_land_in_order_in_few_transactions(database_url: str) -> None:
    db, conversation_id = await fresh_db(database_url)
    writer = BatchWriter(db)
    writer.start()
    try:
        store = CallStore(db, conversation_id, writer=writer)
        seqs = [store.save_turn(TurnRecord("user" if i % 2 else "agent", f"turn {i}")) for i in range(200)]
        assert seqs == list(range(200))  # sequence numbers are assigned at once, before any commit
        store.save_turn(TurnRecord("user", "turn 199, corrected", seq=199))  # an update after the insert
        store.set_state("ACTIVE")
        await store.finish("caller_hung_up")  # waits for everything queued before it
        async with db.session() as session:
            turns = (
                await session.scalars(
                    select(ConversationTurn)
                    .where(ConversationTurn.conversation_id == conversation_id)
                    .order_by(ConversationTurn.seq)
                )
            ).all()
            conversation = await session.get(Conversation, conversation_id)
        assert [t.text for t in turns[:3]] == ["turn 0", "turn 1", "turn 2"]
        assert len(turns) == 200 and turns[-1].text == "turn 199, corrected"
        assert conversation is not None and conversation.call_state == "ENDED"
        assert conversation.end_reason == "caller_hung_up"
        assert writer.batches < 50  # batched, not one commit per write
    finally:
        await writer.stop()
        await db.dispose()


@pytest.mark.asyncio
async def test_a_failing_write_does_not_lose_the_others_in_its_batch(database_url: str) -> None:
    db, conversation_id = await fresh_db(database_url)
    writer = BatchWriter(db)
    writer.start()
    try:
        store = CallStore(db, conversation_id, writer=writer)
        store.save_turn(TurnRecord("user", "before"))

        async def broken(session) -> None:  # type: ignore[no-untyped-def]
            raise RuntimeError("disk on fire")

        failed = writer.submit(broken)
        store.save_turn(TurnRecord("agent", "after"))
        await writer.flush()
        with pytest.raises(RuntimeError):
            await failed
        async with db.session() as session:
            texts = (
                await session.scalars(
                    select(ConversationTurn.text)
                    .where(ConversationTurn.conversation_id == conversation_id)
                    .order_by(ConversationTurn.seq)
                )
            ).all()
        assert list(texts) == ["before", "after"]
        assert writer.failures == 1
    finally:
        await writer.stop()
        await db.dispose()


class _Lines(logging.Handler):
    """Keeps each record as the service's JSON formatter prints it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonLogFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.mark.asyncio
@SQLITE_ONLY
async def test_a_failed_write_is_logged_with_its_error_type(database_url: str) -> None:
    db, _ = await fresh_db(database_url)
    writer = BatchWriter(db)
    handler = _Lines()
    logger = logging.getLogger("storage.batch_writer")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)  # whatever level an earlier test left on the root logger
    try:

        class DiskOnFireError(RuntimeError):
            pass

        async def broken(session) -> None:  # type: ignore[no-untyped-def]
            raise DiskOnFireError("row values that must not reach the log")

        failed = writer.submit(broken)
        await writer.flush()
        with pytest.raises(DiskOnFireError):
            await failed
        entries = [json.loads(line) for line in handler.lines]
        by_msg = {entry["msg"]: entry for entry in entries}
        assert by_msg["write failed"]["error"] == "DiskOnFireError"
        assert by_msg["batched write failed; retrying one by one"]["error"] == "DiskOnFireError"
        assert not any("row values" in line for line in handler.lines)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        await writer.stop()
        await db.dispose()


@pytest.mark.asyncio
async def test_writes_submitted_before_start_are_committed(database_url: str) -> None:
    """A store used outside the running service still persists its writes (the writer starts itself)."""
    db, conversation_id = await fresh_db(database_url)
    store = CallStore(db, conversation_id)
    try:
        store.save_turn(TurnRecord("user", "hello"))
        await asyncio.wait_for(store.flush(), 10)
        async with db.session() as session:
            count = len(
                (
                    await session.scalars(
                        select(ConversationTurn).where(ConversationTurn.conversation_id == conversation_id)
                    )
                ).all()
            )
        assert count == 1
    finally:
        await store.writer.stop()
        await db.dispose()
