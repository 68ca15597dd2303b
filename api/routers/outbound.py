"""Outbound calls: ``POST /v1/convai/outbound`` and ElevenLabs' ``POST /v1/convai/twilio/outbound-call``."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from api.deps import RuntimeDep, error_responses
from schemas import (
    ElevenLabsOutboundCallRequest,
    ElevenLabsOutboundCallResponse,
    OutboundCallRequest,
    OutboundCallResponse,
)
from telephony.outbound import OutboundCallError, place_call

router = APIRouter(prefix="/convai", tags=["outbound calls"])


@router.post(
    "/outbound",
    status_code=status.HTTP_201_CREATED,
    response_model=OutboundCallResponse,
    responses=error_responses(404, 409, 422, 502, 503),
    summary="Call a number with an agent",
)
async def create_outbound_call(body: OutboundCallRequest, runtime: RuntimeDep) -> OutboundCallResponse:
    try:
        placed = await place_call(
            runtime,
            agent_id=body.agent_id,
            to_number=body.to_number,
            from_number=body.from_number,
            dynamic_variables=body.dynamic_variables,
        )
    except OutboundCallError as exc:
        raise HTTPException(exc.status, detail=exc.detail) from None
    return OutboundCallResponse(
        conversation_id=placed.conversation_id, call_sid=placed.call_sid, status=placed.status
    )


@router.post(
    "/twilio/outbound-call",
    response_model=ElevenLabsOutboundCallResponse,
    responses=error_responses(404, 409, 422, 502, 503),
    summary="Call a number with an agent (ElevenLabs shape)",
)
async def create_outbound_call_elevenlabs(
    body: ElevenLabsOutboundCallRequest, runtime: RuntimeDep
) -> ElevenLabsOutboundCallResponse:
    from_number = None
    if body.agent_phone_number_id:
        from models import PhoneNumber

        async with runtime.db.session() as session:
            number = await session.get(PhoneNumber, body.agent_phone_number_id)
        if number is None:
            raise HTTPException(404, detail=f"phone number not found: {body.agent_phone_number_id}")
        from_number = number.phone_number
    variables = (
        body.conversation_initiation_client_data.dynamic_variables
        if body.conversation_initiation_client_data
        else {}
    )
    try:
        placed = await place_call(
            runtime,
            agent_id=body.agent_id,
            to_number=body.to_number,
            from_number=from_number,
            dynamic_variables=variables,
        )
    except OutboundCallError as exc:
        raise HTTPException(exc.status, detail=exc.detail) from None
    return ElevenLabsOutboundCallResponse(
        success=True,
        message="Call initiated",
        conversation_id=placed.conversation_id,
        callSid=placed.call_sid,
    )
