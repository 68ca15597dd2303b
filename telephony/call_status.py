"""A Twilio call status, applied to its conversation: from the status callback, or fetched by the dialer.

Twilio posts ``initiated``/``ringing``/``in-progress``/``completed`` (or ``busy``/``no-answer``/``failed``/
``canceled``) to the call's ``StatusCallback``. When that final callback never arrives (the service was
unreachable past Twilio's retries), the dialer asks Twilio's REST API for the call instead; both paths
go through :func:`record_call_status` so the conversation, its ``call.failed`` event and the campaign
lead end the same way.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from models import Conversation

STATUS_MAP = {
    "queued": "initiated",
    "initiated": "initiated",
    "ringing": "ringing",
    "in-progress": "in_progress",
    "answered": "in_progress",
    "completed": "completed",
    "busy": "busy",
    "no-answer": "no_answer",
    "failed": "failed",
    "canceled": "canceled",
}
FAILED_STATUSES = frozenset({"busy", "no_answer", "failed", "canceled"})
FINAL_STATUSES = FAILED_STATUSES | {"completed"}


async def record_call_status(
    session: AsyncSession,
    webhooks: Any,
    conversation: Conversation,
    status: str,
    call_sid: str,
    duration: str | None = None,
) -> None:
    """Apply one of our statuses (a ``STATUS_MAP`` value); a final status never goes back to a live one."""
    conversation.call_sid = conversation.call_sid or call_sid
    if conversation.status not in FINAL_STATUSES or status in FAILED_STATUSES:
        conversation.status = status
    if duration and duration.isdigit():
        conversation.duration_sec = float(duration)
    if status in FAILED_STATUSES:
        conversation.end_reason = conversation.end_reason or status
        await webhooks.emit(
            session,
            "call.failed",
            {
                "conversation_id": conversation.id,
                "agent_id": conversation.agent_id,
                "status": status,
                "call_sid": call_sid,
                "campaign_id": conversation.campaign_id,
            },
            agent_id=conversation.agent_id,
            conversation_id=conversation.id,
        )
