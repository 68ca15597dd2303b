"""Pacing a campaign: how many leads may be dialled now (its concurrency cap and calls-per-minute rate),
and whether a lead's calling hours are open."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from models import Campaign, CampaignRecipient, Conversation
from telephony.calling_hours import next_opening

RATE_WINDOW = timedelta(seconds=60)


async def lock_campaign(session: AsyncSession, campaign_id: str) -> bool:
    """Several instances: one dispatches a campaign at a time, so its cap and rate are counted once.

    On PostgreSQL the campaign row stays locked until this transaction's claims are committed; an
    instance finding it locked skips the campaign this tick (SKIP LOCKED) rather than wait. SQLite has a
    single writer and ignores the clause."""
    ours = await session.scalar(
        select(Campaign.id)
        .where(Campaign.id == campaign_id, Campaign.status == "in_progress")
        .with_for_update(skip_locked=True)
    )
    return ours is not None


async def free_slots(session: AsyncSession, campaign: Campaign, now: datetime, in_flight: int) -> int:
    """Leads that may be dialled now: within the concurrency cap and the calls-per-minute rate."""
    active = await session.scalar(
        select(func.count())
        .select_from(CampaignRecipient)
        .where(
            CampaignRecipient.campaign_id == campaign.id,
            CampaignRecipient.status.in_(("dispatched", "in_progress")),
        )
    )
    recent = await session.scalar(
        select(func.count())
        .select_from(Conversation)
        .where(Conversation.campaign_id == campaign.id, Conversation.created_at > now - RATE_WINDOW)
    )
    return min(
        campaign.max_concurrent_calls - int(active or 0),
        campaign.calls_per_minute - int(recent or 0) - in_flight,
    )


async def outside_calling_hours(
    session: AsyncSession, campaign: Campaign, recipient: CampaignRecipient, now: datetime
) -> bool:
    """True when the lead may not be called now: skipped for good if its hours never open, else moved to
    the next opening."""
    if not (campaign.calling_hours_start and campaign.calling_hours_end):
        return False
    opens = next_opening(
        now,
        list(recipient.time_zones or []),
        campaign.calling_hours_start,
        campaign.calling_hours_end,
        list(campaign.calling_days or []),
    )
    pending = (CampaignRecipient.id == recipient.id, CampaignRecipient.status == "pending")
    if opens is None:
        await session.execute(
            update(CampaignRecipient)
            .where(*pending)
            .values(
                status="skipped",
                outcome="outside_calling_hours",
                error="calling hours never open in the lead's time zones",
                updated_at=now,
            )
        )
        return True
    if opens > now:
        await session.execute(
            update(CampaignRecipient).where(*pending).values(next_attempt_at=opens, updated_at=now)
        )
        return True
    return False
