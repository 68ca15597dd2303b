"""Twilio's REST API and webhooks without a media stream, through the twilio SDK and a local stand-in:
placing outbound calls, a call that never reached the agent, missing credentials (503), Twilio refusing
(502), an unknown number.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import LiveServer, make_settings
from tests.telephony_helpers import ACCOUNT_SID, AUTH_TOKEN, NUMBER, make_agent
from tests.twilio_standin import TwilioStandIn

# ---------------------------------------------------------------- Twilio webhooks and REST


@pytest.mark.asyncio
async def test_outbound_call_reaches_twilio_with_the_right_twiml_url(tmp_path: Path) -> None:
    async with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN) as twilio:
        settings = make_settings(
            tmp_path,
            twilio_account_sid=ACCOUNT_SID,
            twilio_auth_token=AUTH_TOKEN,
            twilio_api_base=twilio.url,
        )
        async with LiveServer(settings) as server, server.client() as client:
            agent_id = await make_agent(client)
            missing = await client.post(
                "/v1/convai/outbound", json={"agent_id": agent_id, "to_number": "+15550109999"}
            )
            assert missing.status_code == 422
            assert missing.json()["detail"][0]["loc"] == ["body", "dynamic_variables", "customer_name"]
            bad_number = await client.post(
                "/v1/convai/outbound", json={"agent_id": agent_id, "to_number": "555-0199"}
            )
            assert bad_number.status_code == 422 and "E.164" in bad_number.text
            assert not twilio.calls

            placed = await client.post(
                "/v1/convai/outbound",
                json={
                    "agent_id": agent_id,
                    "to_number": "+15550109999",
                    "dynamic_variables": {"customer_name": "Sam"},
                },
            )
            assert placed.status_code == 201, placed.text
            body = placed.json()
            call = twilio.calls[body["call_sid"]]
            assert call.params["To"] == "+15550109999" and call.params["From"] == NUMBER
            assert (
                call.params["Url"]
                == f"{server.base_url}/twiml/voice_outbound?conversation_id={body['conversation_id']}"
            )
            assert call.params["StatusCallback"] == (
                f"{server.base_url}/twiml/status?conversation_id={body['conversation_id']}"
            )

            # Like Twilio, the stand-in then posts signed status callbacks and fetches the TwiML.
            await twilio.settled()
            assert [code for _, code in call.callbacks] == [200, 200, 200]
            assert f'<Stream url="ws://127.0.0.1:{server.port}/ws/voice/{call.sid}">' in call.twiml
            assert f'<Parameter name="conversation_id" value="{body["conversation_id"]}"' in call.twiml
            detail = (await client.get(f"/v1/convai/conversations/{body['conversation_id']}")).json()
            assert detail["status"] == "in_progress" and detail["dynamic_variables"] == {
                "customer_name": "Sam"
            }

            # The ElevenLabs-shaped route goes the same way.
            eleven = await client.post(
                "/v1/convai/twilio/outbound-call",
                json={
                    "agent_id": agent_id,
                    "to_number": "+15550108888",
                    "conversation_initiation_client_data": {"dynamic_variables": {"customer_name": "Kim"}},
                },
            )
            assert eleven.status_code == 200 and eleven.json()["success"] is True
            assert eleven.json()["callSid"] in twilio.calls

            # A failed call reported by Twilio closes the conversation with that status.
            await twilio.settled()
            assert twilio.unauthorized == 0


@pytest.mark.asyncio
async def test_an_answered_call_that_never_reached_the_agent_is_closed_as_failed(tmp_path: Path) -> None:
    """Twilio could not fetch the TwiML (the service was unreachable): the call completes at Twilio with
    no media stream. No engine will ever close it, so the status callback does: failed, with a reason,
    and a ``call.failed`` event for the CRM (it would otherwise hear nothing of this call)."""
    from sqlalchemy import select

    from models import WebhookEvent
    from tests.twilio_standin import Scenario

    scenario = Scenario("human", 0.05, 0.1, twiml_unreachable=True)
    async with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, scenario=lambda _: scenario) as twilio:
        settings = make_settings(
            tmp_path, twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN, twilio_api_base=twilio.url
        )
        async with LiveServer(settings) as server, server.client() as client:
            agent_id = await make_agent(client, system_prompt="Hello.")
            hook = await client.post("/v1/convai/webhooks", json={"url": "http://127.0.0.1:9/hook"})
            assert hook.status_code == 201, hook.text
            placed = await client.post(
                "/v1/convai/outbound", json={"agent_id": agent_id, "to_number": "+15550109999"}
            )
            assert placed.status_code == 201, placed.text
            await twilio.settled()
            conversation_id = placed.json()["conversation_id"]
            detail = (await client.get(f"/v1/convai/conversations/{conversation_id}")).json()
            assert (detail["status"], detail["end_reason"]) == ("completed", "never_connected")
            assert detail["outcome"] == "failed"
            async with server.runtime.db.session() as session:
                events = (
                    await session.scalars(select(WebhookEvent).where(WebhookEvent.type == "call.failed"))
                ).all()
            assert [(e.data["conversation_id"], e.data["end_reason"]) for e in events] == [
                (conversation_id, "never_connected")
            ]


@pytest.mark.asyncio
async def test_outbound_without_twilio_credentials_is_503(tmp_path: Path) -> None:
    async with LiveServer(make_settings(tmp_path)) as server, server.client() as client:
        agent_id = await make_agent(client, system_prompt="Hello.")
        response = await client.post(
            "/v1/convai/outbound", json={"agent_id": agent_id, "to_number": "+15550109999"}
        )
        assert response.status_code == 503 and "TWILIO_ACCOUNT_SID" in response.json()["detail"]


@pytest.mark.asyncio
async def test_twilio_refusal_is_502_and_marks_the_conversation_failed(tmp_path: Path) -> None:
    async with TwilioStandIn(ACCOUNT_SID, "a-different-token") as twilio:
        settings = make_settings(
            tmp_path,
            twilio_account_sid=ACCOUNT_SID,
            twilio_auth_token=AUTH_TOKEN,
            twilio_api_base=twilio.url,
        )
        async with LiveServer(settings) as server, server.client() as client:
            agent_id = await make_agent(client, system_prompt="Hello.")
            response = await client.post(
                "/v1/convai/outbound", json={"agent_id": agent_id, "to_number": "+15550109999"}
            )
            assert response.status_code == 502
            assert "20003" in response.json()["detail"] and AUTH_TOKEN not in response.text
            listed = (await client.get("/v1/convai/conversations", params={"agent_id": agent_id})).json()
            assert listed["conversations"][0]["status"] == "failed"


@pytest.mark.asyncio
async def test_unknown_number_without_default_agent_gets_an_apology(tmp_path: Path) -> None:
    async with LiveServer(make_settings(tmp_path)) as server, server.client() as client:
        response = await client.post("/twiml/voice", data={"CallSid": "CA" + "4" * 32, "To": "+15550000000"})
        assert response.status_code == 200
        assert "<Say>" in response.text and "<Hangup />" in response.text and "<Stream" not in response.text
        bad = await client.post("/twiml/voice", data={"CallSid": "x y", "To": NUMBER})
        assert bad.status_code == 400
