"""The turn-eagerness presets (call.turns.EAGERNESS) replayed on what Whisper hears at every pause.

For each turn of the real set (bench.turns_real.build), at each internal pause and at the true end, the
packaged Whisper transcribes the turn's audio up to 20 ms into the silence, as the engine's speculative
run does (the words it completes a cut phrase with, and its probability of the last word); SmolLM2 reads
those words (the text end-of-turn model). Each preset's required silence is then computed by the engine's
own classes (``EndOfTurn``, ``TextTurnPolicy``, ``WordDoubt``, ``PauseHabit`` within the turn). A turn
is answered early when one of its pauses lasts the silence required + 60 ms (the decision); a finished
turn waits the silence required. The synthetic set (bench.bargein.generate): its complete turns' and
paused turns' text, no last-word probability.

No server and no load in these figures (bench.turns_real.run plays the same audio live). Whisper's words
are cached in bench/data/turns_real/heard.json.

    python -m bench.turns_real.eagerness
"""

from __future__ import annotations

import json
import statistics
from typing import Any

import numpy as np

from bench.bargein.generate import DATA as SYNTH
from bench.report import markdown_table, write_result
from bench.turns_real.build import DATA, SET_VERSION
from call.turns import EAGERNESS, EndOfTurn, PauseHabit, TextTurnPolicy, WordDoubt
from config import Settings
from speech.audio import MULAW_TO_PCM16
from speech.text_turn import TextTurnModel

DECISION_S = 0.06
INTO_PAUSE_MS = 20  # LOCAL_STT_SPECULATE_MS: the speculative run starts this far into a pause
SMART_TURN_ASKS_MS = 160  # TurnModelPolicy.ask_after_s: the audio model is asked this far into a pause
WINDOW = 8 * 8000  # TurnAssembler.WINDOW_FRAMES: the audio model hears the caller's last 8 s
RESET_AFTER_MS = 1200  # the local STT forgets an utterance after 4 × the endpoint of silence


def heard(settings: Settings) -> list[dict[str, Any]]:
    """Whisper's words and last-word probability at each pause and true end of the real set (cached)."""
    cache = DATA / "heard.json"
    if cache.exists():
        cached = json.loads(cache.read_text())
        if cached.get("set_version") == SET_VERSION and "smart_turn_p" in cached["points"][0]:
            return cached["points"]
    from providers.local_stt import WhisperEngine
    from speech.turn_model import TurnModel

    engine, smart_turn = WhisperEngine(settings), TurnModel()
    points = []
    for case in json.loads((DATA / "labels.json").read_text()):
        pcm = MULAW_TO_PCM16[np.frombuffer((DATA / f"{case['id']}.ulaw").read_bytes(), dtype=np.uint8)]
        start_ms = 0
        for at_ms, pause_ms in [*((a, b - a) for a, b in case["pauses"]), (case["end_ms"], 0)]:
            result = engine.transcribe(pcm[start_ms * 8 : (at_ms + INTO_PAUSE_MS) * 8])
            text, last_word_p = (result.text, result.last_word_p) if result else ("", 1.0)
            heard_to = (at_ms + SMART_TURN_ASKS_MS) * 8
            points.append(
                {
                    "id": case["id"],
                    "split": case["split"],
                    "pause_ms": pause_ms,
                    "text": text,
                    "lwp": last_word_p,
                    "smart_turn_p": smart_turn.complete_probability(
                        pcm[max(0, heard_to - WINDOW) : heard_to], 8000
                    ),
                }
            )
            if pause_ms >= RESET_AFTER_MS:
                start_ms = max(0, at_ms + pause_ms - 200)  # the next utterance, with the STT's pre-roll
    engine.close()
    cache.write_text(json.dumps({"set_version": SET_VERSION, "points": points}, indent=1))
    return points


def auc(ends: list[float], pauses: list[float]) -> float:
    """How often a true end scores above a mid-turn pause (0.5: the cue does not tell them apart)."""
    wins = sum((e > p) + 0.5 * (e == p) for e in ends for p in pauses)
    return wins / max(1, len(ends) * len(pauses))


