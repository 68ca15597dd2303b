"""Text mode: a scenario's caller lines go straight into the call engine's decision path, without audio.

The same parts a phone call wires (``call.replies.Replies``, ``call.responder.Responder``, the
``CallTranscript`` stored through a ``CallStore``, the agent's tools, knowledge and LLM, the intent
rules and the ``Watchdog``) answer each line as if the STT had just heard it; only the audio side (STT,
turn detection, TTS, playout, barge-in timing) is skipped. The call is sandboxed (``core.sandbox``): a
transfer, a text message, a webhook tool's request and every webhook event are recorded in the run's
``would_have_sent``, never sent; the conversation, its meetings and do-not-call entries are removed after
the run (the run keeps its transcript).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select

from call.clock import CallClock
from call.intents import detect_intent
from call.profile import build_profile
from call.replies import Replies
from call.reply_turn import ReplyTurn
from call.responder import Responder
from call.transcript import CallState, CallTranscript
from call.watchdog import STILL_THERE_LINE, TIMEOUT_GOODBYE_LINE, Watchdog, WatchdogAction
from models import (
    Agent,
    Conversation,
    ConversationTurn,
    DncEntry,
    LiveCallRecord,
    Meeting,
    ToolCallRecord,
)
from scenarios.evaluate import CallRecord, safe_error
from scenarios.services import Services
from simulator.scenario import ScenarioSpec
from storage.agent_versions import stamp_call
from storage.call_store import CallStore
from tools.runner import ToolContext

log = logging.getLogger(__name__)
REPLY_TIMEOUT_S = 90.0
AGENT_NUMBER = "+15550109999"


class TextSpeaker:
    """The speaker's part for text: each sentence counts as said (and heard) as soon as it is ready."""

    def __init__(self, ms: Any) -> None:
        self._ms = ms
        self.tts = None
        self.voice = None

    async def say(self, turn: ReplyTurn, lines: list[str]) -> None:
        for line in lines:
            await self._said(turn, line)

    async def speak(self, turn: ReplyTurn, sentences: asyncio.Queue[str | None]) -> None:
        while (sentence := await sentences.get()) is not None:
            await self._said(turn, sentence)

    async def _said(self, turn: ReplyTurn, sentence: str) -> None:
        if not sentence.strip():
            return
        await turn.go.wait()
        turn.timings.setdefault("tts_first_audio_ms", self._ms())
        turn.timings.setdefault("first_frame_sent_ms", self._ms())
        turn.audio_started = True
        turn.planned.append(sentence.strip())

    async def wait_played(self, turn: ReplyTurn) -> None:
        return None

    is_speaking = False
    idle = True

    def played_frame(self) -> int:
        return 0

    def heard(self, turn: ReplyTurn, played_frame: int) -> str:
        return " ".join(turn.planned)

    async def clear(self) -> None:
        return None


def test_caller_number() -> str:
    """A fictional number (555-01xx range) of its own, so parallel runs never share a DNC entry."""
    return f"+1555010{uuid.uuid4().int % 10_000:04d}"


async def run_text_call(
    runtime: Services, agent_id: str, scenario: ScenarioSpec, version_id: str | None = None
) -> CallRecord:
    record = CallRecord(mode="text")
    started = time.monotonic()
    caller = scenario.caller_number or test_caller_number()
    call_sid = "CAtest" + uuid.uuid4().hex[:26]
    sandboxed = runtime.sandbox.open(call_sid, agent_id, version_id)
    record.would_have_sent = sandboxed.would_have_sent
    async with runtime.db.session() as session:
        agent = await session.get(Agent, agent_id)
        if agent is None:
            raise LookupError(f"agent not found: {agent_id}")
        conversation = Conversation(
            agent_id=agent_id,
            call_sid=call_sid,
            direction="inbound",
            from_number=caller,
            to_number=AGENT_NUMBER,
            status="in_progress",
            dynamic_variables=dict(scenario.dynamic_variables),
        )
        session.add(conversation)
        await session.flush()
        await stamp_call(session, conversation, agent, lead_number=None, version_id=version_id)
        conversation_id = conversation.id
        runtime.sandbox.bind(sandboxed, conversation_id)
    record.conversation_id = conversation_id
    try:
        await _converse(runtime, conversation_id, call_sid, caller, scenario, record)
        await _collect(runtime, conversation_id, caller, record)
    except Exception as exc:
        log.warning("scenario text call failed", extra={"fields": {"error": type(exc).__name__}})
        record.error = safe_error(exc)
    finally:
        await remove_conversation(runtime, conversation_id)
        record.duration_s = round(time.monotonic() - started, 2)
    return record


