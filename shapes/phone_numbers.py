"""Shapes of the phone numbers API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from shapes.common import E164, Id, Page, PartialUpdate, Strict

__all__ = ["PhoneNumberCreate", "PhoneNumberListResponse", "PhoneNumberResponse", "PhoneNumberUpdate"]


class PhoneNumberCreate(Strict):
    phone_number: E164
    agent_id: Id | None = Field(default=None, description="Agent answering inbound calls to this number")
    label: str = Field(default="", max_length=200)


class PhoneNumberUpdate(PartialUpdate):
    NON_NULLABLE = frozenset({"phone_number", "label"})

    phone_number: E164 | None = None
    agent_id: Id | None = None
    label: str | None = Field(default=None, max_length=200)


class PhoneNumberResponse(BaseModel):
    id: str
    phone_number: str
    agent_id: str | None
    label: str
    created_at: datetime
    updated_at: datetime


class PhoneNumberListResponse(Page):
    phone_numbers: list[PhoneNumberResponse]
