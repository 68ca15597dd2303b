"""Agents: ``/v1/convai/agents`` CRUD.

One set of routes serves both dialects: the flat spec body on ``POST``, and for GET/list/PATCH a
response that is also ElevenLabs' ``GetAgentResponseModel`` / ``GetAgentsPageResponseModel``
(``agent_id``, ``conversation_config``, ``metadata`` …). ElevenLabs' create lives in ``elevenlabs.py``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from sqlalchemy import func, select

import api.agent_service as agent_service
from api.deps import PageDep, RuntimeDep, SessionDep, error_responses, paginate
from models import Agent
from schemas import AgentCreate, AgentListResponse, AgentResponse, AgentUpdate

router = APIRouter(prefix="/convai/agents", tags=["agents"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=AgentResponse,
    responses=error_responses(404, 409, 413),
    summary="Create an agent (flat body), with its tools",
)
async def create_agent(body: AgentCreate, session: SessionDep, runtime: RuntimeDep) -> AgentResponse:
    agent_service.refuse_bench_providers(body.providers, runtime.settings)
    agent = await agent_service.create_agent(session, body)
    return agent_service.to_agent_response(agent)


@router.get(
    "",
    response_model=AgentListResponse,
    responses=error_responses(400),
    summary="List agents, newest first",
)
async def list_agents(
    session: SessionDep,
    page: PageDep,
    search: Annotated[
        str | None, Query(max_length=200, description="Name contains (case-insensitive)")
    ] = None,
) -> AgentListResponse:
    stmt = select(Agent)
    if search:
        stmt = stmt.where(func.lower(Agent.name).contains(search.lower(), autoescape=True))
    result = await paginate(session, stmt, Agent, page)
    return AgentListResponse(
        agents=[agent_service.to_agent_response(a) for a in result.items],
        has_more=result.has_more,
        next_cursor=result.next_cursor,
    )


@router.get(
    "/{agent_id}",
    response_model=AgentResponse,
    responses=error_responses(404),
    summary="Get an agent (flat fields and ElevenLabs shape)",
)
async def get_agent(agent_id: str, session: SessionDep) -> AgentResponse:
    agent = await agent_service.get_agent_or_404(session, agent_id)
    return agent_service.to_agent_response(agent)


@router.patch(
    "/{agent_id}",
    response_model=AgentResponse,
    responses=error_responses(404, 409, 413),
    summary="Update an agent: flat fields and/or ElevenLabs conversation_config (deep-merged)",
)
async def update_agent(
    agent_id: str, body: AgentUpdate, session: SessionDep, runtime: RuntimeDep
) -> AgentResponse:
    agent_service.refuse_bench_providers(body.providers, runtime.settings)
    agent = await agent_service.get_agent_or_404(session, agent_id)
    agent = await agent_service.update_agent(session, agent, body)
    return agent_service.to_agent_response(agent)


@router.delete(
    "/{agent_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(404),
    summary="Delete an agent with its tools, documents and agent-scoped webhooks",
)
async def delete_agent(agent_id: str, request: Request, session: SessionDep) -> Response:
    agent = await agent_service.get_agent_or_404(session, agent_id)
    await session.delete(agent)
    await request.app.state.runtime.knowledge.delete_agent(agent_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
