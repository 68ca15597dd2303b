"""Transfers of a live call to a person, cold or warm, through Twilio's REST API.

**Cold**: the call's TwiML is replaced by ``<Dial>number``; the agent's Media Stream ends and what
follows is Twilio's.

**Warm** (Twilio's documented pattern: a conference as the hub):

1. The caller's TwiML is replaced by ``<Dial><Conference>`` (``startConferenceOnEnter=false``: they hear
   the wait music); the agent's Media Stream ends, the conversation stays open.
2. The caller joins (``participant-join``): they are put on hold (so the conference starting will not
   bridge them yet), then the rep is dialled into the same conference (Participants API, ``timeout`` =
   the ring timeout, ``startConferenceOnEnter=true``, ``endConferenceOnExit=true``).
3. The rep answers (participant status ``in-progress``): an announcement to the rep alone
   (``AnnounceUrl`` → ``/twiml/transfer/whisper``: ``<Say>`` the summary).
4. ``announcement-end`` (conference status callback): the caller is taken off hold — bridged. The
   conversation ends (``transferred``) and is analysed.
5. No answer (``no-answer``/``busy``/``failed``, the rep hanging up before the bridge, or no word from
   Twilio within the ring timeout + ``BACKSTOP_GRACE_S``): the caller's TwiML is replaced by a new Media
   Stream on the same conversation (the phone-menu redirect's hand-over token), where the agent says so
   and offers a meeting.

Every step is a Twilio callback, handled by whichever instance receives it: the state is the
``call_transfers`` row, and each settling step is a conditional UPDATE (``result='dialing'``), so it
happens once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select, update
from twilio.twiml.voice_response import Dial, VoiceResponse

from config import Settings
from models import CallTransfer, Conversation, ConversationTurn
from storage.db import Database
from telephony.stream_auth import hand_over_stream
from telephony.stream_twiml import stream_connect
from telephony.twilio_gateway import TelephonyError, TwilioGateway, TwilioNotConfigured
from utils import utcnow

log = logging.getLogger("ai_sdr.telephony")

WARM_LINE = "Let me bring in a colleague, one moment."
COLD_LINE = "Sure, let me transfer you now."
HOLD_SAY = "Please hold while I connect you."
BACK_LINE = (
    "Sorry, my colleague isn't available right now. I can book a meeting with them for you instead. "
    "What day and time would suit you?"
)
FAILED_BACK_LINE = "Sorry, I couldn't reach my colleague. Could I book a meeting with them for you instead?"
MODES = ("warm", "cold")
NOT_ANSWERED = {"no-answer": "no_answer", "busy": "busy", "failed": "failed", "canceled": "no_answer"}
BACKSTOP_GRACE_S = 15.0  # Twilio adds ~5 s to a participant's ring timeout; then a lost callback
JOIN_WAIT_S = 10.0  # the caller's move into the conference (the rep is dialled once they are in)
DIALLING = "dialling"  # rep_call_sid while the Participants request is on its way
ANNOUNCE_GRACE_S = 8.0  # the summary's announcement-end never came: bridge anyway after its length + this
TRANSFERRED = "transferred"
WARM_HANDOVER = "warm_transfer"  # a stream's end that hands the call to a warm transfer (not the call's end)


@dataclass(slots=True)
class TransferRequest:
    conversation_id: str
    call_sid: str  # the caller's call
    to_number: str
    from_number: str  # the caller id the rep sees (the agent's number)
    mode: str = "warm"
    summary: str = ""
    reason: str = ""
    requested_by: str = "agent"
    ring_timeout_sec: int = 25


class TransferError(RuntimeError):
    """The transfer could not start; the message is safe to show (the call goes on with the agent)."""


def transfer_json(row: CallTransfer) -> dict[str, Any]:
    """A transfer as the conversation's API shows it (timings in ms from the request)."""

    def after(at: Any) -> float | None:
        return round((at - row.requested_at).total_seconds() * 1000, 1) if at is not None else None

    return {
        "transfer_id": row.id,
        "mode": row.mode,
        "to": row.to_number,
        "requested_by": row.requested_by,
        "result": row.result,
        "error": row.error,
        "summary": row.summary,
        "requested_at": row.requested_at.isoformat(),
        "rep_answered_ms": after(row.rep_answered_at),
        "announced_ms": after(row.announced_at),
        "bridged_ms": after(row.bridged_at),
        "ended_ms": after(row.ended_at),
        "returned_ms": after(row.returned_at),
    }


