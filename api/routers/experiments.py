"""Experiments: ``/v1/convai/experiments``, A/B tests between versions of an agent on a campaign or an
inbound number (see ``api.experiment_service`` for the assignment, the statistics and the verdict)."""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy import select

import api.experiment_service as service
from api.deps import PageDep, SessionDep, error_responses, not_found, paginate
from models import Experiment
from schemas import ExperimentCreate, ExperimentListResponse, ExperimentResponse, ExperimentUpdate
from utils import utcnow

router = APIRouter(prefix="/convai/experiments", tags=["experiments"])


async def _experiment_or_404(session: SessionDep, experiment_id: str) -> Experiment:
    experiment = await session.get(Experiment, experiment_id)
    if experiment is None:
        raise not_found("experiment", experiment_id)
    return experiment


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ExperimentResponse,
    responses=error_responses(404, 409, 422),
    summary="Start an experiment: two or more versions of an agent, with traffic weights",
)
async def create_experiment(body: ExperimentCreate, session: SessionDep) -> ExperimentResponse:
    experiment = await service.create(session, body)
    return await service.results(session, experiment)


@router.get(
    "",
    response_model=ExperimentListResponse,
    responses=error_responses(400),
    summary="List experiments, newest first, with their results",
)
async def list_experiments(
    session: SessionDep, page: PageDep, agent_id: str | None = None
) -> ExperimentListResponse:
    stmt = select(Experiment)
    if agent_id is not None:
        stmt = stmt.where(Experiment.agent_id == agent_id)
    result = await paginate(session, stmt, Experiment, page)
    return ExperimentListResponse(
        experiments=[await service.results(session, e) for e in result.items],
        has_more=result.has_more,
        next_cursor=result.next_cursor,
    )


@router.get(
    "/{experiment_id}",
    response_model=ExperimentResponse,
    responses=error_responses(404),
    summary="An experiment's per-variant counts, booking rates with 95 % intervals, and the verdict",
)
async def get_experiment(experiment_id: str, session: SessionDep) -> ExperimentResponse:
    return await service.results(session, await _experiment_or_404(session, experiment_id))


@router.patch(
    "/{experiment_id}",
    response_model=ExperimentResponse,
    responses=error_responses(404, 409, 422),
    summary="Stop an experiment (new calls run the agent's latest version) or run it again",
)
async def update_experiment(
    experiment_id: str, body: ExperimentUpdate, session: SessionDep
) -> ExperimentResponse:
    experiment = await _experiment_or_404(session, experiment_id)
    if body.status != experiment.status:
        if body.status == "running":
            where = (
                Experiment.campaign_id == experiment.campaign_id
                if experiment.campaign_id
                else Experiment.phone_number == experiment.phone_number
            )
            other = await session.scalar(
                select(Experiment.id).where(
                    where, Experiment.status == "running", Experiment.id != experiment.id
                )
            )
            if other is not None:
                raise service.conflict(f"experiment {other} is already running there: stop it first")
        experiment.status = body.status
        experiment.stopped_at = utcnow() if body.status == "stopped" else None
        await session.flush()
    return await service.results(session, experiment)
