"""Twilio-facing routes: TwiML webhooks, status callbacks and the Media Streams WebSocket.

These are not under API keys: webhooks are checked with Twilio's request signature when
TWILIO_AUTH_TOKEN is set, and fail closed without it (only loopback clients: the simulator, tests);
a stream must present the short-lived, single-use token its TwiML carried.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select
from twilio.twiml.voice_response import VoiceResponse

from api.deps import Services, error_responses
from api.twilio_webhook import twilio_params as _twilio_params
from call.amd import CARRIER_VERDICT
from models import Agent, Conversation, PhoneNumber
from storage.agent_versions import stamp_call
from storage.analytics import count_ended_call
from telephony.call_status import FINAL_STATUSES, STATUS_MAP, record_call_status
from telephony.stream_auth import make_stream_token
from telephony.stream_twiml import stream_connect
from utils import utcnow
from voice_pipeline import BUSY_LINE, WSConn

log = logging.getLogger("ai_sdr.telephony")
# 400: a webhook without a valid CallSid; 403: a signature that does not check out (or, without a token,
# a client that is not on this machine); 404: a callback about a call this service never saw;
# 413/415: a body over 64 KB or not form-encoded (api/twilio_webhook.py).
router = APIRouter(tags=["telephony"], responses=error_responses(400, 403, 404, 413, 415))

_CALL_SID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Twilio's AnsweredBy values (async AMD with DetectMessageEnd) -> conversations.answered_by
ANSWERED_BY = {
    "human": "human",
    "machine_start": "machine",
    "machine_end_beep": "machine",
    "machine_end_silence": "machine",
    "machine_end_other": "machine",
    "fax": "fax",
    "unknown": "unknown",
}
NO_AGENT_LINE = "Sorry, this number is not available right now. Goodbye."


def _xml(response: VoiceResponse) -> Response:
    return Response(content=str(response), media_type="application/xml")


def _say_and_hang_up(line: str) -> Response:
    response = VoiceResponse()
    response.say(line)
    response.hangup()
    return _xml(response)


def _moving_elsewhere(runtime: Services) -> bool:
    """Draining behind a balancer: answer 503 before doing anything, so the balancer gives the request
    to another instance (deploy/nginx.conf retries on 503). A lone instance says its busy line instead."""
    return runtime.draining and runtime.settings.is_multi_instance


def _draining() -> Response:
    return Response(
        content='{"detail":"this instance is draining; retry on another"}',
        status_code=503,
        media_type="application/json",
        headers={"retry-after": "1"},
    )


def _stream_twiml(runtime: Services, call_sid: str, conversation: Conversation) -> Response:
    token = make_stream_token(runtime.settings, call_sid, conversation.id)
    numbers = (conversation.from_number or "", conversation.to_number or "")
    response = VoiceResponse()
    response.append(stream_connect(runtime.settings, call_sid, conversation.id, token, *numbers))
    return _xml(response)


def _valid_call_sid(params: dict[str, str]) -> str:
    call_sid = params.get("CallSid", "")
    if not _CALL_SID.match(call_sid):
        raise HTTPException(400, detail="CallSid is missing or malformed")
    return call_sid


@router.post("/twiml/voice", summary="Twilio inbound-call webhook: answers with a Media Stream")
async def voice_inbound(request: Request) -> Response:
    runtime: Services = request.app.state.runtime
    if _moving_elsewhere(runtime):
        return _draining()
    params = await _twilio_params(request)
    call_sid = _valid_call_sid(params)
    if not runtime.calls.has_capacity():
        return _say_and_hang_up(BUSY_LINE)
    to_number, from_number = params.get("To", ""), params.get("From", "")
    async with runtime.db.session() as session:
        conversation = await session.scalar(select(Conversation).where(Conversation.call_sid == call_sid))
        # A scenario test's call names its agent itself: it needs no phone number of its own.
        sandboxed = runtime.sandbox.of_call(call_sid)
        if conversation is None:
            agent_id = (
                sandboxed.agent_id
                if sandboxed
                else await session.scalar(
                    select(PhoneNumber.agent_id).where(PhoneNumber.phone_number == to_number)
                )
            )
            agent_id = agent_id or runtime.settings.default_agent_id or None
            agent = await session.get(Agent, agent_id) if agent_id is not None else None
            if agent is None:
                log.warning(
                    "inbound call for a number with no agent", extra={"fields": {"call_sid": call_sid}}
                )
                return _say_and_hang_up(NO_AGENT_LINE)
            conversation = Conversation(
                agent_id=agent_id,
                call_sid=call_sid,
                direction="inbound",
                from_number=from_number,
                to_number=to_number,
                status="ringing",
            )
            session.add(conversation)
            await session.flush()
            # the version this call runs: an experiment's variant for this caller, else the agent's latest
            await stamp_call(
                session,
                conversation,
                agent,
                lead_number=None if sandboxed else from_number,
                inbound_number=to_number,
                version_id=sandboxed.version_id if sandboxed else None,
            )
            if sandboxed:
                runtime.sandbox.bind(sandboxed, conversation.id)
    runtime.prepare_greeting(conversation.agent_id)  # the greeting synthesizes while the stream connects
    return _stream_twiml(runtime, call_sid, conversation)


@router.post("/twiml/voice_outbound", summary="Twilio webhook for an answered outbound call")
async def voice_outbound(request: Request, conversation_id: str = "") -> Response:
    runtime: Services = request.app.state.runtime
    if _moving_elsewhere(runtime):
        return _draining()
    params = await _twilio_params(request)
    call_sid = _valid_call_sid(params)
    async with runtime.db.session() as session:
        conversation = await session.get(Conversation, conversation_id) if conversation_id else None
        if conversation is None:
            conversation = await session.scalar(select(Conversation).where(Conversation.call_sid == call_sid))
        if conversation is None or conversation.agent_id is None:
            return _say_and_hang_up(NO_AGENT_LINE)
        conversation.call_sid = conversation.call_sid or call_sid
        conversation.status = "in_progress"
    runtime.prepare_greeting(conversation.agent_id)
    return _stream_twiml(runtime, call_sid, conversation)


async def _callback_conversation(session: Any, conversation_id: str, call_sid: str) -> Conversation:
    """The conversation a Twilio callback is about: by its id when the SID agrees, else by the SID."""
    conversation = await session.get(Conversation, conversation_id) if conversation_id else None
    if conversation is not None and conversation.call_sid not in (None, call_sid):
        conversation = None  # the id and the SID disagree: trust neither
    if conversation is None:
        conversation = await session.scalar(select(Conversation).where(Conversation.call_sid == call_sid))
    if conversation is None:
        raise HTTPException(404, detail="unknown call")
    return conversation


@router.post("/twiml/status", summary="Twilio call status callback")
async def call_status(request: Request, conversation_id: str = "") -> dict[str, Any]:
    runtime: Services = request.app.state.runtime
    params = await _twilio_params(request)
    call_sid = _valid_call_sid(params)
    status = STATUS_MAP.get(params.get("CallStatus", "").lower())
    if status is None:
        raise HTTPException(400, detail="unknown CallStatus")
    async with runtime.db.session() as session:
        conversation = await _callback_conversation(session, conversation_id, call_sid)
        ends_here = await record_call_status(
            session, runtime.webhooks, conversation, status, call_sid, params.get("CallDuration")
        )
        in_campaign = conversation.campaign_id is not None
        ended_id = conversation.id
    if ends_here:
        await count_ended_call(runtime.db, ended_id)
    runtime.webhooks_notify()
    if in_campaign and status in FINAL_STATUSES:
        runtime.dialer.notify()
    return {"ok": True, "status": status}


@router.post("/twiml/amd", summary="Twilio asynchronous answering-machine detection callback")
async def machine_detection(request: Request, conversation_id: str = "") -> dict[str, Any]:
    """Records who answered (``AnsweredBy``: human, machine_*, fax, unknown) on the conversation, and
    sends the verdict to the live call, on whichever instance holds its stream (``storage.commands``)."""
    runtime: Services = request.app.state.runtime
    params = await _twilio_params(request)
    call_sid = _valid_call_sid(params)
    verdict = params.get("AnsweredBy", "").lower()
    answered_by = ANSWERED_BY.get(verdict)
    if answered_by is None:
        raise HTTPException(400, detail="unknown AnsweredBy")
    async with runtime.db.session() as session:
        conversation = await _callback_conversation(session, conversation_id, call_sid)
        conversation.call_sid = conversation.call_sid or call_sid
        # The engine may have decided from the audio already; Twilio's verdict does not overwrite it.
        if conversation.answered_by in (None, "unknown"):
            conversation.answered_by = answered_by
            conversation.answered_by_method = "twilio_amd"
            conversation.answered_by_at = utcnow()
            if answered_by == "machine" and conversation.outcome is None:
                conversation.outcome = "voicemail"
        in_campaign = conversation.campaign_id is not None
        conversation_id = conversation.id
    await runtime.commands.send(conversation_id, CARRIER_VERDICT, {"answered_by": verdict})
    if in_campaign:
        runtime.dialer.notify()
    return {"ok": True, "answered_by": answered_by}


# ------------------------------------------------------------ warm transfer (telephony.warm_transfer)

_TRANSFER_ID = re.compile(r"^xfer_[A-Za-z0-9]{1,40}$")


async def _transfer_callback(request: Request, transfer_id: str) -> tuple[Services, dict[str, str]]:
    runtime: Services = request.app.state.runtime
    params = await _twilio_params(request)
    if not _TRANSFER_ID.match(transfer_id):
        raise HTTPException(400, detail="transfer_id is missing or malformed")
    return runtime, params


@router.post("/twiml/transfer/hold", summary="Warm transfer: what a caller waiting for the rep hears")
async def transfer_hold(request: Request) -> Response:
    runtime: Services = request.app.state.runtime
    await _twilio_params(request)
    return Response(content=runtime.transfers.hold_twiml(), media_type="application/xml")


@router.post("/twiml/transfer/whisper", summary="Warm transfer: the summary the rep alone hears")
async def transfer_whisper(request: Request, transfer_id: str = "") -> Response:
    runtime, _ = await _transfer_callback(request, transfer_id)
    row = await runtime.transfers.get(transfer_id)
    if row is None:
        raise HTTPException(404, detail="unknown transfer")
    return Response(content=runtime.transfers.whisper_twiml(row), media_type="application/xml")


@router.post("/twiml/transfer/rep", summary="Warm transfer: the rep's call status callback")
async def transfer_rep_status(request: Request, transfer_id: str = "") -> dict[str, Any]:
    runtime, params = await _transfer_callback(request, transfer_id)
    status = params.get("CallStatus", "").lower()
    if status not in STATUS_MAP:
        raise HTTPException(400, detail="unknown CallStatus")
    step = await runtime.transfers.on_rep_status(transfer_id, status, params.get("CallSid", ""))
    return {"ok": True, "step": step}


@router.post("/twiml/transfer/conference", summary="Warm transfer: the conference's status callback")
async def transfer_conference(request: Request, transfer_id: str = "") -> dict[str, Any]:
    runtime, params = await _transfer_callback(request, transfer_id)
    event = params.get("StatusCallbackEvent", "")
    step = await runtime.transfers.on_conference_event(
        transfer_id, event, params.get("CallSid", ""), params.get("ConferenceSid", "")
    )
    return {"ok": True, "step": step}


async def _refuse_upgrade(websocket: WebSocket, status: int, detail: str) -> None:
    """Refuse a WebSocket before accepting it: an HTTP answer where the server can send one, else the
    plain refusal (uvicorn answers 403)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        headers = {"retry-after": "1"} if status == 503 else None
        await websocket.send_denial_response(JSONResponse({"detail": detail}, status, headers=headers))
    else:
        await websocket.close(code=1013 if status == 503 else 1008, reason=detail)


