"""Scenario tests of an agent: ``/v1/convai/agents/{agent_id}/tests`` (CRUD) and their runs.

``POST …/tests/run`` starts a run in the background (202, poll ``GET …/tests/runs/{run_id}``; or
``?wait=true`` to get the finished run): every scenario ``repeat`` times, in text mode (the engine's
decision path, no audio) or audio mode (the simulated caller over the Media Streams socket).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from pydantic import ValidationError
from sqlalchemy import select

from api.deps import RuntimeDep, Services, SessionDep, error_responses, not_found
from models import Agent, AgentTest, AgentTestRun, AgentVersion
from scenarios.runner import Scenario, run_suite
from scenarios.starter_pack import starter_pack
from schemas import (
    AgentTestCreate,
    AgentTestList,
    AgentTestResponse,
    AgentTestRunCreate,
    AgentTestRunList,
    AgentTestRunResponse,
    AgentTestStarterPack,
    AgentTestStarterPackAdded,
    AgentTestUpdate,
)
from simulator.scenario import ScenarioSpec
from utils import utcnow

log = logging.getLogger(__name__)
router = APIRouter(prefix="/convai/agents/{agent_id}/tests", tags=["agent tests"])

_runs: set[asyncio.Task[None]] = set()  # running in the background (strong references)


def own_url(request: Request, fallback: str) -> str:
    """This server as the socket that took the request knows it (audio runs call it). Never the Host
    header: a client could point the server's test calls at any host with it."""
    server = request.scope.get("server")
    if not server or server[1] is None:
        return fallback.rstrip("/")
    host, port = server
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def to_response(test: AgentTest) -> AgentTestResponse:
    return AgentTestResponse.model_validate(
        {
            **test.spec,
            "name": test.name,
            "id": test.id,
            "agent_id": test.agent_id,
            "created_at": test.created_at,
            "updated_at": test.updated_at,
        }
    )


def run_response(run: AgentTestRun) -> AgentTestRunResponse:
    return AgentTestRunResponse(
        id=run.id,
        agent_id=run.agent_id,
        status=run.status,
        mode=run.mode,
        repeat=run.repeat,
        pass_rate=run.pass_rate,
        llm=run.llm,
        judge=run.judge,
        summary=run.summary or [],
        results=run.results or [],
        error=run.error,
        created_at=run.created_at,
        finished_at=run.finished_at,
    )


async def _agent_or_404(session: SessionDep, agent_id: str) -> None:
    if await session.get(Agent, agent_id) is None:
        raise not_found("agent", agent_id)


async def _test_or_404(session: SessionDep, agent_id: str, test_id: str) -> AgentTest:
    test = await session.get(AgentTest, test_id)
    if test is None or test.agent_id != agent_id:
        raise not_found("test", test_id)
    return test


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=AgentTestResponse,
    responses=error_responses(404, 422),
    summary="Add a scenario test to the agent",
)
async def create_test(agent_id: str, body: AgentTestCreate, session: SessionDep) -> AgentTestResponse:
    await _agent_or_404(session, agent_id)
    spec = body.model_dump(mode="json", exclude_defaults=False)
    test = AgentTest(agent_id=agent_id, name=body.name, spec=spec)
    session.add(test)
    await session.flush()
    return to_response(test)


@router.get("", response_model=AgentTestList, responses=error_responses(404), summary="The agent's tests")
async def list_tests(agent_id: str, session: SessionDep) -> AgentTestList:
    await _agent_or_404(session, agent_id)
    tests = (
        await session.scalars(
            select(AgentTest).where(AgentTest.agent_id == agent_id).order_by(AgentTest.created_at)
        )
    ).all()
    return AgentTestList(tests=[to_response(t) for t in tests])


@router.get(
    "/starter-pack",
    response_model=AgentTestStarterPack,
    responses=error_responses(404),
    summary="The SDR starter pack: its scenarios (and the sample agent they were written for)",
)
async def get_starter_pack(agent_id: str, session: SessionDep) -> AgentTestStarterPack:
    await _agent_or_404(session, agent_id)
    pack = starter_pack()
    return AgentTestStarterPack(agent=pack.agent, knowledge=pack.knowledge, scenarios=pack.scenarios)


@router.post(
    "/starter-pack",
    status_code=status.HTTP_201_CREATED,
    response_model=AgentTestStarterPackAdded,
    responses=error_responses(404),
    summary="Add the SDR starter pack's scenarios to the agent (those whose name it has already are skipped)",
)
async def add_starter_pack(agent_id: str, session: SessionDep) -> AgentTestStarterPackAdded:
    await _agent_or_404(session, agent_id)
    have = set((await session.scalars(select(AgentTest.name).where(AgentTest.agent_id == agent_id))).all())
    added: list[AgentTest] = []
    skipped: list[str] = []
    for spec in starter_pack().scenarios:
        if spec.name in have:
            skipped.append(spec.name)
            continue
        test = AgentTest(agent_id=agent_id, name=spec.name, spec=spec.model_dump(mode="json"))
        session.add(test)
        added.append(test)
    await session.flush()
    return AgentTestStarterPackAdded(added=[to_response(t) for t in added], skipped=skipped)


