"""Shared FastAPI dependencies of the REST API: the runtime, a transactional session, pagination."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Generic, Protocol, TypeVar

from fastapi import Depends, HTTPException, Query, Request, status
from pydantic import AfterValidator, Field
from sqlalchemy import Select, and_, or_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import ErrorResponse

if TYPE_CHECKING:
    import asyncio

    from api.auth import KeyRing
    from call.live_calls import LiveCallDirectory
    from call.registry import ConnectionManager
    from config import Settings
    from core.metrics import LoopLagMonitor
    from events.webhooks import WebhookDispatcher
    from knowledge.store import KnowledgeStore
    from providers.registry import ProviderRegistry
    from storage.batch_writer import BatchWriter
    from storage.commands import CommandChannel
    from storage.db import Database
    from telephony.dialer import Dialer
    from telephony.twilio_gateway import TwilioGateway
    from telephony.warm_transfer import Transfers
    from tools.runner import ToolRunner

T = TypeVar("T")


class Services(Protocol):
    """What the routes use of the process's services (``app_runtime.Runtime``, in ``app.state.runtime``)."""

    settings: Settings
    db: Database
    keyring: KeyRing
    providers: ProviderRegistry
    knowledge: KnowledgeStore
    webhooks: WebhookDispatcher
    writer: BatchWriter
    twilio: TwilioGateway
    commands: CommandChannel  # the per-call command channel (reaches the instance holding a call)
    tool_runner: ToolRunner
    transfers: Transfers  # warm transfers: Twilio's conference and rep callbacks
    calls: ConnectionManager
    live_calls: LiveCallDirectory
    dialer: Dialer
    loop_lag: LoopLagMonitor
    instance_id: str
    draining: bool
    test_run_lock: asyncio.Lock  # scenario test runs share the process's models: one at a time

    def readiness(self) -> dict[str, bool]: ...

    def prepare_greeting(self, agent_id: str | None) -> None: ...

    def webhooks_notify(self) -> None: ...


def get_runtime(request: Request) -> Services:
    return request.app.state.runtime


async def get_session(runtime: Annotated[Services, Depends(get_runtime)]) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed if the route returns, rolled back if it raises."""
    async with runtime.db.session() as session:
        yield session


RuntimeDep = Annotated[Services, Depends(get_runtime)]
# scope="function": commit before the response is sent, so a failed commit is never reported as success.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


# ---------------------------------------------------------------- errors


def not_found(kind: str, item_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"{kind} not found: {item_id}")


def conflict(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, detail=detail)


async def flush_or_conflict(session: AsyncSession, detail: str) -> None:
    """Flush now so a unique/foreign-key violation becomes a 409 (the request's transaction rolls back)."""
    try:
        await session.flush()
    except IntegrityError:
        raise conflict(detail) from None


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting the JSON error body of each status code."""
    descriptions = {
        400: "Bad request (e.g. an invalid cursor)",
        404: "Unknown id",
        409: "Conflict with existing data (duplicate name or number, call in progress)",
        403: "Forbidden",
        413: "Request body too large",
        415: "Unsupported media type",
        422: "The request is well-formed but cannot be processed (details in `detail`)",
        502: "An upstream service (Twilio) refused the request or could not be reached",
        503: "A required upstream service is not configured or unavailable",
    }
    return {code: {"model": ErrorResponse, "description": descriptions[code]} for code in codes}


# ---------------------------------------------------------------- dates in query parameters

MAX_UNIX_SECS = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second a datetime can hold


def as_utc(value: datetime) -> datetime:
    """A date from a request, in UTC (naive means UTC). Dates that fall outside the years 1-9999 once
    moved to UTC (``0001-01-01T00:00+01:00``) are refused as invalid input, not failed on in the database."""
    try:
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:
        raise ValueError("date is out of range once converted to UTC") from None


UtcDateTime = Annotated[datetime, AfterValidator(as_utc)]
UnixSeconds = Annotated[int, Field(ge=0, le=MAX_UNIX_SECS)]


# ---------------------------------------------------------------- pagination


@dataclass(frozen=True)
class PageParams:
    page_size: int
    cursor: str | None


def page_params(
    page_size: Annotated[int, Query(ge=1, le=100, description="Items per page (max 100)")] = 30,
    cursor: Annotated[
        str | None, Query(max_length=200, description="next_cursor of the previous page")
    ] = None,
) -> PageParams:
    return PageParams(page_size=page_size, cursor=cursor)


PageDep = Annotated[PageParams, Depends(page_params)]


def encode_cursor(created_at: datetime, item_id: str) -> str:
    """Opaque cursor: the (created_at, id) of the last item of a page, base64url of JSON."""
    raw = json.dumps([created_at.isoformat(), item_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, item_id = json.loads(raw)
        when = datetime.fromisoformat(created_at)
        if when.tzinfo is None or not isinstance(item_id, str):
            raise ValueError
        when = as_utc(when)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="invalid cursor") from None
    return when, item_id


@dataclass
class PageResult(Generic[T]):
    items: Sequence[T]
    has_more: bool
    next_cursor: str | None


async def paginate(
    session: AsyncSession, stmt: Select[Any], model: Any, params: PageParams
) -> PageResult[Any]:
    """Keyset pagination, newest first, over ``model.created_at`` then ``model.id`` (stable on ties)."""
    if params.cursor:
        created_at, item_id = decode_cursor(params.cursor)
        stmt = stmt.where(
            or_(model.created_at < created_at, and_(model.created_at == created_at, model.id < item_id))
        )
    stmt = stmt.order_by(model.created_at.desc(), model.id.desc()).limit(params.page_size + 1)
    rows = list((await session.scalars(stmt)).all())
    has_more = len(rows) > params.page_size
    rows = rows[: params.page_size]
    next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if has_more and rows else None
    return PageResult(items=rows, has_more=has_more, next_cursor=next_cursor)
