"""Helpers of the REST platform tests: a running app with settings overrides, its database, agents and
conversations, paging through lists, Bearer tokens, 401 and 422 bodies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
from sqlalchemy import func, select

from models import Conversation, ConversationTurn
from storage.db import Database
from tests.conftest import API_KEY, make_settings

AGENTS = "/v1/convai/agents"
CONVERSATIONS = "/v1/convai/conversations"
PHONE_NUMBERS = "/v1/convai/phone-numbers"
WEBHOOKS = "/v1/convai/webhooks"
JWT_SECRET = "test-jwt-secret-0123456789abcdef0123"  # make_settings' jwt_secret


# ---------------------------------------------------------------- helpers


@asynccontextmanager
async def running_app(tmp_path: Path, **overrides: object) -> AsyncIterator[httpx.AsyncClient]:
    """Like the app_client fixture, with settings overrides: the app in-process, lifespan run."""
    from main import create_app

    app = create_app(make_settings(tmp_path, **overrides))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test", headers={"xi-api-key": API_KEY}
        ) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def bare_client(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """A client of the same in-process app that sends no credentials."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=client.app), base_url="http://test")  # type: ignore[attr-defined]


def db_of(client: httpx.AsyncClient) -> Database:
    return client.app.state.runtime.db  # type: ignore[attr-defined]


async def count(db: Database, model: Any) -> int:
    async with db.session() as session:
        return await session.scalar(select(func.count()).select_from(model))


async def create_agent(client: httpx.AsyncClient, name: str = "Sales Bot", **fields: Any) -> str:
    r = await client.post(AGENTS, json={"name": name, **fields})
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def insert_conversation(
    db: Database,
    agent_id: str | None,
    created_at: datetime,
    turns: Sequence[tuple[str, str]] = (),
    **fields: Any,
) -> str:
    """A finished call written straight to the database, with (role, text) turns 2.5 s apart."""
    values: dict[str, Any] = {
        "status": "completed",
        "direction": "inbound",
        "from_number": "+14155550100",
        "to_number": "+14155550123",
        "started_at": created_at,
        "ended_at": created_at + timedelta(seconds=42),
        "duration_sec": 42.0,
        "summary": "Caller asked about pricing.",
        "created_at": created_at,
        "updated_at": created_at,
    }
    values.update(fields)
    async with db.session() as session:
        conv = Conversation(agent_id=agent_id, **values)
        conv.turns = [
            ConversationTurn(seq=i, role=role, text=said, start_ms=i * 2500.0, end_ms=i * 2500.0 + 2000)
            for i, (role, said) in enumerate(turns)
        ]
        session.add(conv)
    return conv.id


async def list_all(client: httpx.AsyncClient, path: str, key: str, **params: Any) -> tuple[list[str], int]:
    """Every id of a paginated list, following next_cursor; and the number of pages."""
    ids: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        r = await client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        page = r.json()
        pages += 1
        ids += [item["id"] for item in page[key]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            return ids, pages
        cursor = page["next_cursor"]


def bearer(secret: str = JWT_SECRET, expires_in: timedelta = timedelta(minutes=5), **claims: Any) -> dict:
    payload = {"sub": "console-user", "exp": datetime.now(UTC) + expires_in, **claims}
    return {"Authorization": f"Bearer {jwt.encode(payload, secret, algorithm='HS256')}"}


def assert_plain_401(r: httpx.Response) -> None:
    """A 401 says what is wrong in one JSON string, and nothing else (no trace, no secret)."""
    assert r.status_code == 401, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["www-authenticate"] == "Bearer"
    body = r.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str) and body["detail"]
    for leak in ("Traceback", 'File "', JWT_SECRET, API_KEY):
        assert leak not in r.text


def error_locs(r: httpx.Response) -> list[list[Any]]:
    assert r.status_code == 422, r.text
    return [e["loc"] for e in r.json()["detail"]]
