"""The do-not-call list: ``/v1/convai/dnc``. Listed numbers are never dialled (outbound calls get a 409,
campaign recipients end as ``dnc``); the agent's ``add_to_dnc`` tool adds the caller's number."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, HTTPException, Query, Response, UploadFile, status
from sqlalchemy import func, select

from api.deps import PageDep, SessionDep, error_responses, not_found, paginate
from core.phone_numbers import InvalidPhoneNumber, normalize
from models import DncEntry
from schemas import (
    DncAddResponse,
    DncCheckResponse,
    DncCreate,
    DncEntryResponse,
    DncImportError,
    DncImportResponse,
    DncListResponse,
)
from telephony import dnc
from telephony.dnc import DncImportFileError

router = APIRouter(prefix="/convai/dnc", tags=["do-not-call list"])


def to_response(entry: DncEntry) -> DncEntryResponse:
    return DncEntryResponse(
        id=entry.id,
        phone_number=entry.phone_number,
        reason=entry.reason,
        source=entry.source,
        conversation_id=entry.conversation_id,
        created_at=entry.created_at,
    )


def _number_param(value: str) -> str:
    try:
        return normalize(value)
    except InvalidPhoneNumber as exc:
        raise HTTPException(
            422,
            detail=[
                {
                    "loc": ["query", "phone_number"],
                    "msg": f"invalid phone number: {exc}",
                    "type": "value_error",
                }
            ],
        ) from None


@router.get("", response_model=DncListResponse, summary="List the do-not-call list, newest first")
async def list_dnc(
    session: SessionDep,
    page: PageDep,
    search: Annotated[
        str | None,
        Query(
            max_length=40, description="Numbers containing these digits, or (no digits) reasons with the text"
        ),
    ] = None,
    source: Annotated[
        Literal["api", "tool", "csv"] | None,
        Query(description="api: added by a person; tool: by the caller, on a call; csv: by an import"),
    ] = None,
) -> DncListResponse:
    stmt = select(DncEntry)
    if search and search.strip():
        digits = "".join(ch for ch in search if ch.isdigit())
        if digits:
            stmt = stmt.where(DncEntry.phone_number.contains(digits, autoescape=True))
        else:
            stmt = stmt.where(func.lower(DncEntry.reason).contains(search.strip().lower(), autoescape=True))
    if source:
        stmt = stmt.where(DncEntry.source == source)
    total = await session.scalar(select(func.count()).select_from(stmt.subquery()))
    result = await paginate(session, stmt, DncEntry, page)
    return DncListResponse(
        entries=[to_response(e) for e in result.items],
        has_more=result.has_more,
        next_cursor=result.next_cursor,
        total=int(total or 0),
    )


@router.post(
    "/import",
    response_model=DncImportResponse,
    responses=error_responses(413, 422),
    summary="Import a CSV of numbers onto the do-not-call list (errors reported per row)",
)
async def import_dnc(
    session: SessionDep,
    file: Annotated[
        UploadFile, File(description="CSV: a phone_number column (reason optional), or a number a line")
    ],
    reason: Annotated[str, Form(max_length=500, description="Reason of rows without their own")] = "",
    default_region: Annotated[
        str | None, Form(pattern=r"^[A-Za-z]{2}$", description="ISO country of numbers without +country code")
    ] = None,
) -> DncImportResponse:
    try:
        # Up to 50,000 numbers parsed by libphonenumber: CPU work, off the event loop.
        parsed = await asyncio.to_thread(dnc.parse_import_csv, await file.read(), default_region or None)
    except DncImportFileError as exc:
        raise HTTPException(422, detail=str(exc)) from None
    _, added = await dnc.add(
        session, list(parsed.numbers), reason=reason, source="csv", reasons=parsed.numbers
    )
    return DncImportResponse(
        rows=parsed.rows,
        added=added,
        already_listed=len(parsed.numbers) - added,
        duplicates=parsed.duplicates,
        invalid=parsed.invalid,
        errors=[DncImportError(line=line, value=value, error=why) for line, value, why in parsed.errors],
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DncAddResponse,
    responses=error_responses(413),
    summary="Add one number or many to the do-not-call list",
)
async def add_dnc(body: DncCreate, session: SessionDep) -> DncAddResponse:
    entries, added = await dnc.add(session, body.numbers(), reason=body.reason, source="api")
    return DncAddResponse(added=added, entries=[to_response(e) for e in entries])


@router.get("/check", response_model=DncCheckResponse, summary="Is this number on the do-not-call list?")
async def check_dnc(
    session: SessionDep,
    phone_number: Annotated[str, Query(max_length=40, description="Any international notation")],
) -> DncCheckResponse:
    number = _number_param(phone_number)
    entry = await dnc.on_list(session, number)
    return DncCheckResponse(
        phone_number=number, on_list=entry is not None, entry=to_response(entry) if entry else None
    )


@router.delete(
    "/{entry_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Take a number off the do-not-call list",
)
async def delete_dnc(entry_id: str, session: SessionDep) -> Response:
    entry = await session.get(DncEntry, entry_id)
    if entry is None:
        raise not_found("do-not-call entry", entry_id)
    await session.delete(entry)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
