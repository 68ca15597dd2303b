"""ElevenLabs Conversational AI compatibility: the routes whose path differs from the flat API.

Only agent creation needs its own path (``POST /v1/convai/agents/create`` with ``conversation_config``).
Get, list, update and delete of agents and the conversation routes share their paths with the flat
API and answer in a superset shape that the official ``elevenlabs`` SDK parses (see schemas.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

import api.agent_service as agent_service
from api.deps import SessionDep, error_responses
from schemas import ElevenLabsAgentCreate, ElevenLabsAgentCreated

router = APIRouter(prefix="/convai", tags=["elevenlabs compatibility"])


@router.post(
    "/agents/create",
    status_code=status.HTTP_200_OK,
    response_model=ElevenLabsAgentCreated,
    responses=error_responses(413),
    summary="Create an agent from an ElevenLabs conversation_config",
)
async def create_agent_elevenlabs(
    body: ElevenLabsAgentCreate,
    session: SessionDep,
    enable_versioning: Annotated[bool | None, Query(description="Accepted for compatibility; unused")] = None,
) -> ElevenLabsAgentCreated:
    flat, extra = agent_service.agent_create_from_elevenlabs(body)
    agent = await agent_service.create_agent(session, flat, extra_config=extra)
    return ElevenLabsAgentCreated(agent_id=agent.id)
