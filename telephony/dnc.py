"""The do-not-call list: numbers (E.164) that no outbound call or campaign may dial."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.phone_numbers import InvalidPhoneNumber, normalize
from models import DncEntry

MAX_IMPORT_ROWS = 50_000
MAX_IMPORT_ERRORS = 1000
NUMBER_COLUMNS = ("phone_number", "phone", "number", "phone number", "to_number")


class DncImportFileError(ValueError):
    """The file as a whole cannot be imported (not UTF-8, no number column, too many rows); safe to return."""


@dataclass
class ParsedImport:
    numbers: dict[str, str] = field(default_factory=dict)  # E.164 -> its row's reason ("" = the default)
    rows: int = 0
    duplicates: int = 0
    errors: list[tuple[int, str, str]] = field(default_factory=list)  # (line, value, why)
    invalid: int = 0


def _is_number(text: str, default_region: str | None) -> bool:
    try:
        normalize(text.strip(), default_region)
    except InvalidPhoneNumber:
        return False
    return True


def parse_import_csv(data: bytes, default_region: str | None = None) -> ParsedImport:
    """Numbers from a CSV, each normalised as the API does (``core.phone_numbers.normalize``).

    A header row names the number's column (phone_number, phone, number …) and optionally ``reason``;
    a file without a header (its first cell is a phone number) is one number per line, first column.
    Row problems are reported per line; only a file that cannot be read at all raises. CPU work: callers
    on the event loop run it in a thread."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DncImportFileError("the CSV must be UTF-8 text") from None
    try:
        lines = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise DncImportFileError(f"the CSV cannot be read: {exc}") from None
    start, column, reason_column = 0, 0, None
    first = next((row for row in lines if any(cell.strip() for cell in row)), None)
    if first is None:
        raise DncImportFileError("the CSV is empty")
    header = [cell.strip().lower() for cell in first]
    if not _is_number(first[0], default_region):
        found = [i for i, name in enumerate(header) if name in NUMBER_COLUMNS]
        if not found:
            raise DncImportFileError(
                "the CSV needs a phone_number column (a header row naming it), or one number per line"
            )
        column = found[0]
        reason_column = header.index("reason") if "reason" in header else None
        start = lines.index(first) + 1
    parsed = ParsedImport()
    for line, row in enumerate(lines[start:], start=start + 1):
        if not any(cell.strip() for cell in row):
            continue
        parsed.rows += 1
        if parsed.rows > MAX_IMPORT_ROWS:
            raise DncImportFileError(f"the CSV has more than {MAX_IMPORT_ROWS} numbers")
        raw = row[column].strip() if column < len(row) else ""
        try:
            number = normalize(raw, default_region)
        except InvalidPhoneNumber as exc:
            parsed.invalid += 1
            if len(parsed.errors) < MAX_IMPORT_ERRORS:
                parsed.errors.append((line, raw[:64], str(exc)[:300]))
            continue
        if number in parsed.numbers:
            parsed.duplicates += 1
            continue
        reason = row[reason_column].strip() if reason_column is not None and reason_column < len(row) else ""
        parsed.numbers[number] = reason[:500]
    if parsed.rows == 0:
        raise DncImportFileError("the CSV has no numbers")
    return parsed


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
    reasons: dict[str, str] | None = None,
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
                phone_number=number,
                reason=(reasons or {}).get(number) or reason,
                source=source,
                conversation_id=conversation_id,
            )
            session.add(entry)
            added += 1
        entries.append(entry)
    await session.flush()
    return entries, added
