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
``failed`` per the campaign's policy; a call that failed through our fault is not the lead's outcome, see
``dial_settling.Settler``), dial due recipients within the campaign's concurrency cap, its
calls-per-minute rate and the lead's calling hours, skipping numbers on the do-not-call list, and close
campaigns with nothing left to do (``campaign.completed``).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from models import Campaign, CampaignRecipient
from telephony.dial_claims import Dial, claim_due, reconcile_stale_claims
from telephony.dial_pacing import free_slots, lock_campaign
from telephony.dial_settling import FINAL, Settler, conclude
from telephony.outbound import OutboundCallError, OutboundServices, place_call
from telephony.status_polling import StatusPoller
from utils import utcnow

log = logging.getLogger(__name__)


class Dialer:
    """The background task; each job is its own part: claiming (``dial_claims``), pacing
    (``dial_pacing``), settling (``dial_settling``) and status polling (``status_polling``)."""

    def __init__(self, services: OutboundServices, webhooks: Any) -> None:
        self.services = services
        self.settings = services.settings
        self.db = services.db
        self.webhooks = webhooks
        self.settler = Settler(self.db, self.settings, webhooks)
        self.status_poller = StatusPoller(self.db, self.settings, services.twilio, webhooks)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._dials: dict[str, asyncio.Task[None]] = {}  # "campaign:recipient" -> its dial in flight
        self._stopping = False

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
        await reconcile_stale_claims(self.db, now, self.settings.dialer_stale_claim_sec, set(self._dials))
        await self._start_due_campaigns(now)
        await self.status_poller.poll(now, lambda: self._stopping)
        await self.settler.settle_calls(now)
        async with self.db.session() as session:
            running = (await session.scalars(select(Campaign).where(Campaign.status == "in_progress"))).all()
        for campaign in running:
            if self._stopping:
                return
            await self._dispatch(campaign, utcnow())
        await self.settler.finish_campaigns()

    async def _start_due_campaigns(self, now: datetime) -> None:
        async with self.db.session() as session:
            await session.execute(
                update(Campaign)
                .where(Campaign.status == "pending", Campaign.scheduled_at <= now)
                .values(status="in_progress", updated_at=now)
            )

    async def _dispatch(self, campaign: Campaign, now: datetime) -> None:
        async with self.db.session() as session:
            if not await lock_campaign(session, campaign.id):
                return
            in_flight = sum(1 for key in self._dials if key.startswith(campaign.id + ":"))
            slots = await free_slots(session, campaign, now, in_flight)
            if slots <= 0:
                return
            claimed = await claim_due(session, campaign, now, slots)
        # The claims are committed: only now is anyone dialled.
        for dial in claimed:
            key = f"{dial.campaign_id}:{dial.recipient_id}"
            task = asyncio.create_task(self._dial(dial), name=f"dial-{dial.recipient_id}")
            self._dials[key] = task
            task.add_done_callback(lambda _t, key=key: self._dials.pop(key, None))

    async def _dial(self, dial: Dial) -> None:
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
                attempts = FINAL if outcome == "dnc" else dial.attempt
                await conclude(
                    session, dial.recipient_id, "dispatched", outcome or "failed", dial, attempts, now, error
                )
        self._wake.set()


def _error_text(detail: Any) -> str:
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', [])[-1:])}: {d.get('msg', '')}"
            for d in detail
            if isinstance(d, dict)
        )[:500]
    return str(detail)[:500]
