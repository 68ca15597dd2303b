"""Portable INSERT … ON CONFLICT for PostgreSQL and SQLite (both speak it; SQLAlchemy has one per dialect)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession


def _insert(session: AsyncSession) -> Any:
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


async def insert_ignoring_conflict(
    session: AsyncSession, model: Any, values: dict[str, Any], keys: list[str]
) -> bool:
    """INSERT … ON CONFLICT (keys) DO NOTHING; True if the row went in."""
    stmt = _insert(session)(model).values(**values).on_conflict_do_nothing(index_elements=keys)
    result = await session.execute(stmt)
    return bool(result.rowcount)


async def upsert_adding(
    session: AsyncSession, model: Any, rows: list[dict[str, Any]], keys: list[str], measures: list[str]
) -> None:
    """One INSERT of every row; a row whose key exists adds its measures to the stored ones."""
    if not rows:
        return
    stmt = _insert(session)(model).values(rows)
    table = model.__table__
    stmt = stmt.on_conflict_do_update(
        index_elements=keys, set_={m: table.c[m] + stmt.excluded[m] for m in measures}
    )
    await session.execute(stmt)
