"""Reading a campaign as people watch it: progress at a glance with the expected finish time, the lead
list filtered a page at a time, and a CSV export of the leads with their outcomes."""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import json
import re
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from models import Agent, Campaign, CampaignRecipient, Conversation
from schemas import BatchRecipientPage, CampaignProgress
from telephony.calling_hours import hm, next_opening, zone
from telephony.campaigns import ACTIVE_STATUSES, FINAL_STATUSES, recipient_response, to_response, unix

REACHED_OUTCOMES = ("meeting_booked", "interested", "not_interested", "callback_requested", "unknown")
PACE_WINDOW = timedelta(minutes=10)
MIN_PACE_WINDOW = timedelta(seconds=1)
HORIZON = timedelta(days=31)
MAX_ZONE_GROUPS = 24


# ---------------------------------------------------------------- progress


async def progress(session: AsyncSession, campaign: Campaign, now: datetime) -> CampaignProgress:
    by_status: Counter[str] = Counter()
    by_outcome: Counter[str] = Counter()
    dialled = retrying = 0
    counted = (
        select(CampaignRecipient.status, CampaignRecipient.outcome, CampaignRecipient.attempts, func.count())
        .where(CampaignRecipient.campaign_id == campaign.id)
        .group_by(CampaignRecipient.status, CampaignRecipient.outcome, CampaignRecipient.attempts)
    )
    for status, outcome, attempts, count in (await session.execute(counted)).all():
        by_status[status] += count
        if outcome:
            by_outcome[outcome] += count
        dialled += count if attempts else 0
        retrying += count if attempts and status == "pending" else 0
    # The zones of the leads still to call: what the calling hours apply to (grouped as stored JSON text).
    zones_text = cast(CampaignRecipient.time_zones, String)
    zones: Counter[tuple[str, ...]] = Counter()
    for text, count in (
        await session.execute(
            select(zones_text, func.count())
            .where(
                CampaignRecipient.campaign_id == campaign.id,
                CampaignRecipient.status.in_(ACTIVE_STATUSES),
            )
            .group_by(zones_text)
        )
    ).all():
        zones[tuple(json.loads(text) or ()) if text else ()] += count
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
        # A walk through the calling hours of up to a month, per zone group: CPU work, off the loop.
        finish = await asyncio.to_thread(expected_finish, now, zones, left, pace, hours)
    agent_name = await session.scalar(select(Agent.name).where(Agent.id == campaign.agent_id)) or ""
    counts = Counter({"total": sum(by_status.values()), "dialled": dialled})  # as campaigns.totals counts
    counts.update({f"status:{k}": v for k, v in by_status.items()})
    counts.update({f"outcome:{k}": v for k, v in by_outcome.items()})
    return CampaignProgress(
        campaign=to_response(campaign, agent_name, counts),
        id=campaign.id,
        status=campaign.status,
        total=sum(by_status.values()),
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


def _open_windows(
    zones: Sequence[str], start: str, end: str, days: Sequence[int], since: datetime, until: datetime
) -> list[tuple[datetime, datetime]]:
    """The spans between ``since`` and ``until`` when the calling hours are open in every one of ``zones``
    (a number may span zones: it is called only when all of them allow it)."""
    common: list[tuple[datetime, datetime]] | None = None
    for name in zones or ["UTC"]:
        tz = zone(name)
        first = since.astimezone(tz).date() - timedelta(days=1)
        spans = []
        for offset in range((until - since).days + 3):
            day = first + timedelta(days=offset)
            if days and day.weekday() not in days:
                continue
            opens = datetime.combine(day, hm(start), tzinfo=tz).astimezone(since.tzinfo)
            closes = datetime.combine(day, hm(end), tzinfo=tz).astimezone(since.tzinfo)
            if closes > since and opens < until:
                spans.append((max(opens, since), min(closes, until)))
        if common is None:
            common = spans
            continue
        both, a, b = [], 0, 0  # the intersection of two sorted lists of spans
        while a < len(common) and b < len(spans):
            lo, hi = max(common[a][0], spans[b][0]), min(common[a][1], spans[b][1])
            if lo < hi:
                both.append((lo, hi))
            if common[a][1] < spans[b][1]:
                a += 1
            else:
                b += 1
        common = both
    return common or []


def expected_finish(
    now: datetime,
    zones: Counter[tuple[str, ...]],
    left: int,
    pace_per_min: float,
    hours: tuple[str, str, Sequence[int]] | None,
) -> datetime | None:
    """When ``left`` leads are done at ``pace_per_min``, each zone group dialled only inside its calling
    hours: the pace is shared by the groups open at the time; a group waits while its hours are closed.
    None when the hours of some waiting leads do not open within a month."""
    if hours is None:
        return now + timedelta(minutes=left / pace_per_min)
    groups = [[z, n] for z, n in zones.most_common(MAX_ZONE_GROUPS)]
    groups[0][1] += left - sum(n for _, n in groups)  # the rare zones ride with the biggest group
    start, end, days = hours
    until = now + HORIZON
    windows = [_open_windows(list(z), start, end, days, now, until) for z, _ in groups]
    edges = sorted({t for spans in windows for span in spans for t in span})
    for lo, hi in itertools.pairwise(edges):
        pairs = zip(groups, windows, strict=True)
        open_now = [g for g, spans in pairs if g[1] > 0 and _covers(spans, lo, hi)]
        if not open_now:
            continue
        budget = pace_per_min * (hi - lo).total_seconds() / 60
        spent = 0.0
        for group in open_now:
            used = min(group[1], budget - spent)
            group[1] -= used
            spent += used
        if all(g[1] <= 1e-9 for g in groups):
            return lo + timedelta(minutes=spent / pace_per_min)
    return None


def _covers(spans: list[tuple[datetime, datetime]], lo: datetime, hi: datetime) -> bool:
    return any(a <= lo and hi <= b for a, b in spans)


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
