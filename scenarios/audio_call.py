"""Audio mode: the scenario's caller over the real call path (signed webhook, Media Streams socket, the
caller's lines spoken by the local TTS, the service's STT/LLM/TTS), with the simulator's caller."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid

import httpx
import numpy as np
from sqlalchemy import delete, select

from models import Conversation, DncEntry, Meeting, PhoneNumber
from scenarios.evaluate import CallRecord, safe_error
from scenarios.services import Services
from scenarios.text_call import test_caller_number
from simulator.caller import FRAME_BYTES, SILENCE, SimulatedCaller, Utterance, frames_of
from simulator.scenario import ScenarioSpec

SETTLE_TIMEOUT_S = 15.0
log = logging.getLogger(__name__)


async def agent_number(runtime: Services, agent_id: str) -> str:
    """The agent's inbound number, or a test number attached to it (as ``python -m simulator call``)."""
    async with runtime.db.session() as session:
        number = await session.scalar(
            select(PhoneNumber.phone_number).where(PhoneNumber.agent_id == agent_id)
        )
        if number:
            return number
        digits = int(hashlib.sha256(agent_id.encode()).hexdigest(), 16) % 10**7
        number = f"+1555{digits:07d}"
        if await session.scalar(select(PhoneNumber.id).where(PhoneNumber.phone_number == number)) is None:
            session.add(PhoneNumber(phone_number=number, agent_id=agent_id, label="scenario tests"))
        return number


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
    runtime: Services, base_url: str, to_number: str, scenario: ScenarioSpec
) -> CallRecord:
    record = CallRecord(mode="audio")
    started = time.monotonic()
    caller = scenario.caller_number or test_caller_number()
    settings = runtime.settings
    try:
        script = await asyncio.to_thread(_script, scenario)
        sim = SimulatedCaller(
            base_url,
            "CA" + uuid.uuid4().hex,
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
    except Exception as exc:
        log.warning("scenario audio call failed", extra={"fields": {"error": type(exc).__name__}})
        record.error = safe_error(exc)
    finally:
        if record.conversation_id:
            await _remove_side_effects(runtime, record.conversation_id)
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


async def _remove_side_effects(runtime: Services, conversation_id: str) -> None:
    """A test call books nothing and lists nobody (the conversation itself stays, as a real call's)."""
    async with runtime.db.session() as session:
        for model in (Meeting, DncEntry):
            await session.execute(delete(model).where(model.conversation_id == conversation_id))
