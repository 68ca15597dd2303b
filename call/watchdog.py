"""The call's watchdog: keeps the STT stream alive, ends calls that run too long or go silent."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

KEEPALIVE_AFTER_S = 3.0  # Deepgram closes a stream after ~10 s without audio
STILL_THERE_LINE = "Are you still there?"
TIMEOUT_GOODBYE_LINE = "It seems we got disconnected. I'll follow up later. Goodbye!"
MAX_DURATION_LINE = "We're out of time for today. Thanks for talking with me. Goodbye!"


class WatchdogAction(StrEnum):
    NONE = "none"
    KEEPALIVE = "keepalive"  # no caller audio flowing: keep the STT stream open
    ASK_STILL_THERE = "ask_still_there"
    SILENCE_TIMEOUT = "silence_timeout"
    MAX_DURATION = "max_duration"


class Watchdog:
    """``tick`` every half second with what the call is doing; returns what to do about it."""

    def __init__(self, started: float, max_duration_s: float, silence_timeout_s: float) -> None:
        self.started = started
        self.max_duration_s = max_duration_s
        self.silence_timeout_s = silence_timeout_s
        self.last_activity = started
        self.silence_prompts = 0

    @classmethod
    def for_agent(cls, agent: Any, settings: Any, started: float) -> Watchdog:
        """The agent's limits within the service's (MAX_CALL_DURATION_SEC caps every agent)."""
        max_duration = min(agent.max_call_duration_sec or 1800, settings.max_call_duration_sec)
        return cls(started, max_duration, agent.silence_timeout_sec or settings.silence_timeout_sec)

    def activity(self, now: float) -> None:
        self.last_activity = now

    def caller_spoke(self) -> None:
        self.silence_prompts = 0

    def tick(self, now: float, *, last_media: float, last_voice: float, busy: bool) -> list[WatchdogAction]:
        """``busy``: a reply is being produced or played, or caller words await their turn."""
        actions = [WatchdogAction.KEEPALIVE] if now - last_media > KEEPALIVE_AFTER_S else []
        if now - self.started > self.max_duration_s:
            return [*actions, WatchdogAction.MAX_DURATION]
        if busy:
            self.last_activity = max(self.last_activity, now - 0.5)
            return actions
        if now - max(self.last_activity, last_voice) > self.silence_timeout_s:
            self.silence_prompts += 1
            self.last_activity = now
            return [
                *actions,
                WatchdogAction.ASK_STILL_THERE
                if self.silence_prompts == 1
                else WatchdogAction.SILENCE_TIMEOUT,
            ]
        return actions
