"""Analytics: ``/v1/convai/analytics/funnel``, ``/timeseries``, ``/breakdowns/{by}``; JSON or ``?format=csv``.

All read the pre-aggregated ``analytics_rollup`` (one row per UTC hour and dimension, kept current as
each call ends: ``storage.analytics``), never the conversations. Filters: ``agent_id``, ``campaign_id``,
``version_id``, ``from`` (inclusive) and ``to`` (exclusive), widened to whole UTC hours; the default range
is the last 30 days. The funnel's steps are defined in ``storage.analytics`` and docs/analytics.md.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Response
from sqlalchemy import select

from api.deps import SessionDep, UtcDateTime, error_responses, not_found
from models import Agent, AgentVersion, Campaign
from schemas import (
    AnalyticsFilters,
    BreakdownResponse,
    BreakdownRow,
    FunnelResponse,
    FunnelStep,
    TimeseriesMetric,
    TimeseriesPoint,
    TimeseriesResponse,
    TimeseriesSeries,
)
from storage import analytics_queries as q

router = APIRouter(prefix="/convai/analytics", tags=["analytics"])

DEFAULT_DAYS = 30
MAX_RANGE_DAYS = 800
MAX_POINTS = 2000
Format = Literal["json", "csv"]
OptionalId = Annotated[str | None, Query(min_length=1, max_length=40)]
FormatQuery = Annotated[Format, Query(description="csv: the same numbers as a CSV file")]
CSV_FORMAT = {200: {"content": {"text/csv": {}}, "description": "With ?format=csv: a CSV file"}}


def _unprocessable(loc: str, msg: str) -> HTTPException:
    return HTTPException(422, detail=[{"loc": ["query", loc], "msg": msg, "type": "value_error"}])


def _floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


async def _scope(
    session: SessionDep,
    agent_id: str | None,
    campaign_id: str | None,
    version_id: str | None,
    start: datetime | None,
    end: datetime | None,
) -> q.Scope:
    try:
        if end is None:
            end_h = _floor_hour(datetime.now(UTC)) + timedelta(hours=1)
        else:
            end_h = _floor_hour(end) + (timedelta(hours=1) if end != _floor_hour(end) else timedelta())
        start_h = _floor_hour(start) if start is not None else end_h - timedelta(days=DEFAULT_DAYS)
    except OverflowError:
        raise _unprocessable("to", "out of range") from None
    if start_h >= end_h:
        raise _unprocessable("from", "must be before 'to'")
    if end_h - start_h > timedelta(days=MAX_RANGE_DAYS):
        raise _unprocessable("from", f"the range may span at most {MAX_RANGE_DAYS} days")
    if agent_id is not None and await session.get(Agent, agent_id) is None:
        raise not_found("agent", agent_id)
    if campaign_id is not None and await session.get(Campaign, campaign_id) is None:
        raise not_found("campaign", campaign_id)
    if version_id is not None:
        version = await session.get(AgentVersion, version_id)
        if version is None or (agent_id is not None and version.agent_id != agent_id):
            raise not_found("agent version", version_id)
    return q.Scope(start_h, end_h, agent_id, campaign_id, version_id)


def _filters(scope: q.Scope) -> AnalyticsFilters:
    return AnalyticsFilters(
        agent_id=scope.agent_id,
        campaign_id=scope.campaign_id,
        version_id=scope.version_id,
        from_=scope.start,
        to=scope.end,
    )


def _csv(rows: list[dict[str, Any]], filename: str) -> Response:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{filename}.csv"'},
    )


def _csv_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else "" if value is None else value


# ---------------------------------------------------------------- funnel


def funnel_of(totals: dict[str, float], scope: q.Scope) -> FunnelResponse:
    counts = {
        "dialled": int(totals["calls"]),
        "answered": int(totals["answered"]),
        "human": int(totals["human"]),
        "conversations": int(totals["conversations"]),
        "qualified": int(totals["qualified"]),
        "meetings_booked": int(totals["booked"]),
    }
    steps, previous = [], None
    for name, n in counts.items():
        steps.append(
            FunnelStep(
                step=name,  # type: ignore[arg-type]
                count=n,
                rate_of_previous=q.ratio(n, previous) if previous is not None else None,
                rate_of_dialled=q.ratio(n, counts["dialled"]),
            )
        )
        previous = n
    return FunnelResponse(
        filters=_filters(scope),
        **counts,
        call_minutes=round(totals["call_seconds"] / 60, 2),
        answer_rate=q.ratio(counts["answered"], counts["dialled"]),
        human_rate=q.ratio(counts["human"], counts["answered"]),
        conversation_rate=q.ratio(counts["conversations"], counts["human"]),
        qualified_rate=q.ratio(counts["qualified"], counts["conversations"]),
        booking_rate=q.ratio(counts["meetings_booked"], counts["human"]),
        steps=steps,
    )


@router.get(
    "/funnel",
    response_model=FunnelResponse,
    responses={**error_responses(404, 422), **CSV_FORMAT},
    summary="The funnel: dialled → answered → human → conversations → qualified → meetings booked",
)
async def funnel(
    session: SessionDep,
    agent_id: OptionalId = None,
    campaign_id: OptionalId = None,
    version_id: OptionalId = None,
    start: Annotated[UtcDateTime | None, Query(alias="from")] = None,
    end: Annotated[UtcDateTime | None, Query(alias="to")] = None,
    format: FormatQuery = "json",
) -> Any:
    scope = await _scope(session, agent_id, campaign_id, version_id, start, end)
    result = funnel_of(await q.totals(session, scope), scope)
    if format == "csv":
        return _csv([{k: _csv_value(v) for k, v in s.model_dump().items()} for s in result.steps], "funnel")
    return result


# ---------------------------------------------------------------- time series


@router.get(
    "/timeseries",
    response_model=TimeseriesResponse,
    responses={**error_responses(404, 422), **CSV_FORMAT},
    summary="A metric per hour or day (UTC): counts, rates, voice-to-voice p50/p95, call minutes, outcomes",
)
async def timeseries(
    session: SessionDep,
    metric: TimeseriesMetric,
    bucket: Literal["hour", "day"] = "day",
    agent_id: OptionalId = None,
    campaign_id: OptionalId = None,
    version_id: OptionalId = None,
    start: Annotated[UtcDateTime | None, Query(alias="from")] = None,
    end: Annotated[UtcDateTime | None, Query(alias="to")] = None,
    format: FormatQuery = "json",
) -> Any:
    if bucket == "day" and start is not None:
        start = start.replace(hour=0, minute=0, second=0, microsecond=0)
    scope = await _scope(session, agent_id, campaign_id, version_id, start, end)
    step = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
    if (scope.end - scope.start) / step > MAX_POINTS:
        raise _unprocessable("bucket", f"more than {MAX_POINTS} buckets: use bucket=day or a shorter range")
    found = await q.timeseries(session, scope, metric, step)
    series = [
        TimeseriesSeries(name=name, points=[TimeseriesPoint(t=t, value=v) for t, v in points])
        for name, points in found.items()
    ]
    if format == "csv":
        rows = [
            {"series": s.name, "t": p.t.isoformat(), "value": _csv_value(p.value)}
            for s in series
            for p in s.points
        ]
        return _csv(rows, f"timeseries_{metric}_{bucket}")
    return TimeseriesResponse(filters=_filters(scope), metric=metric, bucket=bucket, series=series)


# ---------------------------------------------------------------- breakdowns

BREAKDOWNS: dict[str, tuple[str, str]] = {  # by -> (rollup dim, grouping column)
    "local_hour": ("local_hour", "dim_value"),
    "campaign": ("all", "campaign_id"),
    "version": ("all", "version_id"),
    "stage": ("stage", "dim_value"),
    "objection": ("objection", "dim_value"),
    "outcome": ("outcome", "dim_value"),
}


def _row(key: str, label: str, t: dict[str, float]) -> BreakdownRow:
    return BreakdownRow(
        key=key,
        label=label,
        calls=int(t["calls"]),
        answered=int(t["answered"]),
        human=int(t["human"]),
        conversations=int(t["conversations"]),
        qualified=int(t["qualified"]),
        meetings_booked=int(t["booked"]),
        call_minutes=round(t["call_seconds"] / 60, 2),
        answer_rate=q.ratio(t["answered"], t["calls"]),
        booking_rate=q.ratio(t["booked"], t["human"]),
    )


async def _labels(session: SessionDep, by: str, keys: list[str]) -> dict[str, str]:
    if by == "version" and keys:
        rows = await session.execute(
            select(AgentVersion.id, AgentVersion.number).where(AgentVersion.id.in_(keys))
        )
        return {vid: f"v{number}" for vid, number in rows.all()}
    if by == "campaign" and keys:
        rows = await session.execute(select(Campaign.id, Campaign.name).where(Campaign.id.in_(keys)))
        return {cid: name for cid, name in rows.all()}
    if by == "local_hour":
        return {k: f"{int(k):02d}:00" for k in keys}
    return {}


@router.get(
    "/breakdowns/{by}",
    response_model=BreakdownResponse,
    responses={**error_responses(404, 422), **CSV_FORMAT},
    summary="Calls by the lead's local hour, campaign, version, ended stage, objection or outcome",
)
async def breakdown(
    session: SessionDep,
    by: Literal["local_hour", "campaign", "version", "stage", "objection", "outcome"],
    agent_id: OptionalId = None,
    campaign_id: OptionalId = None,
    version_id: OptionalId = None,
    start: Annotated[UtcDateTime | None, Query(alias="from")] = None,
    end: Annotated[UtcDateTime | None, Query(alias="to")] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Most rows returned (the largest first)")] = 50,
    format: FormatQuery = "json",
) -> Any:
    scope = await _scope(session, agent_id, campaign_id, version_id, start, end)
    dim, column = BREAKDOWNS[by]
    groups = await q.grouped(session, scope, dim, column)
    labels = await _labels(session, by, [k for k in groups if k])
    empty = dict.fromkeys((*q.COUNTS, "call_seconds"), 0.0)
    if by == "local_hour":  # every hour of the day, in order
        rows = [_row(str(h), f"{h:02d}:00", groups.get(str(h), empty)) for h in range(24)]
    else:
        ordered = sorted(groups.items(), key=lambda kv: (-kv[1]["calls"], kv[0]))
        rows = [_row(k, labels.get(k, k or "(none)"), t) for k, t in ordered][:limit]
    if format == "csv":
        return _csv([{k: _csv_value(v) for k, v in r.model_dump().items()} for r in rows], f"breakdown_{by}")
    return BreakdownResponse(filters=_filters(scope), by=by, rows=rows)
