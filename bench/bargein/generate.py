"""The labelled caller-side set: what a caller may send while the agent talks, and turns to end.

Every case is 8 kHz mu-law as Twilio delivers it, written to ``bench/data/bargein/<id>.ulaw`` with
``labels.json`` describing it. Labels:

- ``interrupt``: real interruptions, four voices, normal and quiet (-10 dB), and some under a
  background-noise bed (pink/white at 15 dB SNR, starting 1 s before the words: ``speech_onset_ms``);
- ``backchannel``: "uh-huh", "yeah", "right" … (must not cut the agent off);
- ``noise``: white/pink noise, clicks, a music-like chord sequence, mains hum, a far-away voice, at
  levels given relative to a normal caller (must not cut the agent off); the cases marked
  ``held_out`` were added after the detector's spectral-flatness band was chosen on the others
  (coughs, knocks, a dial tone, louder hiss);
- ``silence``: line silence;
- ``turn``: a complete caller turn after the agent has finished (response gap);
- ``pause``: a turn with a mid-sentence pause (the agent must not answer the first half).

    python -m bench.bargein.generate
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from speech.audio import MULAW_TO_PCM16, pcm16_to_mulaw

DATA = Path(__file__).resolve().parents[1] / "data" / "bargein"
VOICES = ["piper", "espeak:en-us", "espeak:en+f3", "espeak:en+m3"]
INTERRUPTIONS = [
    "Wait, stop, I have a question.",
    "Sorry, can I ask something?",
    "No, that's not what I meant.",
    "Hold on, how much is it?",
    "Actually, I'm really busy right now.",
    "Excuse me, who is this?",
]
BACKCHANNELS = ["Uh-huh.", "Yeah.", "Right.", "Okay.", "Mm-hmm.", "Sure."]
TURNS = [
    "What does it cost for a team of ten?",
    "Can you send me the details by email?",
    "We use HubSpot today.",
    "Tuesday afternoon works for me.",
    "I'm the head of sales operations.",
    "We have about fifty reps.",
    "No, we don't use Salesforce.",
    "Send it to my assistant, please.",
    "That sounds interesting.",
    "How long does the setup take?",
    "Yes, Thursday at two works.",
    "I'm not interested, thanks.",
]
MORE_TURNS = [
    "We are a team of twelve people.",
    "I already told your colleague no.",
    "Just send me an email, please.",
    "Can you call me back tomorrow?",
    "That price is too high for us.",
    "Who gave you my number?",
]
# Paused turns: one sentence synthesised whole, cut after the word before "|" (a word that cannot end
# it), a pause inserted, then the rest: the prosody before the pause is the voice's mid-sentence one,
# not the falling, final tone a fragment synthesised alone ends on. Half of the cuts fall after a word
# the lexical rule catches ("about", "with", "how", "have"), half after one it cannot ("team", "need").
PAUSED = [
    "We were thinking about | switching tools this quarter.",
    "I'd like to book | a demo for next week.",
    "Our sales team | has about forty people.",
    "The best time for me | would be Thursday morning.",
    "I need to check with | my manager first.",
    "What we really need | is better forecasting.",
    "Could you send the pricing | to my work email?",
    "We currently use | a spreadsheet for everything.",
    "My budget for this | is around five thousand a year.",
    "The main problem we have | is that reports take forever.",
    "Honestly the reason we called | is the price.",
    "Can you tell me how | the integration works?",
    "Last year we tried | two other vendors.",
    "If the price is right | we could start in January.",
    "Most of our reps | work from home.",
    "The person who decides | is our VP of sales.",
    "We would need it to work with | Salesforce and Outlook.",
    "Before we talk about pricing | I want to see a demo.",
]
PAUSES_MS = (800, 1000, 1200, 1500)
SET_VERSION = 4  # bump when the cases change, so a cached set is regenerated
REFERENCE_RMS = 3000.0  # a normal caller's speech level on the PCM16 scale (Piper at 0 dB is close)


def _pcm(mulaw: bytes) -> np.ndarray:
    return MULAW_TO_PCM16[np.frombuffer(mulaw, dtype=np.uint8)].astype(np.float32)


def _at_level(pcm: np.ndarray, db_below_speech: float) -> bytes:
    rms = float(np.sqrt(np.mean(pcm**2))) or 1.0
    scaled = pcm * (REFERENCE_RMS / rms) * 10 ** (-db_below_speech / 20)
    return pcm16_to_mulaw(np.clip(scaled, -32768, 32767).astype(np.int16))


_whisper = None


def cut_after_words(pcm: np.ndarray, n_words: int) -> int:
    """Sample index (8 kHz) just after the ``n_words``-th word of synthesised speech: the word's end by
    the local Whisper's word timestamps, moved to the quietest 10 ms within 60 ms of it."""
    global _whisper
    import soxr
    from faster_whisper import WhisperModel

    from providers.local_stt import packaged_model_dir

    if _whisper is None:
        _whisper = WhisperModel(
            str(packaged_model_dir()), device="cpu", compute_type="int8", cpu_threads=1, local_files_only=True
        )
    audio = soxr.resample(pcm / 32768.0, 8000, 16000).astype(np.float32)
    segments, _ = _whisper.transcribe(audio, language="en", word_timestamps=True, beam_size=1)
    words = [w for segment in segments for w in segment.words]
    end = int(words[min(n_words, len(words)) - 1].end * 8000)
    window = [(float(np.abs(pcm[a : a + 80]).mean()), a + 40) for a in range(end - 480, end + 480, 40)]
    return min(window)[1]


