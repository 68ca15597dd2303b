"""Short-lived signed tokens that tie a Media Streams WebSocket to the call its TwiML created.

A token admits one stream: ``admit_stream`` verifies it and then claims the conversation with a
conditional UPDATE (``stream_jti`` still empty, the conversation not ended). A call redirected to a
new stream (``hand_over_stream``: keys pressed through a phone menu) names the one token that may claim
it next. The database decides, so this holds with several service instances on one database; a replayed
token, a second token for the same conversation and any token for an ended conversation are refused.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass

import jwt
from sqlalchemy import or_, update

from config import Settings
from models import Conversation
from storage.db import Database

log = logging.getLogger(__name__)

_PROCESS_SECRET = secrets.token_hex(32)  # used when JWT_SECRET is not configured
_AUDIENCE = "media-stream"
ENDED_STATUSES = ("completed", "busy", "no_answer", "failed", "canceled")
HANDOVER = "next:"  # stream_jti of a call whose next stream (its token's jti follows) may claim it


@dataclass(frozen=True, slots=True)
class StreamGrant:
    conversation_id: str
    jti: str


def _secret(settings: Settings) -> str:
    return settings.jwt_secret.get_secret_value() or _PROCESS_SECRET


def make_stream_token(settings: Settings, call_sid: str, conversation_id: str) -> str:
    now = int(time.time())
    claims = {
        "aud": _AUDIENCE,
        "sub": call_sid,
        "conv": conversation_id,
        "jti": secrets.token_hex(16),
        "iat": now,
        "exp": now + settings.stream_token_ttl_sec,
    }
    return jwt.encode(claims, _secret(settings), algorithm="HS256")


def read_stream_token(settings: Settings, token: str, call_sid: str) -> StreamGrant | None:
    """What a well-signed, unexpired token for ``call_sid`` grants, or None. Does not claim it."""
    try:
        claims = jwt.decode(
            token, _secret(settings), algorithms=["HS256"], audience=_AUDIENCE, options={"require": ["exp"]}
        )
    except jwt.PyJWTError:
        return None
    conversation_id, jti = claims.get("conv"), claims.get("jti")
    if claims.get("sub") != call_sid or not isinstance(conversation_id, str) or not isinstance(jti, str):
        return None
    if not jti or len(jti) > 64:
        return None
    return StreamGrant(conversation_id, jti)


async def admit_stream(db: Database, settings: Settings, token: str, call_sid: str) -> str | None:
    """Verify the token and claim its conversation for this one stream; the conversation id, or None.

    One atomic statement: it succeeds for the first stream only, and never for an ended conversation.
    """
    grant = read_stream_token(settings, token, call_sid)
    if grant is None:
        return None
    async with db.session() as session:
        result = await session.execute(
            update(Conversation)
            .where(
                Conversation.id == grant.conversation_id,
                # the first stream, or the one a phone-menu redirect handed the call over to
                or_(Conversation.stream_jti.is_(None), Conversation.stream_jti == HANDOVER + grant.jti),
                Conversation.ended_at.is_(None),
                Conversation.call_state != "ENDED",
                Conversation.status.not_in(ENDED_STATUSES),
                or_(Conversation.call_sid.is_(None), Conversation.call_sid == call_sid),
            )
            .values(stream_jti=grant.jti)
            .execution_options(synchronize_session=False)
        )
        claimed = result.rowcount == 1
    if not claimed:
        log.warning(
            "stream refused: token already used or conversation ended",
            extra={"fields": {"call_sid": call_sid, "conversation_id": grant.conversation_id}},
        )
        return None
    return grant.conversation_id


async def hand_over_stream(db: Database, settings: Settings, call_sid: str, conversation_id: str) -> str:
    """A token for the call's next Media Stream (the call is redirected: keys pressed through a phone
    menu, then a new stream); that token, and only it, may claim the conversation again."""
    token = make_stream_token(settings, call_sid, conversation_id)
    grant = read_stream_token(settings, token, call_sid)
    assert grant is not None
    async with db.session() as session:
        await session.execute(
            update(Conversation)
            .where(Conversation.id == conversation_id)
            .values(stream_jti=HANDOVER + grant.jti)
            .execution_options(synchronize_session=False)
        )
    return token
