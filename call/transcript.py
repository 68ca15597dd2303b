"""The call transcript: turn records with their timings, the chat history, and the call's state.

Every state change goes through ``set_state`` (the stored ``call_state`` follows the real one), and
every turn record through one of the ``save_*`` methods. Writes are queued on the call's store
(write-behind), so nothing here waits for the database.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any, Protocol

from call.reply_turn import ReplyTurn
from providers.base import ChatMessage
from storage.call_store import TurnRecord


class CallState(StrEnum):
    CALL_START = "CALL_START"
    DISCOVERY = "DISCOVERY"
    ACTIVE = "ACTIVE"
    COMPLETION = "COMPLETION"
    ENDED = "ENDED"


class TurnSink(Protocol):
    """Where records go (``storage.call_store.CallStore``)."""

    def save_turn(self, turn: TurnRecord) -> int: ...

    def set_state(self, state: str) -> None: ...

    def emit(self, event_type: str, data: dict[str, Any]) -> None: ...

    def save_stages(self, stage_path: list[str], stage: str, collected: dict[str, Any]) -> None: ...


class CallTranscript:
    def __init__(self, sink: TurnSink | None, ms: Any) -> None:
        self._sink = sink
        self._ms = ms  # CallClock.ms
        self.state = CallState.CALL_START
        self.history: list[ChatMessage] = []
        self.guidance: list[str] = []  # a supervisor's whispers: the LLM sees them, nobody hears them
        # Told of what listeners see (call.seat): ("transcript", role, text) / ("stage", …) / ("tool", …)
        self.observer: Callable[[str, dict[str, Any]], None] | None = None
        self.stage_path: list[str] = []  # a playbook's stages so far, the current one and its fields
        self.stage = ""
        self.collected: dict[str, Any] = {}

    def _tell(self, kind: str, **fields: Any) -> None:
        if self.observer is not None:
            self.observer(kind, fields)

    def attach(self, sink: TurnSink) -> None:
        self._sink = sink
        if self.stage_path:  # the playbook's start stage, set before the call had its store
            self.save_stages(self.stage_path, self.stage, self.collected)

    # ---------------------------------------------------------------- state

    def set_state(self, state: CallState) -> None:
        if state == self.state:
            return
        self.state = state
        if self._sink is not None:
            self._sink.set_state(state.value)
        self._tell("stage", stage=state.value)

    def save_stages(self, stage_path: list[str], stage: str, collected: dict[str, Any]) -> None:
        """The playbook's stages so far, the stage the call is in and the fields collected."""
        if stage != self.stage:  # listeners see the playbook's stage as it changes
            self._tell("stage", stage=stage, stage_path=list(stage_path))
        self.stage_path, self.stage, self.collected = stage_path, stage, collected
        if self._sink is not None and hasattr(self._sink, "save_stages"):
            self._sink.save_stages(stage_path, stage, collected)

    @property
    def closing(self) -> bool:
        return self.state in (CallState.COMPLETION, CallState.ENDED)

    # ---------------------------------------------------------------- caller turns

    def save_user_turn(
        self,
        text: str,
        *,
        kind: str,
        intent: str,
        start_ms: float | None,
        end_ms: float | None,
        stt_final_ms: float | None = None,
        seq: int = -1,
    ) -> int:
        """A caller turn (``seq`` set: the record of a turn the caller added to)."""
        assert self._sink is not None
        now = self._ms()
        self._tell("transcript", role="user", text=text, final=True)
        return self._sink.save_turn(
            TurnRecord(
                "user",
                text,
                kind=kind,
                intent=intent,
                start_ms=start_ms if start_ms is not None else end_ms or now,
                end_ms=end_ms or now,
                stt_final_ms=stt_final_ms,
                seq=seq,
            )
        )

    def save_backchannel(self, text: str, start_ms: float | None, end_ms: float | None) -> None:
        assert self._sink is not None
        self._sink.save_turn(
            TurnRecord(
                "user", text, kind="backchannel", start_ms=start_ms, end_ms=end_ms, intent="BACKCHANNEL"
            )
        )

    # ---------------------------------------------------------------- agent turns

    def save_reply(self, turn: ReplyTurn) -> bool:
        """A reply played to its end. False if there was nothing to record."""
        if turn.saved or self._sink is None:
            return False
        turn.saved = True
        text = " ".join(turn.planned)
        if not text:
            return False
        if turn.user_text:
            self.history.append(ChatMessage("user", turn.user_text))
        self.history.append(ChatMessage("assistant", text))
        self._sink.save_turn(self._agent_record(turn, text, interrupted=False))
        self._tell("transcript", role="agent", text=text, final=True)
        return True

    def save_cut_reply(self, turn: ReplyTurn, heard: str) -> None:
        """A reply cut short: stored as far as the caller heard it."""
        if turn.saved or self._sink is None:
            return
        turn.saved = True
        if turn.user_text:
            self.history.append(ChatMessage("user", turn.user_text))
        if heard:
            self.history.append(ChatMessage("assistant", heard + " —"))
        if turn.planned:
            self._sink.save_turn(self._agent_record(turn, heard, interrupted=True))
            self._tell("transcript", role="agent", text=heard, final=True, interrupted=True)

    # ---------------------------------------------------------------- a supervisor on the call

    def note_unanswered(self, text: str) -> None:
        """A caller turn the agent did not answer (a supervisor had the call): in the history all the same."""
        self.history.append(ChatMessage("user", text))

    def save_supervisor_turn(self, text: str, start_ms: float | None, end_ms: float | None) -> None:
        """What a supervisor who took the call over said: an agent turn (the caller heard the agent's line)
        with source ``supervisor``; the agent carries on from it after the release."""
        if self._sink is None or not text.strip():
            return
        self.history.append(ChatMessage("assistant", text))
        record = TurnRecord("agent", text, kind="supervisor", source="supervisor", start_ms=start_ms)
        record.end_ms = end_ms if end_ms is not None else self._ms()
        self._sink.save_turn(record)
        self._tell("transcript", role="supervisor", text=text, final=True)

    def partial(self, role: str, text: str) -> None:
        """Words still being transcribed (listeners only; nothing is stored)."""
        self._tell("transcript", role=role, text=text, final=False)

    def tool_ran(self, name: str, success: bool) -> None:
        self._tell("tool", name=name, success=success)

    def emit(self, event_type: str, data: dict[str, Any]) -> None:
        if self._sink is not None:
            self._sink.emit(event_type, data)

    def last_agent_line(self) -> str:
        return next((m.content for m in reversed(self.history) if m.role == "assistant"), "")

    def _agent_record(self, turn: ReplyTurn, heard: str, interrupted: bool) -> TurnRecord:
        t = turn.timings
        return TurnRecord(
            "agent",
            heard,
            kind=turn.kind,
            full_text=" ".join(turn.planned),
            interrupted=interrupted,
            start_ms=t.get("first_frame_sent_ms"),
            end_ms=self._ms(),
            user_speech_end_ms=t.get("user_speech_end_ms"),
            stt_final_ms=t.get("stt_final_ms"),
            llm_first_token_ms=t.get("llm_first_token_ms"),
            tts_first_audio_ms=t.get("tts_first_audio_ms"),
            first_frame_sent_ms=t.get("first_frame_sent_ms"),
            source=turn.source.value if turn.source is not None else None,
            retrieval_ms=t.get("retrieval_dur_ms"),
            knowledge_answer_ms=t.get("knowledge_answer_ms"),
            tool_result_ms=t.get("tool_result_ms"),
        )