def noise_cases(rng: np.random.Generator) -> dict[str, bytes]:
    from simulator.speech import noise_samples, synthesize_caller

    n = 8000 * 2  # 2 s
    t = np.arange(n) / 8000
    clicks = np.zeros(n, dtype=np.float32)
    for start in rng.integers(0, n - 40, 12):
        clicks[start : start + 40] = rng.standard_normal(40) * 8
    notes = [261.6, 329.6, 392.0, 523.3]
    chord = sum(
        np.sin(2 * np.pi * f * t) * (1 + np.sin(2 * np.pi * (k + 1) * 0.7 * t)) for k, f in enumerate(notes)
    )
    far = _pcm(
        synthesize_caller(
            "I told him we would be there by six, the traffic was terrible.", voice="espeak:en+f2"
        )
    )
    far_mix = _at_level(far, 22)
    coughs = np.zeros(n, dtype=np.float32)
    for start in (2000, 7000, 12000):  # three 150 ms bursts of shaped noise
        burst = noise_samples(1200, "pink", rng) * np.hanning(1200).astype(np.float32)
        coughs[start : start + 1200] = burst
    knocks = np.zeros(n, dtype=np.float32)
    for start in (1000, 3000, 5000, 9000, 11000):  # a decaying 900 Hz ring per knock
        k = np.arange(800)
        knocks[start : start + 800] = np.sin(2 * np.pi * 900 * k / 8000) * np.exp(-k / 120)
    dial = np.sin(2 * np.pi * 350 * t) + np.sin(2 * np.pi * 440 * t)
    cases = {
        "white_10db": _at_level(noise_samples(n, "white", rng), 10),
        "white_20db": _at_level(noise_samples(n, "white", rng), 20),
        "pink_10db": _at_level(noise_samples(n, "pink", rng), 10),
        "pink_20db": _at_level(noise_samples(n, "pink", rng), 20),
        "clicks": _at_level(clicks, 0),
        "music_10db": _at_level(chord.astype(np.float32), 10),
        "music_20db": _at_level(chord.astype(np.float32), 20),
        "hum_10db": _at_level(noise_samples(n, "hum", rng), 10),
        "far_voice_22db": far_mix,
        "far_voice_pink": pcm16_to_mulaw(
            np.clip(
                _pcm(far_mix) + _pcm(_at_level(noise_samples(len(far), "pink", rng), 25)), -32768, 32767
            ).astype(np.int16)
        ),
        # held out: not looked at when the detector's thresholds were chosen
        "coughs_0db_held_out": _at_level(coughs, 0),
        "knocks_0db_held_out": _at_level(knocks, 0),
        "dial_tone_10db_held_out": _at_level(dial.astype(np.float32), 10),
        "white_5db_held_out": _at_level(noise_samples(n, "white", rng), 5),
    }
    return cases


