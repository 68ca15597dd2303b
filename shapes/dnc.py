"""Shapes of the do-not-call list API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, model_validator

from shapes.common import E164, Page, Strict

__all__ = [
    "DNC_SOURCES",
    "DncAddResponse",
    "DncCheckResponse",
    "DncCreate",
    "DncEntryResponse",
    "DncImportError",
    "DncImportResponse",
    "DncListResponse",
]

# Who put a number on the list: api = a person (the API or the console), tool = the caller, on a call
# (the agent's add_to_dnc), csv = an import (POST /v1/convai/dnc/import).
DNC_SOURCES = ("api", "tool", "csv")


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
    source: str = Field(
        description="Who added it: api (a person, through the API or the console) | tool (the caller, on a "
        "call: the agent's add_to_dnc; conversation_id says which) | csv (an import)"
    )
    conversation_id: str | None
    created_at: datetime


class DncAddResponse(BaseModel):
    added: int = Field(description="How many numbers were not on the list before")
    entries: list[DncEntryResponse]


class DncListResponse(Page):
    entries: list[DncEntryResponse]
    total: int = Field(description="Entries matching the search and source (all pages)")


class DncImportError(BaseModel):
    line: int = Field(description="Line of the CSV (1 = the first line, the header when there is one)")
    value: str = Field(description="The text found in the number's column (cut to 64 characters)")
    error: str


class DncImportResponse(BaseModel):
    rows: int = Field(description="Rows with a number read from the file (blank lines are not counted)")
    added: int = Field(description="Numbers put on the list by this import")
    already_listed: int = Field(description="Valid numbers that were on the list already (kept as they were)")
    duplicates: int = Field(description="Rows repeating a number given earlier in the file")
    invalid: int = Field(description="Rows whose number is not a phone number (see errors)")
    errors: list[DncImportError] = Field(description="Every rejected row (the first 1000)")


class DncCheckResponse(BaseModel):
    phone_number: str
    on_list: bool
    entry: DncEntryResponse | None
