"""Smart Turn v3.2 (speech/turn_model.py) on the labelled turn-taking set: what it says at each pause, what
the words say, and what each way of combining them would do. Offline and quick (~1 min on 2 cores).

    python -m bench.bargein.generate      # the labelled set (36 complete + 36 paused turns)
    python -m bench.turn_model_bench      # prints tables; the lead copies them to bench/results/turn_model.md

For every case the engine's view at the moment it asks the model (160 ms into the pause) is rebuilt:
- complete turns: the whole line and 160 ms of silence; paused turns: the sentence up to the cut (it was
  synthesised whole, so the voice is mid-sentence there) and 160 ms of the inserted pause;
- the words: the local Whisper's transcript of that audio (as the engine's speculative final), with its
  confidence, through ``EndOfTurn`` → the silence the words alone require (0.3 / 0.8 / 1.2 s);
- the model: ``TurnJudge`` on the last 8 s, as the engine submits it (CPU time per decision measured).

Then each policy (``TurnModelPolicy``) gives the silence the turn needs. A complete turn's wait is
max(that, the STT endpoint: SILENCE_THRESHOLD_SEC); a paused turn is answered prematurely when that is
shorter than its pause minus ~0.1 s (the first agent frame leaves ~0.1 s after the decision, measured by
bench/bargein/run.py). The server run (bench/bargein/run.py) measures the real figures.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace

import numpy as np

from bench.bargein.generate import DATA
from bench.report import markdown_table, pcts
from call.turns import EndOfTurn, TurnModelPolicy
from speech.audio import MULAW_TO_PCM16
from speech.turn_model import TurnJudge

ASK_AFTER_MS = 160
ANSWER_LEAD_S = 0.1  # decision → first agent frame on the wire (instant TTS)


def case_views() -> list[dict]:
    from config import Settings
    from providers.local_stt import WhisperEngine

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    whisper = WhisperEngine(settings)
    judge = TurnJudge()
    judge.load()
    cases = [c for c in json.loads((DATA / "labels.json").read_text()) if c["label"] in ("turn", "pause")]
    out = []
    for case in cases:
        pcm = MULAW_TO_PCM16[np.frombuffer((DATA / f"{case['id']}.ulaw").read_bytes(), dtype=np.uint8)]
        if case["label"] == "pause":
            pcm = pcm[: case["first_part_ms"] * 8]
        tail = np.zeros(ASK_AFTER_MS * 8, dtype=np.int16)
        heard = np.concatenate([pcm, tail])
        words = whisper.transcribe(np.concatenate([pcm, tail[: 120 * 8]]))
        p = judge.submit(heard[-400 * 160 :], 8000).result()
        out.append({**case, "heard": words.text, "confidence": words.confidence, "p": p})
    return out, judge.seconds


def required(view: dict, policy: TurnModelPolicy | None, eot: EndOfTurn) -> float:
    """The silence (s) the turn needs under ``policy`` (None: the words alone)."""
    words = eot.required_silence(view["heard"], view["confidence"])
    if policy is None:
        return words
    if not policy.early and words <= eot.silence_s:
        return words  # not asked: the words end the turn on the plain silence
    return policy.adjust(words, view["p"], view["heard"], eot)  # the engine's own rule


def outcome(views: list[dict], policy: TurnModelPolicy | None, silence_s: float) -> list[object]:
    eot = EndOfTurn(silence_s)
    waits = [max(required(v, policy, eot), silence_s) for v in views if v["label"] == "turn"]
    paused = [v for v in views if v["label"] == "pause"]
    early = [v["id"] for v in paused if required(v, policy, eot) + ANSWER_LEAD_S < v["pause_ms"] / 1000]
    w = pcts(waits)
    held = sum(x > silence_s + 0.01 for x in waits)
    mean = round(1000 * sum(waits) / len(waits))
    return [w["p50"], w["p95"], mean, held, f"{len(early)}/{len(paused)}"]


def main() -> None:
    started = time.perf_counter()
    cached = DATA / "turn_model_views.json"
    if "--cached" in sys.argv and cached.exists():
        saved = json.loads(cached.read_text())
        views, seconds = saved["views"], saved["seconds"]
    else:
        views, seconds = case_views()
        cached.write_text(json.dumps({"views": views, "seconds": seconds}, indent=1))
    turns = [v for v in views if v["label"] == "turn"]
    paused = [v for v in views if v["label"] == "pause"]
    print(f"views in {time.perf_counter() - started:.0f} s\n")
    rows = []
    for name, items in (("complete", turns), ("paused (at the pause)", paused)):
        for noise in (False, True):
            sub = [v for v in items if bool(v.get("noise")) is noise]
            ps = [v["p"] for v in sub]
            rows.append(
                [
                    name,
                    "20 dB noise" if noise else "clean",
                    len(sub),
                    f"{sum(p > 0.5 for p in ps)} ({sum(p > 0.5 for p in ps) / len(ps):.0%})",
                    f"{sum(p >= 0.7 for p in ps)}",
                    f"{sum(p < 0.3 for p in ps)}",
                    f"{float(np.median(ps)):.2f}",
                ]
            )
    print(
        markdown_table(
            ["turns", "condition", "n", "p > 0.5", "p ≥ 0.7", "p < 0.3", "median p"],
            rows,
        )
    )
    cpu = pcts(seconds)
    print(f"\nCPU per decision (one thread): p50 {cpu['p50']} ms, p95 {cpu['p95']} ms over {cpu['n']}\n")
    base = TurnModelPolicy()
    early = replace(base, early=True)
    policies: list[tuple[str, TurnModelPolicy | None]] = [
        ("words only (TURN_MODEL=off)", None),
        ("model, shipped: asked when the words hold; shorten ≥ 0.7 (not open) + extend < 0.2", base),
        ("model, early (every pause): shorten ≥ 0.7 (not open) + extend < 0.2", early),
        ("early: shorten ≥ 0.7 also open sentences", replace(early, shorten_open=True)),
        ("early: shorten only", replace(early, extend=False)),
        ("early: extend only (< 0.2)", replace(early, shorten=False)),
        ("early: extend only (< 0.3, hold 1.6 s)", replace(early, shorten=False, incomplete=0.3, hold_s=1.6)),
        ("early: shorten ≥ 0.9 + extend < 0.2", replace(early, complete=0.9)),
        ("early + override unfinished words ≥ 0.97", replace(early, override=0.97)),
    ]
    rows = []
    for silence_s in (0.3,):
        for name, policy in policies:
            rows.append([f"{silence_s:g}", name, *outcome(views, policy, silence_s)])
    print(
        markdown_table(
            [
                "SILENCE_THRESHOLD_SEC",
                "policy",
                "complete: wait p50 ms",
                "p95 ms",
                "mean ms",
                "complete turns held",
                "paused answered early",
            ],
            rows,
        )
    )
    print("\n<details><summary>Every case</summary>\n")
    print(
        markdown_table(
            ["case", "voice", "noise", "heard (Whisper)", "conf", "p", "pause ms"],
            [
                [
                    v["id"],
                    v["voice"],
                    v.get("noise") or "",
                    v["heard"],
                    f"{v['confidence']:.2f}",
                    f"{v['p']:.2f}",
                    v.get("pause_ms", ""),
                ]
                for v in views
            ],
        )
    )
    print("\n</details>")


if __name__ == "__main__":
    main()
