"""One agent turn in progress, as the responder, the speaker and the transcript share it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import StrEnum


class ReplySource(StrEnum):
    """How a reply was produced (stored on the agent turn)."""

    LLM = "llm"
    KNOWLEDGE = "knowledge"  # a sentence of the knowledge base, spoken as is
    TOOL = "tool"
    FIXED_LINE = "fixed_line"  # greeting, goodbye, "are you still there?", busy line
    FALLBACK = "fallback"  # the LLM failed: "sorry, could you say that again?"
    SUPERVISOR = "supervisor"  # a supervisor's: a `say` in the agent's voice, their own on a take-over
    PLAYBOOK = "playbook"  # a playbook stage's scripted line


def _released() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


@dataclass(slots=True)
class ReplyTurn:
    """One agent turn: its text, timings and task."""

    turn_id: int
    user_text: str
    user_seq: int | None
    kind: str = "speech"
    source: ReplySource | None = None
    planned: list[str] = field(default_factory=list)  # sentences handed to TTS
    timings: dict[str, float] = field(default_factory=dict)  # ms since stream start (durations: *_dur_ms)
    task: asyncio.Task[None] | None = None
    saved: bool = False
    audio_started: bool = False
    hang_up_after: str | None = None  # end reason, when this turn closes the call
    end_reason: str | None = None  # how the call ends if it ends after this turn (e.g. transferred)
    # Set when the turn may be heard. A preemptive reply is generated and synthesized while the caller's
    # turn is still being confirmed, and waits here with its first audio in hand.
    go: asyncio.Event = field(default_factory=_released)

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()