def generate() -> list[dict]:
    from simulator.caller import frames_of
    from simulator.speech import noise_samples, scale, synthesize_caller, under_noise_bed

    DATA.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2026)
    labels: list[dict] = []

    def save(case_id: str, label: str, audio: bytes, **info: object) -> None:
        (DATA / f"{case_id}.ulaw").write_bytes(audio)
        labels.append({"id": case_id, "label": label, **info})

    for i, text in enumerate(INTERRUPTIONS):
        for j, voice in enumerate(VOICES):
            gain = 0.0 if (i + j) % 2 == 0 else -10.0
            audio = b"".join(frames_of(scale(synthesize_caller(text, voice=voice), gain)))
            save(f"interrupt_{i}_{j}", "interrupt", audio, text=text, voice=voice, gain_db=gain)
    for i, text in enumerate(INTERRUPTIONS):
        voice, kind = VOICES[i % 2], ("pink", "white")[i % 2]
        audio = under_noise_bed(synthesize_caller(text, voice=voice), 15, kind, rng)
        save(
            f"interrupt_noisy_{i}",
            "interrupt",
            audio,
            text=text,
            voice=voice,
            noise=f"{kind} 15 dB SNR",
            speech_onset_ms=1000,
        )
    for i, text in enumerate(BACKCHANNELS):
        for j, voice in enumerate(VOICES[:3]):
            save(
                f"backchannel_{i}_{j}",
                "backchannel",
                b"".join(frames_of(synthesize_caller(text, voice=voice))),
                text=text,
                voice=voice,
            )
    for name, audio in noise_cases(rng).items():
        save(f"noise_{name}", "noise", audio, kind=name)
    for k in range(3):
        save(f"silence_{k}", "silence", b"\xff" * 8000 * 2)

    # Turn-taking cases: every line in two voices (Piper and one of the espeak-ng ones); every third
    # case under a noise bed at 20 dB SNR over the whole case (pink or white).
    def two_voices(i: int) -> list[str]:
        return ["piper", VOICES[1 + i % 3]]

    def noisy(pcm: np.ndarray, k: int) -> tuple[bytes, str | None]:
        if k % 3 != 2:
            return pcm16_to_mulaw(np.clip(pcm, -32768, 32767).astype(np.int16)), None
        kind = ("pink", "white")[k % 2]
        noise = noise_samples(len(pcm), kind, rng)
        rms = float(np.sqrt(np.mean(pcm[np.abs(pcm) > 200] ** 2)))
        noise *= rms / float(np.sqrt(np.mean(noise**2))) * 10 ** (-20 / 20)
        return pcm16_to_mulaw(np.clip(pcm + noise, -32768, 32767).astype(np.int16)), f"{kind} 20 dB SNR"

    k = 0
    for i, text in enumerate([*TURNS, *MORE_TURNS]):
        for voice in two_voices(i):
            audio, noise = noisy(_pcm(synthesize_caller(text, voice=voice)), k)
            save(f"turn_{i}_{voice.split(':')[-1]}", "turn", audio, text=text, voice=voice, noise=noise)
            k += 1
    for i, line in enumerate(PAUSED):
        first, second = (part.strip() for part in line.split("|"))
        text = f"{first} {second}"
        for voice in two_voices(i):
            whole = _pcm(synthesize_caller(text, voice=voice))
            cut = cut_after_words(whole, len(first.split()))
            pause_ms = PAUSES_MS[k % len(PAUSES_MS)]
            quiet = np.zeros(8 * pause_ms, dtype=np.float32)
            audio, noise = noisy(np.concatenate([whole[:cut], quiet, whole[cut:]]), k)
            save(
                f"pause_{i}_{voice.split(':')[-1]}",
                "pause",
                audio,
                text=f"{first} … {second}",
                voice=voice,
                noise=noise,
                first_part_ms=cut // 8,
                pause_ms=pause_ms,
            )
            k += 1
    for item in labels:
        item["set_version"] = SET_VERSION
    (DATA / "labels.json").write_text(json.dumps(labels, indent=1))
    return labels


if __name__ == "__main__":
    made = generate()
    counts: dict[str, int] = {}
    for item in made:
        counts[item["label"]] = counts.get(item["label"], 0) + 1
    print(f"wrote {len(made)} cases to {DATA}: {counts}")
