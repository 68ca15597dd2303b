"""The do-not-call list: numbers (E.164) that no outbound call or campaign may dial."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models import DncEntry


async def on_list(session: AsyncSession, phone_number: str) -> DncEntry | None:
    return await session.scalar(select(DncEntry).where(DncEntry.phone_number == phone_number))


async def numbers_on_list(session: AsyncSession, numbers: Iterable[str]) -> set[str]:
    wanted = sorted(set(numbers))
    found: set[str] = set()
    for start in range(0, len(wanted), 500):  # stay under SQLite's bound-parameter limit
        chunk = wanted[start : start + 500]
        found.update(
            (
                await session.scalars(select(DncEntry.phone_number).where(DncEntry.phone_number.in_(chunk)))
            ).all()
        )
    return found


async def add(
    session: AsyncSession,
    numbers: Iterable[str],
    *,
    reason: str = "",
    source: str = "api",
    conversation_id: str | None = None,
) -> tuple[list[DncEntry], int]:
    """Put normalised numbers on the list; a number already there keeps its entry. (entries, how many new)"""
    ordered = list(dict.fromkeys(numbers))
    existing = {
        e.phone_number: e
        for start in range(0, len(ordered), 500)
        for e in (
            await session.scalars(
                select(DncEntry).where(DncEntry.phone_number.in_(ordered[start : start + 500]))
            )
        ).all()
    }
    entries: list[DncEntry] = []
    added = 0
    for number in ordered:
        entry = existing.get(number)
        if entry is None:
            entry = DncEntry(
                phone_number=number, reason=reason, source=source, conversation_id=conversation_id
            )
            session.add(entry)
            added += 1
        entries.append(entry)
    await session.flush()
    return entries, added
