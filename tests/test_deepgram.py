"""Deepgram adapters: the real ``deepgram-sdk`` against a local stand-in speaking Deepgram's wire protocol.

STT gets real caller speech (Piper, 8 kHz mu-law) in 20 ms frames, as Twilio would deliver it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from config import Settings
from providers.base import FRAME_BYTES, STTError, TranscriptEvent, TTSError
from providers.deepgram_stt import RECONNECT_BUDGET_S, DeepgramSTTProvider, DeepgramSTTSession
from providers.deepgram_tts import DeepgramTTSProvider
from providers.registry import ProviderRegistry
from simulator.speech import synthesize_caller
from speech.audio import silence
from tests.conftest import free_port, make_settings
from tests.deepgram_standin import DeepgramStandIn

KEY = "dg-test-key-5f2c9a71"
BAD_KEY = "dg-wrong-key-0b44e1d3"
UTTERANCE = "I would like to book a demo for next Tuesday."
GREETING = "Hello there."
REQUEST = "Can we book a demo next Tuesday at three in the afternoon?"
LONG_TEXT = "Our Enterprise plan adds single sign-on, audit logs and a dedicated success manager. " * 4


def dg_settings(tmp_path: Path, url: str, key: str = KEY) -> Settings:
    return make_settings(
        tmp_path,
        deepgram_api_key=key,
        deepgram_url=url,
        deepgram_endpointing_ms=300,
        deepgram_utterance_end_ms=1000,
        stt_provider="deepgram",
        tts_provider="deepgram",
    )


@pytest.fixture(scope="module")
def caller_audio() -> bytes:
    """The caller's line: a little silence, the sentence, then 1.5 s of silence (endpoint + utterance end)."""
    return silence(300) + synthesize_caller(UTTERANCE) + silence(1500)


@pytest_asyncio.fixture
async def standin() -> AsyncIterator[DeepgramStandIn]:
    async with DeepgramStandIn(KEY, transcripts=[UTTERANCE]) as server:
        yield server


async def collect(session: DeepgramSTTSession, into: list[TranscriptEvent]) -> None:
    async for event in session.events():
        into.append(event)


async def wait_until(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------- STT


@pytest.mark.asyncio
async def test_stt_transcribes_streamed_speech(
    tmp_path: Path, standin: DeepgramStandIn, caller_audio: bytes
) -> None:
    provider = ProviderRegistry(dg_settings(tmp_path, standin.url)).stt()
    assert isinstance(provider, DeepgramSTTProvider) and provider.name == "deepgram"
    session = await provider.open_session(language="en", call_id="CA-test")
    events: list[TranscriptEvent] = []
    reader = asyncio.create_task(collect(session, events))

    await session.keepalive()
    for start in range(0, len(caller_audio), FRAME_BYTES):
        await session.send_audio(caller_audio[start : start + FRAME_BYTES])
    await wait_until(lambda: any(e.kind == "utterance_end" for e in events))
    await session.finalize()
    await session.close()
    await asyncio.wait_for(reader, 5)  # events() ends once the session is closed

    kinds = [e.kind for e in events]
    assert kinds[0] == "speech_started"
    assert "partial" in kinds
    assert kinds.index("partial") < kinds.index("final") < kinds.index("utterance_end")
    partials = [e.text for e in events if e.kind == "partial"]
    assert all(UTTERANCE.startswith(p) for p in partials)  # interim words grow towards the final text
    [final] = [e for e in events if e.kind == "final"]
    assert final.text == UTTERANCE and final.speech_final and final.confidence == pytest.approx(0.98)
    assert final.start_s is not None and final.end_s is not None
    assert events[0].start_s == pytest.approx(final.start_s)
    speech_s = (len(caller_audio) - len(silence(1800))) / 8000
    assert 0.2 < final.start_s < final.end_s <= 0.3 + speech_s + 0.05  # timings from the audio itself
    utterance_end = events[kinds.index("utterance_end")]
    assert utterance_end.end_s == pytest.approx(final.end_s)

    [record] = standin.listens
    assert record.params == {
        "model": "nova-2",
        "language": "en",
        "encoding": "mulaw",
        "sample_rate": "8000",
        "channels": "1",
        "interim_results": "true",
        "smart_format": "true",
        "endpointing": "300",
        "utterance_end_ms": "1000",
        "vad_events": "true",
    }
    assert record.audio_bytes == len(caller_audio)
    assert record.controls == ["KeepAlive", "Finalize", "CloseStream"]
    assert record.sent[-1]["type"] == "Metadata" and record.closed


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("nova-2", [("keywords", "Orbit CRM:2"), ("keywords", "HubSpot:2")]),
        ("nova-3", [("keyterm", "Orbit CRM"), ("keyterm", "HubSpot")]),
    ],
)
async def test_stt_asks_for_the_agents_keywords(
    tmp_path: Path, standin: DeepgramStandIn, model: str, expected: list[tuple[str, str]]
) -> None:
    settings = dg_settings(tmp_path, standin.url).model_copy(update={"deepgram_stt_model": model})
    session = await DeepgramSTTProvider(settings).open_session(keywords=["Orbit CRM", " HubSpot ", ""])
    await session.close()
    [record] = standin.listens
    assert [pair for pair in record.query if pair[0] in ("keywords", "keyterm")] == expected


