"""The labelled answering set: who picks up an outbound call, as 8 kHz mu-law from the answer on.

Four classes, several voices (the packaged Piper voice and espeak-ng's), each sentence rendered on its
own with a pause after it (so a streaming recogniser's endpointing cuts the same sentences):

- ``human``: people answering — a bare "Hello?", a name, a front desk; some in a busy office (other
  voices under theirs), some over a noisy room (pink or white noise mixed in at 10-15 dB), some saying
  hello twice — and then, as people do, answering the agent's greeting ("Yeah, who's this?") 0.5-2 s
  after it ended (a few slow ones at 2.5 s), the office or the room going on all along;
- ``machine``: voicemail greetings — personal ones with and without stock phrases, carrier greetings —
  followed by a beep of one tone (1000/850/1400/440 Hz), a beep of several short tones, or no beep;
- ``screener``: Google Call Screen, iOS Call Screening and carrier screeners asking who is calling;
- ``ivr``: phone menus ("for sales, press 1").

Written to ``bench/data/amd/<id>.ulaw`` + ``labels.json`` (with each case's sentences: the words); a
person's answer to the greeting to ``<id>.reply.ulaw`` (its pause first), their room to ``<id>.room.ulaw``.

    python -m bench.amd.generate
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from providers.base import SAMPLE_RATE
from simulator.speech import scale, synthesize_caller
from speech.audio import MULAW_TO_PCM16, pcm16_to_mulaw, silence

VERSION = 3
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
REPLIES = [  # a person answering the agent's greeting
    "Yeah, who's this?",
    "Speaking. Who is this?",
    "Yes, what's this about?",
    "Hi, who's calling?",
    "Sure, go ahead.",
    "Hi, what can I do for you?",
]
REPLY_DELAYS_S = [0.5, 0.8, 1.1, 1.4, 1.7, 2.0, 2.5]  # after the greeting ended; 2.5 s: a slow responder
# The far end takes the agent's greeting as over after this much quiet (the bench's SimulatedCaller);
# a reply's pause is the rest of its delay.
GREETING_QUIET_S = 0.4
ROOM_S = 12.0  # the room's sound, looped while the person says nothing
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
        reply, delay = REPLIES[i % len(REPLIES)], REPLY_DELAYS_S[i % len(REPLY_DELAYS_S)]
        add("human", text, VOICES[(i + 1) % len(VOICES)], style=style, reply=reply, reply_delay_s=delay)
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
    return gap_joined(case["text"], case["voice"])


def render(case: dict) -> dict[str, bytes]:
    """The case's audio: ``answer`` (from the pick-up on); for a person also ``reply`` (their answer to
    the greeting, its pause first) and ``room`` (what the line carries meanwhile, if not silence)."""
    speech = spoken(case)
    lead = silence(300 + sum(map(ord, case["id"])) % 5 * 100)
    if case["label"] == "machine":
        audio = lead + speech + silence(400)
        hz, seconds = case["hz"]
        if case["beep"] == "one":
            audio += _tone(hz, seconds)
        elif case["beep"] == "tones":  # "beep-beep-beep"
            audio += (_tone(hz, 0.12) + silence(100)) * 3
        return {"answer": audio}
    if case["label"] in ("screener", "ivr"):
        return {"answer": lead + speech}
    if case["style"] == "twice":  # "Hello?" … no answer … "Hello?"
        hello = lead + speech + silence(1500) + speech
    else:
        hello = lead + speech
    pause = silence(max(100, round((case["reply_delay_s"] - GREETING_QUIET_S) * 1000)))
    reply = pause + gap_joined(case["reply"], case["voice"])
    if case["style"] == "office":  # other people talking all along
        bed = _babble(len(hello) + len(reply) + int(ROOM_S * SAMPLE_RATE), seed=len(case["id"]))
        return _over_bed(hello, reply, bed)
    if case["style"] == "noisy":  # a noisy room: the noise starts before the words and goes on
        from simulator.speech import noise_samples

        rng = np.random.default_rng(len(case["id"]) + ord(case["id"][-1]))
        kind = "pink" if ord(case["id"][-1]) % 2 else "white"
        snr_db = 10 + ord(case["id"][-1]) % 2 * 5
        # relative to the hello and the 4 s after it (the level of the bench's earlier runs)
        voice = _pcm(hello + silence(4000))
        level = float(np.sqrt(np.mean(voice**2))) * 10 ** (-snr_db / 20)
        hello = silence(800) + hello
        bed = noise_samples(len(hello) + len(reply) + int(ROOM_S * SAMPLE_RATE), kind, rng)
        return _over_bed(hello, reply, bed * level / float(np.sqrt(np.mean(bed**2))))
    return {"answer": hello, "reply": reply}


def gap_joined(text: str, voice: str) -> bytes:
    return silence(SENTENCE_GAP_MS).join(synthesize_caller(s, voice=voice) for s in sentences(text))


def _over_bed(hello: bytes, reply: bytes, bed: np.ndarray) -> dict[str, bytes]:
    def mixed(audio: bytes, offset: int) -> bytes:
        pcm = _pcm(audio) + bed[offset : offset + len(audio)]
        return pcm16_to_mulaw(np.clip(pcm, -32768, 32767).astype(np.int16))

    room = pcm16_to_mulaw(np.clip(bed[len(hello) + len(reply) :], -32768, 32767).astype(np.int16))
    return {"answer": mixed(hello, 0), "reply": mixed(reply, len(hello)), "room": room}


def main() -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    labels = cases()
    for case in labels:
        for part, audio in render(case).items():
            name = f"{case['id']}.ulaw" if part == "answer" else f"{case['id']}.{part}.ulaw"
            (DATA / name).write_bytes(audio)
    (DATA / "labels.json").write_text(json.dumps({"version": VERSION, "cases": labels}, indent=1))
    by_label = {label: sum(c["label"] == label for c in labels) for label in LABELS}
    print(f"wrote {len(labels)} cases to {DATA}: {by_label}")


if __name__ == "__main__":
    main()
