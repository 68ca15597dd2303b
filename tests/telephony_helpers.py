"""Helpers of the telephony tests: the Twilio account of the stand-in, an agent on a number, a conversation
once the engine has closed it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "twilio-test-token"
NUMBER = "+15550100001"


async def make_agent(client: httpx.AsyncClient, **overrides: Any) -> str:
    body = {
        "name": "Ava",
        "system_prompt": "You are Ava, calling {{customer_name}} about the demo.",
        "first_message": "Hi, this is Ava.",
        "interrupt_enabled": True,
        **overrides,
    }
    response = await client.post("/v1/convai/agents", json=body)
    assert response.status_code == 201, response.text
    agent_id = response.json()["agent_id"]
    number = await client.post(
        "/v1/convai/phone-numbers", json={"phone_number": NUMBER, "agent_id": agent_id}
    )
    assert number.status_code == 201, number.text
    return agent_id


async def conversation(
    client: httpx.AsyncClient, conversation_id: str, settle: float = 10.0
) -> dict[str, Any]:
    """The conversation once the engine has closed it."""
    for _ in range(int(settle / 0.1)):
        body = (await client.get(f"/v1/convai/conversations/{conversation_id}")).json()
        if body.get("call_state") == "ENDED":
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"conversation not closed: {body}")