@pytest.mark.asyncio
async def test_stt_finalize_flushes_the_utterance_in_progress(
    tmp_path: Path, standin: DeepgramStandIn, caller_audio: bytes
) -> None:
    session = await DeepgramSTTProvider(dg_settings(tmp_path, standin.url)).open_session()
    events: list[TranscriptEvent] = []
    reader = asyncio.create_task(collect(session, events))
    speech = caller_audio[: len(caller_audio) - len(silence(1500))]  # no trailing silence: no endpoint
    for start in range(0, len(speech), FRAME_BYTES):
        await session.send_audio(speech[start : start + FRAME_BYTES])
    await session.finalize()  # the engine decided the turn is over before Deepgram's endpoint
    await wait_until(lambda: any(e.kind == "final" for e in events))
    await session.close()
    await asyncio.wait_for(reader, 5)
    [final] = [e for e in events if e.kind == "final"]
    assert final.text == UTTERANCE and not final.speech_final
    assert standin.listens[0].sent[-2]["from_finalize"] is True


@pytest.mark.asyncio
async def test_stt_bad_key_and_unreachable_server_raise_stt_error(
    tmp_path: Path, standin: DeepgramStandIn
) -> None:
    with pytest.raises(STTError, match="401") as failure:
        await DeepgramSTTProvider(dg_settings(tmp_path, standin.url, key=BAD_KEY)).open_session()
    assert BAD_KEY not in str(failure.value) and BAD_KEY not in str(failure.value.__cause__)
    assert standin.rejected == 1 and standin.listens == []

    with pytest.raises(STTError, match="connection failed"):
        await DeepgramSTTProvider(dg_settings(tmp_path, f"ws://127.0.0.1:{free_port()}")).open_session()
    with pytest.raises(STTError, match="not set"):
        await DeepgramSTTProvider(dg_settings(tmp_path, standin.url, key="")).open_session()


