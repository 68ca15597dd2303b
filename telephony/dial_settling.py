"""Settling campaign calls: each ended call's outcome becomes the lead's, or the lead goes back to the queue.

A call that failed through our fault is not the lead's outcome (``Settler._our_failure``); a finished
campaign announces itself (``campaign.completed``).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from models import Campaign, CampaignRecipient, Conversation, ConversationTurn
from telephony.call_status import NEVER_CONNECTED
from telephony.campaigns import ACTIVE_STATUSES, status_for, totals
from utils import utcnow

log = logging.getLogger("telephony.dialer")

# Twilio could not reach the service for the call's TwiML (error 11205), or the lead hung up first.
NEVER_CONNECTED_ERROR = "the call was answered but never reached the agent (no media stream)"
STUCK_CALL_AFTER = timedelta(hours=5)  # no final status from Twilio by then: the call is written off
# Calls cut by us: a restart found them open (storage.recovery), or another instance closed them after
# theirs died. With never_connected, the failures that are ours, not the lead's.
CUT_BY_US = ("server_restart", "instance_lost")
REQUEUED_BECAUSE = {
    NEVER_CONNECTED: "the call never reached the agent (the service was unreachable)",
    "server_restart": "a restart of the service cut the call before the lead heard anything",
    "instance_lost": "the instance serving the call was lost before the lead heard anything",
}
CUT_AFTER_HEARD = "our restart cut the call after the lead had heard the agent"
FINAL = 10**6  # attempts that no retry policy allows another one after


class RetryPolicy(Protocol):
    """A campaign's retry rules (the campaign row, or the copy a dial in flight carries)."""

    retry_outcomes: list[str] | None
    retry_delay_sec: int
    max_attempts: int


def call_outcome(conversation: Conversation, now: datetime, outcome_wait: timedelta) -> str | None:
    """The outcome of a finished call, or None while it is still ringing, talking or being analysed."""
    status = conversation.status
    if status == "busy":
        return "busy"
    if status in ("no_answer", "canceled"):
        return "no_answer"
    if status == "failed":
        return "failed"
    if status != "completed":
        return None
    if conversation.answered_by == "machine" or conversation.outcome == "voicemail":
        return "voicemail"
    if conversation.outcome:
        return conversation.outcome
    ended = conversation.ended_at or conversation.updated_at
    return "unknown" if now - ended >= outcome_wait else None


async def conclude(
    session: AsyncSession,
    recipient_id: str,
    from_status: str,
    outcome: str,
    policy: RetryPolicy,
    attempts: int,
    now: datetime,
    error: str | None = None,
) -> None:
    """Final state, or pending again after the retry delay when the policy allows another attempt."""
    # A paused campaign keeps its retries queued: they are dialled once it is resumed.
    running = not isinstance(policy, Campaign) or policy.status in ("in_progress", "paused")
    values: dict[str, Any]
    if running and outcome in (policy.retry_outcomes or []) and attempts < policy.max_attempts:
        values = {
            "status": "pending",
            "outcome": outcome,
            "error": error,
            "next_attempt_at": now + timedelta(seconds=policy.retry_delay_sec),
            "claimed_at": None,
        }
    else:
        values = {"status": status_for(outcome), "outcome": outcome, "error": error, "claimed_at": None}
    await session.execute(
        update(CampaignRecipient)
        .where(CampaignRecipient.id == recipient_id, CampaignRecipient.status == from_status)
        .values(updated_at=now, **values)
    )


