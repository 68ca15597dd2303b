"""Phone numbers: ``/v1/convai/phone-numbers`` CRUD; a number routes its inbound calls to its agent.

A number is unique (409 on a duplicate). An ``agent_id`` naming no agent is a 404, as for any
unknown id.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

import api.agent_service as agent_service
from api.deps import PageDep, SessionDep, conflict, error_responses, flush_or_conflict, not_found, paginate
from models import PhoneNumber
from schemas import PhoneNumberCreate, PhoneNumberListResponse, PhoneNumberResponse, PhoneNumberUpdate

router = APIRouter(prefix="/convai/phone-numbers", tags=["phone numbers"])


def to_phone_number_response(number: PhoneNumber) -> PhoneNumberResponse:
    return PhoneNumberResponse(
        id=number.id,
        phone_number=number.phone_number,
        agent_id=number.agent_id,
        label=number.label,
        created_at=number.created_at,
        updated_at=number.updated_at,
    )


async def _get_or_404(session: AsyncSession, phone_number_id: str) -> PhoneNumber:
    number = await session.get(PhoneNumber, phone_number_id)
    if number is None:
        raise not_found("phone number", phone_number_id)
    return number


async def _refuse_duplicate(session: AsyncSession, phone_number: str, own_id: str | None = None) -> None:
    existing = await session.scalar(select(PhoneNumber.id).where(PhoneNumber.phone_number == phone_number))
    if existing is not None and existing != own_id:
        raise conflict(f"phone number already registered: {phone_number}")


async def _save(session: AsyncSession, number: PhoneNumber) -> PhoneNumberResponse:
    await flush_or_conflict(session, f"phone number already registered: {number.phone_number}")
    await session.refresh(number)
    return to_phone_number_response(number)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=PhoneNumberResponse,
    responses=error_responses(404, 409, 413),
    summary="Register a phone number (E.164) and the agent that answers it",
)
async def create_phone_number(body: PhoneNumberCreate, session: SessionDep) -> PhoneNumberResponse:
    await agent_service.require_agent_exists(session, body.agent_id)
    await _refuse_duplicate(session, body.phone_number)
    number = PhoneNumber(phone_number=body.phone_number, agent_id=body.agent_id, label=body.label)
    session.add(number)
    return await _save(session, number)


@router.get(
    "",
    response_model=PhoneNumberListResponse,
    responses=error_responses(400),
    summary="List phone numbers, newest first",
)
async def list_phone_numbers(
    session: SessionDep, page: PageDep, agent_id: Annotated[str | None, Query(max_length=40)] = None
) -> PhoneNumberListResponse:
    stmt = select(PhoneNumber)
    if agent_id:
        stmt = stmt.where(PhoneNumber.agent_id == agent_id)
    result = await paginate(session, stmt, PhoneNumber, page)
    return PhoneNumberListResponse(
        phone_numbers=[to_phone_number_response(n) for n in result.items],
        has_more=result.has_more,
        next_cursor=result.next_cursor,
    )


@router.get(
    "/{phone_number_id}",
    response_model=PhoneNumberResponse,
    responses=error_responses(404),
    summary="Get a phone number",
)
async def get_phone_number(phone_number_id: str, session: SessionDep) -> PhoneNumberResponse:
    return to_phone_number_response(await _get_or_404(session, phone_number_id))


@router.patch(
    "/{phone_number_id}",
    response_model=PhoneNumberResponse,
    responses=error_responses(404, 409, 413),
    summary="Update a phone number: its agent, label or the number itself",
)
async def update_phone_number(
    phone_number_id: str, body: PhoneNumberUpdate, session: SessionDep
) -> PhoneNumberResponse:
    number = await _get_or_404(session, phone_number_id)
    changes = body.changes()
    if changes.get("agent_id") is not None:
        await agent_service.require_agent_exists(session, changes["agent_id"])
    if "phone_number" in changes:
        await _refuse_duplicate(session, changes["phone_number"], own_id=number.id)
    for column, value in changes.items():
        setattr(number, column, value)
    return await _save(session, number)


@router.delete(
    "/{phone_number_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(404),
    summary="Delete a phone number",
)
async def delete_phone_number(phone_number_id: str, session: SessionDep) -> Response:
    await session.delete(await _get_or_404(session, phone_number_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
