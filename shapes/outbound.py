"""Shapes of the outbound calls API (the spec's and ElevenLabs' Twilio call)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from shapes.common import E164, Id, Strict

__all__ = [
    "DynamicVariables",
    "ElevenLabsClientData",
    "ElevenLabsOutboundCallRequest",
    "ElevenLabsOutboundCallResponse",
    "OutboundCallRequest",
    "OutboundCallResponse",
]

DynamicVariables = Annotated[
    dict[str, str | int | float | bool],
    Field(default_factory=dict, max_length=100, description="Values for {{name}} placeholders in the prompt"),
]


class OutboundCallRequest(Strict):
    agent_id: Id
    to_number: E164
    from_number: E164 | None = Field(
        default=None, description="Caller ID; defaults to the agent's number, then TWILIO_PHONE_NUMBER"
    )
    dynamic_variables: DynamicVariables


class OutboundCallResponse(BaseModel):
    conversation_id: str
    call_sid: str
    status: str


class ElevenLabsClientData(BaseModel):
    dynamic_variables: DynamicVariables


class ElevenLabsOutboundCallRequest(BaseModel):
    """ElevenLabs ``POST /v1/convai/twilio/outbound-call`` body (unknown fields are ignored, like theirs)."""

    agent_id: Id
    agent_phone_number_id: Id | None = None
    to_number: E164
    conversation_initiation_client_data: ElevenLabsClientData | None = None


class ElevenLabsOutboundCallResponse(BaseModel):
    success: bool
    message: str
    conversation_id: str | None
    callSid: str | None
