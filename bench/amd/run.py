"""Answering-machine detection on the labelled set: accuracy per class, time to decide, false "machine".

Each case's frames go through the engine's frame classifier and ``call.amd.AnsweringMachineDetector``
as a call would feed them; the words come from the packaged Whisper model, each word handed to the
detector 0.6 s after it ends in the audio (about when a streaming final arrives).

    python -m bench.amd.generate && python -m bench.amd.run
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from bench.amd.generate import DATA, VERSION
from bench.report import RESULTS, machine, markdown_table
from call.amd import AmdDecision, AnsweredBy, AnsweringMachineDetector, GreetingOver
from providers.base import FRAME_BYTES, SAMPLE_RATE
from speech.audio import MULAW_TO_PCM16
from speech.vad import FrameClassifier

STT_DELAY_S = 0.6


def words_with_times(model, audio: bytes) -> list[tuple[float, str]]:  # type: ignore[no-untyped-def]
    pcm = MULAW_TO_PCM16[np.frombuffer(audio, dtype=np.uint8)].astype(np.float32) / 32768
    import soxr

    segments, _ = model.transcribe(
        soxr.resample(pcm, SAMPLE_RATE, 16000), language="en", word_timestamps=True
    )
    return [(w.end, w.word) for s in segments for w in (s.words or [])]


def run_case(
    audio: bytes, words: list[tuple[float, str]]
) -> tuple[AmdDecision | None, GreetingOver | None, float]:
    detector = AnsweringMachineDetector()
    classifier = FrameClassifier(3)
    heard = ""
    pending = list(words)
    cost = 0.0
    for i in range(0, len(audio) - FRAME_BYTES + 1, FRAME_BYTES):
        now = (i + FRAME_BYTES) / SAMPLE_RATE
        while pending and pending[0][0] + STT_DELAY_S <= now:
            heard += pending.pop(0)[1]
            detector.on_text(heard)
        frame = audio[i : i + FRAME_BYTES]
        started = time.perf_counter()
        energy, voiced = classifier.classify(frame)
        detector.on_frame(frame, energy, voiced)
        cost += time.perf_counter() - started
    return detector.decision, detector.greeting_over, cost / max(1, len(audio) // FRAME_BYTES)


def main() -> int:
    argparse.ArgumentParser(description=__doc__).parse_args()
    labels = json.loads((DATA / "labels.json").read_text())
    if labels.get("version") != VERSION:
        raise SystemExit("the labelled set is out of date: python -m bench.amd.generate")
    from faster_whisper import WhisperModel

    from providers.local_stt import packaged_model_dir

    model = WhisperModel(str(packaged_model_dir()), device="cpu", compute_type="int8", cpu_threads=2)
    rows = []
    for case in labels["cases"]:
        audio = (DATA / f"{case['id']}.ulaw").read_bytes()
        decision, over, cost = run_case(audio, words_with_times(model, audio))
        rows.append({**case, "decision": decision, "over": over, "cost_us": cost * 1e6})
    lines = report(rows)
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "amd.md").write_text("\n".join(lines) + "\n")
    return 0


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2) if values else float("nan")


def report(rows: list[dict]) -> list[str]:
    table = []
    for label in ("machine", "human"):
        cases = [r for r in rows if r["label"] == label]
        decided = [r for r in cases if r["decision"] is not None]
        right = [r for r in decided if r["decision"].answered_by.value == label]
        as_machine = [r for r in cases if r["decision"] and r["decision"].answered_by is AnsweredBy.MACHINE]
        times = [r["decision"].at_s for r in right]
        table.append(
            [
                label,
                len(cases),
                f"{len(right)}/{len(cases)} ({100 * len(right) / len(cases):.0f}%)",
                f"{len(as_machine)}/{len(cases)}",
                f"{_pct(times, 50)} / {_pct(times, 95)}",
            ]
        )
    machines = [r for r in rows if r["label"] == "machine" and r["decision"]]
    methods = {
        m: sum(r["decision"].method == m for r in machines) for m in {r["decision"].method for r in machines}
    }
    beeps = [r for r in rows if r["label"] == "machine" and r["beep"]]
    after_beep = sum(1 for r in beeps if r["over"] and r["over"].reason == "beep")
    quiet = [r for r in rows if r["label"] == "machine" and not r["beep"]]
    after_quiet = sum(1 for r in quiet if r["over"] is not None)
    lines = [
        "## Answering-machine detection (labelled set)",
        "",
        f"Machine: {machine()}. {len(rows)} cases synthesized with the local TTS (4 voices): voicemail greetings "
        "with and without beeps, people answering (some in a busy office, some saying hello twice). "
        f"Words from the packaged Whisper model, each given {STT_DELAY_S} s after it ends.",
        "",
        markdown_table(
            ["answered by", "cases", "decided right", 'decided "machine"', "time to decide p50 / p95 s"],
            table,
        ),
        "",
        f"Machine decisions by signal: {', '.join(f'{k} {v}' for k, v in sorted(methods.items()))}.",
        f"Greeting over (for leaving a message): after the beep on {after_beep}/{len(beeps)} greetings with one; "
        f"after the quiet on {after_quiet}/{len(quiet)} without.",
        f"Detector cost per 20 ms frame (with the frame classifier): p50 {statistics.median(r['cost_us'] for r in rows):.0f} µs.",
        "",
        "<details><summary>Every case</summary>",
        "",
        markdown_table(
            ["case", "label", "decided", "method", "at s", "greeting over"],
            [
                [
                    r["id"],
                    r["label"],
                    r["decision"].answered_by.value if r["decision"] else "-",
                    r["decision"].method if r["decision"] else "-",
                    r["decision"].at_s if r["decision"] else "-",
                    f"{r['over'].reason} @ {r['over'].at_s}" if r["over"] else "-",
                ]
                for r in rows
            ],
        ),
        "",
        "</details>",
    ]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
