"""Audio mode: the scenario's caller over the real call path (signed webhook, Media Streams socket, the
caller's lines spoken by the local TTS, the service's STT/LLM/TTS), with the simulator's caller.

The call is sandboxed (``core.sandbox``): its call SID is opened in the sandbox before it rings, so the
webhook routes it to the agent without a phone number, and its texts, transfers, hang-up, webhook tools
and events (``call.started`` … ``call.completed``) are recorded in ``would_have_sent``, never sent. Once
the call is over (post-call included) its conversation and everything linked to it are removed."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import httpx
import numpy as np
from sqlalchemy import select

from core.sandbox import SandboxedCall
from models import Conversation, DncEntry, PhoneNumber
from scenarios.evaluate import CallRecord, safe_error
from scenarios.services import Services
from scenarios.text_call import AGENT_NUMBER, remove_conversation, test_caller_number
from simulator.caller import FRAME_BYTES, SILENCE, SimulatedCaller, Utterance, frames_of
from simulator.scenario import ScenarioSpec

SETTLE_TIMEOUT_S = 15.0
POST_CALL_TIMEOUT_S = 70.0  # the post-call analysis's own limit (60 s) and some
log = logging.getLogger(__name__)


async def agent_number(runtime: Services, agent_id: str) -> str:
    """The number the test call dials: the agent's own if it has one, else a fictional one (the sandbox
    routes the call to the agent by its call SID; no phone-number row is made)."""
    async with runtime.db.session() as session:
        number = await session.scalar(
            select(PhoneNumber.phone_number).where(PhoneNumber.agent_id == agent_id)
        )
    return number or AGENT_NUMBER


def _script(scenario: ScenarioSpec) -> list[Utterance]:
    from simulator.speech import add_noise, synthesize_caller

    script: list[Utterance] = []
    for step in scenario.caller:
        lead = [SILENCE] * int(step.pause_s / 0.02)
        if step.silence_s is not None:
            script.append(Utterance(lead + [SILENCE] * int(step.silence_s / 0.02)))
            continue
        if step.dtmf:
            script.append(Utterance([], dtmf=step.dtmf))
            continue
        audio = synthesize_caller(step.say or "", steady=True)
        frames = frames_of(audio)
        if step.noise is not None:
            noisy = add_noise(b"".join(frames), step.noise.snr_db, step.noise.kind)
            frames = [noisy[i : i + FRAME_BYTES] for i in range(0, len(noisy), FRAME_BYTES)]
        script.append(Utterance(lead + frames, barge_in_after_s=step.barge_in_after_s))
    return script


async def run_audio_call(
    runtime: Services,
    base_url: str,
    agent_id: str,
    to_number: str,
    scenario: ScenarioSpec,
    version_id: str | None = None,
) -> CallRecord:
    record = CallRecord(mode="audio")
    started = time.monotonic()
    caller = scenario.caller_number or test_caller_number()
    settings = runtime.settings
    call_sid = "CA" + uuid.uuid4().hex
    sandboxed = runtime.sandbox.open(call_sid, agent_id, version_id)
    record.would_have_sent = sandboxed.would_have_sent
    try:
        script = await asyncio.to_thread(_script, scenario)
        sim = SimulatedCaller(
            base_url,
            call_sid,
            to_number,
            script,
            from_number=caller,
            auth_token=settings.twilio_auth_token.get_secret_value(),
            public_url=settings.public_url,
        )
        async with httpx.AsyncClient(timeout=30) as http:
            result = await sim.run(http)
        record.conversation_id = result.conversation_id
        record.v2v_ms = [round(s * 1000, 1) for s in result.voice_to_voice_s]
        if result.error:
            record.error = result.error
        record.ended_by = "agent" if result.hung_up_by_agent else "caller"
        if result.barges_missed:
            record.notes.append(f"{result.barges_missed} barge-in(s) not answered by a clear")
        if result.conversation_id:
            await _collect(runtime, result.conversation_id, record)
            await _wait_for_post_call(sandboxed)
    except Exception as exc:
        log.warning("scenario audio call failed", extra={"fields": {"error": type(exc).__name__}})
        record.error = safe_error(exc)
    finally:
        if sandboxed.conversation_id:
            await remove_conversation(runtime, sandboxed.conversation_id)
        record.duration_s = round(time.monotonic() - started, 2)
    return record


async def _collect(runtime: Services, conversation_id: str, record: CallRecord) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:  # the engine closes the conversation once the socket is gone
        async with runtime.db.session() as session:
            conversation = await session.get(Conversation, conversation_id)
            if conversation is None:
                raise LookupError("the call left no conversation")
            if conversation.ended_at is not None or time.monotonic() > deadline:
                record.end_reason = conversation.end_reason
                record.stage_path = [str(s) for s in conversation.stage_path or []]
                record.ended_stage = conversation.ended_stage
                record.transcript = [
                    {
                        "role": t.role,
                        "text": t.text,
                        "kind": t.kind,
                        "source": t.source,
                        "interrupted": t.interrupted,
                    }
                    for t in conversation.turns
                    if t.text
                ]
                record.tool_calls = [
                    {"name": c.name, "arguments": c.arguments, "result": c.result, "success": c.success,
                     "error": c.error}
                    for c in conversation.tool_calls
                ]  # fmt: skip
                record.on_dnc_list = (
                    await session.scalar(
                        select(DncEntry.id).where(DncEntry.conversation_id == conversation_id)
                    )
                ) is not None
                if record.end_reason == "transferred":
                    record.ended_by = "agent"
                served = [
                    t.first_frame_sent_ms - t.user_speech_end_ms
                    for t in conversation.turns
                    if t.first_frame_sent_ms is not None and t.user_speech_end_ms is not None
                ]
                if served and not record.v2v_ms:
                    record.v2v_ms = [round(float(v), 1) for v in np.asarray(served)]
                return
        await asyncio.sleep(0.25)


async def _wait_for_post_call(sandboxed: SandboxedCall) -> None:
    """Post-call analysis ends with ``call.completed``: wait for it (bounded), so it is recorded and the
    conversation is not removed under it (were it later, it finds no conversation and sends nothing)."""
    await sandboxed.wait_recorded("webhook_event", "call.completed", POST_CALL_TIMEOUT_S)
