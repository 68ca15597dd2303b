"""Speech benchmark for the embedded stack: STT latency, accuracy (WER) and speed; TTS first audio and speed.

STT: 24 caller utterances spoken by three synthetic voices (Piper, two espeak-ng voices, one with line
noise), streamed in real time in 20 ms mu-law frames through ``LocalSTTProvider`` exactly as a call
feeds it. Latency = the moment the ``final`` event arrives − the moment the last speech frame was sent
(it includes the endpointing silence, SILENCE_THRESHOLD_SEC). WER against the script text. RTF = model
compute time / audio duration, one utterance at a time.

The STT pass runs twice: without and with the agent's keywords (Whisper's prompt), WER compared by voice.

TTS: ``LocalTTSProvider`` on 10 agent sentences: time to first audio chunk, and synthesis time / audio.

    python -m bench.speech_bench [--utterances 24]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from typing import Any

import numpy as np
import psutil

from bench.report import markdown_table, pcts, write_result
from speech.audio import MULAW_TO_PCM16

SCRIPT = [
    "Hi, I got your message about the demo.",
    "How much does it cost per month?",
    "We already use a spreadsheet for our leads.",
    "Can you send me more information by email?",
    "I'm not the right person, talk to our head of sales.",
    "Tuesday at three in the afternoon works for me.",
    "Does it integrate with HubSpot and Gmail?",
    "Sorry, I'm driving right now, can you call back later?",
    "We have about twenty people on the sales team.",
    "What makes you different from Salesforce?",
    "Yes, that sounds good, let's book it.",
    "No thanks, we are not interested.",
]
VOICES = ["piper", "espeak:en-us", "espeak:en+f3"]
# The business's names in SCRIPT, as an agent would list them in stt_keywords.
KEYWORDS = ("Orbit CRM", "HubSpot", "Gmail", "Salesforce")
AGENT_LINES = [
    "Hi Sam, this is Ava from Orbit CRM.",
    "Orbit costs forty nine dollars per seat per month.",
    "We integrate with Gmail, Outlook and HubSpot.",
    "Would Tuesday at three work for a quick demo?",
    "Great, you're booked for Tuesday at three.",
    "I understand, I'll send you a short email instead.",
    "Most teams are set up in about a week.",
    "Is there anyone else who should join the call?",
    "Thanks for your time, have a great day.",
    "Sorry, could you say that again?",
]


def words(text: str) -> list[str]:
    text = text.lower().replace("'", "")
    for digit, word in (("20", "twenty"), ("3", "three"), ("49", "forty nine")):
        text = re.sub(rf"\b{digit}\b", word, text)
    return re.findall(r"[a-z]+", text)


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def utterances(count: int) -> list[tuple[str, str, bytes]]:
    from simulator.caller import frames_of
    from simulator.speech import add_noise, synthesize_caller

    items = []
    for k in range(count):
        text, voice = SCRIPT[k % len(SCRIPT)], VOICES[k % len(VOICES)]
        audio = synthesize_caller(text, voice=voice)
        label = voice
        if k % 4 == 3:
            audio, label = add_noise(audio, snr_db=20, kind="pink", seed=k), f"{voice} + noise 20 dB"
        items.append((text, label, b"".join(frames_of(audio))))
    return items


async def stt_run(count: int, keywords: tuple[str, ...] = ()) -> tuple[str, dict[str, Any]]:
    from config import Settings
    from providers.local_stt import LocalSTTProvider

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    rss0 = psutil.Process().memory_info().rss
    provider = LocalSTTProvider(settings)
    await provider.warm()
    rss_model = psutil.Process().memory_info().rss - rss0
    items = utterances(count)
    latencies, errors, ref_words, compute, audio_s = [], 0, 0, [], []
    per_voice: dict[str, tuple[int, int]] = {}
    rows = []
    for text, label, audio in items:
        session = await provider.open_session(language="en", keywords=keywords)
        finals: list[tuple[float, str]] = []

        async def collect(session=session, finals=finals) -> None:  # type: ignore[no-untyped-def]
            async for event in session.events():
                if event.kind == "final":
                    finals.append((time.perf_counter(), event.text))

        reader = asyncio.create_task(collect())
        silence = b"\xff" * 160
        frames = [audio[i : i + 160] for i in range(0, len(audio), 160)]
        next_tick = time.perf_counter()
        last_speech_at = 0.0
        for frame in [silence] * 10 + frames + [silence] * 75:  # 1.5 s of pause after the speech
            await session.send_audio(frame)
            if frame is not silence:
                last_speech_at = time.perf_counter()
            next_tick += 0.02
            await asyncio.sleep(max(0.0, next_tick - time.perf_counter()))
        await asyncio.sleep(0.5)
        await session.close()
        await reader
        hypothesis = " ".join(t for _, t in finals)
        ref, hyp = words(text), words(hypothesis)
        errors += edit_distance(ref, hyp)
        ref_words += len(ref)
        voice = label.split(" + ")[0]
        voice_errors, voice_words = per_voice.get(voice, (0, 0))
        per_voice[voice] = (voice_errors + edit_distance(ref, hyp), voice_words + len(ref))
        if finals:
            latencies.append(finals[0][0] - last_speech_at)
        pcm16 = MULAW_TO_PCM16[np.frombuffer(audio, dtype=np.uint8)]
        result = await asyncio.to_thread(provider.engine.transcribe, pcm16, "en")
        compute.append(result.seconds)
        audio_s.append(len(audio) / 8000)
        rows.append([label, text, hypothesis or "(nothing)"])
    await provider.aclose()
    lat = pcts(latencies)
    rtf = sorted(c / a for c, a in zip(compute, audio_s, strict=True))
    summary = {
        "wer": errors / max(1, ref_words),
        "p50": lat["p50"],
        "p95": lat["p95"],
        "rtf_p50": rtf[len(rtf) // 2],
        "rss_mb": rss_model / 2**20,
        "per_voice": {v: (e, n) for v, (e, n) in per_voice.items()},
    }
    table = markdown_table(
        [
            "model",
            "utterances",
            "final after end of speech p50 ms",
            "p95 ms",
            "WER",
            "RTF median",
            "RSS of model MB",
            "endpointing ms",
        ],
        [
            [
                "Whisper base int8 (CTranslate2)",
                len(items),
                lat["p50"],
                lat["p95"],
                f"{summary['wer']:.1%}",
                f"{summary['rtf_p50']:.3f}",
                f"{summary['rss_mb']:.0f}",
                int(settings.silence_threshold_sec * 1000),
            ]
        ],
    )
    table += (
        "\n\nWER by caller voice (Piper is natural speech; the espeak-ng voices are robotic formant synthesis):"
        "\n\n"
        + markdown_table(
            ["caller voice", "words", "WER"],
            [[v, n, f"{e / max(1, n):.1%}"] for v, (e, n) in per_voice.items()],
        )
    )
    detail = markdown_table(
        ["caller voice", "said", "heard"], [[a, b, c.replace("|", "/")] for a, b, c in rows]
    )
    return table + "\n\n<details><summary>Every utterance</summary>\n\n" + detail + "\n\n</details>", summary


async def tts_run() -> str:
    from config import Settings
    from providers.local_tts import LocalTTSProvider

    rss0 = psutil.Process().memory_info().rss
    provider = LocalTTSProvider(Settings(_env_file=None))  # type: ignore[call-arg]
    await provider.warm()
    rss_model = psutil.Process().memory_info().rss - rss0
    ttfa, rtf = [], []
    for line in AGENT_LINES:
        started = time.perf_counter()
        first = None
        total = 0
        async for chunk in provider.synthesize(line):
            first = first or time.perf_counter()
            total += len(chunk)
        elapsed = time.perf_counter() - started
        if first is not None:
            ttfa.append(first - started)
        rtf.append(elapsed / max(1e-6, total / 8000))
    await provider.aclose()
    t = pcts(ttfa)
    rtf.sort()
    return markdown_table(
        ["voice", "sentences", "first audio p50 ms", "p95 ms", "RTF median", "RTF p95", "RSS of model MB"],
        [
            [
                "Piper en_US joe (medium)",
                len(AGENT_LINES),
                t["p50"],
                t["p95"],
                f"{rtf[len(rtf) // 2]:.3f}",
                f"{rtf[min(len(rtf) - 1, int(len(rtf) * 0.95))]:.3f}",
                f"{rss_model / 2**20:.0f}",
            ]
        ],
    )


def keywords_table(plain: dict[str, Any], prompted: dict[str, Any]) -> str:
    rows = []
    for voice, (errors, words_) in plain["per_voice"].items():
        kw_errors, _ = prompted["per_voice"][voice]
        rows.append([voice, words_, f"{errors / max(1, words_):.1%}", f"{kw_errors / max(1, words_):.1%}"])
    rows.append(["all", "", f"{plain['wer']:.1%}", f"{prompted['wer']:.1%}"])
    return markdown_table(["caller voice", "words", "WER, no keywords", "WER, with keywords"], rows)


async def main_async(count: int) -> None:
    tts_table = await tts_run()  # first: its model's RSS is measured before the STT passes churn the heap
    stt_table, plain = await stt_run(count)
    _, prompted = await stt_run(count, keywords=KEYWORDS)
    body = (
        "### Embedded STT (streamed in real time, 20 ms mu-law frames)\n\n"
        + stt_table
        + f"\n\n### The agent's keywords (stt_keywords = {', '.join(KEYWORDS)}: Whisper's prompt)\n\n"
        + keywords_table(plain, prompted)
        + "\n\n### Embedded TTS (8 kHz mu-law out)\n\n"
        + tts_table
        + "\n\nDeepgram (nova-2 / Aura) cannot be reached from this machine; its adapters are tested against "
        "a protocol stand-in (tests/deepgram_standin.py), which measures nothing about Deepgram itself."
    )
    write_result("speech_bench", "Speech: embedded STT and TTS", body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--utterances", type=int, default=24)
    args = parser.parse_args()
    asyncio.run(main_async(args.utterances))


if __name__ == "__main__":
    main()
