"""Campaigns in the ElevenLabs batch-calling shape: ``/v1/convai/batch-calling/…``.

``submit`` (JSON, as the official SDK's ``batch_calls.create``) and ``upload`` (a lead CSV), list
(``workspace``), get with per-recipient status, cancel, retry, delete. The dialer in the service does
the calling; these routes only read and write the campaign's rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Query, Response, UploadFile, status
from pydantic import ValidationError
from sqlalchemy import select

from api.deps import RuntimeDep, SessionDep, decode_cursor, encode_cursor, error_responses, not_found
from models import Agent, Campaign
from schemas import (
    BatchCallDetailedResponse,
    BatchCallResponse,
    BatchCallSubmit,
    BatchRecipientPage,
    CampaignProgress,
    WorkspaceBatchCallsResponse,
)
from telephony import campaign_reports, campaigns
from telephony.campaigns import CampaignError
from utils import utcnow

router = APIRouter(prefix="/convai/batch-calling", tags=["campaigns (batch calling)"])


async def _get(session: SessionDep, batch_id: str) -> Campaign:
    campaign = await session.get(Campaign, batch_id)
    if campaign is None:
        raise not_found("batch call", batch_id)
    return campaign


async def _summary(session: SessionDep, campaign: Campaign) -> BatchCallResponse:
    agent_name = await session.scalar(select(Agent.name).where(Agent.id == campaign.agent_id)) or ""
    counts = (await campaigns.totals(session, [campaign.id]))[campaign.id]
    return campaigns.to_response(campaign, agent_name, counts)


async def _change(
    session: SessionDep, batch_id: str, action: Callable[[Any, Campaign], Awaitable[None]]
) -> BatchCallResponse:
    """One state change of a campaign (pause, resume, cancel, retry): 404/409 as the service says."""
    campaign = await _get(session, batch_id)
    try:
        await action(session, campaign)
    except CampaignError as exc:
        raise HTTPException(exc.status, detail=exc.detail) from None
    await session.flush()
    return await _summary(session, campaign)


async def _create(session: SessionDep, runtime: RuntimeDep, body: BatchCallSubmit) -> BatchCallResponse:
    try:
        campaign = await campaigns.create_campaign(session, body)
    except CampaignError as exc:
        raise HTTPException(exc.status, detail=exc.detail) from None
    response = await _summary(session, campaign)
    await session.commit()
    runtime.dialer.notify()
    return response


@router.post(
    "/submit",
    response_model=BatchCallResponse,
    responses=error_responses(404, 413),
    summary="Start a campaign: call every recipient with an agent (ElevenLabs batch-calling body)",
)
async def submit(body: BatchCallSubmit, session: SessionDep, runtime: RuntimeDep) -> BatchCallResponse:
    return await _create(session, runtime, body)


@router.post(
    "/upload",
    response_model=BatchCallResponse,
    responses=error_responses(404, 413),
    summary="Start a campaign from a lead CSV (phone_number column; timezone optional; others = variables)",
)
async def upload(
    session: SessionDep,
    runtime: RuntimeDep,
    file: Annotated[UploadFile, File(description="CSV with a header row")],
    call_name: Annotated[str, Form(min_length=1, max_length=200)],
    agent_id: Annotated[str, Form(min_length=1, max_length=40)],
    agent_phone_number_id: Annotated[str | None, Form(max_length=40)] = None,
    scheduled_time_unix: Annotated[int | None, Form(ge=0)] = None,
    timezone: Annotated[str | None, Form(max_length=64)] = None,
    default_region: Annotated[str | None, Form(max_length=2)] = None,
    target_concurrency_limit: Annotated[int | None, Form()] = None,
    calls_per_minute: Annotated[int | None, Form()] = None,
    calling_hours_start: Annotated[str | None, Form(max_length=5)] = None,
    calling_hours_end: Annotated[str | None, Form(max_length=5)] = None,
    calling_days: Annotated[str | None, Form(max_length=20, description="e.g. 0,1,2,3,4")] = None,
    retry_outcomes: Annotated[str | None, Form(max_length=100, description="e.g. no_answer,busy")] = None,
    retry_delay_sec: Annotated[int | None, Form()] = None,
    max_attempts: Annotated[int | None, Form()] = None,
) -> BatchCallResponse:
    try:
        # Parsing and validating thousands of rows is CPU work: off the event loop.
        leads = await asyncio.to_thread(campaigns.parse_leads_csv, await file.read())
    except CampaignError as exc:
        raise HTTPException(exc.status, detail=exc.detail) from None
    raw: dict[str, object] = {
        "call_name": call_name,
        "agent_id": agent_id,
        "agent_phone_number_id": agent_phone_number_id or None,
        "recipients": leads,
        "scheduled_time_unix": scheduled_time_unix,
        "timezone": timezone or None,
        "default_region": default_region or None,
        "target_concurrency_limit": target_concurrency_limit,
    }
    if calls_per_minute is not None:
        raw["calls_per_minute"] = calls_per_minute
    if calling_hours_start or calling_hours_end or calling_days:
        hours: dict[str, object] = {}
        if calling_hours_start:
            hours["start"] = calling_hours_start
        if calling_hours_end:
            hours["end"] = calling_hours_end
        if calling_days is not None:
            hours["days"] = [d.strip() for d in calling_days.split(",") if d.strip()]
        raw["calling_hours"] = hours
    if retry_outcomes is not None or retry_delay_sec is not None or max_attempts is not None:
        policy: dict[str, object] = {
            "outcomes": [o.strip() for o in (retry_outcomes or "").split(",") if o.strip()]
        }
        if retry_delay_sec is not None:
            policy["delay_sec"] = retry_delay_sec
        if max_attempts is not None:
            policy["max_attempts"] = max_attempts
        raw["retry"] = policy
    try:
        body = await asyncio.to_thread(BatchCallSubmit.model_validate, raw)
    except ValidationError as exc:
        detail = [
            {"loc": ["body", *e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        raise HTTPException(422, detail=detail) from None
    return await _create(session, runtime, body)


@router.get(
    "/workspace",
    response_model=WorkspaceBatchCallsResponse,
    responses=error_responses(400),
    summary="List campaigns, newest first (next_doc pages on)",
)
async def list_batch_calls(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
    last_doc: Annotated[str | None, Query(max_length=200)] = None,
    agent_id: Annotated[str | None, Query(max_length=40)] = None,
) -> WorkspaceBatchCallsResponse:
    stmt = select(Campaign)
    if agent_id:
        stmt = stmt.where(Campaign.agent_id == agent_id)
    if last_doc:
        created_at, item_id = decode_cursor(last_doc)
        stmt = stmt.where(
            (Campaign.created_at < created_at)
            | ((Campaign.created_at == created_at) & (Campaign.id < item_id))
        )
    rows = list(
        (
            await session.scalars(
                stmt.order_by(Campaign.created_at.desc(), Campaign.id.desc()).limit(limit + 1)
            )
        ).all()
    )
    has_more = len(rows) > limit
    rows = rows[:limit]
    names = dict(
        (
            await session.execute(
                select(Agent.id, Agent.name).where(Agent.id.in_({c.agent_id for c in rows}))
            )
        ).all()
    )
    counts = await campaigns.totals(session, [c.id for c in rows])
    return WorkspaceBatchCallsResponse(
        batch_calls=[campaigns.to_response(c, names.get(c.agent_id, ""), counts[c.id]) for c in rows],
        next_doc=encode_cursor(rows[-1].created_at, rows[-1].id) if has_more and rows else None,
        has_more=has_more,
    )


@router.get(
    "/{batch_id}",
    response_model=BatchCallDetailedResponse,
    summary="A campaign with every recipient's status and outcome",
)
async def get_batch_call(batch_id: str, session: SessionDep) -> BatchCallDetailedResponse:
    return await campaigns.detailed(session, await _get(session, batch_id))


@router.get(
    "/{batch_id}/progress",
    response_model=CampaignProgress,
    responses=error_responses(404),
    summary="Progress at a glance: counts by status and outcome, pace, expected finish (calling hours)",
)
async def get_progress(batch_id: str, session: SessionDep) -> CampaignProgress:
    return await campaign_reports.progress(session, await _get(session, batch_id), utcnow())


@router.get(
    "/{batch_id}/recipients",
    response_model=BatchRecipientPage,
    responses=error_responses(400, 404),
    summary="The campaign's leads in CSV order, filtered by status, outcome or number, a page at a time",
)
async def list_recipients(
    batch_id: str,
    session: SessionDep,
    status_filter: Annotated[str | None, Query(alias="status", max_length=16)] = None,
    outcome: Annotated[
        str | None, Query(max_length=32, description="An outcome, or none (no outcome yet)")
    ] = None,
    search: Annotated[str | None, Query(max_length=40, description="Numbers containing these digits")] = None,
    cursor: Annotated[str | None, Query(max_length=12)] = None,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> BatchRecipientPage:
    if cursor is not None and not cursor.isdigit():
        raise HTTPException(400, detail="invalid cursor: pass back next_cursor as it was given")
    return await campaign_reports.recipients_page(
        session,
        await _get(session, batch_id),
        status=status_filter or None,
        outcome=outcome or None,
        search=search,
        cursor=int(cursor or 0),
        page_size=page_size,
    )


@router.get(
    "/{batch_id}/export.csv",
    response_class=Response,
    responses={
        200: {"content": {"text/csv": {}}, "description": "One line per lead"},
        **error_responses(404),
    },
    summary="The leads with their status, outcome, attempts, call and summary, as CSV",
)
async def export_recipients(batch_id: str, session: SessionDep) -> Response:
    campaign = await _get(session, batch_id)
    rows = await campaign_reports.export_rows(session, campaign)
    body = await asyncio.to_thread(campaign_reports.export_csv, rows)  # up to 10,000 rows
    return Response(
        content=body,
        media_type="text/csv; charset=utf-8",
        headers={
            "content-disposition": f'attachment; filename="{campaign_reports.export_filename(campaign)}"'
        },
    )


@router.post(
    "/{batch_id}/pause",
    response_model=BatchCallResponse,
    responses=error_responses(404, 409),
    summary="Pause a campaign: no new calls until resumed (calls in progress finish)",
)
async def pause_batch_call(batch_id: str, session: SessionDep) -> BatchCallResponse:
    return await _change(session, batch_id, campaigns.pause)


@router.post(
    "/{batch_id}/resume",
    response_model=BatchCallResponse,
    responses=error_responses(404, 409),
    summary="Resume a paused campaign",
)
async def resume_batch_call(batch_id: str, session: SessionDep, runtime: RuntimeDep) -> BatchCallResponse:
    response = await _change(session, batch_id, campaigns.resume)
    await session.commit()
    runtime.dialer.notify()
    return response


@router.post(
    "/{batch_id}/cancel",
    response_model=BatchCallResponse,
    responses=error_responses(409),
    summary="Cancel a campaign: no new calls (calls in progress finish)",
)
async def cancel_batch_call(batch_id: str, session: SessionDep) -> BatchCallResponse:
    return await _change(session, batch_id, campaigns.cancel)


@router.post(
    "/{batch_id}/retry",
    response_model=BatchCallResponse,
    responses=error_responses(409),
    summary="Call again the recipients that failed, were busy, did not answer or reached voicemail",
)
async def retry_batch_call(batch_id: str, session: SessionDep, runtime: RuntimeDep) -> BatchCallResponse:
    response = await _change(session, batch_id, campaigns.retry)
    await session.commit()
    runtime.dialer.notify()
    return response


@router.delete(
    "/{batch_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(409),
    summary="Delete a campaign and its recipients (conversations stay in history)",
)
async def delete_batch_call(batch_id: str, session: SessionDep) -> Response:
    campaign = await _get(session, batch_id)
    if campaign.status in ("pending", "in_progress", "paused"):
        raise HTTPException(409, detail=f"the campaign is {campaign.status}: cancel it first")
    await session.delete(campaign)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
