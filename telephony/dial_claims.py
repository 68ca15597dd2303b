"""Claiming campaign leads: a lead is *claimed* (``pending -> dispatched``, a conditional UPDATE that only
one process can win) before its call is placed, and a claim a dead process left behind is reconciled from
the conversation it wrote (never risking a second call)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from models import Campaign, CampaignRecipient, Conversation
from telephony import dnc
from telephony.dial_pacing import outside_calling_hours
from telephony.dial_settling import FINAL, conclude


@dataclass(slots=True)
class Dial:
    """A claimed lead, with what placing its call and settling a failure to place it need."""

    campaign_id: str
    agent_id: str
    from_number: str | None
    ringing_timeout_sec: int | None
    recipient_id: str
    phone_number: str
    variables: dict[str, Any]
    retry_outcomes: list[str]
    retry_delay_sec: int
    max_attempts: int
    attempt: int


async def claim_due(session: AsyncSession, campaign: Campaign, now: datetime, slots: int) -> list[Dial]:
    """Claim up to ``slots`` due leads, in order; listed numbers end as ``dnc``, leads outside their
    calling hours wait. The caller commits the claims before anyone is dialled."""
    due = (
        await session.scalars(
            select(CampaignRecipient)
            .where(
                CampaignRecipient.campaign_id == campaign.id,
                CampaignRecipient.status == "pending",
                CampaignRecipient.next_attempt_at <= now,
            )
            .order_by(CampaignRecipient.next_attempt_at, CampaignRecipient.position)
            .limit(max(4 * slots, 50))
        )
    ).all()
    listed = await dnc.numbers_on_list(session, [r.phone_number for r in due])
    claimed: list[Dial] = []
    for recipient in due:
        if len(claimed) >= slots:
            break
        if recipient.phone_number in listed:
            error = "the number is on the do-not-call list"
            await conclude(session, recipient.id, "pending", "dnc", campaign, FINAL, now, error=error)
            continue
        if await outside_calling_hours(session, campaign, recipient, now):
            continue
        won = await session.execute(
            update(CampaignRecipient)
            .where(CampaignRecipient.id == recipient.id, CampaignRecipient.status == "pending")
            .values(
                status="dispatched",
                attempts=CampaignRecipient.attempts + 1,
                claimed_at=now,
                last_attempt_at=now,
                updated_at=now,
            )
        )
        if won.rowcount != 1:  # type: ignore[attr-defined]
            continue  # another process claimed it
        claimed.append(
            Dial(
                campaign_id=campaign.id,
                agent_id=campaign.agent_id,
                from_number=campaign.from_number,
                ringing_timeout_sec=(campaign.telephony_call_config or {}).get("ringing_timeout_secs"),
                recipient_id=recipient.id,
                phone_number=recipient.phone_number,
                variables=dict(recipient.dynamic_variables or {}),
                retry_outcomes=list(campaign.retry_outcomes or []),
                retry_delay_sec=campaign.retry_delay_sec,
                max_attempts=campaign.max_attempts,
                attempt=recipient.attempts + 1,
            )
        )
    return claimed


async def reconcile_stale_claims(db: Any, now: datetime, stale_sec: float, held: set[str]) -> None:
    """Claims older than ``stale_sec`` that no dial of this process holds (``held``: "campaign:recipient"
    keys) are a dead process's: settled from the conversation it wrote, if any."""
    cutoff = now - timedelta(seconds=stale_sec)
    async with db.session() as session:
        stale = (
            await session.scalars(
                select(CampaignRecipient).where(
                    CampaignRecipient.status == "dispatched", CampaignRecipient.claimed_at < cutoff
                )
            )
        ).all()
        for recipient in stale:
            if f"{recipient.campaign_id}:{recipient.id}" in held:
                continue
            conversation = await session.scalar(
                select(Conversation)
                .where(
                    Conversation.campaign_recipient_id == recipient.id,
                    Conversation.created_at >= recipient.claimed_at,
                )
                .order_by(Conversation.created_at.desc())
                .limit(1)
            )
            where = (CampaignRecipient.id == recipient.id, CampaignRecipient.status == "dispatched")
            if conversation is None:  # Twilio was never asked: dial it again, as the same attempt
                values: dict[str, Any] = {
                    "status": "pending",
                    "attempts": max(recipient.attempts - 1, 0),
                    "claimed_at": None,
                }
            elif conversation.call_sid:
                values = {"status": "in_progress", "conversation_id": conversation.id}
            else:
                values = {  # Twilio may or may not have been asked: never risk a second call
                    "status": "failed",
                    "outcome": "failed",
                    "conversation_id": conversation.id,
                    "error": "dialing was interrupted by a restart; not redialled in case it got through",
                }
            await session.execute(update(CampaignRecipient).where(*where).values(updated_at=now, **values))
