"""Asking Twilio about campaign calls whose final status callback is overdue (lost while we were down).

Without this a lead whose ``no-answer`` callback never arrived would sit in progress until the stuck-call
limit and then be written off as failed, never retried as the policy says.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from models import CampaignRecipient, Conversation
from storage.analytics import count_ended_call
from telephony.call_status import FINAL_STATUSES, STATUS_MAP, record_call_status
from telephony.twilio_gateway import TelephonyError

log = logging.getLogger("telephony.dialer")


class StatusPoller:
    def __init__(self, db: Any, settings: Any, twilio: Any, webhooks: Any) -> None:
        self.db = db
        self.settings = settings
        self.twilio = twilio
        self.webhooks = webhooks
        self._polled: dict[str, datetime] = {}  # conversation id -> when Twilio was last asked about it

    async def poll(self, now: datetime, stopping: Any = lambda: False) -> None:
        """One pass: each overdue call is asked about at most once per DIALER_STATUS_POLL_SEC."""
        if not self.twilio.configured:
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
            if stopping():
                return
            if now - self._polled.get(conversation_id, datetime.min.replace(tzinfo=now.tzinfo)) < interval:
                continue
            self._polled[conversation_id] = now
            try:
                twilio_status, duration = await self.twilio.fetch_call(call_sid)
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
                ends_here = await record_call_status(
                    session, self.webhooks, conversation, status, call_sid, duration
                )
            if ends_here:
                await count_ended_call(self.db, conversation_id)
            settled = True
            log.info(
                "final call status fetched from twilio (its callback never came)",
                extra={"fields": {"call_sid": call_sid, "status": status}},
            )
        if settled:
            self.webhooks.notify()
