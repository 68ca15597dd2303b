"""The local STT's streaming around Whisper, with real speech frames and a stand-in model (the timeline,
not the words, is under test): a pause's words come early as interim text, then as the final at the
endpoint; a speculative run the caller talked over is stopped and says nothing."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from providers.base import FRAME_BYTES, TranscriptEvent
from providers.local_stt import LocalSTTSession, Transcript
from simulator.caller import SILENCE, frames_of

ENDPOINT_MS = 300


class StandInWhisper:
    """WhisperEngine's interface: one inference thread; every run "hears" the same words."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1)
        self.in_flight = 0
        self.asked: list[bool] = []  # what ``wanted()`` said, per speculative run

    def transcribe(
        self, pcm16: np.ndarray, language: str = "en", prompt: str = "", wanted: Any = None
    ) -> Transcript | None:
        if wanted is not None:
            self.asked.append(wanted())
            if not self.asked[-1]:
                return None
        return Transcript("I got your message.", 0.01, 0.0, -0.1)

    transcribe_urgent = transcribe


@pytest.fixture(scope="module")
def speech() -> list[bytes]:
    from simulator.speech import synthesize_caller

    return frames_of(synthesize_caller("I got your message about the platform."))


async def feed(session: LocalSTTSession, frames: list[bytes], log: list[tuple[int, TranscriptEvent]]) -> None:
    """Frames one at a time, letting the inference thread's results in between (as a live call does)."""
    for frame in frames:
        await session.send_audio(frame)
        await asyncio.sleep(0.004)
        while not session._events.empty():
            log.append((session._frames, session._events.get_nowait()))


@pytest.mark.asyncio
async def test_a_pause_s_words_come_as_interim_text_then_as_the_final_at_the_endpoint(
    speech: list[bytes],
) -> None:
    engine = StandInWhisper()
    session = LocalSTTSession(engine, "en", ENDPOINT_MS, speculate_ms=20)  # type: ignore[arg-type]
    log: list[tuple[int, TranscriptEvent]] = []
    await feed(session, speech, log)
    end = session._last_voiced_frame
    await feed(session, [SILENCE] * 20, log)
    texts = [(frame - end, e.kind) for frame, e in log if e.text == "I got your message."]
    partial = next(after for after, kind in texts if kind == "partial")
    final = next(after for after, kind in texts if kind == "final")
    assert partial <= 3, texts  # one silent frame, then the model: well before the endpoint
    assert final == ENDPOINT_MS // 20, texts  # the final still waits for the endpoint
    assert engine.asked and all(engine.asked)


@pytest.mark.asyncio
async def test_a_speculative_run_the_caller_talked_over_is_stopped(speech: list[bytes]) -> None:
    engine = StandInWhisper()
    session = LocalSTTSession(engine, "en", ENDPOINT_MS, speculate_ms=20)  # type: ignore[arg-type]
    log: list[tuple[int, TranscriptEvent]] = []
    busy = threading.Event()
    engine.executor.submit(busy.wait, 5)  # the model is busy (another call's final)
    half = len(speech) // 2
    await feed(session, speech[:half] + [SILENCE] * 3, log)  # a short pause: a speculative run queues
    await feed(session, speech[half:], log)  # the caller goes on
    busy.set()
    await asyncio.sleep(0.1)
    await feed(session, [], log)
    assert engine.asked[:1] == [False]  # the queued run saw its pause was over, and stopped
    assert [e for _, e in log if e.text] == []
    await feed(session, [SILENCE] * 20, log)
    assert [e.kind for _, e in log if e.text] == ["partial", "final"]
    assert len(speech[0]) == FRAME_BYTES


def test_last_word_probability_reads_the_last_word_not_its_punctuation() -> None:
    from providers.local_stt import last_word_probability

    vocab = {1: " Yeah", 2: ",", 3: " go", 4: " for", 5: " it", 6: ".", 7: " demon", 8: "strate"}

    def step(token: int, p: float) -> np.ndarray:
        logits = np.full(10, -30.0)
        logits[token] = np.log(p)
        logits[0] = np.log(1.0 - p)  # the rest of the mass on another token
        return logits

    def decode(ids: list[int]) -> str:
        return "".join(vocab[i] for i in ids)

    ids = [1, 2, 3, 4, 5, 6]
    steps = [step(1, 0.9), step(2, 0.8), step(3, 0.9), step(4, 0.9), step(5, 0.27), step(6, 0.05)]
    assert last_word_probability(ids, steps, decode) == pytest.approx(0.27, abs=1e-6)
    # a word of two tokens: its least sure token
    ids = [3, 7, 8]
    steps = [step(3, 0.9), step(7, 0.6), step(8, 0.2)]
    assert last_word_probability(ids, steps, decode) == pytest.approx(0.2, abs=1e-6)
    assert last_word_probability([], [], decode) == 1.0
    assert last_word_probability(ids, steps[:1], decode) == 1.0  # no log-probabilities: unknown
