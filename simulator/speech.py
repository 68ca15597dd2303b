"""Caller speech for the simulator, tests and benchmarks: text spoken by a real TTS, as a phone line has it.

``voice="piper"`` (default) is the packaged Piper voice; ``"espeak:<voice>"`` uses Debian's espeak-ng
(e.g. ``espeak:en-us+f3``) for more, if robotic, voices. Output: 8 kHz mu-law bytes.

With ``CALLER_SPEECH_CACHE`` set to a directory (the test suite sets one per session), each line is
synthesized once and read back from there, keyed by text, voice, speed and steadiness.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import tempfile
import wave

import numpy as np

from speech.audio import MULAW_TO_PCM16, pcm16_to_mulaw, resample_to_8k_mulaw

CACHE_ENV = "CALLER_SPEECH_CACHE"


@functools.cache
def _piper_voice():  # type: ignore[no-untyped-def]
    from piper import PiperVoice

    from providers.local_tts import packaged_voice_path

    return PiperVoice.load(packaged_voice_path())


def _piper(text: str, speed: float, steady: bool = False) -> bytes:
    from piper import SynthesisConfig

    # steady: no sampling noise, so the same text gives the same audio every run (tests that time it)
    noise = {"noise_scale": 0.0, "noise_w_scale": 0.0} if steady else {}
    config = SynthesisConfig(length_scale=1.0 / speed, **noise)
    parts = [
        resample_to_8k_mulaw(np.asarray(c.audio_float_array, dtype=np.float32), c.sample_rate)
        for c in _piper_voice().synthesize(text, syn_config=config)
    ]
    return b"".join(parts)


def _espeak(text: str, voice: str, speed: float) -> bytes:
    with tempfile.NamedTemporaryFile(suffix=".wav") as out:
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(int(165 * speed)), "-w", out.name, text],
            check=True,
            capture_output=True,
            timeout=30,
        )
        with wave.open(out.name) as wav:
            pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
            rate = wav.getframerate()
    return resample_to_8k_mulaw(pcm, rate)


def synthesize_caller(
    text: str, voice: str = "piper", speed: float = 1.0, gain_db: float = 0.0, steady: bool = False
) -> bytes:
    """``text`` spoken by ``voice``, 8 kHz mu-law; ``gain_db`` makes the caller louder or quieter."""
    audio = _cached(text, voice, speed, steady)
    return scale(audio, gain_db) if gain_db else audio


def _synthesize(text: str, voice: str, speed: float, steady: bool) -> bytes:
    return _piper(text, speed, steady) if voice == "piper" else _espeak(text, voice.split(":", 1)[-1], speed)


def _cached(text: str, voice: str, speed: float, steady: bool) -> bytes:
    directory = os.environ.get(CACHE_ENV)
    if not directory:
        return _synthesize(text, voice, speed, steady)
    key = hashlib.sha256(repr((text, voice, float(speed), bool(steady))).encode()).hexdigest()
    path = os.path.join(directory, f"{key}.ulaw")
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        pass
    audio = _synthesize(text, voice, speed, steady)
    os.makedirs(directory, exist_ok=True)
    partial = f"{path}.{os.getpid()}.tmp"
    with open(partial, "wb") as f:
        f.write(audio)
    os.replace(partial, path)  # whole or absent: another process may read it meanwhile
    return audio


def scale(mulaw: bytes, gain_db: float) -> bytes:
    pcm = MULAW_TO_PCM16[np.frombuffer(mulaw, dtype=np.uint8)].astype(np.float32) * (10 ** (gain_db / 20))
    return pcm16_to_mulaw(np.clip(pcm, -32768, 32767).astype(np.int16))


def add_noise(mulaw: bytes, snr_db: float, kind: str = "white", seed: int = 0) -> bytes:
    """Mix noise into speech at ``snr_db`` (relative to the speech RMS); kind: white | pink | hum."""
    rng = np.random.default_rng(seed)
    pcm = MULAW_TO_PCM16[np.frombuffer(mulaw, dtype=np.uint8)].astype(np.float32)
    noise = noise_samples(len(pcm), kind, rng)
    speech_rms = float(np.sqrt(np.mean(pcm[np.abs(pcm) > 100] ** 2))) if np.any(np.abs(pcm) > 100) else 1000.0
    noise *= speech_rms / (10 ** (snr_db / 20)) / max(1e-6, float(np.sqrt(np.mean(noise**2))))
    return pcm16_to_mulaw(np.clip(pcm + noise, -32768, 32767).astype(np.int16))


def under_noise_bed(
    mulaw: bytes, snr_db: float, kind: str, rng: np.random.Generator, lead_ms: int = 1000
) -> bytes:
    """Speech over a noise bed at ``snr_db`` (relative to the speech's RMS) that starts ``lead_ms``
    before the words, as a caller in a noisy room sounds before they speak."""
    pcm = MULAW_TO_PCM16[np.frombuffer(mulaw, dtype=np.uint8)].astype(np.float32)
    lead = 8 * lead_ms  # 8 kHz
    bed = noise_samples(len(pcm) + lead, kind, rng)
    bed *= float(np.sqrt(np.mean(pcm**2))) * 10 ** (-snr_db / 20) / float(np.sqrt(np.mean(bed**2)))
    bed[lead:] += pcm
    return pcm16_to_mulaw(np.clip(bed, -32768, 32767).astype(np.int16))


def noise_samples(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "pink":
        white = rng.standard_normal(n + 1)
        spectrum = np.fft.rfft(white)
        spectrum /= np.sqrt(np.arange(1, len(spectrum) + 1))
        return np.fft.irfft(spectrum, n + 1)[:n].astype(np.float32)
    if kind == "hum":
        t = np.arange(n) / 8000
        return (np.sin(2 * np.pi * 60 * t) + 0.5 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)
    return rng.standard_normal(n).astype(np.float32)
