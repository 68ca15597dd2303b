"""The supervisor seat: listen to a live call, control it, take it over — on any instance.

- ``GET …/{id}/listen`` (WebSocket): the call as it happens (``call.seat``).
- ``POST …/{id}/listen-token``: a short-lived token for the listen (and take-over) socket, for browsers.
- ``POST …/{id}/control``: say / whisper / end_call / transfer / takeover / release, carried by the
  per-call command channel to the instance holding the call (``call.supervisor`` acts on it); 202.
- ``GET …/{id}/control``: the control actions taken on the call (who, what, when, delivered where).
- ``…/{id}/takeover`` (WebSocket): after ``takeover``, the audio sent here is what the caller hears.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Body, Request, WebSocket, status
from fastapi.responses import JSONResponse
from sqlalchemy import select

from api.deps import RuntimeDep, conflict, error_responses, not_found
from api.seat_access import (
    RELAY_HEADER,
    actor,
    bound_send_buffer,
    call_status,
    close,
    make_listen_token,
    relay,
    socket_allowed,
    ws_url,
)
from call.seat import CallFeed
from call.supervisor import COMMAND_PREFIX
from call.transport import supervisor_media
from models import CallCommand
from models import ControlAction as ControlActionRow
from schemas import ControlAccepted, ControlAction, ControlActionList, ControlRequest, ListenToken

router = APIRouter(prefix="/convai/conversations", tags=["supervisor seat"])
ws_router = APIRouter(prefix="/convai/conversations")  # WebSockets: authenticated in the route


async def _open_call(runtime: RuntimeDep, conversation_id: str) -> None:
    found = await call_status(runtime, conversation_id)
    if found == "unknown":
        raise not_found("conversation", conversation_id)
    if found == "ended":
        raise conflict(f"conversation {conversation_id} has ended")


@router.post(
    "/{conversation_id}/listen-token",
    response_model=ListenToken,
    responses=error_responses(404, 409),
    summary="A short-lived token for this call's listen (and take-over) WebSocket, for browsers",
)
async def listen_token(conversation_id: str, runtime: RuntimeDep) -> ListenToken:
    await _open_call(runtime, conversation_id)
    token = make_listen_token(runtime.settings, conversation_id)
    return ListenToken(
        token=token,
        expires_in=runtime.settings.listen_token_ttl_sec,
        listen_url=f"/v1/convai/conversations/{conversation_id}/listen?token={token}",
    )


@router.post(
    "/{conversation_id}/control",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ControlAccepted,
    responses=error_responses(404, 409, 422),
    summary="Say, whisper, end, transfer, take over or release a live call (on whichever instance holds it)",
)
async def control(
    conversation_id: str,
    request: Request,
    runtime: RuntimeDep,
    body: Annotated[ControlRequest, Body()],
) -> ControlAccepted:
    await _open_call(runtime, conversation_id)
    payload = body.model_dump(exclude={"type"})
    command_id = await runtime.commands.send(conversation_id, COMMAND_PREFIX + body.type, payload)
    async with runtime.db.session() as session:
        session.add(
            ControlActionRow(
                conversation_id=conversation_id,
                type=body.type,
                payload=payload,
                actor=actor(request),
                command_id=command_id,
            )
        )
    return ControlAccepted(conversation_id=conversation_id, type=body.type, command_id=command_id)


@router.get(
    "/{conversation_id}/control",
    response_model=ControlActionList,
    responses=error_responses(404),
    summary="The control actions taken on a call: who, what, when, and where they were delivered",
)
async def control_actions(conversation_id: str, runtime: RuntimeDep) -> ControlActionList:
    if await call_status(runtime, conversation_id) == "unknown":
        raise not_found("conversation", conversation_id)
    async with runtime.db.session() as session:
        rows = (
            await session.execute(
                select(ControlActionRow, CallCommand.consumed_at, CallCommand.consumed_by)
                .outerjoin(CallCommand, CallCommand.id == ControlActionRow.command_id)
                .where(ControlActionRow.conversation_id == conversation_id)
                .order_by(ControlActionRow.id)
            )
        ).all()
    actions = [
        ControlAction(
            id=row.id,
            type=row.type,
            payload=row.payload,
            actor=row.actor,
            command_id=row.command_id,
            created_at=row.created_at,
            delivered_at=consumed_at,
            delivered_to=consumed_by,
        )
        for row, consumed_at, consumed_by in rows
    ]
    return ControlActionList(conversation_id=conversation_id, actions=actions)


# ---------------------------------------------------------------- the WebSockets


async def _refuse(websocket: WebSocket, code: int, detail: str) -> None:
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse({"detail": detail}, code))
    else:
        await websocket.close(code=1008, reason=detail)


async def _admit(websocket: WebSocket, conversation_id: str, what: str) -> CallFeed | None:
    """Checks shared by both sockets; the call's feed on this instance, or None when answered already
    (refused, or relayed from the instance that holds the call)."""
    runtime = websocket.app.state.runtime
    if not socket_allowed(websocket, runtime, conversation_id):
        await _refuse(websocket, 401, "send the xi-api-key header, a bearer token or ?token=")
        return None
    found = await call_status(runtime, conversation_id)
    if found != "open":
        code, detail = (404, "conversation not found") if found == "unknown" else (409, "the call has ended")
        await _refuse(websocket, code, f"{detail}: {conversation_id}")
        return None
    feed = runtime.seats.feed(conversation_id)
    if feed is not None:
        return feed
    holder = await runtime.live_calls.holder(conversation_id)
    if holder is None or holder.instance_id == runtime.instance_id or websocket.headers.get(RELAY_HEADER):
        await _refuse(websocket, 409, f"the call is not live (yet): {conversation_id}")
        return None
    if not holder.instance_url:
        await _refuse(websocket, 502, f"no INSTANCE_URL for the call's instance {holder.instance_id}")
        return None
    token = make_listen_token(runtime.settings, conversation_id)
    url = f"{ws_url(holder.instance_url)}/v1/convai/conversations/{conversation_id}/{what}?token={token}"
    refused = await relay(websocket, url, up=what == "takeover")
    if refused is not None:
        await _refuse(websocket, *refused)
    return None


@ws_router.websocket("/{conversation_id}/listen")
async def listen(websocket: WebSocket, conversation_id: str) -> None:
    """Both tracks of the live call in Twilio's style and its events, until the call ends."""
    feed = await _admit(websocket, conversation_id, "listen")
    if feed is None:
        return
    listener = feed.listen()
    if listener is None:
        await _refuse(websocket, 409, f"the call has ended: {conversation_id}")
        return
    await websocket.accept()
    bound_send_buffer(websocket)  # a listener that stops reading is dropped within seconds

    async def client_gone() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass
        feed.leave(listener)
        listener.queue.put_nowait(None) if not listener.queue.full() else listener._end()

    gone = asyncio.create_task(client_gone())
    try:
        while (message := await listener.queue.get()) is not None:
            await websocket.send_text(message)
    except Exception:  # the listener's socket is gone
        pass
    finally:
        feed.leave(listener)
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        if listener.dropped:
            await close(websocket, 4001, "listener too slow: dropped")
        else:
            await close(websocket, 1000, "call ended")


@ws_router.websocket("/{conversation_id}/takeover")
async def takeover(websocket: WebSocket, conversation_id: str) -> None:
    """After a ``takeover`` control: media messages of the listen shape (``track: outbound``) sent here are
    what the caller hears (other messages are ignored). Closed when the call ends."""
    feed = await _admit(websocket, conversation_id, "takeover")
    if feed is None:
        return
    await websocket.accept()

    async def take() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            frame = supervisor_media(message.get("text"))
            if frame is not None and feed.supervisor is not None:
                await feed.supervisor.take_audio(frame)

    taking, ended = asyncio.create_task(take()), asyncio.create_task(feed.closed.wait())
    try:
        await asyncio.wait({taking, ended}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (taking, ended):
            task.cancel()
        await asyncio.gather(taking, ended, return_exceptions=True)
        await close(websocket, 1000, "call ended")
