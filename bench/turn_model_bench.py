"""Smart Turn v3.2 (speech/turn_model.py) on complete vs cut-off caller turns, and its CPU cost.

    SMART_TURN_MODEL=/path/smart-turn-v3.2-cpu.onnx python -m bench.turn_model_bench
    (or with ``pip install --no-deps pipecat-ai==1.14.0`` the packaged file is found by itself)

Turns: the caller lines of bench/offscript_turns.json with six words or more, spoken by the caller voices
of the simulator (Piper, and espeak for a second voice), at 8 kHz like a phone line. A *complete* turn is
the whole line; a *paused* turn is the line cut after a word that cannot end it ("we are a team of"),
synthesised alone (so its words are unfinished, though a TTS voice still ends it on a falling tone: a
harder case than a person's mid-sentence pause). Both end with 200 ms of line silence, when the engine would ask the model. Optional
noise: white noise at 20 dB SNR. Prints a markdown table (bench/results/turn_model.md).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from speech import turn_model as tm

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
VOICES = ("piper", "espeak:en-us")
FRAME = 160  # 20 ms at 8 kHz


def lines() -> list[str]:
    data = json.loads((ROOT / "bench" / "offscript_turns.json").read_text())
    seen: list[str] = []
    for conversation in data["conversations"]:
        for turn in conversation["turns"]:
            if len(turn["caller"].split()) >= 6 and turn["caller"] not in seen:
                seen.append(turn["caller"])
    return seen


OPEN_ENDED = {"and", "but", "the", "a", "an", "to", "for", "with", "of", "that", "is", "because", "so", "our"}


def paused_text(text: str) -> str | None:
    """The line cut after a word that cannot end it ("…a team of", "…happy with"), past its first third."""
    words = text.rstrip(".?!").split()
    for index in range(max(2, len(words) // 3), len(words) - 1):
        if words[index].lower().strip(",") in OPEN_ENDED:
            return " ".join(words[: index + 1]).rstrip(",")
    return None


def with_tail(pcm: np.ndarray, noise_db: float | None, rng: np.random.Generator) -> np.ndarray:
    audio = np.concatenate([pcm.astype(np.float32), np.zeros(int(0.2 * 8000), np.float32)])
    if noise_db is not None:
        speech_rms = np.sqrt((pcm.astype(np.float32) ** 2).mean())
        audio += rng.standard_normal(audio.size).astype(np.float32) * speech_rms / 10 ** (noise_db / 20)
    return np.clip(audio, -32768, 32767).astype(np.int16)


def main() -> None:
    from simulator.speech import synthesize_caller
    from speech.audio import mulaw_to_pcm16

    model = tm.TurnModel(os.environ.get("SMART_TURN_MODEL") or None)
    rng = np.random.default_rng(7)
    results: dict[tuple[str, str], list[float]] = {}
    timings: list[float] = []
    texts = lines()
    for voice in VOICES:
        for text in texts:
            cut = paused_text(text)
            if cut is None:
                continue
            pairs = [
                (kind, mulaw_to_pcm16(synthesize_caller(t, voice=voice)))
                for kind, t in (("complete", text), ("paused", cut))
            ]
            for kind, audio in pairs:
                for noise in (None, 20.0):
                    started = time.perf_counter()
                    p = model.complete_probability(with_tail(audio, noise, rng), 8000)
                    timings.append(time.perf_counter() - started)
                    results.setdefault((kind, "clean" if noise is None else "20 dB noise"), []).append(p)
    timings.sort()
    rows = [
        "| turns | condition | n | judged complete (p > 0.5) | median p |",
        "|---|---|---|---|---|",
    ]
    for (kind, condition), probs in sorted(results.items()):
        complete = sum(p > 0.5 for p in probs)
        rows.append(
            f"| {kind} | {condition} | {len(probs)} | {complete} ({100 * complete / len(probs):.0f}%) "
            f"| {np.median(probs):.2f} |"
        )
    cost = (
        f"CPU per decision (8 kHz → 16 kHz, 80×800 log-mel, ONNX run; one thread): "
        f"p50 {timings[len(timings) // 2] * 1000:.0f} ms, p95 {timings[int(len(timings) * 0.95)] * 1000:.0f} ms "
        f"over {len(timings)} decisions."
    )
    table = "\n".join(rows)
    print(table + "\n\n" + cost)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "turn_model.md").write_text(
        "# Smart Turn v3.2 on complete and cut-off turns (bench/turn_model_bench.py)\n\n"
        f"{len(texts)} caller lines × {len(VOICES)} voices ({', '.join(VOICES)}); a paused turn is the same "
        'line cut after a word that cannot end it ("…a team of"), synthesised alone; 200 ms of silence after each, as the engine would ask '
        "the model at the start of a pause. Not wired into the engine.\n\n" + table + "\n\n" + cost + "\n"
    )


if __name__ == "__main__":
    main()
