"""Reads of the analytics rollup (``storage.analytics``): sums over hour buckets, never ``conversations``.

Every query is one ``SELECT … SUM(…) … GROUP BY`` on ``analytics_rollup`` restricted by dimension, hour
range and the filters given (agent, campaign, version, experiment), which its indexes serve. Without a
campaign, version or experiment filter it reads the rows keyed by the agent alone (``AGENT_LEVEL``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from models import AnalyticsRollup as R
from storage.analytics import AGENT_LEVEL, V2V_COLUMNS, bin_lower, percentile_from_bins

COUNTS = ("calls", "answered", "human", "conversations", "qualified", "booked")


@dataclass(frozen=True, slots=True)
class Scope:
    start: datetime  # inclusive, on the hour
    end: datetime  # exclusive, on the hour
    agent_id: str | None = None
    campaign_id: str | None = None
    version_id: str | None = None
    experiment_id: str | None = None


Part = tuple[str, datetime, datetime]  # (grain, from, to)


GRAINS = ("m", "d", "h")  # coarsest first: month, day, hour (UTC)


def _floor(grain: str, moment: datetime) -> datetime:
    day = moment.replace(hour=0)
    return day.replace(day=1) if grain == "m" else day


def _next(grain: str, moment: datetime) -> datetime:
    if grain == "m":
        return (moment.replace(day=28) + timedelta(days=4)).replace(day=1)
    return moment + timedelta(days=1)


def parts(scope: Scope, coarsest: str = "m") -> list[Part]:
    """The rows a range reads: month rows for its whole UTC months, day rows for the whole days around
    them, hour rows for the hours at either end (``coarsest``: the largest grain a query may use)."""
    return _split(scope.start, scope.end, GRAINS.index(coarsest))


def _split(start: datetime, end: datetime, level: int) -> list[Part]:
    if start >= end:
        return []
    grain = GRAINS[level]
    if grain == "h":
        return [("h", start, end)]
    low = _floor(grain, start)
    if low < start:
        low = _next(grain, low)
    high = _floor(grain, end)
    if low >= high:
        return _split(start, end, level + 1)
    return [*_split(start, low, level + 1), (grain, low, high), *_split(high, end, level + 1)]


def _sums() -> list[Any]:
    return [func.coalesce(func.sum(getattr(R, m)), 0).label(m) for m in (*COUNTS, "call_seconds")]


def _where(scope: Scope, dim: str, part: Part, key: str = "") -> list[Any]:
    grain, start, end = part
    conditions = [R.grain == grain, R.dim == dim, R.bucket >= start, R.bucket < end]
    if scope.campaign_id is None and scope.version_id is None and scope.experiment_id is None:
        # no campaign, version or experiment asked for: the rows keyed by the agent alone, unless the
        # answer is per campaign, version or experiment (then every other row)
        agent_level = key not in ("campaign_id", "version_id", "experiment_id")
        conditions.append(R.campaign_id == AGENT_LEVEL if agent_level else R.campaign_id != AGENT_LEVEL)
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


def _add(into: dict[str, float], more: dict[str, float]) -> None:
    for name, value in more.items():
        into[name] = into.get(name, 0) + value


def empty_totals() -> dict[str, float]:
    return {**dict.fromkeys(COUNTS, 0), "call_seconds": 0.0}


async def totals(session: AsyncSession, scope: Scope) -> dict[str, float]:
    out = empty_totals()
    for part in parts(scope):
        _add(out, _totals((await session.execute(select(*_sums()).where(*_where(scope, "all", part)))).one()))
    return out


async def grouped(
    session: AsyncSession, scope: Scope, dim: str, key: str, coarsest: str = "m"
) -> dict[Any, dict[str, float]]:
    """Totals per value of ``key`` (a column: dim_value, campaign_id, version_id, bucket) within a dim."""
    column = getattr(R, key)
    out: dict[Any, dict[str, float]] = {}
    for part in parts(scope, coarsest):
        stmt = select(column.label("key"), *_sums()).where(*_where(scope, dim, part, key)).group_by(column)
        for row in (await session.execute(stmt)).all():
            _add(
                out.setdefault(_aware(row.key) if key == "bucket" else row.key, empty_totals()), _totals(row)
            )
    return out


async def per_bucket_and_value(
    session: AsyncSession, scope: Scope, dim: str, coarsest: str
) -> list[tuple[datetime, str, int]]:
    """(bucket, dim_value, calls) rows of a dim: latency bins' turn counts, outcomes' call counts."""
    found: list[tuple[datetime, str, int]] = []
    for part in parts(scope, coarsest):
        stmt = (
            select(R.bucket, R.dim_value, func.sum(R.calls).label("n"))
            .where(*_where(scope, dim, part))
            .group_by(R.bucket, R.dim_value)
        )
        found += [(_aware(r.bucket), r.dim_value, int(r.n)) for r in (await session.execute(stmt)).all()]
    return found


async def latency_histograms(
    session: AsyncSession, scope: Scope, coarsest: str
) -> list[tuple[datetime, list[int]]]:
    """(bucket, turns per latency bin) of the ``all`` rows: the histograms summed in one GROUP BY."""
    found: list[tuple[datetime, list[int]]] = []
    sums = [func.sum(getattr(R, c)) for c in V2V_COLUMNS]
    for part in parts(scope, coarsest):
        stmt = select(R.bucket, *sums).where(*_where(scope, "all", part)).group_by(R.bucket)
        found += [(_aware(r[0]), [int(n or 0) for n in r[1:]]) for r in (await session.execute(stmt)).all()]
    return found


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
    coarsest = "h" if step < timedelta(days=1) else "d"  # a bucket is never finer than the rows summed
    if metric == "outcomes":
        per_outcome: dict[str, dict[datetime, int]] = {}
        for bucket, outcome, n in await per_bucket_and_value(session, scope, "outcome", coarsest):
            folded = per_outcome.setdefault(outcome, dict.fromkeys(starts, 0))
            folded[bucket_of(bucket, scope, step)] += n
        return {outcome: list(per_outcome[outcome].items()) for outcome in sorted(per_outcome)}
    if metric in ("v2v_p50", "v2v_p95"):
        q = 0.5 if metric == "v2v_p50" else 0.95
        merged: dict[datetime, list[int]] = {t: [0] * len(V2V_COLUMNS) for t in starts}
        for bucket, counts in await latency_histograms(session, scope, coarsest):
            target = merged[bucket_of(bucket, scope, step)]
            for i, n in enumerate(counts):
                target[i] += n
        return {
            metric: [
                (t, percentile_from_bins({bin_lower(i): n for i, n in enumerate(c) if n}, q))
                for t, c in merged.items()
            ]
        }
    folded_totals: dict[datetime, dict[str, float]] = {t: empty_totals() for t in starts}
    for bucket, values in (await grouped(session, scope, "all", "bucket", coarsest)).items():
        _add(folded_totals[bucket_of(bucket, scope, step)], values)
    return {metric: [(t, metric_value(metric, values)) for t, values in folded_totals.items()]}


def _aware(moment: datetime) -> datetime:
    """SQLite hands back what was stored; the column type makes it aware, a raw GROUP BY may not."""
    from datetime import UTC

    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
