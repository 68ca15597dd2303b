"""The TwiML that connects a call to this service's Media Stream (answered calls, and a call whose
stream is reconnected after keys were pressed through a phone menu)."""

from __future__ import annotations

from twilio.twiml.voice_response import Connect

from config import Settings


def stream_connect(
    settings: Settings, call_sid: str, conversation_id: str, token: str, from_number: str, to_number: str
) -> Connect:
    """``<Connect><Stream url=wss://…/ws/voice/{call_sid}>``, with what the stream's ``start`` carries."""
    base = settings.public_url.rstrip("/")
    ws_base = (
        "wss://" + base[len("https://") :]
        if base.startswith("https://")
        else "ws://" + base.split("://", 1)[-1]
    )
    connect = Connect()
    stream = connect.stream(url=f"{ws_base}/ws/voice/{call_sid}")
    stream.parameter(name="conversation_id", value=conversation_id)
    stream.parameter(name="token", value=token)
    stream.parameter(name="from", value=from_number)
    stream.parameter(name="to", value=to_number)
    return connect
