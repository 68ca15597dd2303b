"""Shapes of the supervisor seat: control a live call, listen tokens, the control actions taken."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from shapes.common import E164, Strict

__all__ = [
    "ControlAccepted",
    "ControlAction",
    "ControlActionList",
    "ControlEndCall",
    "ControlRelease",
    "ControlRequest",
    "ControlSay",
    "ControlTakeover",
    "ControlTransfer",
    "ControlWhisper",
    "ListenToken",
]

_SeatText = Annotated[str, Field(min_length=1, max_length=1000, pattern=r"\S")]


class ControlSay(Strict):
    type: Literal["say"]
    text: _SeatText = Field(description="Spoken by the agent next, once its current sentence ends")


class ControlWhisper(Strict):
    type: Literal["whisper"]
    text: _SeatText = Field(description="Guidance the agent's LLM sees for its next replies; never spoken")


class ControlEndCall(Strict):
    type: Literal["end_call"]


class ControlTransfer(Strict):
    type: Literal["transfer"]
    to: E164 = Field(description="The number the call is transferred to (E.164)")
    mode: Literal["warm", "cold"] = "cold"


class ControlTakeover(Strict):
    type: Literal["takeover"]


class ControlRelease(Strict):
    type: Literal["release"]


ControlRequest = Annotated[
    ControlSay | ControlWhisper | ControlEndCall | ControlTransfer | ControlTakeover | ControlRelease,
    Field(discriminator="type"),
]


class ControlAccepted(BaseModel):
    status: Literal["accepted"] = "accepted"
    conversation_id: str
    type: str
    command_id: int = Field(description="The per-call command carrying it to the instance with the call")


class ListenToken(BaseModel):
    token: str = Field(description="For `?token=` on this conversation's listen and take-over WebSockets")
    expires_in: int = Field(description="Seconds the token stays valid")
    listen_url: str = Field(description="The listen WebSocket's path, token included")


class ControlAction(BaseModel):
    id: int
    type: str
    payload: dict[str, Any]
    actor: str = Field(description="Who: the API key's fingerprint (key:…) or the bearer token's subject")
    command_id: int | None
    created_at: datetime
    delivered_at: datetime | None = Field(description="When the instance holding the call took the command")
    delivered_to: str | None = Field(description="That instance")


class ControlActionList(BaseModel):
    conversation_id: str
    actions: list[ControlAction]
