"""Shapes of the do-not-call list API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, model_validator

from shapes.common import E164, Page, Strict

__all__ = ["DncAddResponse", "DncCheckResponse", "DncCreate", "DncEntryResponse", "DncListResponse"]


class DncCreate(Strict):
    """One number (``phone_number``) or many (``phone_numbers``); numbers already listed are kept as is."""

    phone_number: E164 | None = None
    phone_numbers: list[E164] | None = Field(default=None, min_length=1, max_length=10_000)
    reason: str = Field(default="", max_length=500, examples=["asked to be removed"])

    @model_validator(mode="after")
    def _one_or_many(self) -> DncCreate:
        if (self.phone_number is None) == (self.phone_numbers is None):
            raise ValueError("give either phone_number or phone_numbers")
        return self

    def numbers(self) -> list[str]:
        return [self.phone_number] if self.phone_number else list(self.phone_numbers or [])


class DncEntryResponse(BaseModel):
    id: str
    phone_number: str
    reason: str
    source: str = Field(description="api | tool (the agent's add_to_dnc) | csv")
    conversation_id: str | None
    created_at: datetime


class DncAddResponse(BaseModel):
    added: int = Field(description="How many numbers were not on the list before")
    entries: list[DncEntryResponse]


class DncListResponse(Page):
    entries: list[DncEntryResponse]


class DncCheckResponse(BaseModel):
    phone_number: str
    on_list: bool
    entry: DncEntryResponse | None