async def _converse(
    runtime: Services,
    conversation_id: str,
    call_sid: str,
    caller: str,
    scenario: ScenarioSpec,
    record: CallRecord,
) -> None:
    tools = runtime.tool_runner  # sandboxed by the call's conversation id
    store = CallStore(runtime.db, conversation_id, emit=runtime.webhooks.emit, writer=runtime.writer)
    conversation, agent = await store.load()
    assert agent is not None
    clock = CallClock()
    transcript = CallTranscript(store, clock.ms)
    speaker = TextSpeaker(clock.ms)
    replies = Replies(speaker, transcript, preemptive=False)  # type: ignore[arg-type]
    profile = build_profile(
        agent,
        conversation.dynamic_variables or {},
        settings=runtime.settings,
        tool_specs=tools.specs_for(agent),
        caller_number=caller,
        call_sid=call_sid,
    )
    llm = await runtime.providers.llm((agent.providers or {}).get("llm"))
    replies.responder = Responder(
        profile=profile,
        llm=llm,
        speaker=speaker,  # type: ignore[arg-type]
        transcript=transcript,
        tool_runner=tools,
        tool_context=ToolContext(conversation_id, call_sid, caller, AGENT_NUMBER, profile.variables),
        knowledge=runtime.knowledge,
        settings=runtime.settings,
        ms=clock.ms,
    )
    watchdog = Watchdog.for_agent(agent, runtime.settings, started=time.monotonic())
    ended: str | None = None

    async def settle() -> str | None:
        """Wait for the reply; the end reason if it ended the call."""
        turn = replies.current
        if turn is not None and turn.task is not None:
            async with asyncio.timeout(REPLY_TIMEOUT_S):
                await asyncio.gather(turn.task, return_exceptions=True)
            if "user_speech_end_ms" in turn.timings and "first_frame_sent_ms" in turn.timings:
                record.v2v_ms.append(
                    round(turn.timings["first_frame_sent_ms"] - turn.timings["user_speech_end_ms"], 1)
                )
            if turn.end_reason == "transferred":
                return "transferred"
        if not replies.endings.empty():
            return replies.endings.get_nowait().hang_up_after or "agent_ended_call"
        return None

    if profile.first_message:
        replies.say(profile.first_message, kind="greeting")
        ended = await settle()
    transcript.set_state(CallState.DISCOVERY)
    for step in scenario.caller:
        if ended:
            break
        if step.barge_in_after_s is not None:
            record.notes.append("barge-in is not simulated in text mode: the line is a normal turn")
        if step.noise is not None:
            record.notes.append("noise is ignored in text mode")
        quiet = (step.silence_s or 0.0) + step.pause_s
        if quiet:
            ended = await _silence(replies, watchdog, quiet, settle)
            if ended or step.silence_s is not None:
                continue
        now = time.monotonic()
        watchdog.activity(now)
        watchdog.caller_spoke()
        if step.dtmf:
            text, kind, display = (
                f"(The caller pressed the keys {' '.join(step.dtmf)} on the keypad.)",
                "dtmf",
                step.dtmf,
            )
        else:
            text, kind, display = step.say or "", "speech", None
        intent = detect_intent(text)
        end_ms = clock.ms()
        seq = transcript.save_user_turn(
            display or text, kind=kind, intent=intent.value, start_ms=end_ms, end_ms=end_ms
        )
        if transcript.closing:
            continue
        replies.answer(text, seq, intent, {"user_speech_end_ms": end_ms})
        ended = await settle()
        watchdog.activity(time.monotonic())
    if ended:
        record.ended_by, record.end_reason = "agent", ended
    else:
        record.ended_by, record.end_reason = "caller", "caller_hung_up"
    await replies.close()
    await store.finish(record.end_reason)


async def _silence(replies: Replies, watchdog: Watchdog, seconds: float, settle: Any) -> str | None:
    """The caller is silent for ``seconds``: the watchdog's ticks on a simulated clock, acted on as the
    engine does ("are you still there?", then the timeout goodbye)."""
    start = watchdog.last_activity
    t = start
    while t - start < seconds:
        t += 0.5
        for action in watchdog.tick(t, last_media=t, last_voice=start, busy=False):
            if action is WatchdogAction.ASK_STILL_THERE:
                replies.say(STILL_THERE_LINE, kind="silence_prompt")
                await settle()
            elif action in (WatchdogAction.SILENCE_TIMEOUT, WatchdogAction.MAX_DURATION):
                await replies.say_last(TIMEOUT_GOODBYE_LINE, action.value)
                return action.value
    return None


async def _collect(runtime: Services, conversation_id: str, caller: str, record: CallRecord) -> None:
    async with runtime.db.session() as session:
        turns = (
            await session.scalars(
                select(ConversationTurn)
                .where(ConversationTurn.conversation_id == conversation_id)
                .order_by(ConversationTurn.seq)
            )
        ).all()
        record.transcript = [
            {"role": t.role, "text": t.text, "kind": t.kind, "source": t.source, "interrupted": t.interrupted}
            for t in turns
            if t.text
        ]
        calls = (
            await session.scalars(
                select(ToolCallRecord)
                .where(ToolCallRecord.conversation_id == conversation_id)
                .order_by(ToolCallRecord.created_at)
            )
        ).all()
        record.tool_calls = [
            {
                "name": c.name,
                "arguments": c.arguments,
                "result": c.result,
                "success": c.success,
                "error": c.error,
            }
            for c in calls
        ]
        record.on_dnc_list = (
            await session.scalar(select(DncEntry.id).where(DncEntry.conversation_id == conversation_id))
        ) is not None
        conversation = await session.get(Conversation, conversation_id)
        if conversation is not None:  # what the playbook recorded: its stages and the fields it heard
            record.stage_path = [str(s) for s in conversation.stage_path or []]
            record.ended_stage = conversation.ended_stage
            record.collected_data = dict(conversation.collected_data or {})


async def remove_conversation(runtime: Services, conversation_id: str) -> None:
    """A test call leaves nothing behind: its conversation and what hangs off it (the run keeps a copy)."""
    async with runtime.db.session() as session:
        for model in (Meeting, DncEntry, ToolCallRecord, ConversationTurn, LiveCallRecord):
            await session.execute(delete(model).where(model.conversation_id == conversation_id))
        await session.execute(delete(Conversation).where(Conversation.id == conversation_id))
    recording = Path(runtime.settings.recordings_dir) / f"{conversation_id}.wav"  # audio mode, RECORD_CALLS
    await asyncio.to_thread(recording.unlink, missing_ok=True)
