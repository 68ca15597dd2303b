"""Test calls from the browser: a conversation plus a stream token for the Media Streams WebSocket.

The console's "Call this agent" button speaks Twilio's Media Streams protocol itself, so the same engine
serves it; this route does what Twilio's inbound webhook does for a phone call.
"""

from __future__ import annotations

import secrets

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, Field

from api.deps import SessionDep, error_responses
from models import Agent, Conversation
from storage.agent_versions import stamp_call
from telephony.stream_auth import make_stream_token

router = APIRouter(prefix="/convai/agents", tags=["browser calls"])


class BrowserCallRequest(BaseModel):
    dynamic_variables: dict[str, str | int | float | bool] = Field(default_factory=dict)


class BrowserCallResponse(BaseModel):
    conversation_id: str
    call_sid: str
    stream_url: str = Field(description="Path of the Media Streams WebSocket, relative to this server")
    custom_parameters: dict[str, str] = Field(description="Send these in the `start` message")


@router.post(
    "/{agent_id}/browser-call",
    status_code=status.HTTP_201_CREATED,
    response_model=BrowserCallResponse,
    responses=error_responses(404),
    summary="Start a test call from the browser (Media Streams protocol over a WebSocket)",
)
async def start_browser_call(
    agent_id: str, request: Request, session: SessionDep, body: BrowserCallRequest | None = None
) -> BrowserCallResponse:
    agent = await session.get(Agent, agent_id)
    if agent is None:
        raise HTTPException(404, detail=f"agent {agent_id!r} not found")
    call_sid = "WB" + secrets.token_hex(16)
    conversation = Conversation(
        agent_id=agent_id,
        call_sid=call_sid,
        direction="web",
        from_number="browser",
        status="ringing",
        dynamic_variables=dict((body or BrowserCallRequest()).dynamic_variables),
    )
    session.add(conversation)
    await session.flush()
    await stamp_call(session, conversation, agent, lead_number=None)  # the agent's latest version
    token = make_stream_token(request.app.state.runtime.settings, call_sid, conversation.id)
    return BrowserCallResponse(
        conversation_id=conversation.id,
        call_sid=call_sid,
        stream_url=f"/ws/voice/{call_sid}",
        custom_parameters={"conversation_id": conversation.id, "token": token, "from": "browser"},
    )