@pytest.mark.asyncio
async def test_stt_dropped_socket_reconnects_and_replays_unconfirmed_audio(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    greeting = silence(300) + synthesize_caller(GREETING) + silence(700)  # endpointed: final before the drop
    request = synthesize_caller(REQUEST)
    audio = greeting + request + silence(1500)
    async with DeepgramStandIn(KEY, transcripts=[GREETING, REQUEST]) as server:
        drop_at = len(greeting) + len(request) // 2
        server.drop_after_bytes = drop_at  # mid-request: its words are not final yet
        session = await DeepgramSTTProvider(dg_settings(tmp_path, server.url)).open_session(call_id="CA-drop")
        events: list[TranscriptEvent] = []
        reader = asyncio.create_task(collect(session, events))
        with caplog.at_level(logging.WARNING, logger="providers.deepgram_stt"):
            for start in range(0, len(audio), FRAME_BYTES):
                await session.send_audio(audio[start : start + FRAME_BYTES])
                await asyncio.sleep(0.005)  # 4x real time: frames keep arriving while it reconnects
            await wait_until(lambda: sum(e.kind == "final" for e in events) == 2)
        await session.close()
        await asyncio.wait_for(reader, 5)  # would raise the STTError, had one been reported

    # Both sentences, each exactly once: the greeting was final before the drop, so it was not replayed.
    finals = [e for e in events if e.kind == "final"]
    assert [(f.text, f.speech_final) for f in finals] == [(GREETING, True), (REQUEST, True)]

    assert server.connections == 2
    first, second = server.listens
    assert first.dropped and not second.dropped and second.closed
    assert first.audio_bytes >= drop_at and bytes(first.audio) == audio[: first.audio_bytes]
    # The second socket got one contiguous stretch of the call, from the end of the greeting's final
    # segment (what Deepgram had confirmed) to the end: the whole request, with nothing lost or doubled.
    replay_from = len(audio) - second.audio_bytes
    assert bytes(second.audio) == audio[replay_from:]
    [greeting_final] = [
        m for m in first.sent if m.get("is_final") and m["channel"]["alternatives"][0]["transcript"]
    ]
    assert replay_from == round((greeting_final["start"] + greeting_final["duration"]) * 8000)
    assert len(greeting) - len(silence(700)) < replay_from <= len(greeting)

    # Timestamps stay on the call's clock: the request's SpeechStarted, heard once per socket, agrees.
    starts = [e.start_s for e in events if e.kind == "speech_started"]
    assert len(starts) == 3 and starts[1] == pytest.approx(starts[2], abs=1e-6)
    request_s = len(greeting) / 8000
    assert finals[1].start_s == pytest.approx(starts[2], abs=1e-6)
    assert finals[0].end_s < request_s <= finals[1].start_s < request_s + 0.5 < finals[1].end_s

    [logged] = [r for r in caplog.records if r.getMessage() == "deepgram stt reconnected"]
    fields = logged.fields  # type: ignore[attr-defined]
    assert logged.levelno == logging.WARNING and fields["call_sid"] == "CA-drop" and fields["attempts"] == 1
    assert (drop_at - replay_from) // 8 <= fields["replayed_ms"] <= second.audio_bytes // 8


@pytest.mark.asyncio
async def test_stt_server_that_stays_down_surfaces_as_stt_error(tmp_path: Path) -> None:
    async with DeepgramStandIn(KEY) as server:
        session = await DeepgramSTTProvider(dg_settings(tmp_path, server.url)).open_session()
        await session.send_audio(silence(200))
    # The stand-in shut down under the open session and stays down: once the reconnect attempts are
    # spent, events() must fail (not end quietly, not hang).
    started = time.monotonic()
    with pytest.raises(STTError, match=r"closed by the server; reconnecting failed after 4 attempts"):
        async with asyncio.timeout(RECONNECT_BUDGET_S + 2):
            async for _ in session.events():
                pass
    assert time.monotonic() - started < RECONNECT_BUDGET_S
    await session.send_audio(silence(20))  # the media path keeps going without raising
    await session.close()


@pytest.mark.asyncio
async def test_stt_close_while_reconnecting_is_prompt_and_quiet(tmp_path: Path) -> None:
    async with DeepgramStandIn(KEY) as server:
        session = await DeepgramSTTProvider(dg_settings(tmp_path, server.url)).open_session()
        events: list[TranscriptEvent] = []
        reader = asyncio.create_task(collect(session, events))
    await asyncio.sleep(0.05)  # the session saw the drop and is backing off before its first attempt
    started = time.monotonic()
    await session.close()  # the caller hung up meanwhile: no last words to wait for, no error to report
    assert time.monotonic() - started < 0.5
    await asyncio.wait_for(reader, 1)
    assert events == []


# ---------------------------------------------------------------- TTS


@pytest.mark.asyncio
async def test_tts_streams_mulaw_chunks(tmp_path: Path, standin: DeepgramStandIn) -> None:
    settings = dg_settings(tmp_path, standin.url)
    provider = ProviderRegistry(settings).tts()
    assert isinstance(provider, DeepgramTTSProvider) and provider.name == "deepgram"
    text = "Thanks for calling Acme. How can I help you today?"

    chunks = [chunk async for chunk in provider.synthesize(text, voice="aura-2-orion-en")]
    assert len(chunks) > 1
    assert sum(map(len, chunks)) == DeepgramStandIn.expected_tts_bytes(text)
    assert all(len(c) % FRAME_BYTES == 0 for c in chunks)
    [record] = standin.speaks
    assert record.params == {"model": "aura-2-orion-en", "encoding": "mulaw", "sample_rate": "8000"}
    assert record.texts == [text] and record.controls == ["Flush", "Close"]

    audio = b"".join([chunk async for chunk in provider.synthesize("Sure.")])
    assert len(audio) == DeepgramStandIn.expected_tts_bytes("Sure.")
    assert standin.speaks[1].params["model"] == settings.deepgram_voice  # no voice -> DEEPGRAM_VOICE
    assert [c async for c in provider.synthesize("   ")] == [] and len(standin.speaks) == 2


@pytest.mark.asyncio
async def test_tts_aclose_mid_stream_stops_synthesis(tmp_path: Path) -> None:
    async with DeepgramStandIn(KEY, chunk_delay_s=0.01) as server:
        provider = DeepgramTTSProvider(dg_settings(tmp_path, server.url))
        stream = provider.synthesize(LONG_TEXT)
        first = await anext(stream)
        started = time.monotonic()
        await stream.aclose()  # barge-in
        assert time.monotonic() - started < 0.5
        [record] = server.speaks
        await wait_until(lambda: record.closed)
        assert first and record.cleared and record.controls == ["Flush", "Clear", "Close"]
        assert record.audio_bytes_sent < DeepgramStandIn.expected_tts_bytes(LONG_TEXT) / 2


@pytest.mark.asyncio
async def test_tts_cancelled_consumer_task_stops_synthesis(tmp_path: Path) -> None:
    async with DeepgramStandIn(KEY, chunk_delay_s=0.01) as server:
        provider = DeepgramTTSProvider(dg_settings(tmp_path, server.url))
        chunks: list[bytes] = []

        async def speak() -> None:  # like the engine: nothing but the TTS stream is awaited
            async for chunk in provider.synthesize(LONG_TEXT):
                chunks.append(chunk)

        task = asyncio.create_task(speak())
        await wait_until(lambda: len(chunks) >= 2)
        started = time.monotonic()
        task.cancel()  # what the engine does on barge-in
        await asyncio.gather(task, return_exceptions=True)
        assert time.monotonic() - started < 0.5
        [record] = server.speaks
        await wait_until(lambda: record.closed, within_s=1)
        assert record.cleared and record.audio_bytes_sent < DeepgramStandIn.expected_tts_bytes(LONG_TEXT) / 2


@pytest.mark.asyncio
async def test_tts_abandoned_with_a_burst_in_flight_closes_promptly(tmp_path: Path) -> None:
    """Aura sends faster than real time: more chunks than the client's 32-message queue can be in flight."""
    async with DeepgramStandIn(KEY, chunk_bytes=FRAME_BYTES) as server:
        provider = DeepgramTTSProvider(dg_settings(tmp_path, server.url))
        stream = provider.synthesize(LONG_TEXT)
        await anext(stream)
        await asyncio.sleep(0.3)  # a slow consumer: the whole burst piles up client-side
        started = time.monotonic()
        await stream.aclose()
        assert time.monotonic() - started < 1.0
        assert server.speaks[0].audio_bytes_sent > 40 * FRAME_BYTES


@pytest.mark.asyncio
async def test_tts_bad_key_and_unreachable_server_raise_tts_error(
    tmp_path: Path, standin: DeepgramStandIn
) -> None:
    provider = DeepgramTTSProvider(dg_settings(tmp_path, standin.url, key=BAD_KEY))
    with pytest.raises(TTSError, match="401") as failure:
        _ = [chunk async for chunk in provider.synthesize("Hello there.")]
    assert BAD_KEY not in str(failure.value) and BAD_KEY not in str(failure.value.__cause__)
    assert standin.rejected == 1 and standin.speaks == []

    unreachable = DeepgramTTSProvider(dg_settings(tmp_path, f"ws://127.0.0.1:{free_port()}"))
    with pytest.raises(TTSError, match="connection failed"):
        _ = [chunk async for chunk in unreachable.synthesize("Hello there.")]