class Settler:
    """Turns ended calls into lead outcomes, and closes campaigns with nothing left to do."""

    def __init__(self, db: Any, settings: Any, webhooks: Any) -> None:
        self.db = db
        self.settings = settings
        self.webhooks = webhooks

    async def settle_calls(self, now: datetime) -> None:
        """Recipients whose call ended get their outcome, or go back to pending for another attempt."""
        wait = timedelta(seconds=self.settings.dialer_outcome_wait_sec)
        async with self.db.session() as session:
            rows = (
                await session.execute(
                    select(CampaignRecipient, Conversation, Campaign)
                    .join(Conversation, Conversation.id == CampaignRecipient.conversation_id)
                    .join(Campaign, Campaign.id == CampaignRecipient.campaign_id)
                    .where(CampaignRecipient.status == "in_progress")
                )
            ).all()
            for recipient, conversation, campaign in rows:
                outcome = call_outcome(conversation, now, wait)
                if outcome is None and now - (recipient.last_attempt_at or now) > STUCK_CALL_AFTER:
                    outcome = "failed"
                if outcome is None:
                    continue
                # (a machine's verdict makes it voicemail whatever became of our stream: the lead's fact)
                if outcome == "failed" and await self._our_failure(
                    session, recipient, conversation, campaign, now
                ):
                    continue
                error = NEVER_CONNECTED_ERROR if conversation.end_reason == NEVER_CONNECTED else None
                await conclude(
                    session, recipient.id, "in_progress", outcome, campaign, recipient.attempts, now, error
                )

    async def _our_failure(
        self,
        session: AsyncSession,
        recipient: CampaignRecipient,
        conversation: Conversation,
        campaign: Campaign,
        now: datetime,
    ) -> bool:
        """A call that failed through our fault (it never reached the agent, or a restart or a lost
        instance cut it) is not the lead's outcome. Before the lead heard anything: back to the queue
        once (CAMPAIGN_REQUEUE_OWN_FAILURES), the attempt not counted, the reason kept on the lead. After
        the lead heard the agent: not redialled (whatever the retry policy says), unless
        CAMPAIGN_CALLBACK_AFTER_CUT allows one call-back. True when this settled the lead."""
        reason = conversation.end_reason or ""
        if reason != NEVER_CONNECTED and reason not in CUT_BY_US:
            return False
        heard = reason in CUT_BY_US and (
            await session.scalar(
                select(ConversationTurn.id)
                .where(
                    ConversationTurn.conversation_id == conversation.id,
                    ConversationTurn.role == "agent",
                    ConversationTurn.text != "",
                )
                .limit(1)
            )
            is not None
        )
        settings = self.settings
        allowed = settings.campaign_callback_after_cut if heard else settings.campaign_requeue_own_failures
        if allowed and recipient.requeued_reason is None and campaign.status in ("in_progress", "paused"):
            why = CUT_AFTER_HEARD if heard else REQUEUED_BECAUSE[reason]
            await session.execute(
                update(CampaignRecipient)
                .where(CampaignRecipient.id == recipient.id, CampaignRecipient.status == "in_progress")
                .values(
                    status="pending",
                    attempts=max(recipient.attempts - 1, 0),
                    outcome=None,
                    error=f"{why}: called again, not counted as an attempt",
                    requeued_reason=reason,
                    next_attempt_at=now,
                    claimed_at=None,
                    updated_at=now,
                )
            )
            log.info(
                "campaign lead requeued: our failure",
                extra={"fields": {"recipient_id": recipient.id, "reason": reason}},
            )
            return True
        if heard:
            error = f"{CUT_AFTER_HEARD}: not called again"
            await conclude(session, recipient.id, "in_progress", "failed", campaign, FINAL, now, error)
            return True
        return False  # requeued once already (or not allowed): a failed call, as the retry policy says

    async def finish_campaigns(self) -> None:
        async with self.db.session() as session:
            busy = (
                select(CampaignRecipient.id)
                .where(
                    CampaignRecipient.campaign_id == Campaign.id,
                    CampaignRecipient.status.in_(ACTIVE_STATUSES),
                )
                .exists()
            )
            done = (
                await session.scalars(select(Campaign).where(Campaign.status == "in_progress", ~busy))
            ).all()
            if not done:
                return
            counts = await totals(session, [c.id for c in done])
            for campaign in done:
                now = utcnow()
                won = await session.execute(
                    update(Campaign)
                    .where(Campaign.id == campaign.id, Campaign.status == "in_progress")
                    .values(status="completed", completed_at=now, updated_at=now)
                )
                if won.rowcount != 1:  # type: ignore[attr-defined]
                    continue
                c = counts[campaign.id]
                await self.webhooks.emit(
                    session,
                    "campaign.completed",
                    {
                        "campaign_id": campaign.id,
                        "batch_id": campaign.id,
                        "name": campaign.name,
                        "agent_id": campaign.agent_id,
                        "completed_at": now,
                        "recipients": c["total"],
                        "dialled": c["dialled"],
                        "by_status": {k[7:]: v for k, v in c.items() if k.startswith("status:")},
                        "by_outcome": {k[8:]: v for k, v in c.items() if k.startswith("outcome:")},
                    },
                    agent_id=campaign.agent_id,
                    conversation_id=None,
                )
        self.webhooks.notify()
