"""The campaign dialer: a background task of the service that works through campaign recipients.

Its state is the database, so a restart resumes where it stopped and never calls anyone twice:

* a recipient is *claimed* (``pending -> dispatched``, a conditional UPDATE that only one process can
  win) before the call is placed, and the conversation row (``campaign_recipient_id``) is written
  before Twilio is asked to dial;
* a claim left behind by a process that died is reconciled from that conversation: no conversation
  means Twilio was never asked (the lead goes back to pending); a call SID means the call is live;
  anything in between is ended as ``failed`` rather than risk a second call.

Each tick (every ``DIALER_TICK_SEC``, or sooner when a status callback wakes it): start campaigns whose
time has come, settle recipients whose calls ended (retrying ``no_answer`` / ``busy`` / ``voicemail`` /
``failed`` per the campaign's policy), dial due recipients within the campaign's concurrency cap, its
calls-per-minute rate and the lead's calling hours, skipping numbers on the do-not-call list, and close
campaigns with nothing left to do (``campaign.completed``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update

from models import Campaign, CampaignRecipient, Conversation
from telephony import dnc
from telephony.call_status import FINAL_STATUSES, NEVER_CONNECTED, STATUS_MAP, record_call_status
from telephony.calling_hours import next_opening
from telephony.campaigns import ACTIVE_STATUSES, status_for, totals
from telephony.outbound import OutboundCallError, OutboundServices, place_call
from telephony.twilio_gateway import TelephonyError
from utils import utcnow

log = logging.getLogger(__name__)

# Twilio could not reach the service for the call's TwiML (error 11205), or the lead hung up first.
NEVER_CONNECTED_ERROR = "the call was answered but never reached the agent (no media stream)"
STUCK_CALL_AFTER = timedelta(hours=5)  # no final status from Twilio by then: the call is written off
RATE_WINDOW = timedelta(seconds=60)


@dataclass(slots=True)
class _Dial:
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


class Dialer:
    def __init__(self, services: OutboundServices, webhooks: Any) -> None:
        self.services = services
        self.settings = services.settings
        self.db = services.db
        self.webhooks = webhooks
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._dials: dict[str, asyncio.Task[None]] = {}  # recipient id -> its dial in flight
        self._stopping = False
        self._polled: dict[str, datetime] = {}  # conversation id -> when Twilio was last asked about it

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self.settings.dialer_enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="campaign-dialer")

    def notify(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        """Stop dialing; calls being placed right now finish placing (their outcome is settled later)."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 15)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
        if self._dials:
            await asyncio.wait(list(self._dials.values()), timeout=15)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self.tick()
            except Exception as exc:  # a bad row must not kill the dialer
                log.warning("dialer tick failed", extra={"fields": {"error": type(exc).__name__}})
            try:
                await asyncio.wait_for(self._wake.wait(), self.settings.dialer_tick_sec)
            except TimeoutError:
                pass
            self._wake.clear()

    # ------------------------------------------------------------ one pass

    async def tick(self) -> None:
        now = utcnow()
        await self._reconcile_stale_claims(now)
        await self._start_due_campaigns(now)
        await self._poll_overdue_statuses(now)
        await self._settle_calls(now)
        async with self.db.session() as session:
            running = (await session.scalars(select(Campaign).where(Campaign.status == "in_progress"))).all()
        for campaign in running:
            if self._stopping:
                return
            await self._dispatch(campaign, utcnow())
        await self._finish_campaigns()

    async def _start_due_campaigns(self, now: datetime) -> None:
        async with self.db.session() as session:
            await session.execute(
                update(Campaign)
                .where(Campaign.status == "pending", Campaign.scheduled_at <= now)
                .values(status="in_progress", updated_at=now)
            )

    async def _poll_overdue_statuses(self, now: datetime) -> None:
        """Ask Twilio about campaign calls whose final status callback is overdue (lost while we were down).

        Without this a lead whose ``no-answer`` callback never arrived would sit in progress until
        ``STUCK_CALL_AFTER`` and then be written off as failed, never retried as the policy says."""
        if not self.services.twilio.configured:
            return
        interval = timedelta(seconds=self.settings.dialer_status_poll_sec)
        async with self.db.session() as session:
            rows = (
                await session.execute(
                    select(Conversation.id, Conversation.call_sid)
                    .join(CampaignRecipient, CampaignRecipient.conversation_id == Conversation.id)
                    .where(
                        CampaignRecipient.status == "in_progress",
                        Conversation.status.not_in(FINAL_STATUSES),
                        Conversation.call_sid.is_not(None),
                        Conversation.updated_at < now - interval,
                    )
                )
            ).all()
        live = {conversation_id for conversation_id, _ in rows}
        self._polled = {k: v for k, v in self._polled.items() if k in live}
        settled = False
        for conversation_id, call_sid in rows:
            if self._stopping:
                return
            if now - self._polled.get(conversation_id, datetime.min.replace(tzinfo=now.tzinfo)) < interval:
                continue
            self._polled[conversation_id] = now
            try:
                twilio_status, duration = await self.services.twilio.fetch_call(call_sid)
            except TelephonyError as exc:
                fields = {"call_sid": call_sid, "error": type(exc).__name__}
                log.warning("twilio call lookup failed", extra={"fields": fields})
                continue
            status = STATUS_MAP.get(twilio_status.lower())
            if status not in FINAL_STATUSES:
                continue
            async with self.db.session() as session:
                conversation = await session.get(Conversation, conversation_id)
                if conversation is None or conversation.status in FINAL_STATUSES:
                    continue
                await record_call_status(session, self.webhooks, conversation, status, call_sid, duration)
            settled = True
            log.info(
                "final call status fetched from twilio (its callback never came)",
                extra={"fields": {"call_sid": call_sid, "status": status}},
            )
        if settled:
            self.webhooks.notify()

    async def _settle_calls(self, now: datetime) -> None:
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
                error = NEVER_CONNECTED_ERROR if conversation.end_reason == NEVER_CONNECTED else None
                await self._conclude(
                    session, recipient.id, "in_progress", outcome, campaign, recipient.attempts, now, error
                )

    async def _conclude(
        self,
        session: Any,
        recipient_id: str,
        from_status: str,
        outcome: str,
        campaign: Campaign | _Dial,
        attempts: int,
        now: datetime,
        error: str | None = None,
    ) -> None:
        """Final state, or pending again after the retry delay when the policy allows another attempt."""
        retry_outcomes = campaign.retry_outcomes
        max_attempts = campaign.max_attempts
        delay = campaign.retry_delay_sec
        running = not isinstance(campaign, Campaign) or campaign.status == "in_progress"
        values: dict[str, Any]
        if running and outcome in (retry_outcomes or []) and attempts < max_attempts:
            values = {
                "status": "pending",
                "outcome": outcome,
                "error": error,
                "next_attempt_at": now + timedelta(seconds=delay),
                "claimed_at": None,
            }
        else:
            values = {"status": status_for(outcome), "outcome": outcome, "error": error, "claimed_at": None}
        await session.execute(
            update(CampaignRecipient)
            .where(CampaignRecipient.id == recipient_id, CampaignRecipient.status == from_status)
            .values(updated_at=now, **values)
        )

    async def _dispatch(self, campaign: Campaign, now: datetime) -> None:
        async with self.db.session() as session:
            # Several instances: one dispatches a campaign at a time, so its concurrency cap and rate are
            # counted once. On PostgreSQL the campaign row is locked until this transaction's claims are
            # committed; an instance finding it locked skips the campaign this tick (SKIP LOCKED) rather
            # than wait. SQLite has a single writer and ignores the clause.
            ours = await session.scalar(
                select(Campaign.id)
                .where(Campaign.id == campaign.id, Campaign.status == "in_progress")
                .with_for_update(skip_locked=True)
            )
            if ours is None:
                return
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
            in_flight = sum(1 for key in self._dials if key.startswith(campaign.id + ":"))
            slots = min(
                campaign.max_concurrent_calls - int(active or 0),
                campaign.calls_per_minute - int(recent or 0) - in_flight,
            )
            if slots <= 0:
                return
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
            claimed: list[_Dial] = []
            for recipient in due:
                if len(claimed) >= slots:
                    break
                if recipient.phone_number in listed:
                    await self._conclude(
                        session,
                        recipient.id,
                        "pending",
                        "dnc",
                        campaign,
                        10**6,
                        now,
                        error="the number is on the do-not-call list",
                    )
                    continue
                if campaign.calling_hours_start and campaign.calling_hours_end:
                    opens = next_opening(
                        now,
                        list(recipient.time_zones or []),
                        campaign.calling_hours_start,
                        campaign.calling_hours_end,
                        list(campaign.calling_days or []),
                    )
                    if opens is None:
                        await session.execute(
                            update(CampaignRecipient)
                            .where(
                                CampaignRecipient.id == recipient.id, CampaignRecipient.status == "pending"
                            )
                            .values(
                                status="skipped",
                                outcome="outside_calling_hours",
                                error="calling hours never open in the lead's time zones",
                                updated_at=now,
                            )
                        )
                        continue
                    if opens > now:
                        await session.execute(
                            update(CampaignRecipient)
                            .where(
                                CampaignRecipient.id == recipient.id, CampaignRecipient.status == "pending"
                            )
                            .values(next_attempt_at=opens, updated_at=now)
                        )
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
                    _Dial(
                        campaign_id=campaign.id,
                        agent_id=campaign.agent_id,
                        from_number=campaign.from_number,
                        ringing_timeout_sec=(campaign.telephony_call_config or {}).get(
                            "ringing_timeout_secs"
                        ),
                        recipient_id=recipient.id,
                        phone_number=recipient.phone_number,
                        variables=dict(recipient.dynamic_variables or {}),
                        retry_outcomes=list(campaign.retry_outcomes or []),
                        retry_delay_sec=campaign.retry_delay_sec,
                        max_attempts=campaign.max_attempts,
                        attempt=recipient.attempts + 1,
                    )
                )
        # The claims are committed: only now is anyone dialled.
        for dial in claimed:
            key = f"{dial.campaign_id}:{dial.recipient_id}"
            task = asyncio.create_task(self._dial(dial), name=f"dial-{dial.recipient_id}")
            self._dials[key] = task
            task.add_done_callback(lambda _t, key=key: self._dials.pop(key, None))

    async def _dial(self, dial: _Dial) -> None:
        error: str | None = None
        outcome: str | None = None
        conversation_id: str | None = None
        try:
            placed = await place_call(
                self.services,
                agent_id=dial.agent_id,
                to_number=dial.phone_number,
                from_number=dial.from_number,
                dynamic_variables=dial.variables,
                campaign_id=dial.campaign_id,
                campaign_recipient_id=dial.recipient_id,
                ringing_timeout_sec=dial.ringing_timeout_sec,
            )
            conversation_id = placed.conversation_id
        except OutboundCallError as exc:
            outcome = "dnc" if exc.status == 409 else "failed"
            error = _error_text(exc.detail)
            if exc.status in (404, 422):  # the agent is gone or its variables are missing: no retry helps
                dial.max_attempts = 0
        except Exception as exc:
            log.warning("campaign dial failed", extra={"fields": {"error": type(exc).__name__}})
            outcome, error = "failed", f"the call could not be placed ({type(exc).__name__})"
        now = utcnow()
        async with self.db.session() as session:
            if conversation_id is not None:
                await session.execute(
                    update(CampaignRecipient)
                    .where(
                        CampaignRecipient.id == dial.recipient_id, CampaignRecipient.status == "dispatched"
                    )
                    .values(status="in_progress", conversation_id=conversation_id, updated_at=now)
                )
            else:
                attempts = 10**6 if outcome == "dnc" else dial.attempt
                await self._conclude(
                    session, dial.recipient_id, "dispatched", outcome or "failed", dial, attempts, now, error
                )
        self._wake.set()

    async def _reconcile_stale_claims(self, now: datetime) -> None:
        """Claims older than DIALER_STALE_CLAIM_SEC that no dial of this process holds: a dead process's."""
        cutoff = now - timedelta(seconds=self.settings.dialer_stale_claim_sec)
        async with self.db.session() as session:
            stale = (
                await session.scalars(
                    select(CampaignRecipient).where(
                        CampaignRecipient.status == "dispatched", CampaignRecipient.claimed_at < cutoff
                    )
                )
            ).all()
            for recipient in stale:
                if f"{recipient.campaign_id}:{recipient.id}" in self._dials:
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
                await session.execute(
                    update(CampaignRecipient).where(*where).values(updated_at=now, **values)
                )

    async def _finish_campaigns(self) -> None:
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


def _error_text(detail: Any) -> str:
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', [])[-1:])}: {d.get('msg', '')}"
            for d in detail
            if isinstance(d, dict)
        )[:500]
    return str(detail)[:500]
