"""Short-lived signed tokens that tie a Media Streams WebSocket to the call its TwiML created."""

from __future__ import annotations

import secrets
import time

import jwt

from config import Settings

_PROCESS_SECRET = secrets.token_hex(32)  # used when JWT_SECRET is not configured
_AUDIENCE = "media-stream"


def _secret(settings: Settings) -> str:
    return settings.jwt_secret.get_secret_value() or _PROCESS_SECRET


def make_stream_token(settings: Settings, call_sid: str, conversation_id: str) -> str:
    now = int(time.time())
    claims = {
        "aud": _AUDIENCE,
        "sub": call_sid,
        "conv": conversation_id,
        "iat": now,
        "exp": now + settings.stream_token_ttl_sec,
    }
    return jwt.encode(claims, _secret(settings), algorithm="HS256")


def verify_stream_token(settings: Settings, token: str, call_sid: str) -> str | None:
    """The conversation id the token grants for ``call_sid``, or None if it is not valid."""
    try:
        claims = jwt.decode(token, _secret(settings), algorithms=["HS256"], audience=_AUDIENCE)
    except jwt.PyJWTError:
        return None
    if claims.get("sub") != call_sid or not isinstance(claims.get("conv"), str):
        return None
    return claims["conv"]
