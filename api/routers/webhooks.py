"""Webhook configs: ``/v1/convai/webhooks`` CRUD (where events are sent; delivery lives in webhooks.py).

The signing secret is generated when not given and is returned only by the create call.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

import api.agent_service as agent_service
from api.deps import PageDep, SessionDep, error_responses, not_found, paginate
from models import WebhookConfig
from schemas import (
    WebhookCreate,
    WebhookCreatedResponse,
    WebhookListResponse,
    WebhookResponse,
    WebhookUpdate,
)

router = APIRouter(prefix="/convai/webhooks", tags=["webhooks"])


def new_webhook_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def _fields(config: WebhookConfig) -> dict:
    return {
        "id": config.id,
        "url": config.url,
        "events": config.events,
        "active": config.active,
        "agent_id": config.agent_id,
        "created_at": config.created_at,
        "updated_at": config.updated_at,
    }


def to_webhook_response(config: WebhookConfig) -> WebhookResponse:
    return WebhookResponse(**_fields(config))


async def get_webhook_or_404(session: AsyncSession, webhook_id: str) -> WebhookConfig:
    config = await session.get(WebhookConfig, webhook_id)
    if config is None:
        raise not_found("webhook", webhook_id)
    return config


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookCreatedResponse,
    responses=error_responses(404, 413),
    summary="Register a webhook endpoint (the response shows its secret, once)",
)
async def create_webhook(body: WebhookCreate, session: SessionDep) -> WebhookCreatedResponse:
    await agent_service.require_agent_exists(session, body.agent_id)
    config = WebhookConfig(
        url=body.url,
        events=list(body.events),
        secret=body.secret or new_webhook_secret(),
        active=body.active,
        agent_id=body.agent_id,
    )
    session.add(config)
    await session.flush()
    await session.refresh(config)
    return WebhookCreatedResponse(**_fields(config), secret=config.secret)


@router.get(
    "",
    response_model=WebhookListResponse,
    responses=error_responses(400),
    summary="List webhook configs, newest first",
)
async def list_webhooks(
    session: SessionDep, page: PageDep, agent_id: Annotated[str | None, Query(max_length=40)] = None
) -> WebhookListResponse:
    stmt = select(WebhookConfig)
    if agent_id:
        stmt = stmt.where(WebhookConfig.agent_id == agent_id)
    result = await paginate(session, stmt, WebhookConfig, page)
    return WebhookListResponse(
        webhooks=[to_webhook_response(c) for c in result.items],
        has_more=result.has_more,
        next_cursor=result.next_cursor,
    )


@router.get(
    "/{webhook_id}",
    response_model=WebhookResponse,
    responses=error_responses(404),
    summary="Get a webhook config (without its secret)",
)
async def get_webhook(webhook_id: str, session: SessionDep) -> WebhookResponse:
    return to_webhook_response(await get_webhook_or_404(session, webhook_id))


@router.patch(
    "/{webhook_id}",
    response_model=WebhookResponse,
    responses=error_responses(404, 413),
    summary="Update a webhook config (url, events, active, agent, or rotate the secret)",
)
async def update_webhook(webhook_id: str, body: WebhookUpdate, session: SessionDep) -> WebhookResponse:
    config = await get_webhook_or_404(session, webhook_id)
    changes = body.changes()
    if changes.get("agent_id") is not None:
        await agent_service.require_agent_exists(session, changes["agent_id"])
    for column, value in changes.items():
        setattr(config, column, list(value) if column == "events" else value)
    await session.flush()
    await session.refresh(config)
    return to_webhook_response(config)


@router.delete(
    "/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(404),
    summary="Delete a webhook config and its pending deliveries",
)
async def delete_webhook(webhook_id: str, session: SessionDep) -> Response:
    await session.delete(await get_webhook_or_404(session, webhook_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# Delivery history (GET /v1/convai/webhooks/{webhook_id}/deliveries) lives in routers/webhook_deliveries.py.
