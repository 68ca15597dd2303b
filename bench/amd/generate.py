"""The labelled answering set: who picks up an outbound call, as 8 kHz mu-law from the answer on.

Four classes, several voices (the packaged Piper voice and espeak-ng's), each sentence rendered on its
own with a pause after it (so a streaming recogniser's endpointing cuts the same sentences):

- ``human``: people answering — a bare "Hello?", a name, a front desk; some in a busy office (other
  voices under theirs), some over a noisy room (pink or white noise mixed in at 10-15 dB), some saying
  hello twice;
- ``machine``: voicemail greetings — personal ones with and without stock phrases, carrier greetings —
  followed by a beep of one tone (1000/850/1400/440 Hz), a beep of several short tones, or no beep;
- ``screener``: Google Call Screen, iOS Call Screening and carrier screeners asking who is calling;
- ``ivr``: phone menus ("for sales, press 1").

Written to ``bench/data/amd/<id>.ulaw`` + ``labels.json`` (with each case's sentences: the words).

    python -m bench.amd.generate
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from providers.base import SAMPLE_RATE
from simulator.speech import scale, synthesize_caller
from speech.audio import MULAW_TO_PCM16, pcm16_to_mulaw, silence

VERSION = 2
DATA = Path(__file__).resolve().parents[1] / "data" / "amd"
VOICES = ["piper", "espeak:en-us", "espeak:en+f3", "espeak:en+m3"]
GREETINGS = [  # personal greetings with stock phrases
    "Hi, you've reached Dana Smith. I can't take your call right now. Please leave a message after the tone.",
    "Hello, this is Mark. Leave your name and number and I'll get back to you.",
    "Hi, it's Priya. Sorry I missed you. Leave a message.",
    "You have reached the voicemail of Alex Chen at Northwind. I'm away from my desk. "
    "Please leave a detailed message and I will return your call as soon as possible.",
    "Thank you for calling Acme Logistics. Our office is closed. Please leave a message.",
    "This is Jordan. I'm on the other line or away from the phone. Leave a message and I'll call you back.",
]
PLAIN_GREETINGS = [  # personal greetings without a stock phrase
    "Hey, it's Sam. Text me instead.",
    "Hi, this is Lisa from sales operations. I'm out until Monday, back on Tuesday morning.",
    "Hey there, Chris here. You know what to do.",
    "Hello, you got Maria. Talk to you soon, bye.",
]
CARRIER_GREETINGS = [
    "The person you are calling is not available. Please record your message after the beep.",
    "The number you have dialed, 5 5 5, 0 1 2 3, is not available. At the tone, please record your message. "
    "When you have finished recording, you may hang up or press 1 for more options.",
    "The Google subscriber you have called is not available. Please leave a message after the tone.",
    "Your call has been forwarded to an automated voice messaging system. 5 5 5, 0 1 9 8, is not available.",
]
SCREENERS = [
    "Hi, the person you're calling is using a screening service from Google, and will get a copy of "
    "this conversation. Go ahead and say your name and why you're calling.",
    "Hi, if you record your name and reason for calling, I'll see if this person is available.",
    "This call is being screened. Please state your name and the reason for your call.",
    "Before your call is connected, please say your name and why you're calling.",
    "Hello, the person you are calling uses a call screening service. Please say your name after the tone.",
]
HUMANS = [
    "Hello?",
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
MENUS = [
    "Thank you for calling Northwind. For sales, press 1. For support, press 2. For billing, press 3.",
    "Welcome to Acme Logistics. If you know your party's extension, dial it now. For the operator, press 0.",
    "Thank you for calling. Please listen carefully as our menu options have changed. "
    "For new orders, press 1. To track an order, press 2.",
    "You have reached Orbit Dental. Para español, oprima el dos. To schedule an appointment, press 1.",
]
BEEPS = [(1000, 0.5), (850, 0.4), (1400, 0.3), (440, 0.8)]
LABELS = ("human", "machine", "screener", "ivr")
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
    out: list[dict] = []

    def add(label: str, text: str, voice: str, **extra: object) -> None:
        count = sum(c["label"] == label for c in out)
        out.append({"id": f"{label}_{count:02d}", "label": label, "text": text, "voice": voice, **extra})

    greetings = [(t, "personal") for t in GREETINGS] + [(t, "plain") for t in PLAIN_GREETINGS]
    greetings += [(t, "carrier") for t in CARRIER_GREETINGS]
    for i, (text, kind) in enumerate(greetings * 2):  # 28 machines: each greeting twice, other voice/beep
        beep = ["one", "tones", "none"][i % 3]
        add("machine", text, VOICES[i % len(VOICES)], greeting=kind, beep=beep, hz=BEEPS[i % len(BEEPS)])
    for i, text in enumerate(HUMANS * 2):  # 24 people
        style = ["plain", "office", "noisy", "twice"][i % 4]
        add("human", text, VOICES[(i + 1) % len(VOICES)], style=style)
    for i, text in enumerate(SCREENERS * 2):  # 10 screeners
        add("screener", text, VOICES[(i + 2) % len(VOICES)])
    for i, text in enumerate(MENUS * 2):  # 8 menus
        add("ivr", text, VOICES[(i + 3) % len(VOICES)])
    return out


SENTENCE_GAP_MS = 800  # between sentences: longer than the recogniser's endpointing


def sentences(text: str) -> list[str]:
    import re

    return [s for s in re.split(r"(?<=[.?!])\s+", text.strip()) if s]


def spoken(case: dict) -> bytes:
    gap = silence(SENTENCE_GAP_MS)
    return gap.join(synthesize_caller(s, voice=case["voice"]) for s in sentences(case["text"]))


def render(case: dict) -> bytes:
    speech = spoken(case)
    lead = silence(300 + sum(map(ord, case["id"])) % 5 * 100)
    if case["label"] == "machine":
        audio = lead + speech + silence(400)
        hz, seconds = case["hz"]
        if case["beep"] == "one":
            audio += _tone(hz, seconds)
        elif case["beep"] == "tones":  # "beep-beep-beep"
            audio += (_tone(hz, 0.12) + silence(100)) * 3
        return audio
    if case["label"] in ("screener", "ivr"):
        return lead + speech
    if case["style"] == "twice":  # "Hello?" … no answer … "Hello?"
        audio = lead + speech + silence(1500) + speech
    else:
        audio = lead + speech
    tail = silence(4000)
    if case["style"] == "office":
        audio += tail
        mixed = _pcm(audio) + _babble(len(audio), seed=len(case["id"]))
        return pcm16_to_mulaw(np.clip(mixed, -32768, 32767).astype(np.int16))
    if case["style"] == "noisy":  # a noisy room: the noise starts before the words and goes on
        from simulator.speech import under_noise_bed

        rng = np.random.default_rng(len(case["id"]) + ord(case["id"][-1]))
        kind = "pink" if ord(case["id"][-1]) % 2 else "white"
        noisy = under_noise_bed(audio + tail, 10 + ord(case["id"][-1]) % 2 * 5, kind, rng, lead_ms=800)
        return noisy
    return audio + tail


def main() -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    labels = cases()
    for case in labels:
        (DATA / f"{case['id']}.ulaw").write_bytes(render(case))
    (DATA / "labels.json").write_text(json.dumps({"version": VERSION, "cases": labels}, indent=1))
    by_label = {label: sum(c["label"] == label for c in labels) for label in LABELS}
    print(f"wrote {len(labels)} cases to {DATA}: {by_label}")


if __name__ == "__main__":
    main()
