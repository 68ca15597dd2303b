"""Experiments: checks on creation, per-variant results from the analytics rollup, and the verdict.

Each call of a running experiment is given a variant when its conversation is created
(``storage.agent_versions.stamp_call``: a hash of the experiment and the lead's number, on the weights,
so a lead always gets the same variant) and runs that variant's version. Results count the calls that
ended (``storage.analytics``): the booking rate is meetings booked / calls a person answered, with its
Wilson 95 % interval; the first variant is the control, compared with the best of the others by
Newcombe's interval for the difference.

The verdict: fewer than ``MIN_HUMAN_CALLS`` calls answered by a person in either variant → not enough
data; the difference's interval above 0 → the challenger is better, below 0 → the control; inside
±``EQUIVALENCE_MARGIN`` → no difference; otherwise (it could still go either way) → not enough data.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import HTTPException
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import conflict, not_found
from core.stats import newcombe, wilson
from models import AgentVersion, Campaign, Experiment, PhoneNumber
from schemas import ExperimentCreate, ExperimentResponse, Interval, VariantResult
from storage import analytics_queries as q

MIN_HUMAN_CALLS = 30
EQUIVALENCE_MARGIN = 0.05
ALL_TIME = (datetime(2000, 1, 1, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC))


def _unprocessable(loc: tuple[str, ...], msg: str) -> HTTPException:
    return HTTPException(422, detail=[{"loc": ["body", *loc], "msg": msg, "type": "value_error"}])


async def create(session: AsyncSession, body: ExperimentCreate) -> Experiment:
    from api.agent_service import get_agent_or_404

    await get_agent_or_404(session, body.agent_id)
    for i, variant in enumerate(body.variants):
        version = await session.get(AgentVersion, variant.version_id)
        if version is None or version.agent_id != body.agent_id:
            raise _unprocessable(("variants", str(i), "version_id"), "not a version of this agent")
    if body.campaign_id is not None:
        campaign = await session.get(Campaign, body.campaign_id)
        if campaign is None:
            raise not_found("campaign", body.campaign_id)
        if campaign.agent_id != body.agent_id:
            raise _unprocessable(("campaign_id",), "the campaign calls with another agent")
        clash = Experiment.campaign_id == body.campaign_id
    else:
        number = await session.scalar(
            select(PhoneNumber).where(PhoneNumber.phone_number == body.phone_number)
        )
        if number is None:
            raise not_found("phone number", str(body.phone_number))
        if number.agent_id != body.agent_id:
            raise _unprocessable(("phone_number",), "the number's calls go to another agent")
        clash = Experiment.phone_number == body.phone_number
    running = await session.scalar(select(Experiment.id).where(clash, Experiment.status == "running"))
    if running is not None:
        raise conflict(f"experiment {running} is already running there: stop it first")
    experiment = Experiment(
        agent_id=body.agent_id,
        name=body.name,
        campaign_id=body.campaign_id,
        phone_number=body.phone_number,
        variants=[
            {"label": v.label or chr(ord("A") + i), "version_id": v.version_id, "weight": v.weight}
            for i, v in enumerate(body.variants)
        ],
        status="running",
    )
    session.add(experiment)
    await session.flush()
    await session.refresh(experiment)
    return experiment


def _pct(rate: float) -> str:
    return f"{rate * 100:.1f} %"


def _points(diff: float) -> str:
    return f"{diff * 100:+.1f}"


def verdict(
    control: VariantResult, challenger: VariantResult
) -> tuple[str, str, float | None, Interval | None]:
    """(verdict, in plain words, difference, its 95 % interval) of challenger vs control."""
    a, b = control, challenger
    short = [v for v in (a, b) if v.human < MIN_HUMAN_CALLS]
    if short:
        who = ", ".join(f"{v.label} has {v.human}" for v in short)
        text = (
            f"Not enough data yet: {who} calls answered by a person; "
            f"{MIN_HUMAN_CALLS} per variant are needed before comparing."
        )
        diff_ci = None
        if a.human and b.human:
            d, low, high = newcombe(a.meetings_booked, a.human, b.meetings_booked, b.human)
            return "not_enough_data", text, round(d, 4), Interval(low=round(low, 4), high=round(high, 4))
        return "not_enough_data", text, None, diff_ci
    d, low, high = newcombe(a.meetings_booked, a.human, b.meetings_booked, b.human)
    interval = Interval(low=round(low, 4), high=round(high, 4))
    rate_a, rate_b = _pct(a.booking_rate or 0), _pct(b.booking_rate or 0)
    rates = f"{b.label} books {rate_b} of calls a person answered, {a.label} {rate_a}"
    ci = f"difference {_points(d)} points, 95 % CI {_points(low)} to {_points(high)}"
    if low > 0:
        return "challenger_better", f"{b.label} is better: {rates} ({ci}).", round(d, 4), interval
    if high < 0:
        return "control_better", f"{a.label} is better: {rates} ({ci}).", round(d, 4), interval
    if max(-low, high) <= EQUIVALENCE_MARGIN:
        margin = f"±{EQUIVALENCE_MARGIN * 100:.0f} points"
        return "no_difference", f"No difference: {rates} ({ci}, within {margin}).", round(d, 4), interval
    return (
        "not_enough_data",
        f"Not enough data yet: {rates}, but the {ci} could still go either way.",
        round(d, 4),
        interval,
    )


async def results(session: AsyncSession, experiment: Experiment) -> ExperimentResponse:
    scope = q.Scope(*ALL_TIME, experiment_id=experiment.id)
    per_version = await q.grouped(session, scope, "all", "version_id")
    empty = dict.fromkeys((*q.COUNTS, "call_seconds"), 0.0)
    variants: list[VariantResult] = []
    for v in experiment.variants:
        t: dict[str, Any] = per_version.get(v["version_id"], empty)
        human, booked = int(t["human"]), int(t["booked"])
        low, high = wilson(booked, human)
        variants.append(
            VariantResult(
                label=v["label"],
                version_id=v["version_id"],
                weight=int(v["weight"]),
                calls=int(t["calls"]),
                answered=int(t["answered"]),
                human=human,
                conversations=int(t["conversations"]),
                qualified=int(t["qualified"]),
                meetings_booked=booked,
                booking_rate=q.ratio(booked, human),
                booking_rate_ci95=Interval(low=round(low, 4), high=round(high, 4)) if human else None,
            )
        )
    control = variants[0]
    challenger = max(variants[1:], key=lambda v: (v.booking_rate or 0.0, v.human))
    word, text, diff, interval = verdict(control, challenger)
    return ExperimentResponse(
        id=experiment.id,
        name=experiment.name,
        agent_id=experiment.agent_id,
        campaign_id=experiment.campaign_id,
        phone_number=experiment.phone_number,
        status=experiment.status,  # type: ignore[arg-type]
        created_at=experiment.created_at,
        stopped_at=experiment.stopped_at,
        variants=variants,
        difference=diff,
        difference_ci95=interval,
        compared=[control.label, challenger.label],
        verdict=word,  # type: ignore[arg-type]
        verdict_text=text,
    )