class _StreamRefusals:
    """Counts refused upgrades and logs them at most every 10 s: a flood must not flood the log too."""

    def __init__(self) -> None:
        self.count = 0
        self._logged_at = 0.0

    def note(self, reason: str) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self._logged_at >= 10.0:
            self._logged_at = now
            log.warning("media streams refused", extra={"fields": {"reason": reason, "total": self.count}})


_refusals = _StreamRefusals()


@router.websocket("/ws/voice/{call_sid}")
async def media_stream(websocket: WebSocket, call_sid: str) -> None:
    """Twilio Media Streams: connected/start/media/mark/dtmf/stop in; media/mark/clear out.

    What can be checked before the upgrade is: draining behind a balancer, the call SID, and the number
    of sockets still waiting for their ``start`` (MAX_PENDING_STREAMS). The stream token travels in the
    ``start`` message (Twilio's stream URL takes no query), so it is checked just after, within 10 s.
    """
    runtime: Services = websocket.app.state.runtime
    if _moving_elsewhere(runtime) and "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(_draining())  # before the upgrade: the balancer tries another
        return
    if not _CALL_SID.match(call_sid):
        _refusals.note("bad call sid")
        await _refuse_upgrade(websocket, 403, "bad call sid")
        return
    conn = WSConn(runtime, websocket, call_sid)
    if not runtime.calls.hold_pending(conn, runtime.settings.max_pending_streams):
        _refusals.note("too many pending streams")
        await _refuse_upgrade(websocket, 503, "too many streams waiting to start; retry")
        return
    try:
        await websocket.accept()
        await conn.serve()  # a live call from its admission on: registering it frees its place
    finally:
        runtime.calls.release_pending(conn)
