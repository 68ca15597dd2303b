"""Agent versions: ``/v1/convai/agents/{agent_id}/versions``, list, get and restore.

Every change to an agent (its fields, ``conversation_config``, tools, knowledge documents) records an
immutable version, unless it changed nothing; creating an agent records version 1. A conversation
records the version that ran it (``agent_version_id``). See ``storage.agent_versions``.
"""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy import func, select

import api.agent_service as agent_service
from api.deps import PageDep, SessionDep, error_responses, not_found, paginate
from models import AgentVersion
from schemas import AgentVersionListResponse, AgentVersionResponse

router = APIRouter(prefix="/convai/agents/{agent_id}/versions", tags=["agent versions"])


async def _latest_number(session: SessionDep, agent_id: str) -> int:
    return int(
        await session.scalar(select(func.max(AgentVersion.number)).where(AgentVersion.agent_id == agent_id))
        or 0
    )


async def _version_or_404(session: SessionDep, agent_id: str, version_id: str) -> AgentVersion:
    version = await session.get(AgentVersion, version_id)
    if version is None or version.agent_id != agent_id:
        raise not_found("agent version", version_id)
    return version


@router.get(
    "",
    response_model=AgentVersionListResponse,
    responses=error_responses(400, 404),
    summary="List an agent's versions, newest first (paged)",
)
async def list_versions(agent_id: str, session: SessionDep, page: PageDep) -> AgentVersionListResponse:
    await agent_service.get_agent_or_404(session, agent_id)
    latest = await _latest_number(session, agent_id)
    result = await paginate(
        session, select(AgentVersion).where(AgentVersion.agent_id == agent_id), AgentVersion, page
    )
    return AgentVersionListResponse(
        versions=[agent_service.to_version_summary(v, latest) for v in result.items],
        has_more=result.has_more,
        next_cursor=result.next_cursor,
    )


@router.get(
    "/{version_id}",
    response_model=AgentVersionResponse,
    responses=error_responses(404),
    summary="Get a version: the agent's whole configuration as it was",
)
async def get_version(agent_id: str, version_id: str, session: SessionDep) -> AgentVersionResponse:
    await agent_service.get_agent_or_404(session, agent_id)
    version = await _version_or_404(session, agent_id, version_id)
    return agent_service.to_version_response(version, await _latest_number(session, agent_id))


@router.post(
    "/{version_id}/restore",
    status_code=status.HTTP_201_CREATED,
    response_model=AgentVersionResponse,
    responses=error_responses(404),
    summary="Restore a version: the agent takes its configuration again, as a new version",
)
async def restore_version(agent_id: str, version_id: str, session: SessionDep) -> AgentVersionResponse:
    agent = await agent_service.get_agent_or_404(session, agent_id)
    version = await _version_or_404(session, agent_id, version_id)
    restored = await agent_service.restore_version(session, agent, version)
    return agent_service.to_version_response(restored, restored.number)
