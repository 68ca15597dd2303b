"""Shapes of the webhook configurations API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field

from shapes.common import HttpUrlStr, Id, Page, PartialUpdate, Strict, WebhookEventType, _unique

__all__ = [
    "WebhookCreate",
    "WebhookCreatedResponse",
    "WebhookEvents",
    "WebhookListResponse",
    "WebhookResponse",
    "WebhookSecret",
    "WebhookUpdate",
]

WebhookEvents = Annotated[
    list[WebhookEventType],
    Field(description="Event types to receive; empty = all"),
    AfterValidator(_unique),
]
WebhookSecret = Annotated[str, Field(min_length=16, max_length=200)]


class WebhookCreate(Strict):
    url: HttpUrlStr
    events: WebhookEvents = Field(default_factory=list)
    secret: WebhookSecret | None = Field(
        default=None, description="HMAC signing secret; generated when omitted; returned only by this call"
    )
    active: bool = True
    agent_id: Id | None = Field(default=None, description="Only this agent's events; null = all agents")


class WebhookUpdate(PartialUpdate):
    NON_NULLABLE = frozenset({"url", "events", "secret", "active"})

    url: HttpUrlStr | None = None
    events: WebhookEvents | None = None
    secret: WebhookSecret | None = Field(default=None, description="Rotate the signing secret")
    active: bool | None = None
    agent_id: Id | None = None


class WebhookResponse(BaseModel):
    id: str
    url: str
    events: list[str]
    active: bool
    agent_id: str | None
    created_at: datetime
    updated_at: datetime


class WebhookCreatedResponse(WebhookResponse):
    secret: str = Field(description="Shown once: store it to verify signatures")


class WebhookListResponse(Page):
    webhooks: list[WebhookResponse]
