"""The turn-end model's input (Smart Turn v3: the last 8 s at 16 kHz, normalised, as Whisper log-mel) and,
where the ``pipecat-ai`` wheel's ONNX file is installed, its decisions on a complete and a cut-off turn."""

from __future__ import annotations

import os

import numpy as np

from speech import turn_model as tm


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * tm.SAMPLE_RATE)) / tm.SAMPLE_RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)  # syllable-rate loudness
    return (envelope * (np.sin(2 * np.pi * 180 * t) + 0.3 * rng.standard_normal(t.size))).astype(np.float32)


def test_the_window_is_the_last_eight_seconds_padded_at_the_start() -> None:
    short = speechlike(2.0)
    window = tm.last_window(short)
    assert window.shape == (8 * tm.SAMPLE_RATE,)
    assert not window[: 6 * tm.SAMPLE_RATE].any() and np.array_equal(window[-short.size :], short)
    long = speechlike(10.0)
    assert np.array_equal(tm.last_window(long), long[-8 * tm.SAMPLE_RATE :])


def test_features_are_80_by_800_log_mels_independent_of_the_level() -> None:
    audio = speechlike(3.0)
    mel = tm.features(audio)
    assert mel.shape == (80, 800) and mel.dtype == np.float32
    # normalised before the spectrum: a quiet line and a loud one look the same to the model
    assert np.allclose(tm.features(audio * 0.05), mel, atol=1e-3)
    # the turn's end is at the window's end: padding first, speech in the last 3 s (300 frames)
    assert mel[:, 50:450].std() < 0.01 < 0.1 < mel[:, -250:].std()


def test_8k_telephone_audio_is_resampled_to_16k() -> None:
    pcm = (speechlike(1.0)[::2] * 8000).astype(np.int16)  # 1 s at 8 kHz
    audio = tm.to_16k(pcm, 8000)
    assert audio.dtype == np.float32 and abs(audio.size - tm.SAMPLE_RATE) <= 2 and np.abs(audio).max() <= 1.0


MODEL = os.environ.get("SMART_TURN_MODEL") or tm.packaged_model_path()


def test_the_model_tells_a_finished_turn_from_one_cut_off() -> None:
    # A failure, not a skip: `make test` installs the model, and a green run must not hide its absence.
    assert MODEL is not None, "smart-turn ONNX not installed (pip install --no-deps pipecat-ai)"
    from simulator.speech import synthesize_caller
    from speech.audio import mulaw_to_pcm16

    model = tm.TurnModel(MODEL)
    done = model.complete_probability(mulaw_to_pcm16(synthesize_caller("We are a team of twelve people.")))
    cut = model.complete_probability(mulaw_to_pcm16(synthesize_caller("So what I was thinking is that")))
    assert 0.0 <= cut < 0.5 < done <= 1.0
