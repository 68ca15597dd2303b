"""Phone numbers and the do-not-call list: parsing, normalising and time zones, numbers entering the API, the
list's CRUD and outbound calls refusing listed numbers, the add_to_dnc tool.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from models import Conversation
from tests.campaign_helpers import ACCOUNT_SID, AGENT_NUMBER, AUTH_TOKEN, make_agent, settings_for
from tests.conftest import LiveServer
from tests.twilio_standin import TwilioStandIn

# ---------------------------------------------------------------- phone numbers, do-not-call list, tools


def test_numbers_are_parsed_normalised_and_placed_in_time_zones() -> None:
    from core.phone_numbers import InvalidPhoneNumber, describe, normalize

    assert normalize("+1 (415) 555-0123") == "+14155550123"
    assert normalize("(415) 555-0123", "US") == "+14155550123"
    assert normalize("+44 20 7183 8750") == "+442071838750"
    info = describe("+12125550123")
    assert (info.region, info.valid, info.time_zones) == ("US", True, ("America/New_York",))
    assert describe("+33 6 12 34 56 78").time_zones == ("Europe/Paris",)
    for bad, why in (
        ("+1555", "too short"),
        ("4155550123", "start it with +"),
        ("+999123456", "unknown country code"),
        ("+4420718387501234", "too long"),
        ("hello", "not a phone number"),
    ):
        with pytest.raises(InvalidPhoneNumber, match=why):
            normalize(bad)


@pytest.mark.asyncio
async def test_numbers_entering_the_api_are_checked_and_normalised(tmp_path: Path) -> None:
    async with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, answer=False) as twilio:
        async with LiveServer(settings_for(tmp_path, twilio)) as server, server.client() as client:
            r = await client.post("/v1/convai/phone-numbers", json={"phone_number": "+1 (415) 555-0177"})
            assert r.status_code == 201 and r.json()["phone_number"] == "+14155550177"
            r = await client.post("/v1/convai/phone-numbers", json={"phone_number": "+1 415 555"})
            assert r.status_code == 422
            assert r.json()["detail"][0]["loc"] == ["body", "phone_number"]
            assert "invalid phone number (E.164 expected)" in r.json()["detail"][0]["msg"]
            r = await client.post("/v1/convai/agents", json={"name": "A", "transfer_number": "555-0100"})
            assert r.status_code == 422 and "start it with +" in r.text
            r = await client.post(
                "/v1/convai/agents", json={"name": "A", "transfer_number": "+1 212-555-0199"}
            )
            assert r.status_code == 201 and r.json()["transfer_number"] == "+12125550199"
            agent_id = r.json()["agent_id"]
            r = await client.post(
                f"/v1/convai/agents/{agent_id}/tools",
                json={"name": "to_sales", "kind": "transfer_call", "config": {"number": "twelve"}},
            )
            assert r.status_code == 422 and "config.number" in r.text
            r = await client.post("/v1/convai/outbound", json={"agent_id": agent_id, "to_number": "+1212"})
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "to_number"]


@pytest.mark.asyncio
async def test_do_not_call_list_crud_and_outbound_calls_refuse_listed_numbers(tmp_path: Path) -> None:
    async with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, answer=False) as twilio:
        async with LiveServer(settings_for(tmp_path, twilio)) as server, server.client() as client:
            agent_id, _ = await make_agent(client)
            r = await client.post(
                "/v1/convai/dnc", json={"phone_number": "+1 212 555 0101", "reason": "asked"}
            )
            assert r.status_code == 201 and r.json()["added"] == 1
            first = r.json()["entries"][0]
            assert (first["phone_number"], first["reason"], first["source"]) == (
                "+12125550101",
                "asked",
                "api",
            )
            r = await client.post(
                "/v1/convai/dnc", json={"phone_numbers": ["+12125550101", "+12125550102", "+12125550103"]}
            )
            assert r.status_code == 201 and r.json()["added"] == 2  # the first was already listed
            assert r.json()["entries"][0]["id"] == first["id"]
            for bad in ({}, {"phone_number": "+12125550104", "phone_numbers": ["+12125550105"]}):
                assert (await client.post("/v1/convai/dnc", json=bad)).status_code == 422
            r = await client.post("/v1/convai/dnc", json={"phone_numbers": ["+12125550106", "nope"]})
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "phone_numbers", 1]

            page = (await client.get("/v1/convai/dnc", params={"page_size": 2})).json()
            assert len(page["entries"]) == 2 and page["has_more"]
            rest = (await client.get("/v1/convai/dnc", params={"cursor": page["next_cursor"]})).json()
            assert {e["phone_number"] for e in page["entries"] + rest["entries"]} == {
                "+12125550101",
                "+12125550102",
                "+12125550103",
            }
            check = (
                await client.get("/v1/convai/dnc/check", params={"phone_number": "+1 (212) 555-0102"})
            ).json()
            assert check["on_list"] and check["phone_number"] == "+12125550102"
            r = await client.get("/v1/convai/dnc/check", params={"phone_number": "bogus"})
            assert r.status_code == 422

            for path, body in (
                ("/v1/convai/outbound", {"agent_id": agent_id, "to_number": "+12125550101"}),
                ("/v1/convai/twilio/outbound-call", {"agent_id": agent_id, "to_number": "+1 212 555 0101"}),
            ):
                body[
                    "dynamic_variables"
                    if path.endswith("outbound")
                    else "conversation_initiation_client_data"
                ] = (
                    {"first_name": "Sam"}
                    if path.endswith("outbound")
                    else {"dynamic_variables": {"first_name": "Sam"}}
                )
                r = await client.post(path, json=body)
                assert r.status_code == 409 and "do-not-call list" in r.json()["detail"], r.text
            assert twilio.calls == {}

            assert (await client.delete(f"/v1/convai/dnc/{first['id']}")).status_code == 204
            assert (await client.delete(f"/v1/convai/dnc/{first['id']}")).status_code == 404
            r = await client.post(
                "/v1/convai/outbound",
                json={
                    "agent_id": agent_id,
                    "to_number": "+12125550101",
                    "dynamic_variables": {"first_name": "Sam"},
                },
            )
            assert r.status_code == 201, r.text
            assert len(twilio.calls) == 1


@pytest.mark.asyncio
async def test_add_to_dnc_tool_lists_the_callee_and_ends_the_call(tmp_path: Path) -> None:
    from providers.base import ToolCall
    from tools.runner import ToolContext

    async with TwilioStandIn(ACCOUNT_SID, AUTH_TOKEN, answer=False) as twilio:
        async with LiveServer(settings_for(tmp_path, twilio)) as server, server.client() as client:
            agent_id, _ = await make_agent(client)
            runtime = server.runtime
            async with runtime.db.session() as session:
                conversation = Conversation(
                    agent_id=agent_id,
                    direction="outbound",
                    from_number=AGENT_NUMBER,
                    to_number="+12125550142",
                )
                session.add(conversation)
                await session.flush()
                conversation_id = conversation.id
                from models import Agent

                agent = await session.get(Agent, agent_id)
            assert "add_to_dnc" in {s.name for s in runtime.tool_runner.specs_for(agent)}
            # The engine's caller_number of an outbound call is the agent's own number: the tool must not
            # list that one, but the callee.
            ctx = ToolContext(conversation_id, "CA" + "2" * 32, AGENT_NUMBER, "+12125550142")
            outcome = await runtime.tool_runner.execute(
                agent, ToolCall("add_to_dnc", {"reason": "stop calling"}), ctx
            )
            assert outcome.success and outcome.ends_call and outcome.say
            check = (await client.get("/v1/convai/dnc/check", params={"phone_number": "+12125550142"})).json()
            assert check["on_list"] and check["entry"]["source"] == "tool"
            assert (
                check["entry"]["conversation_id"] == conversation_id
                and check["entry"]["reason"] == "stop calling"
            )
            own = (await client.get("/v1/convai/dnc/check", params={"phone_number": AGENT_NUMBER})).json()
            assert not own["on_list"]
            r = await client.post(
                "/v1/convai/outbound",
                json={
                    "agent_id": agent_id,
                    "to_number": "+12125550142",
                    "dynamic_variables": {"first_name": "S"},
                },
            )
            assert r.status_code == 409
