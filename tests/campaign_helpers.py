"""Helpers of the campaign tests: settings against the Twilio stand-in, an agent on a number, leads and their
time zones, the engine's part of an answered call, polling a batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from models import Conversation, ConversationTurn, ToolCallRecord
from tests.conftest import LiveServer, make_settings
from tests.twilio_standin import PlacedCall, TwilioStandIn

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "twilio-campaign-token"
AGENT_NUMBER = "+14155550100"


def settings_for(tmp_path: Path, twilio: TwilioStandIn, **overrides: Any):  # type: ignore[no-untyped-def]
    return make_settings(
        tmp_path,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_base=twilio.url,
        **{"dialer_tick_sec": 0.05, "dialer_outcome_wait_sec": 5.0, **overrides},
    )


async def make_agent(client: httpx.AsyncClient) -> tuple[str, str]:
    r = await client.post(
        "/v1/convai/agents",
        json={
            "name": "Ava",
            "system_prompt": "You are Ava, calling {{first_name}} about the demo.",
            "first_message": "Hi {{first_name}}, this is Ava.",
            "builtin_tools": ["end_call", "book_meeting", "add_to_dnc"],
        },
    )
    assert r.status_code == 201, r.text
    agent_id = r.json()["agent_id"]
    r = await client.post(
        "/v1/convai/phone-numbers", json={"phone_number": AGENT_NUMBER, "agent_id": agent_id}
    )
    assert r.status_code == 201, r.text
    return agent_id, r.json()["id"]


def lead(n: int) -> str:
    """Valid New York numbers: +1 212 555 01xx … (phonenumbers knows their zone)."""
    return f"+1212555{n:04d}"


def zone_at_local_hour(hour: int) -> str:
    """An Etc/GMT zone whose local time now is about ``hour`` o'clock (calling hours independent of the clock)."""
    offset = (hour - datetime.now(UTC).hour) % 24
    if offset > 12:
        offset -= 24
    return "UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"  # Etc/GMT-3 is UTC+3


class Engine:
    """What the call engine would leave behind for an answered human: a transcript line, maybe a meeting."""

    def __init__(self) -> None:
        self.server: LiveServer | None = None
        self.behaviour: dict[str, str] = {}  # number -> meeting | no
        self.busy = 0  # answers being written

    async def answered(self, call: PlacedCall) -> None:
        # While the service restarts the call goes on at Twilio; the engine of the next process takes it.
        for _ in range(200):
            if self.server is not None:
                break
            await asyncio.sleep(0.05)
        assert self.server is not None, "no service came back to take the call"
        self.busy += 1
        try:
            await self._leave_behind(self.server.runtime, call)
        finally:
            self.busy -= 1

    async def _leave_behind(self, runtime: Any, call: PlacedCall) -> None:
        async with runtime.db.session() as session:
            conversation = await session.scalar(select(Conversation).where(Conversation.call_sid == call.sid))
            assert conversation is not None, "the status callback linked the call SID"
            conversation_id = conversation.id
            if self.behaviour.get(str(call.params["To"])) == "meeting":
                session.add(
                    ConversationTurn(conversation_id=conversation_id, seq=0, role="user", text="Sure.")
                )
                session.add(
                    ToolCallRecord(
                        conversation_id=conversation_id,
                        name="book_meeting",
                        arguments={"start_time": "2026-12-01T10:00:00"},
                        result={"meeting_id": "mtg_x"},
                    )
                )
            else:
                session.add(
                    ConversationTurn(
                        conversation_id=conversation_id, seq=0, role="user", text="No thanks, not interested."
                    )
                )
            conversation.call_state = "ENDED"
        await runtime.post_call(conversation_id)


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def batch(client: httpx.AsyncClient, batch_id: str) -> dict[str, Any]:
    r = await client.get(f"/v1/convai/batch-calling/{batch_id}")
    assert r.status_code == 200, r.text
    return r.json()


async def submit(client: httpx.AsyncClient, agent_id: str, numbers: list[str], **rules: Any) -> str:
    r = await client.post(
        "/v1/convai/batch-calling/submit",
        json={
            "call_name": "test",
            "agent_id": agent_id,
            "recipients": [{"phone_number": n, "dynamic_variables": {"first_name": "Sam"}} for n in numbers],
            **rules,
        },
    )
    assert r.status_code == 200, r.text
    return r.json()["id"]
