"""The supervisor seat's access: who may listen or take over, listen tokens, and the relay between instances.

A listen token (``POST …/listen-token``) is a short-lived JWT scoped to one conversation, for browsers,
which cannot set the ``xi-api-key`` header on a WebSocket. It opens that conversation's listen and
take-over sockets and nothing else.

With several instances, a listener may reach any of them while the call's stream is on one. The
instance that has the socket but not the call opens the same socket on the instance that holds the call
(``live_calls.instance_url``, with a token it signs itself and ``x-seat-relay: 1`` so the relay is never
relayed again) and passes messages through both ways. A slow listener slows the relay, whose queue on
the holding instance then fills: it is dropped there, and the drop reaches the listener.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from typing import Any

import jwt
import websockets
from fastapi import HTTPException
from sqlalchemy.orm import noload
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from api.auth import hash_key, verify_jwt
from models import Conversation
from telephony.stream_auth import ENDED_STATUSES

log = logging.getLogger(__name__)

AUDIENCE = "seat"
RELAY_HEADER = "x-seat-relay"
_PROCESS_SECRET = secrets.token_hex(32)  # JWT_SECRET unset: tokens good on this process only


def _secret(settings: Any) -> str:
    return settings.jwt_secret.get_secret_value() or _PROCESS_SECRET


def make_listen_token(settings: Any, conversation_id: str) -> str:
    now = int(time.time())
    ttl = settings.listen_token_ttl_sec
    claims = {"aud": AUDIENCE, "conv": conversation_id, "iat": now, "exp": now + ttl}
    return jwt.encode(claims, _secret(settings), algorithm="HS256")


def listen_token_valid(settings: Any, token: str, conversation_id: str) -> bool:
    try:
        claims = jwt.decode(
            token, _secret(settings), algorithms=["HS256"], audience=AUDIENCE, options={"require": ["exp"]}
        )
    except jwt.PyJWTError:
        return False
    return claims.get("conv") == conversation_id


def actor(connection: HTTPConnection) -> str:
    """Who acts, for the record: the API key's fingerprint or the bearer token's subject (never a secret)."""
    key = connection.headers.get("xi-api-key")
    if key is not None:
        return "key:" + hash_key(key)[:12]
    _, _, token = connection.headers.get("authorization", "").partition(" ")
    try:
        claims = jwt.decode(token, options={"verify_signature": False})  # already verified by require_auth
    except jwt.PyJWTError:
        return "bearer"
    return ("sub:" + str(claims["sub"]))[:80] if claims.get("sub") else "bearer"


def socket_allowed(websocket: WebSocket, runtime: Any, conversation_id: str) -> bool:
    """The xi-api-key header, a bearer token, or a listen token for this conversation (``?token=``)."""
    key = websocket.headers.get("xi-api-key")
    if key is not None:
        return runtime.keyring.accepts(key)
    scheme, _, bearer = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and bearer:
        try:
            verify_jwt(bearer, runtime.settings)
        except HTTPException:
            return False
        return True
    token = websocket.query_params.get("token")
    return bool(token) and listen_token_valid(runtime.settings, token, conversation_id)


async def call_status(runtime: Any, conversation_id: str) -> str:
    """``unknown`` / ``ended`` / ``open`` (not ended: live, or not yet answered)."""
    async with runtime.db.session() as session:
        only = [noload(Conversation.turns), noload(Conversation.tool_calls)]
        conv = await session.get(Conversation, conversation_id, options=only)
    if conv is None:
        return "unknown"
    if conv.ended_at is not None or conv.call_state == "ENDED" or conv.status in ENDED_STATUSES:
        return "ended"
    return "open"


async def relay(websocket: WebSocket, upstream_url: str, *, up: bool) -> tuple[int, str] | None:
    """Serve ``websocket`` from the same socket on the instance holding the call. Returns an HTTP refusal
    (status, detail) when the upstream refused the upgrade or cannot be reached, else None once done.
    ``up``: the client's messages are passed on (take-over); the upstream's always come back."""
    headers = {RELAY_HEADER: "1"}
    try:
        upstream = await websockets.connect(
            upstream_url, additional_headers=headers, open_timeout=5, max_size=2**20
        )
    except websockets.InvalidStatus as exc:
        status = exc.response.status_code
        return (status, "the call is not live") if status in (404, 409) else (502, "relay refused")
    except (OSError, TimeoutError, websockets.WebSocketException):
        return 502, "the instance holding the call cannot be reached"
    await websocket.accept()

    async def down() -> None:
        async for message in upstream:
            await websocket.send_text(message if isinstance(message, str) else message.decode())

    async def client_side() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if up and message.get("text") is not None:
                await upstream.send(message["text"])

    tasks = [asyncio.create_task(down()), asyncio.create_task(client_side())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        code, reason = upstream.close_code or 1000, upstream.close_reason or ""
        await upstream.close()
        await close(websocket, code if code != 1006 else 1011, reason or "relay closed")
    return None


async def close(websocket: WebSocket, code: int, reason: str) -> None:
    if websocket.application_state == WebSocketState.CONNECTED:
        try:
            await websocket.close(code=code, reason=reason)
        except (RuntimeError, WebSocketDisconnect, OSError):
            pass


LISTENER_SEND_BUFFER = 16_384  # bytes of a listener's socket buffered by the kernel (and as much by asyncio)


def bound_send_buffer(websocket: WebSocket, size: int = LISTENER_SEND_BUFFER) -> bool:
    """Keep what the kernel and the event loop buffer for one listener small (~1 s of audio), so one that
    does not read fills its queue and is dropped within seconds, instead of after the megabytes a socket
    buffer grows to on a fast network. Best effort: the server's socket is found through its ASGI send
    callable (uvicorn); where it cannot be, the bounded queue still applies, only later. True if done."""
    send: Any = getattr(websocket, "_send", None)
    for _ in range(4):
        transport = getattr(getattr(send, "__self__", None), "transport", None)
        if transport is not None:
            sock = transport.get_extra_info("socket")
            try:
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
                transport.set_write_buffer_limits(high=size)
            except (OSError, AttributeError, ValueError):
                return False
            return True
        closure = getattr(send, "__closure__", None) or ()
        cells = [c.cell_contents for c in closure if callable(c.cell_contents)]
        if not cells:
            return False
        send = cells[-1]
    return False


def ws_url(base: str) -> str:
    return "ws" + base.removeprefix("http") if base.startswith("http") else base
