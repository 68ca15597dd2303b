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
from utils import utcnow

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
NEVER_CONNECTED = "never_connected"  # the end reason of a call answered that never reached the agent
FAILED_STATUSES = frozenset({"busy", "no_answer", "failed", "canceled"})
FINAL_STATUSES = FAILED_STATUSES | {"completed"}


async def record_call_status(
    session: AsyncSession,
    webhooks: Any,
    conversation: Conversation,
    status: str,
    call_sid: str,
    duration: str | None = None,
) -> bool:
    """Apply one of our statuses (a ``STATUS_MAP`` value); a final status never goes back to a live one.

    True when the call ends here: a final status for a call whose media stream never started (no engine
    and no post-call analysis will close it), so the caller counts it in analytics once committed."""
    conversation.call_sid = conversation.call_sid or call_sid
    if conversation.status not in FINAL_STATUSES or status in FAILED_STATUSES:
        conversation.status = status
    if duration and duration.isdigit():
        conversation.duration_sec = float(duration)
    never_connected = (
        status == "completed" and conversation.stream_jti is None and conversation.call_state != "ENDED"
    )
    if never_connected:
        # Answered, but no media stream ever reached the agent (Twilio could not fetch the TwiML, or
        # the other side hung up first): no engine will close or analyse this call, so it ends here.
        conversation.end_reason = conversation.end_reason or NEVER_CONNECTED
        conversation.outcome = conversation.outcome or "failed"
        conversation.call_state = "ENDED"
        conversation.ended_at = conversation.ended_at or utcnow()
    if status in FAILED_STATUSES or never_connected:
        conversation.end_reason = conversation.end_reason or status
        await webhooks.emit(
            session,
            "call.failed",
            {
                "conversation_id": conversation.id,
                "agent_id": conversation.agent_id,
                "status": status,
                "end_reason": conversation.end_reason,
                "call_sid": call_sid,
                "campaign_id": conversation.campaign_id,
            },
            agent_id=conversation.agent_id,
            conversation_id=conversation.id,
        )
    return status in FINAL_STATUSES and conversation.stream_jti is None