def cue_rows(points: list[dict[str, Any]], text_p: Any) -> list[list[str]]:
    rows = []
    for split in ("fit", "held_out"):
        ends = [p for p in points if p["split"] == split and not p["pause_ms"]]
        pauses = [p for p in points if p["split"] == split and p["pause_ms"]]
        row = [f"{split} ({len(ends)} ends, {len(pauses)} pauses)"]
        for cue in (lambda p: p["smart_turn_p"], lambda p: text_p(p["text"]), lambda p: p["lwp"]):
            row.append(f"{auc([cue(p) for p in ends], [cue(p) for p in pauses]):.2f}")
        rows.append(row)
    return rows


def main() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    points = heard(settings)
    model = TextTurnModel()
    memo: dict[str, float] = {}

    def text_p(text: str) -> float:
        if text not in memo:
            memo[text] = model.end_probability(text)
        return memo[text]

    synth = [c for c in json.loads((SYNTH / "labels.json").read_text()) if c["label"] in ("turn", "pause")]
    complete = [c["text"].replace("…", "").replace("  ", " ") for c in synth if c["label"] == "turn"]
    paused = [(c["text"].split("…")[0].strip(), c["pause_ms"]) for c in synth if c["label"] == "pause"]
    base_text = TextTurnPolicy(
        settings.turn_text_unlikely, settings.turn_text_likely, settings.turn_text_hold_sec,
        settings.turn_text_mid_sec,
    )  # fmt: skip
    base_doubt = WordDoubt(settings.turn_word_doubt, settings.turn_word_doubt_hold_sec)
    eot = EndOfTurn(settings.silence_threshold_sec)
    rows = []
    for name, preset in EAGERNESS.items():
        text_policy, doubt = preset.text_policy(base_text), preset.word_doubt(base_doubt)

        def required(text: str, last_word_p: float | None, tp=text_policy, wd=doubt) -> float:
            return wd.required(tp.required(eot.required_silence(text), text_p(text), eot), last_word_p)

        waits = sorted(required(t, None) for t in complete)
        early = sum(ms / 1000 >= required(t, None) + DECISION_S for t, ms in paused)
        row = [name, f"{statistics.median(waits) * 1000:.0f} / {waits[int(0.95 * len(waits))] * 1000:.0f}"]
        row.append(f"{early}/{len(paused)}")
        for split in ("fit", "held_out"):
            turns: dict[str, list[dict]] = {}
            for p in points:
                if p["split"] == split:
                    turns.setdefault(p["id"], []).append(p)
            cut_in = with_pauses = 0
            end_waits = []
            for pts in turns.values():
                habit = PauseHabit(settings.turn_pause_margin_sec, settings.turn_pause_cap_sec)
                *pauses, end = pts
                with_pauses += bool(pauses)
                for p in pauses:
                    if p["pause_ms"] / 1000 >= habit.required(required(p["text"], p["lwp"])) + DECISION_S:
                        cut_in += 1
                        break
                    habit.resumed_after(p["pause_ms"] / 1000)
                end_waits.append(habit.required(required(end["text"], end["lwp"])))
            end_waits.sort()
            row += [
                f"{cut_in}/{with_pauses}",
                f"{statistics.median(end_waits) * 1000:.0f} / {end_waits[int(0.95 * len(end_waits))] * 1000:.0f}",
            ]
        rows.append(row)
    body = (
        "Each preset's required silence, replayed on Whisper's words at every pause (no STT time, no load; "
        "the live figures: bench.turns_real.run --env TURN_EAGERNESS=…). Service settings: the shipped "
        "defaults.\n\n"
        + markdown_table(
            [
                "turn_eagerness",
                "synthetic complete turns: wait p50 / p95 ms",
                "synthetic pauses answered early",
                "real fit: paused turns answered early",
                "real fit: end wait p50 / p95 ms",
                "real held-out: paused turns answered early",
                "real held-out: end wait p50 / p95 ms",
            ],
            rows,
        )
    )
    body += (
        "\n\nHow well each cue tells a true end from a mid-turn pause on the same words and audio (AUC: the "
        "chance a true end scores higher than a pause; 0.5 is a coin): Smart Turn v3.2 on the 8 kHz audio "
        f"{SMART_TURN_ASKS_MS} ms into the pause, the text model on Whisper's words, Whisper's probability "
        "of the last word.\n\n"
        + markdown_table(
            ["split", "Smart Turn p", "text end-of-turn p", "last word p"], cue_rows(points, text_p)
        )
    )
    write_result("turns_eagerness", "Turn eagerness replayed on both sets", body)


if __name__ == "__main__":
    main()
