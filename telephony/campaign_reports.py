"""Reading a campaign as people watch it: progress at a glance with the expected finish time, the lead
list filtered a page at a time, and a CSV export of the leads with their outcomes."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from models import Campaign, CampaignRecipient, Conversation
from schemas import BatchRecipientPage, CampaignProgress
from telephony.calling_hours import next_opening
from telephony.campaigns import ACTIVE_STATUSES, FINAL_STATUSES, recipient_response, unix

REACHED_OUTCOMES = ("meeting_booked", "interested", "not_interested", "callback_requested", "unknown")
PACE_WINDOW = timedelta(minutes=10)
MIN_PACE_WINDOW = timedelta(seconds=1)
HORIZON = timedelta(days=31)
STEP = timedelta(minutes=5)
MAX_ZONE_GROUPS = 24


# ---------------------------------------------------------------- progress


async def progress(session: AsyncSession, campaign: Campaign, now: datetime) -> CampaignProgress:
    rows = (
        await session.execute(
            select(
                CampaignRecipient.status,
                CampaignRecipient.outcome,
                CampaignRecipient.attempts,
                CampaignRecipient.time_zones,
            ).where(CampaignRecipient.campaign_id == campaign.id)
        )
    ).all()
    by_status: Counter[str] = Counter()
    by_outcome: Counter[str] = Counter()
    zones: Counter[tuple[str, ...]] = Counter()
    dialled = retrying = 0
    for status, outcome, attempts, time_zones in rows:
        by_status[status] += 1
        if outcome:
            by_outcome[outcome] += 1
        dialled += attempts > 0
        if status in ACTIVE_STATUSES:
            zones[tuple(time_zones or ())] += 1
            retrying += status == "pending" and attempts > 0
    left = sum(zones.values())
    pace = await _pace(session, campaign, now)
    hours = _hours(campaign)
    open_now: bool | None = None
    opens: datetime | None = None
    if hours is not None and left:
        openings = [o for o in (next_opening(now, list(z), *hours) for z in zones) if o is not None]
        open_now = bool(openings) and min(openings) <= now
        opens = None if open_now or not openings else min(openings)
    finish = None
    if campaign.status in ("pending", "in_progress") and left and pace:
        finish = expected_finish(now, zones, left, pace, hours)
    return CampaignProgress(
        id=campaign.id,
        status=campaign.status,
        total=len(rows),
        finished=sum(by_status[s] for s in FINAL_STATUSES),
        dialled=dialled,
        calling_now=by_status["dispatched"] + by_status["in_progress"],
        reached=sum(by_outcome[o] for o in REACHED_OUTCOMES),
        booked=by_outcome["meeting_booked"],
        retrying=retrying,
        left=left,
        by_status=dict(sorted(by_status.items())),
        by_outcome=dict(sorted(by_outcome.items())),
        pace_per_min=round(pace, 2) if pace else None,
        calling_hours_open=open_now,
        next_opening_unix=unix(opens),
        expected_finish_unix=unix(finish),
    )


def _hours(campaign: Campaign) -> tuple[str, str, list[int]] | None:
    if not (campaign.calling_hours_start and campaign.calling_hours_end):
        return None
    return campaign.calling_hours_start, campaign.calling_hours_end, list(campaign.calling_days or [])


async def _pace(session: AsyncSession, campaign: Campaign, now: datetime) -> float | None:
    """Leads finished per minute since the campaign started calling, over the last 10 minutes at most.
    Leads skipped before dialling (do-not-call, invalid, duplicate) and cancelled ones are not pace."""
    started = await session.scalar(
        select(func.min(Conversation.created_at)).where(Conversation.campaign_id == campaign.id)
    )
    if started is None:
        return None
    since = max(now - PACE_WINDOW, started)
    if now - since < MIN_PACE_WINDOW:
        return None
    done = await session.scalar(
        select(func.count())
        .select_from(CampaignRecipient)
        .where(
            CampaignRecipient.campaign_id == campaign.id,
            CampaignRecipient.status.in_(("completed", "voicemail", "failed")),
            CampaignRecipient.updated_at >= since,
        )
    )
    minutes = (now - since).total_seconds() / 60
    return (int(done or 0) / minutes) or None


def expected_finish(
    now: datetime,
    zones: Counter[tuple[str, ...]],
    left: int,
    pace_per_min: float,
    hours: tuple[str, str, Sequence[int]] | None,
) -> datetime | None:
    """When ``left`` leads are done at ``pace_per_min``, dialling each zone group only inside its calling
    hours (a group waits while its hours are closed; the pace is shared by the groups that are open)."""
    if hours is None:
        return now + timedelta(minutes=left / pace_per_min)
    groups = [[list(z), n] for z, n in zones.most_common(MAX_ZONE_GROUPS)]
    groups[0][1] += left - sum(n for _, n in groups)  # the rare zones ride with the biggest group
    start, end, days = hours
    moment = now
    per_step = pace_per_min * STEP.total_seconds() / 60
    while moment - now < HORIZON:
        waiting = [g for g in groups if g[1] > 0]
        if not waiting:
            return moment
        openings = [next_opening(moment, g[0], start, end, days) for g in waiting]
        open_groups = [g for g, o in zip(waiting, openings, strict=True) if o == moment]
        if not open_groups:
            future = [o for o in openings if o is not None]
            if not future:
                return None  # the waiting leads' hours never open
            moment = min(future)
            continue
        budget = per_step
        for group in open_groups:
            used = min(group[1], budget)
            group[1] -= used
            budget -= used
        if all(g[1] <= 0 for g in groups):
            spent = per_step - budget  # the last step was only partly needed
            return moment + timedelta(minutes=spent / pace_per_min)
        moment += STEP
    return None


# ---------------------------------------------------------------- the lead list


async def recipients_page(
    session: AsyncSession,
    campaign: Campaign,
    *,
    status: str | None,
    outcome: str | None,
    search: str | None,
    cursor: int,
    page_size: int,
) -> BatchRecipientPage:
    stmt = select(CampaignRecipient).where(CampaignRecipient.campaign_id == campaign.id)
    if status:
        stmt = stmt.where(CampaignRecipient.status == status)
    if outcome:
        stmt = stmt.where(
            CampaignRecipient.outcome.is_(None) if outcome == "none" else CampaignRecipient.outcome == outcome
        )
    digits = "".join(ch for ch in search or "" if ch.isdigit())
    if digits:
        stmt = stmt.where(CampaignRecipient.phone_number.contains(digits, autoescape=True))
    total = await session.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = list(
        (
            await session.scalars(
                stmt.where(CampaignRecipient.position >= cursor)
                .order_by(CampaignRecipient.position)
                .limit(page_size + 1)
            )
        ).all()
    )
    has_more = len(rows) > page_size
    return BatchRecipientPage(
        recipients=[recipient_response(r) for r in rows[:page_size]],
        total=int(total or 0),
        has_more=has_more,
        next_cursor=str(rows[page_size].position) if has_more else None,
    )


# ---------------------------------------------------------------- CSV export

EXPORT_COLUMNS = [
    "phone_number",
    "status",
    "outcome",
    "attempts",
    "last_attempt_at",
    "conversation_id",
    "summary",
    "error",
]
_NUMBER_LIKE = re.compile(r"^[+\-]?[\d\s().-]*$")


def _cell(value: Any) -> str:
    """A spreadsheet must not run a lead's text as a formula (=, @, +, - …): such cells get a leading '."""
    text = "" if value is None else str(value)
    if text[:1] in ("=", "@", "\t", "\r") or (text[:1] in ("+", "-") and not _NUMBER_LIKE.match(text)):
        return "'" + text
    return text


async def export_rows(
    session: AsyncSession, campaign: Campaign
) -> list[tuple[CampaignRecipient, str | None]]:
    return [
        (row, summary)
        for row, summary in (
            await session.execute(
                select(CampaignRecipient, Conversation.summary)
                .outerjoin(Conversation, Conversation.id == CampaignRecipient.conversation_id)
                .where(CampaignRecipient.campaign_id == campaign.id)
                .order_by(CampaignRecipient.position)
            )
        ).all()
    ]


def export_csv(rows: list[tuple[CampaignRecipient, str | None]]) -> str:
    """One line per lead: its outcome and call, then every variable it was given (the CSV's own columns)."""
    variables = list(dict.fromkeys(k for row, _ in rows for k in (row.dynamic_variables or {})))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([*EXPORT_COLUMNS, *(v for v in variables if v not in EXPORT_COLUMNS)])
    for row, summary in rows:
        values = {
            "phone_number": row.phone_number,
            "status": row.status,
            "outcome": row.outcome,
            "attempts": row.attempts,
            "last_attempt_at": row.last_attempt_at.isoformat() if row.last_attempt_at else "",
            "conversation_id": row.conversation_id,
            "summary": summary,
            "error": row.error,
        }
        extra = row.dynamic_variables or {}
        writer.writerow(
            [_cell(values[c]) for c in EXPORT_COLUMNS]
            + [_cell(extra.get(v)) for v in variables if v not in EXPORT_COLUMNS]
        )
    return out.getvalue()


def export_filename(campaign: Campaign) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", campaign.name).strip("-")[:60] or "campaign"
    return f"{stem}-{campaign.id}.csv"
