"""The labelled answering-machine set: who picks up an outbound call, as 8 kHz mu-law from the answer on.

``machine``: voicemail greetings of different lengths, some followed by a beep (1000/850/1400/440 Hz,
0.3-0.8 s), some not; ``human``: people answering ("Hello?", "Yeah, this is Dana", a name and a pause,
"Hello? … Hello?", a front desk), some in a busy office (other voices under theirs). Several voices
(the packaged Piper voice and espeak-ng's). Written to ``bench/data/amd/<id>.ulaw`` + ``labels.json``.

    python -m bench.amd.generate
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from providers.base import SAMPLE_RATE
from simulator.speech import scale, synthesize_caller
from speech.audio import MULAW_TO_PCM16, pcm16_to_mulaw, silence

VERSION = 1
DATA = Path(__file__).resolve().parents[1] / "data" / "amd"
VOICES = ["piper", "espeak:en-us", "espeak:en+f3", "espeak:en+m3"]
GREETINGS = [
    "Hi, you've reached Dana Smith. I can't take your call right now. Please leave a message after the tone.",
    "Hello, this is Mark. Leave your name and number and I'll get back to you.",
    "The person you are calling is not available. Please record your message after the beep.",
    "Hi, it's Priya. Sorry I missed you. Leave a message.",
    "You have reached the voicemail of Alex Chen at Northwind. I'm away from my desk. "
    "Please leave a detailed message and I will return your call as soon as possible.",
    "Hey, it's Sam. Text me instead.",
    "Thank you for calling Acme Logistics. Our office is closed. Please leave a message.",
    "This is Jordan. I'm on the other line or away from the phone. Leave a message and I'll call you back.",
    "Please leave your message for 5 5 5, 0 1 2 3.",
    "Hi, you've reached Lisa in sales operations. I'm out of the office until Monday.",
    "We're sorry, the mailbox of the person you are trying to reach is full.",
]
HUMANS = [
    "Hello?",
    "Yeah, this is Dana.",
    "Hello, Dana speaking.",
    "Hi, who's this?",
    "Dana Smith.",
    "Yes?",
    "Sales, this is Mark.",
    "Hey, what's up?",
    "Good morning, Acme, how can I help you?",
    "Hello, this is Priya.",
    "Mark speaking.",
]
BEEPS = [(1000, 0.5), (850, 0.4), (1400, 0.3), (440, 0.8)]
BABBLE = [
    "We need the report by Friday.",
    "Did anyone order lunch yet?",
    "The client called twice this morning.",
]


def _pcm(mulaw: bytes) -> np.ndarray:
    return MULAW_TO_PCM16[np.frombuffer(mulaw, dtype=np.uint8)].astype(np.float32)


def _tone(hz: float, seconds: float) -> bytes:
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)  # 10 ms edges: no click
    return pcm16_to_mulaw((np.sin(2 * np.pi * hz * t) * 9000 * ramp).astype(np.int16))


def _babble(duration_bytes: int, seed: int) -> np.ndarray:
    """Other people talking in the room: three voices, 15 dB under a normal caller, looped."""
    rng = np.random.default_rng(seed)
    bed = np.zeros(duration_bytes, dtype=np.float32)
    for i, line in enumerate(BABBLE):
        voice = _pcm(scale(synthesize_caller(line, voice=VOICES[(i + 1) % len(VOICES)]), -15))
        offset = int(rng.integers(0, SAMPLE_RATE))
        for start in range(offset, duration_bytes, len(voice) + SAMPLE_RATE // 2):
            piece = voice[: duration_bytes - start]
            bed[start : start + len(piece)] += piece
    return bed


def cases() -> list[dict]:
    out = []
    for i, text in enumerate(GREETINGS * 2):  # 22 machines: each greeting twice, other voice/beep
        voice = VOICES[i % len(VOICES)]
        beep = BEEPS[i % len(BEEPS)] if i % 3 != 2 else None  # a third without a beep
        out.append({"id": f"machine_{i:02d}", "label": "machine", "text": text, "voice": voice, "beep": beep})
    for i, text in enumerate(HUMANS * 2):  # 22 people
        voice = VOICES[(i + 1) % len(VOICES)]
        style = ["plain", "office", "twice", "plain"][i % 4]
        out.append({"id": f"human_{i:02d}", "label": "human", "text": text, "voice": voice, "style": style})
    return out


def render(case: dict) -> bytes:
    speech = synthesize_caller(case["text"], voice=case["voice"])
    lead = silence(300 + sum(map(ord, case["id"])) % 5 * 100)
    if case["label"] == "machine":
        audio = lead + speech + silence(400)
        if case["beep"]:
            audio += _tone(*case["beep"])
        return audio + silence(3000)
    if case["style"] == "twice":  # "Hello?" … no answer … "Hello?"
        audio = lead + speech + silence(1500) + speech + silence(4000)
    else:
        audio = lead + speech + silence(4000)
    if case["style"] == "office":
        mixed = _pcm(audio) + _babble(len(audio), seed=len(case["id"]))
        audio = pcm16_to_mulaw(np.clip(mixed, -32768, 32767).astype(np.int16))
    return audio


def main() -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    labels = cases()
    for case in labels:
        (DATA / f"{case['id']}.ulaw").write_bytes(render(case))
    (DATA / "labels.json").write_text(json.dumps({"version": VERSION, "cases": labels}, indent=1))
    by_label = {label: sum(c["label"] == label for c in labels) for label in ("machine", "human")}
    print(f"wrote {len(labels)} cases to {DATA}: {by_label}")


if __name__ == "__main__":
    main()
