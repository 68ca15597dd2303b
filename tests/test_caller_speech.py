"""The test suite's caller-speech cache (``CALLER_SPEECH_CACHE``): a line is synthesized once per
session, then read back whole; another voice, speed or steadiness is other audio; unset, nothing is kept."""

from __future__ import annotations

from pathlib import Path

import pytest

import simulator.speech as speech


def test_a_line_is_synthesized_once_then_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[tuple[str, str, float, bool]] = []
    real = speech._synthesize

    def counted(text: str, voice: str, speed: float, steady: bool) -> bytes:
        runs.append((text, voice, speed, steady))
        return real(text, voice, speed, steady)

    monkeypatch.setattr(speech, "_synthesize", counted)
    monkeypatch.setenv(speech.CACHE_ENV, str(tmp_path / "cache"))
    first = speech.synthesize_caller("Hi there.", voice="espeak:en-us")
    again = speech.synthesize_caller("Hi there.", voice="espeak:en-us")
    assert len(first) > 4000 and again == first and len(runs) == 1  # real audio, synthesized once
    assert len(list((tmp_path / "cache").glob("*.ulaw"))) == 1
    louder = speech.synthesize_caller("Hi there.", voice="espeak:en-us", gain_db=6)
    assert len(runs) == 1 and louder != first and len(louder) == len(first)  # gain is applied after
    speech.synthesize_caller("Hi there.", voice="espeak:en-us+f3")
    speech.synthesize_caller("Hi there.", voice="espeak:en-us", speed=1.3)
    speech.synthesize_caller("Hi there.", voice="espeak:en-us", steady=True)
    assert len(runs) == 4 and len(list((tmp_path / "cache").glob("*"))) == 4

    monkeypatch.delenv(speech.CACHE_ENV)
    speech.synthesize_caller("Hi there.", voice="espeak:en-us")
    assert len(runs) == 5  # no cache configured: synthesized every time


def test_the_suite_caches_caller_speech_for_the_session(caller_speech_cache: Path) -> None:
    import os

    assert os.environ[speech.CACHE_ENV] == str(caller_speech_cache) and caller_speech_cache.is_dir()
