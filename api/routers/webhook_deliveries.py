"""Delivery attempts of a webhook config: ``GET /v1/convai/webhooks/{webhook_id}/deliveries``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel
from sqlalchemy import select

from api.deps import SessionDep, UtcDateTime, error_responses
from models import WebhookConfig, WebhookDelivery, WebhookEvent

router = APIRouter(prefix="/convai/webhooks", tags=["webhooks"])


class DeliveryResponse(BaseModel):
    id: str
    event_id: str
    event_type: str
    conversation_id: str | None
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime


class DeliveryList(BaseModel):
    deliveries: list[DeliveryResponse]
    has_more: bool


@router.get(
    "/{webhook_id}/deliveries",
    response_model=DeliveryList,
    responses=error_responses(404),
    summary="Delivery attempts for a webhook config, newest first",
)
async def list_deliveries(
    webhook_id: str,
    session: SessionDep,
    status: Annotated[str | None, Query(pattern="^(pending|delivered|dead)$")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[
        UtcDateTime | None, Query(description="created_at of the last item of the previous page")
    ] = None,
) -> DeliveryList:
    if await session.get(WebhookConfig, webhook_id) is None:
        raise HTTPException(404, detail=f"webhook {webhook_id!r} not found")
    stmt = (
        select(WebhookDelivery, WebhookEvent)
        .join(WebhookEvent, WebhookDelivery.event_id == WebhookEvent.id)
        .where(WebhookDelivery.webhook_id == webhook_id)
        .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
        .limit(limit + 1)
    )
    if status:
        stmt = stmt.where(WebhookDelivery.status == status)
    if before is not None:
        stmt = stmt.where(WebhookDelivery.created_at < before)
    rows = (await session.execute(stmt)).all()
    items = [
        DeliveryResponse(
            id=d.id,
            event_id=e.id,
            event_type=e.type,
            conversation_id=e.conversation_id,
            status=d.status,
            attempts=d.attempts,
            last_status_code=d.last_status_code,
            last_error=d.last_error,
            next_attempt_at=d.next_attempt_at if d.status == "pending" else None,
            delivered_at=d.delivered_at,
            created_at=d.created_at,
        )
        for d, e in rows[:limit]
    ]
    return DeliveryList(deliveries=items, has_more=len(rows) > limit)
