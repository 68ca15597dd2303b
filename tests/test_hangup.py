"""Every call the agent ends is hung up only once its last words played at the far end.

Through the real WebSocket path: the far end (``SimulatedCaller``) plays the agent's audio in real time
and counts what it heard whole before the stream closed; that is compared with the length of the
line as the agent's TTS speaks it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from call.responder import GOODBYE_LINE
from simulator.caller import SimulatedCaller, Utterance, frames_of
from tests.conftest import QUICK_ECHO_VOICE, LiveServer, make_settings
from tests.deepgram_standin import DeepgramStandIn
from tests.fault_calls import NUMBER, make_agent
from tests.test_amd import synthesized_s
from voice_pipeline import BUSY_LINE

KEY = "dg-test-key"
DNC_LINE = "Understood. I've taken your number off our list, and you won't hear from us again. Goodbye."


@pytest.fixture(scope="module")
def speech() -> list[bytes]:
    from simulator.speech import synthesize_caller

    return frames_of(synthesize_caller("Okay, thanks, that's all.", steady=True))


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("words", "line", "reason"),
    [
        ("Thanks, goodbye.", GOODBYE_LINE, "agent_goodbye"),
        ("Please put me on your do not call list.", DNC_LINE, "agent_ended_call"),
    ],
    ids=["goodbye", "do-not-call"],
)
async def test_a_goodbye_is_heard_whole_before_the_hang_up(
    tmp_path: Path, speech: list[bytes], words: str, line: str, reason: str
) -> None:
    # This far end echoes marks as they arrive (as tests/phone_line.py does): a mark is no proof that
    # the listener heard the audio before it, the audio's own duration is.
    async with DeepgramStandIn(KEY, transcripts=[words]) as deepgram:
        settings = make_settings(
            tmp_path,
            stt_provider="deepgram",
            deepgram_api_key=KEY,
            deepgram_url=deepgram.url,
            **QUICK_ECHO_VOICE,
        )
        async with LiveServer(settings) as server, server.client() as client:
            await make_agent(client)
            caller = SimulatedCaller(
                server.base_url, "CA" + "b1" * 16, NUMBER, [Utterance(speech)], marks_on_receipt=True
            )
            async with httpx.AsyncClient() as http:
                result = await caller.run(http)
            detail = await _ended(client, result.conversation_id)
    assert result.error is None and result.hung_up_by_agent, result
    assert detail["metadata"]["termination_reason"] == reason
    greeting_s = await synthesized_s(settings, "Hi, this is Ava.")
    line_s = await synthesized_s(settings, line)
    assert result.agent_heard_s >= 0.99 * (greeting_s + line_s), (result.agent_heard_s, greeting_s, line_s)


class _LateStream(SimulatedCaller):
    """A stream whose TwiML was fetched while there was room, arriving once the service is full."""

    def __init__(self, server: LiveServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server = server

    async def _webhook(self, http: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
        stream = await super()._webhook(http)
        self.server.runtime.settings.max_concurrent_calls = 0
        return stream


@pytest.mark.asyncio
async def test_the_busy_line_is_heard_whole_and_the_call_ends_right_after(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, **QUICK_ECHO_VOICE)
    async with LiveServer(settings) as server, server.client() as client:
        await make_agent(client)
        caller = _LateStream(server, server.base_url, "CA" + "b2" * 16, NUMBER, [])
        started = time.perf_counter()
        async with httpx.AsyncClient() as http:
            result = await caller.run(http)
        took = time.perf_counter() - started
    line_s = await synthesized_s(settings, BUSY_LINE)
    assert result.hung_up_by_agent and result.agent_heard_s >= 0.99 * line_s, (result, line_s)
    # the far end's marks cannot come back (nobody reads them before the call is refused): the line's
    # duration tells when it has played, not a timeout
    assert took < line_s + 2.0, (took, line_s)


async def _ended(client: httpx.AsyncClient, conversation_id: str) -> dict[str, Any]:
    import asyncio

    for _ in range(100):
        detail = (await client.get(f"/v1/convai/conversations/{conversation_id}")).json()
        if detail.get("call_state") == "ENDED":
            return detail
        await asyncio.sleep(0.1)
    raise AssertionError("the conversation did not end")
