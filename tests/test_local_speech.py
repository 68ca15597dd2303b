"""The embedded speech stack with real audio: caller sentences spoken by a real TTS, mu-law encoded like a
phone line (clean and with background noise), transcribed by the local Whisper STT through the real
Media Streams path; the local Piper TTS yields valid, audible mu-law of the right length."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import numpy as np
import pytest

from simulator.caller import SimulatedCaller, Utterance, frames_of
from speech.audio import MULAW_TO_PCM16
from tests.conftest import QUICK_ECHO_VOICE, LiveServer, make_settings

NUMBER = "+15550107070"
NUMBERS = {"3": "three", "2": "two", "30": "thirty", "230": "two thirty", "2:30": "two thirty"}


def words(text: str) -> str:
    text = text.lower()
    for digits, spoken in NUMBERS.items():
        text = re.sub(rf"\b{re.escape(digits)}\b", spoken, text)
    return " ".join(re.findall(r"[a-z]+", text))


@pytest.mark.asyncio
async def test_local_stt_hears_a_sales_call_through_the_media_stream(tmp_path: Path) -> None:
    from simulator.speech import add_noise, synthesize_caller

    script = [
        (
            "Can we book a demo next Tuesday at three?",
            synthesize_caller("Can we book a demo next Tuesday at three?"),
            ["book", "demo", "tuesday", "three"],
        ),
        (
            "My name is Sarah, I run sales at Acme.",
            add_noise(
                synthesize_caller("My name is Sarah, I run sales at Acme."), snr_db=15, kind="pink", seed=1
            ),
            ["name", "sarah", "sales"],
        ),
        (
            "Please call me back tomorrow afternoon.",
            synthesize_caller("Please call me back tomorrow afternoon.", voice="espeak:en-us"),
            ["call", "back", "tomorrow"],
        ),
        (  # names Whisper spells its own way unless the agent's keywords tell it ("Shuwan Nuiyan", "Clavio")
            "This is Siobhan Nguyen from Klaviyo.",
            synthesize_caller("This is Siobhan Nguyen from Klaviyo."),
            ["siobhan", "nguyen", "klaviyo"],
        ),
    ]
    settings = make_settings(tmp_path, stt_provider="local", **QUICK_ECHO_VOICE)
    async with LiveServer(settings) as server, server.client() as client:
        agent = await client.post(
            "/v1/convai/agents",
            json={"name": "Ava", "system_prompt": "Hi", "stt_keywords": ["Siobhan Nguyen", "Klaviyo"]},
        )
        await client.post(
            "/v1/convai/phone-numbers", json={"phone_number": NUMBER, "agent_id": agent.json()["agent_id"]}
        )
        caller = SimulatedCaller(
            server.base_url, "CA" + "5e" * 16, NUMBER, [Utterance(frames_of(audio)) for _, audio, _ in script]
        )
        async with httpx.AsyncClient() as http:
            result = await caller.run(http)
        assert result.error is None, result.error
        deadline = asyncio.get_running_loop().time() + 10
        while True:  # the call's last writes land a moment after the caller hangs up
            detail = (await client.get(f"/v1/convai/conversations/{result.conversation_id}")).json()
            if detail.get("call_state") == "ENDED" or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)
        assert detail.get("call_state") == "ENDED", detail.get("call_state")
        heard = [words(t["text"]) for t in detail["transcript"] if t["role"] == "user"]
        assert len(heard) == len(script), heard
        for (said, _, keys), text in zip(script, heard, strict=True):
            missing = [k for k in keys if k not in text.split()]
            assert not missing, f"said {said!r}, heard {text!r}"
        # Finals follow the end of speech by endpointing plus one transcription (bench: speech_bench).
        replies = [t for t in detail["transcript"] if t["role"] == "agent" and t["voice_to_voice_ms"]]
        gaps = [r["stt_final_ms"] - r["user_speech_end_ms"] for r in replies]
        assert replies and all(g < 6000 for g in gaps), gaps  # the noisy turn ends with its noise tail


@pytest.mark.asyncio
async def test_local_tts_yields_audible_mulaw_sentence_by_sentence(tmp_path: Path) -> None:
    from providers.local_tts import LocalTTSProvider

    tts = LocalTTSProvider(make_settings(tmp_path))
    try:
        chunks = [
            c async for c in tts.synthesize("Hi Sam, this is Ava. Would Tuesday at 3 PM work for a demo?")
        ]
    finally:
        await tts.aclose()
    audio = b"".join(chunks)
    seconds = len(audio) / 8000
    assert len(chunks) > 1  # streamed, not one blob at the end
    assert 2.0 < seconds < 8.0
    pcm = MULAW_TO_PCM16[np.frombuffer(audio, dtype=np.uint8)].astype(np.float64)
    assert np.sqrt(np.mean(pcm**2)) > 500  # audible speech, not silence


@pytest.mark.asyncio
async def test_local_tts_serves_a_prepared_greeting_from_memory(tmp_path: Path) -> None:
    """A fixed greeting prepared while the call connects is not synthesized again; other text (a reply may
    carry the caller's words) and long text are never kept."""
    from providers.local_tts import PHRASE_MAX_CHARS, LocalTTSProvider

    tts = LocalTTSProvider(make_settings(tmp_path))
    runs: list[str] = []

    def fake_piper(text: str, speed: float):  # type: ignore[no-untyped-def]
        runs.append(text)
        yield bytes([len(runs)]) * 1600

    tts._synthesize_iter = fake_piper  # type: ignore[method-assign]
    try:
        await tts.prepare("Hi, this is Alex.")
        first = b"".join([c async for c in tts.synthesize("Hi, this is Alex.")])
        again = b"".join([c async for c in tts.synthesize("Hi, this is Alex.")])
        assert runs == ["Hi, this is Alex."] and first == again == bytes([1]) * 1600
        assert b"".join([c async for c in tts.synthesize("Hi, this is Alex.", voice="joe@1.2")])
        assert len(runs) == 2  # another speed is other audio
        for _ in range(2):
            assert [c async for c in tts.synthesize("You said: my card number is 4242.")]
        assert runs.count("You said: my card number is 4242.") == 2
        long = "word " * (PHRASE_MAX_CHARS // 5 + 1)
        await tts.prepare(long)
        assert [c async for c in tts.synthesize(long)]
        assert runs.count(long) == 1 and len(tts._phrases) == 1  # only the prepared greeting
    finally:
        await tts.aclose()


def test_whisper_says_how_sure_it_is_of_the_last_word() -> None:
    import numpy as np

    from config import Settings
    from providers.local_stt import WhisperEngine
    from simulator.speech import synthesize_caller
    from speech.audio import MULAW_TO_PCM16

    engine = WhisperEngine(Settings(_env_file=None))  # type: ignore[call-arg]
    try:
        audio = synthesize_caller("Can we book a demo next Tuesday at three?")
        heard = engine.transcribe(MULAW_TO_PCM16[np.frombuffer(audio, dtype=np.uint8)])
        assert heard is not None and "three" in heard.text.lower()
        assert 0.3 <= heard.last_word_p <= 1.0  # clear synthetic speech: sure of "three"
    finally:
        engine.close()
