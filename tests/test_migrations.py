"""Alembic migrations: the schema built from an empty file matches models.py, and a database of the first
release upgrades keeping its agents.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from models import Agent, Base
from storage.db import Database
from tests.api_helpers import count

# ---------------------------------------------------------------- migrations


def _schema(sync_conn: Any) -> dict[str, Any]:
    """Tables with their columns, indexes, unique constraints and foreign keys, as the database reports them."""
    insp = inspect(sync_conn)
    return {
        table: {
            "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(table)],
            "indexes": sorted((i["name"], tuple(i["column_names"])) for i in insp.get_indexes(table)),
            "unique": sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(table)),
            "foreign_keys": sorted(
                (tuple(f["constrained_columns"]), f["referred_table"]) for f in insp.get_foreign_keys(table)
            ),
        }
        for table in insp.get_table_names()
    }


def _model_diffs(sync_conn: Any) -> list[Any]:
    return compare_metadata(MigrationContext.configure(sync_conn), Base.metadata)


def _head_revision() -> str:
    from alembic.script import ScriptDirectory

    from storage.db import alembic_config

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None, "the migrations have more than one head"
    return head


@pytest.mark.asyncio
async def test_migrations_build_the_schema_from_an_empty_file(empty_database_url: str) -> None:
    from alembic.script import ScriptDirectory

    from storage.db import alembic_config

    head = ScriptDirectory.from_config(alembic_config(empty_database_url)).get_current_head()
    db = Database(empty_database_url)
    try:
        await db.upgrade()
        async with db.engine.connect() as conn:
            first = await conn.run_sync(_schema)
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
            diffs = await conn.run_sync(_model_diffs)
        assert set(first) == set(Base.metadata.tables) | {"alembic_version"}
        assert version == [head]
        assert diffs == [], "the migrations and models.py disagree"

        await db.upgrade()  # already at head: nothing to do
        async with db.engine.connect() as conn:
            assert await conn.run_sync(_schema) == first
            assert (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars().all() == [
                head
            ]
        # The migrated schema is usable: a row goes in and comes back.
        async with db.session() as session:
            session.add(Agent(name="after migration"))
        assert await count(db, Agent) == 1
    finally:
        await db.dispose()


@pytest.mark.asyncio
async def test_upgrading_a_database_of_the_first_release_keeps_its_agents(tmp_path: Path) -> None:
    from alembic import command

    from storage.db import alembic_config

    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    await asyncio.to_thread(command.upgrade, alembic_config(url), "0001")
    db = Database(url)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO agents (id, name, system_prompt, first_message, language, temperature, "
                    "max_call_duration_sec, silence_timeout_sec, interrupt_enabled, turn_settings, providers, "
                    "builtin_tools, data_collection, extra_config, created_at, updated_at) VALUES ('agent_old', "
                    "'Old', 'p', 'hi', 'en', 0.7, 600, 20, 1, '{}', '{}', '[]', '[]', '{}', "
                    "'2026-11-25 00:00:00', '2026-11-25 00:00:00')"
                )
            )
        await db.upgrade()
        async with db.session() as session:
            agent = await session.get(Agent, "agent_old")
            assert agent is not None and agent.name == "Old" and agent.stt_keywords == []
    finally:
        await db.dispose()


@pytest.mark.asyncio
async def test_0020_moves_latency_bins_onto_their_rows_and_adds_the_agent_level_rows(tmp_path: Path) -> None:
    """A rollup counted before 0020 (a latency bin a row of its own) reads the same after it."""
    from alembic import command

    from storage.analytics import AGENT_LEVEL
    from storage.db import alembic_config

    url = f"sqlite+aiosqlite:///{tmp_path / 'rollup.db'}"
    await asyncio.to_thread(command.upgrade, alembic_config(url), "0017")
    db = Database(url)
    rows = [  # dim, campaign, dim_value, calls, booked: two campaigns, their latency bins
        ("all", "c1", "", 2, 1),
        ("all", "c2", "", 1, 0),
        ("v2v", "c1", "800", 3, 0),
        ("v2v", "c1", "1750", 1, 0),
        ("v2v", "c2", "800", 2, 0),
        ("v2v_agent", "", "800", 5, 0),
    ]
    insert = text(
        "INSERT INTO analytics_rollup (grain, dim, bucket, agent_id, campaign_id, version_id, experiment_id,"
        " dim_value, calls, answered, human, conversations, qualified, booked, call_seconds) VALUES ('h', :dim,"
        " '2026-11-02 10:00:00.000000', 'agent_x', :campaign, :version, '', :value, :calls, 0, 0, 0, 0, :booked, 0)"
    )
    try:
        async with db.engine.begin() as conn:
            for dim, campaign, value, calls, booked in rows:
                version = "" if dim == "v2v_agent" else "agver_1"
                await conn.execute(
                    insert,
                    {
                        "dim": dim,
                        "campaign": campaign,
                        "version": version,
                        "value": value,
                        "calls": calls,
                        "booked": booked,
                    },
                )
        await db.upgrade()
        async with db.engine.connect() as conn:
            found = (
                await conn.execute(
                    text(
                        "SELECT dim, campaign_id, calls, booked, v2v_16, v2v_31 FROM analytics_rollup"
                        " ORDER BY campaign_id, dim"
                    )
                )
            ).all()
        # 800 ms is bin 16 (50 ms wide), 1750 ms bin 31 (250 ms wide from 1.5 s)
        assert [tuple(r) for r in found] == [
            ("all", AGENT_LEVEL, 3, 1, 5, 1),
            ("all", "c1", 2, 1, 3, 1),
            ("all", "c2", 1, 0, 2, 0),
        ]
    finally:
        await db.dispose()