@router.post(
    "/run",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=AgentTestRunResponse,
    responses={
        200: {"model": AgentTestRunResponse, "description": "?wait=true: the finished run"},
        **error_responses(404, 422),
    },
    summary="Run the agent's tests (or the scenarios given) in the background; ?wait=true to wait",
)
async def run_tests(
    agent_id: str,
    body: AgentTestRunCreate,
    request: Request,
    response: Response,
    session: SessionDep,
    runtime: RuntimeDep,
    wait: Annotated[bool, Query(description="Answer once the run has finished (200)")] = False,
) -> AgentTestRunResponse:
    await _agent_or_404(session, agent_id)
    if body.version_id is not None:
        version = await session.get(AgentVersion, body.version_id)
        if version is None or version.agent_id != agent_id:
            raise not_found("agent version", body.version_id)
    scenarios: list[Scenario] = [Scenario(spec) for spec in body.scenarios or []]
    if body.scenarios is None or body.test_ids is not None:
        stmt = select(AgentTest).where(AgentTest.agent_id == agent_id).order_by(AgentTest.created_at)
        if body.test_ids is not None:
            stmt = stmt.where(AgentTest.id.in_(body.test_ids))
        stored = (await session.scalars(stmt)).all()
        missing = set(body.test_ids or []) - {t.id for t in stored}
        if missing:
            raise HTTPException(404, detail=f"test not found: {sorted(missing)[0]}")
        scenarios += [Scenario(ScenarioSpec.model_validate({**t.spec, "name": t.name}), t.id) for t in stored]
    if not scenarios:
        raise HTTPException(422, detail="this agent has no tests: add one, or pass scenarios")
    run = AgentTestRun(agent_id=agent_id, mode=body.mode, repeat=body.repeat, status="running")
    session.add(run)
    await session.commit()  # the background run updates this row
    base_url = own_url(request, runtime.settings.public_url)
    task = asyncio.create_task(_execute(runtime, run.id, agent_id, scenarios, body, base_url))
    _runs.add(task)
    task.add_done_callback(_runs.discard)
    if wait:
        await asyncio.shield(task)
        response.status_code = status.HTTP_200_OK
        async with runtime.db.session() as fresh:
            finished = await fresh.get(AgentTestRun, run.id)
            assert finished is not None
            return run_response(finished)
    return run_response(run)


async def _execute(
    runtime: Services,
    run_id: str,
    agent_id: str,
    scenarios: list[Scenario],
    body: AgentTestRunCreate,
    base_url: str,
) -> None:
    values: dict[str, Any]
    try:
        async with runtime.test_run_lock:  # runs share the process's models: one at a time
            outcome = await run_suite(
                runtime,
                agent_id,
                scenarios,
                mode=body.mode,
                repeat=body.repeat,
                concurrency=body.concurrency,
                base_url=base_url,
                version_id=body.version_id,
            )
        values = {
            "status": "passed" if outcome["passed"] else "failed",
            "pass_rate": outcome["pass_rate"],
            "llm": outcome["llm"],
            "judge": outcome["judge"],
            "summary": outcome["summary"],
            "results": outcome["runs"],
        }
    except Exception as exc:
        log.warning("test run failed", extra={"fields": {"run_id": run_id, "error": type(exc).__name__}})
        values = {"status": "error", "error": f"the run failed ({type(exc).__name__})"}
    async with runtime.db.session() as session:
        run = await session.get(AgentTestRun, run_id)
        if run is not None:
            for key, value in values.items():
                setattr(run, key, value)
            run.finished_at = utcnow()


@router.get("/runs", response_model=AgentTestRunList, responses=error_responses(404), summary="Recent runs")
async def list_runs(
    agent_id: str,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> AgentTestRunList:
    await _agent_or_404(session, agent_id)
    runs = (
        await session.scalars(
            select(AgentTestRun)
            .where(AgentTestRun.agent_id == agent_id)
            .order_by(AgentTestRun.created_at.desc())
            .limit(limit)
        )
    ).all()
    return AgentTestRunList(runs=[run_response(r) for r in runs])


@router.get(
    "/runs/{run_id}", response_model=AgentTestRunResponse, responses=error_responses(404), summary="A run"
)
async def get_run(agent_id: str, run_id: str, session: SessionDep) -> AgentTestRunResponse:
    run = await session.get(AgentTestRun, run_id)
    if run is None or run.agent_id != agent_id:
        raise not_found("test run", run_id)
    return run_response(run)


@router.get("/{test_id}", response_model=AgentTestResponse, responses=error_responses(404), summary="A test")
async def get_test(agent_id: str, test_id: str, session: SessionDep) -> AgentTestResponse:
    return to_response(await _test_or_404(session, agent_id, test_id))


@router.patch(
    "/{test_id}",
    response_model=AgentTestResponse,
    responses=error_responses(404, 422),
    summary="Change a test (only the fields sent)",
)
async def update_test(
    agent_id: str, test_id: str, body: AgentTestUpdate, session: SessionDep
) -> AgentTestResponse:
    test = await _test_or_404(session, agent_id, test_id)
    merged = {**test.spec, "name": test.name, **body.model_dump(mode="json", exclude_unset=True)}
    try:
        spec = ScenarioSpec.model_validate(merged)
    except ValidationError as exc:
        raise HTTPException(422, detail=exc.errors(include_url=False, include_context=False)) from None
    test.name = spec.name
    test.spec = spec.model_dump(mode="json")
    await session.flush()
    return to_response(test)


@router.delete(
    "/{test_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(404),
    summary="Delete a test",
)
async def delete_test(agent_id: str, test_id: str, session: SessionDep) -> Response:
    test = await _test_or_404(session, agent_id, test_id)
    await session.delete(test)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
