"""Shared pieces of the API's shapes: base classes, validated field types, pages and errors."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from core.phone_numbers import InvalidPhoneNumber, normalize

__all__ = [
    "E164",
    "TOOL_NAME_PATTERN",
    "BuiltinToolName",
    "ConversationStatus",
    "ErrorResponse",
    "HttpUrlStr",
    "Id",
    "Page",
    "PartialUpdate",
    "Strict",
    "ToolKind",
    "WebhookEventType",
]

TOOL_NAME_PATTERN = r"^[a-zA-Z_][a-zA-Z0-9_]{0,63}$"

BuiltinToolName = Literal["end_call", "transfer_call", "send_sms", "book_meeting", "add_to_dnc"]
ToolKind = Literal["webhook", "end_call", "transfer_call", "send_sms", "book_meeting", "add_to_dnc"]
WebhookEventType = Literal[
    "call.started", "call.completed", "call.interrupted", "call.failed", "tool.executed", "campaign.completed"
]
ConversationStatus = Literal[
    "initiated", "ringing", "in_progress", "completed", "busy", "no_answer", "failed", "canceled"
]


def _check_e164(value: str) -> str:
    """Any international notation in, E.164 out (``+1 (415) 555-0123`` -> ``+14155550123``)."""
    try:
        return normalize(value)
    except InvalidPhoneNumber as exc:
        raise ValueError(f"invalid phone number (E.164 expected): {exc}") from None


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL")
    return value


def _unique(values: list[Any]) -> list[Any]:
    if len(set(values)) != len(values):
        raise ValueError("items must be unique")
    return values


E164 = Annotated[
    str,
    Field(
        max_length=40,
        examples=["+14155550123"],
        description="International phone number; stored in E.164 (+ country code and digits)",
    ),
    AfterValidator(_check_e164),
]
HttpUrlStr = Annotated[
    str, Field(max_length=1000, examples=["https://example.com/hook"]), AfterValidator(_check_http_url)
]
Id = Annotated[str, Field(min_length=1, max_length=40)]


class Strict(BaseModel):
    """Request bodies refuse unknown fields, so a typo is a 422 instead of a silent no-op."""

    model_config = ConfigDict(extra="forbid")


class PartialUpdate(Strict):
    """PATCH bodies: only the fields sent change; ``null`` is refused where the column is required."""

    NON_NULLABLE: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _refuse_null_for_required(self) -> PartialUpdate:
        for name in self.model_fields_set & self.NON_NULLABLE:
            if getattr(self, name) is None:
                raise ValueError(f"{name} may not be null")
        return self

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


class ErrorResponse(BaseModel):
    """Every error body: a message, or for 422 the list of invalid fields."""

    detail: str | list[dict[str, Any]] = Field(examples=["agent not found: agent_123"])


class Page(BaseModel):
    """Cursor pagination, newest first: pass ``next_cursor`` back as ``cursor`` while ``has_more``."""

    has_more: bool
    next_cursor: str | None = None