class Transfers:
    """The process's transfer service (built once in ``app_runtime``)."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        twilio: TwilioGateway,
        on_ended: Callable[[str], None] | None = None,  # a conversation the transfer closed: post-call
    ) -> None:
        self.settings = settings
        self.db = db
        self.twilio = twilio
        self.on_ended = on_ended
        self._timers: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ URLs Twilio calls back

    def url(self, path: str, **query: str) -> str:
        base = self.settings.public_url.rstrip("/")
        return f"{base}/twiml/transfer/{path}" + (f"?{urlencode(query)}" if query else "")

    # ------------------------------------------------------------ start

    async def start(self, request: TransferRequest) -> CallTransfer:
        """Start a transfer of a live call. Cold: done once Twilio has the ``<Dial>``. Warm: the caller is
        in the conference and the rep's phone rings; the rest follows Twilio's callbacks."""
        if request.mode not in MODES:
            raise TransferError(f"mode must be one of {', '.join(MODES)}")
        row = CallTransfer(
            conversation_id=request.conversation_id, call_sid=request.call_sid, mode=request.mode,
            to_number=request.to_number, from_number=request.from_number or None,
            requested_by=request.requested_by, reason=request.reason[:300] or None,
            summary=request.summary or None, ring_timeout_sec=request.ring_timeout_sec,
            result="dialing" if request.mode == "warm" else "dialed",
        )  # fmt: skip
        row = await self._save(row)  # recorded before Twilio acts: the stream may end before it answers
        if request.mode == "cold":
            try:
                await self.twilio.transfer(request.call_sid, request.to_number)
            except (TelephonyError, TwilioNotConfigured) as exc:
                await self._set(row.id, result="failed", error=str(exc)[:300], ended_at=utcnow())
                raise TransferError(str(exc)) from None
            await self._set(row.id, ended_at=utcnow())
            return row
        try:
            await self.twilio.redirect(request.call_sid, self._conference_twiml(row), "warm_transfer")
        except (TelephonyError, TwilioNotConfigured) as exc:
            await self._settle(row.id, "failed", error=str(exc)[:300])
            raise TransferError(str(exc)) from None
        # The rep is dialled once the caller is in the conference and held (``participant-join``):
        # the rep answering can then never bridge them before the summary.
        self._after(row.ring_timeout_sec + BACKSTOP_GRACE_S + JOIN_WAIT_S, lambda: self._backstop(row.id))
        return row

    async def _dial_rep(self, row: CallTransfer) -> None:
        """Dial the rep into the conference, once (whichever instance got the caller's join)."""
        async with self.db.session() as session:
            claimed = await session.execute(
                update(CallTransfer)
                .where(CallTransfer.id == row.id, CallTransfer.rep_call_sid.is_(None))
                .values(rep_call_sid=DIALLING)
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount != 1:
                return
        try:
            rep_sid, conference_sid = await self.twilio.add_participant(
                row.conference_sid or self.conference_name(row.id), to=row.to_number,
                from_=row.from_number or self.settings.twilio_phone_number,
                status_callback=self.url("rep", transfer_id=row.id), timeout_sec=row.ring_timeout_sec,
                label="rep",
            )  # fmt: skip
        except (TelephonyError, TwilioNotConfigured) as exc:
            # The caller waits in the conference: the agent takes them back.
            log.warning("warm transfer: rep not dialled", extra={"fields": {"error": str(exc)[:200]}})
            await self.bring_back(row.id, "failed", error=str(exc)[:300])
            return
        await self._set(row.id, rep_call_sid=rep_sid, conference_sid=conference_sid)
        row.rep_call_sid, row.conference_sid = rep_sid, conference_sid
        log.info(
            "warm transfer: rep dialled",
            extra={"fields": {"conversation_id": row.conversation_id, "transfer_id": row.id}},
        )

    @staticmethod
    def conference_name(transfer_id: str) -> str:
        return f"transfer-{transfer_id}"

    def _conference_twiml(self, row: CallTransfer) -> VoiceResponse:
        twiml = VoiceResponse()
        dial = Dial()
        dial.conference(
            self.conference_name(row.id),
            start_conference_on_enter=False,  # the caller waits (music) until the rep is in
            end_conference_on_exit=True,
            beep=False,
            wait_url=self.url("hold"),
            wait_method="POST",
            status_callback=self.url("conference", transfer_id=row.id),
            status_callback_method="POST",
            status_callback_event="join leave announcement",
        )
        twiml.append(dial)
        return twiml

    async def _set(self, transfer_id: str, **values: Any) -> None:
        async with self.db.session() as session:
            await session.execute(update(CallTransfer).where(CallTransfer.id == transfer_id).values(**values))

    async def _save(self, row: CallTransfer) -> CallTransfer:
        async with self.db.session() as session:
            session.add(row)
            await session.flush()
        return row

    # ------------------------------------------------------------ Twilio's callbacks

    async def get(self, transfer_id: str) -> CallTransfer | None:
        async with self.db.session() as session:
            return await session.get(CallTransfer, transfer_id)

    async def on_rep_status(self, transfer_id: str, call_status: str, call_sid: str = "") -> str:
        """The rep's leg: ringing, answered (announce the summary to them), or not answered (back).
        ``call_sid``: the rep's call (the callback may come before the Participants request's answer)."""
        row = await self.get(transfer_id)
        if row is None or row.result != "dialing":
            return "ignored"
        rep_sid = call_sid or row.rep_call_sid or ""
        if call_status == "in-progress" and row.rep_answered_at is None:
            await self._set(row.id, rep_answered_at=utcnow(), announced_at=utcnow())
            await self._hold_caller(row)
            try:
                await self.twilio.update_participant(
                    row.conference_sid or self.conference_name(row.id), rep_sid,
                    announce_url=self.url("whisper", transfer_id=row.id), announce_method="POST",
                )  # fmt: skip
            except TelephonyError as exc:
                log.warning("warm transfer: summary not played", extra={"fields": {"error": str(exc)[:200]}})
                await self.bridge(row.id)
                return "bridged"
            words = len((row.summary or "").split())
            self._after(words / 2.5 + ANNOUNCE_GRACE_S, lambda: self.bridge(row.id))
            return "announcing"
        if call_status in NOT_ANSWERED:
            await self.bring_back(row.id, NOT_ANSWERED[call_status])
            return NOT_ANSWERED[call_status]
        if call_status == "completed":  # the rep hung up before the bridge
            await self.bring_back(row.id, "failed", error="the rep hung up before the caller was connected")
            return "failed"
        return "ok"

    async def on_conference_event(
        self, transfer_id: str, event: str, call_sid: str, conference_sid: str
    ) -> str:
        row = await self.get(transfer_id)
        if row is None:
            return "ignored"
        if conference_sid and row.conference_sid is None:
            async with self.db.session() as session:
                await session.execute(
                    update(CallTransfer)
                    .where(CallTransfer.id == row.id)
                    .values(conference_sid=conference_sid)
                )
            row.conference_sid = conference_sid
        if row.result != "dialing":
            return "ignored"
        if event == "participant-join" and call_sid == row.call_sid:
            await self._hold_caller(row)
            await self._dial_rep(row)
            return "held"
        if event in ("announcement-end", "announcement-fail") and row.rep_answered_at is not None:
            await self.bridge(row.id)
            return "bridged"
        if event == "participant-leave" and call_sid == row.call_sid:
            # the caller hung up while waiting: the rep's leg goes too, the call is over
            if await self._settle(row.id, "caller_left", error="the caller hung up while on hold"):
                if row.rep_call_sid and row.rep_call_sid != DIALLING:
                    await self.twilio.end_call(row.rep_call_sid)
                await self._end_conversation(row.conversation_id, "caller_hung_up")
            return "caller_left"
        return "ok"

    async def _hold_caller(self, row: CallTransfer) -> None:
        try:
            await self.twilio.update_participant(
                row.conference_sid or self.conference_name(row.id), row.call_sid,
                hold=True, hold_url=self.url("hold"), hold_method="POST",
            )  # fmt: skip
        except TelephonyError as exc:
            log.warning("warm transfer: caller not held", extra={"fields": {"error": str(exc)[:200]}})

    def whisper_twiml(self, row: CallTransfer) -> str:
        twiml = VoiceResponse()
        twiml.say(row.summary or "Transferring a caller to you now.")
        return str(twiml)

    def hold_twiml(self) -> str:
        twiml = VoiceResponse()
        if music := self.settings.transfer_hold_music_url:
            twiml.play(music, loop=0)
        else:
            twiml.say(HOLD_SAY)
            twiml.pause(length=30)
        return str(twiml)

    # ------------------------------------------------------------ settling

    async def _settle(self, transfer_id: str, result: str, error: str | None = None, **values: Any) -> bool:
        """dialing → ``result``, once across instances (False: it had settled already)."""
        async with self.db.session() as session:
            outcome = await session.execute(
                update(CallTransfer)
                .where(CallTransfer.id == transfer_id, CallTransfer.result == "dialing")
                .values(result=result, error=error, ended_at=utcnow(), **values)
                .execution_options(synchronize_session=False)
            )
            return outcome.rowcount == 1

    async def bridge(self, transfer_id: str) -> None:
        """The rep has heard the summary: the caller comes off hold, the conversation ends ``transferred``."""
        row = await self.get(transfer_id)
        if row is None or row.result != "dialing":
            return
        try:
            await self.twilio.update_participant(row.conference_sid or "", row.call_sid, hold=False)
        except TelephonyError as exc:
            await self.bring_back(row.id, "failed", error=f"could not bridge: {str(exc)[:200]}")
            return
        if await self._settle(row.id, "bridged", bridged_at=utcnow()):
            log.info("warm transfer: bridged", extra={"fields": {"conversation_id": row.conversation_id}})
            await self._end_conversation(row.conversation_id, TRANSFERRED)

    async def bring_back(self, transfer_id: str, result: str, error: str | None = None) -> None:
        """Nobody took the call: the caller leaves the conference for a new Media Stream of the same
        conversation, where the agent picks up again (``resume``)."""
        if not await self._settle(transfer_id, result, error=error, returned_at=utcnow()):
            return
        row = await self.get(transfer_id)
        assert row is not None
        async with self.db.session() as session:
            conversation = await session.get(Conversation, row.conversation_id)
            numbers = (
                (conversation.from_number or "", conversation.to_number or "") if conversation else ("", "")
            )
        token = await hand_over_stream(self.db, self.settings, row.call_sid, row.conversation_id)
        twiml = VoiceResponse()
        twiml.append(stream_connect(self.settings, row.call_sid, row.conversation_id, token, *numbers))
        log.info(
            "warm transfer: back to the agent", extra={"fields": {"result": result, "transfer_id": row.id}}
        )
        try:
            await self.twilio.redirect(row.call_sid, twiml, "transfer_back")
        except (TelephonyError, TwilioNotConfigured) as exc:
            log.warning("warm transfer: caller not taken back", extra={"fields": {"error": str(exc)[:200]}})
            await self.twilio.end_call(row.call_sid)
            await self._end_conversation(row.conversation_id, "transfer_failed")

    async def _backstop(self, transfer_id: str) -> None:
        row = await self.get(transfer_id)
        if row is not None and row.result == "dialing" and row.rep_answered_at is None:
            if row.rep_call_sid and row.rep_call_sid != DIALLING:
                await self.twilio.end_call(row.rep_call_sid)  # the rep's phone may still ring
            await self.bring_back(
                transfer_id, "no_answer", error="no word from Twilio within the ring timeout"
            )

    async def _end_conversation(self, conversation_id: str, end_reason: str) -> None:
        async with self.db.session() as session:
            conversation = await session.get(Conversation, conversation_id)
            if conversation is None or conversation.call_state == "ENDED":
                return
            now = utcnow()
            conversation.ended_at = now
            conversation.end_reason = end_reason
            conversation.call_state = "ENDED"
            if conversation.status in ("initiated", "ringing", "in_progress"):
                conversation.status = "completed"
            if conversation.started_at is not None:
                conversation.duration_sec = round((now - conversation.started_at).total_seconds(), 2)
        if self.on_ended is not None:
            self.on_ended(conversation_id)

    def _after(self, delay_s: float, job: Callable[[], Awaitable[None]]) -> None:
        """``job`` later, on this instance (a backstop for a callback that never came)."""

        async def later() -> None:
            await asyncio.sleep(delay_s)
            try:
                await job()
            except Exception as exc:
                log.warning("warm transfer: timer failed", extra={"fields": {"error": type(exc).__name__}})

        task = asyncio.create_task(later())
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    async def aclose(self) -> None:
        for task in list(self._timers):
            task.cancel()
        await asyncio.gather(*self._timers, return_exceptions=True)


async def resume_after_transfer(
    db: Database, conversation_id: str
) -> tuple[str, list[tuple[str, str]]] | None:
    """A new Media Stream of a conversation whose caller a warm transfer brought back: the line the agent
    opens with and the call so far ((role, text), for the LLM), claimed once (``resumed_at``); else None."""
    async with db.session() as session:
        row = await session.scalar(
            select(CallTransfer)
            .where(
                CallTransfer.conversation_id == conversation_id,
                CallTransfer.returned_at.is_not(None),
                CallTransfer.resumed_at.is_(None),
            )
            .order_by(CallTransfer.requested_at.desc())
            .limit(1)
        )
        if row is None:
            return None
        claimed = await session.execute(
            update(CallTransfer)
            .where(CallTransfer.id == row.id, CallTransfer.resumed_at.is_(None))
            .values(resumed_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:
            return None
        turns = await session.execute(
            select(ConversationTurn.role, ConversationTurn.text)
            .where(ConversationTurn.conversation_id == conversation_id)
            .order_by(ConversationTurn.seq)
        )
        history = [("user" if role == "user" else "assistant", text or "") for role, text in turns]
        return (BACK_LINE if row.result in ("no_answer", "busy") else FAILED_BACK_LINE), history


async def transfers_of(db: Database, conversation_id: str) -> list[dict[str, Any]]:
    async with db.session() as session:
        rows = await session.scalars(
            select(CallTransfer)
            .where(CallTransfer.conversation_id == conversation_id)
            .order_by(CallTransfer.requested_at)
        )
        return [transfer_json(row) for row in rows]
