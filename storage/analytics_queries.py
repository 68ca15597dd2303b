"""Reads of the analytics rollup (``storage.analytics``): sums over hour buckets, never ``conversations``.

Every query is one ``SELECT … SUM(…) … GROUP BY`` on ``analytics_rollup`` restricted by dimension, hour
range and the filters given (agent, campaign, version, experiment), which its indexes serve.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from models import AnalyticsRollup as R
from storage.analytics import percentile_from_bins

COUNTS = ("calls", "answered", "human", "conversations", "qualified", "booked")


@dataclass(frozen=True, slots=True)
class Scope:
    start: datetime  # inclusive, on the hour
    end: datetime  # exclusive, on the hour
    agent_id: str | None = None
    campaign_id: str | None = None
    version_id: str | None = None
    experiment_id: str | None = None


def _sums() -> list[Any]:
    return [func.coalesce(func.sum(getattr(R, m)), 0).label(m) for m in (*COUNTS, "call_seconds")]


def _where(scope: Scope, dim: str) -> list[Any]:
    conditions = [R.dim == dim, R.bucket >= scope.start, R.bucket < scope.end]
    for column, value in (
        (R.agent_id, scope.agent_id),
        (R.campaign_id, scope.campaign_id),
        (R.version_id, scope.version_id),
        (R.experiment_id, scope.experiment_id),
    ):
        if value is not None:
            conditions.append(column == value)
    return conditions


def _totals(row: Any) -> dict[str, float]:
    values = {m: int(getattr(row, m) or 0) for m in COUNTS}
    return {**values, "call_seconds": float(row.call_seconds or 0.0)}


async def totals(session: AsyncSession, scope: Scope) -> dict[str, float]:
    row = (await session.execute(select(*_sums()).where(*_where(scope, "all")))).one()
    return _totals(row)


async def grouped(session: AsyncSession, scope: Scope, dim: str, key: str) -> dict[str, dict[str, float]]:
    """Totals per value of ``key`` (a column: dim_value, campaign_id, version_id, bucket) within a dim."""
    column = getattr(R, key)
    stmt = select(column.label("key"), *_sums()).where(*_where(scope, dim)).group_by(column)
    return {row.key: _totals(row) for row in (await session.execute(stmt)).all()}


async def latency_bins(session: AsyncSession, scope: Scope) -> dict[datetime, dict[int, int]]:
    """Voice-to-voice turn counts per latency bin, per hour."""
    stmt = (
        select(R.bucket, R.dim_value, func.sum(R.calls).label("n"))
        .where(*_where(scope, "v2v"))
        .group_by(R.bucket, R.dim_value)
    )
    out: dict[datetime, dict[int, int]] = {}
    for row in (await session.execute(stmt)).all():
        bins = out.setdefault(_aware(row.bucket), {})
        bins[int(row.dim_value)] = bins.get(int(row.dim_value), 0) + int(row.n)
    return out


async def outcome_series(session: AsyncSession, scope: Scope) -> dict[str, dict[datetime, int]]:
    stmt = (
        select(R.bucket, R.dim_value, func.sum(R.calls).label("n"))
        .where(*_where(scope, "outcome"))
        .group_by(R.bucket, R.dim_value)
    )
    out: dict[str, dict[datetime, int]] = {}
    for row in (await session.execute(stmt)).all():
        out.setdefault(row.dim_value, {})[_aware(row.bucket)] = int(row.n)
    return out


# ---------------------------------------------------------------- buckets


def bucket_starts(scope: Scope, step: timedelta) -> list[datetime]:
    starts, t = [], scope.start
    while t < scope.end:
        starts.append(t)
        t += step
    return starts


def bucket_of(moment: datetime, scope: Scope, step: timedelta) -> datetime:
    return scope.start + step * int((moment - scope.start) / step)


def ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def metric_value(metric: str, t: dict[str, float]) -> float | None:
    if metric == "meetings_booked":
        return int(t["booked"])
    if metric == "call_minutes":
        return round(t["call_seconds"] / 60, 2)
    if metric == "answer_rate":
        return ratio(t["answered"], t["calls"])
    if metric == "booking_rate":
        return ratio(t["booked"], t["human"])
    return int(t[metric])


async def timeseries(session: AsyncSession, scope: Scope, metric: str, step: timedelta) -> dict[str, list]:
    """{series name: [(bucket start, value)]}, every bucket of the range present."""
    starts = bucket_starts(scope, step)
    if metric == "outcomes":
        per_outcome = await outcome_series(session, scope)
        series: dict[str, list] = {}
        for outcome in sorted(per_outcome):
            folded = dict.fromkeys(starts, 0)
            for hour, n in per_outcome[outcome].items():
                folded[bucket_of(hour, scope, step)] += n
            series[outcome] = list(folded.items())
        return series
    if metric in ("v2v_p50", "v2v_p95"):
        q = 0.5 if metric == "v2v_p50" else 0.95
        merged: dict[datetime, dict[int, int]] = {t: {} for t in starts}
        for hour, bins in (await latency_bins(session, scope)).items():
            target = merged[bucket_of(hour, scope, step)]
            for lower, n in bins.items():
                target[lower] = target.get(lower, 0) + n
        return {metric: [(t, percentile_from_bins(bins, q)) for t, bins in merged.items()]}
    per_hour = await grouped(session, scope, "all", "bucket")
    empty: dict[str, float] = {**dict.fromkeys(COUNTS, 0), "call_seconds": 0.0}
    folded_totals: dict[datetime, dict[str, float]] = {t: dict(empty) for t in starts}
    for hour, values in per_hour.items():
        target = folded_totals[bucket_of(_aware(hour), scope, step)]
        for name, value in values.items():
            target[name] += value
    return {metric: [(t, metric_value(metric, values)) for t, values in folded_totals.items()]}


def _aware(moment: datetime) -> datetime:
    """SQLite hands back what was stored; the column type makes it aware, a raw GROUP BY may not."""
    from datetime import UTC

    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
