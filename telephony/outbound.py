"""Placing an outbound call: check the agent and variables, record the conversation, ask Twilio to dial.

The conversation row is committed before Twilio is asked, so the TwiML and status webhooks that may
arrive before ``calls.create`` even returns always find it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import select

from models import Agent, Conversation, PhoneNumber
from speech.text import template_variables
from storage.agent_versions import stamp_call
from telephony import dnc
from telephony.twilio_gateway import TelephonyError, TwilioGateway, TwilioNotConfigured


class OutboundServices(Protocol):
    """What placing a call uses of the process's services (``app_runtime.Runtime`` has them)."""

    db: Any
    settings: Any
    twilio: TwilioGateway


# Variables the engine fills itself at call start (see WSConn._build_profile).
BUILTIN_VARIABLES = frozenset({"agent_name", "caller_number", "call_sid", "date"})


class OutboundCallError(Exception):
    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail


@dataclass(slots=True)
class PlacedCall:
    conversation_id: str
    call_sid: str
    status: str


def needed_variables(agent: Agent) -> dict[str, list[str]]:
    """Each ``{{variable}}`` a call of this agent fills, and where it is used (built-ins left out). The
    voicemail message counts only when the agent leaves one."""
    texts = {"system prompt": agent.system_prompt, "first message": agent.first_message}
    if agent.voicemail_action == "leave_message":
        texts["voicemail message"] = agent.voicemail_message
    needed: dict[str, list[str]] = {}
    for where, text in texts.items():
        for name in sorted(template_variables(text or "") - BUILTIN_VARIABLES):
            needed.setdefault(name, []).append(where)
    return needed


def missing_variables(agent: Agent, provided: dict[str, Any]) -> list[str]:
    return sorted(set(needed_variables(agent)) - set(provided))


async def place_call(
    runtime: OutboundServices,
    *,
    agent_id: str,
    to_number: str,
    from_number: str | None,
    dynamic_variables: dict[str, Any],
    campaign_id: str | None = None,
    campaign_recipient_id: str | None = None,
    ringing_timeout_sec: int | None = None,
) -> PlacedCall:
    """Record the conversation and ask Twilio to dial; :class:`OutboundCallError` says why not.

    ``to_number`` is E.164 (the schemas normalise it). A number on the do-not-call list is refused (409).
    """
    if not runtime.twilio.configured:
        raise OutboundCallError(
            503, "outbound calls need Twilio: set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and PUBLIC_URL"
        )
    async with runtime.db.session() as session:
        agent = await session.get(Agent, agent_id)
        if agent is None:
            raise OutboundCallError(404, f"agent not found: {agent_id}")
        if await dnc.on_list(session, to_number) is not None:
            raise OutboundCallError(409, f"{to_number} is on the do-not-call list")
        missing = missing_variables(agent, dynamic_variables)
        if missing:
            raise OutboundCallError(
                422,
                [
                    {
                        "loc": ["body", "dynamic_variables", name],
                        "msg": "required by the agent's prompt",
                        "type": "missing",
                    }
                    for name in missing
                ],
            )
        caller_id = (
            from_number
            or await session.scalar(
                select(PhoneNumber.phone_number).where(PhoneNumber.agent_id == agent_id).limit(1)
            )
            or runtime.settings.twilio_phone_number
        )
        if not caller_id:
            raise OutboundCallError(
                422,
                "no caller ID: pass from_number, give the agent a phone number or set TWILIO_PHONE_NUMBER",
            )
        conversation = Conversation(
            agent_id=agent_id,
            direction="outbound",
            status="initiated",
            from_number=caller_id,
            to_number=to_number,
            dynamic_variables=dict(dynamic_variables),
            campaign_id=campaign_id,
            campaign_recipient_id=campaign_recipient_id,
        )
        session.add(conversation)
        await session.flush()
        # the version this call runs: the campaign's experiment variant for this lead, else the latest
        await stamp_call(session, conversation, agent, lead_number=to_number, campaign_id=campaign_id)
        conversation_id = conversation.id

    base = runtime.settings.public_url.rstrip("/")
    try:
        call_sid = await runtime.twilio.create_call(
            to=to_number,
            from_=caller_id,
            url=f"{base}/twiml/voice_outbound?conversation_id={conversation_id}",
            # The id rides along: Twilio may report "initiated" before calls.create has even returned the SID.
            status_callback=f"{base}/twiml/status?conversation_id={conversation_id}",
            amd_callback=(
                f"{base}/twiml/amd?conversation_id={conversation_id}"
                if runtime.settings.twilio_machine_detection
                else None
            ),
            ringing_timeout_sec=ringing_timeout_sec,
        )
    except (TelephonyError, TwilioNotConfigured) as exc:
        async with runtime.db.session() as session:
            failed = await session.get(Conversation, conversation_id)
            if failed is not None:
                failed.status, failed.end_reason = "failed", "twilio_error"
        raise OutboundCallError(502, str(exc)) from None

    async with runtime.db.session() as session:
        placed = await session.get(Conversation, conversation_id)
        assert placed is not None
        placed.call_sid = placed.call_sid or call_sid
        status = placed.status
    return PlacedCall(conversation_id, call_sid, status)
