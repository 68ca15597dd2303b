"""Replayed decisions (no server, no machine load in the figures): the silence each policy requires at
every pause and every true end of both sets, from the words alone and from the words plus the text
end-of-turn model (real SmolLM2), as the engine's ``EndOfTurn`` / ``TextTurnPolicy`` / ``PauseHabit``
compute it.

- synthetic set (bench.bargein.generate, v4): 36 complete turns (their text) and 36 paused turns (the
  words before the cut, ``…`` in the label, and the pause's length);
- real set (bench.turns_real.build): each internal pause (the words Whisper heard before it) and the
  true end (all the words).

A pause is answered early when it lasts at least the silence required (+60 ms for the decision);
a complete turn's wait is the silence required. The STT's own timing is not in these figures (it is
in bench.turns_real.run and bench.bargein.run).

    python -m bench.turns_real.replay
"""

from __future__ import annotations

import json
import statistics

from bench.bargein.generate import DATA as SYNTH
from bench.report import markdown_table, write_result
from bench.turns_real.build import DATA as REAL
from call.turns import EndOfTurn, PauseHabit, TextTurnPolicy
from config import Settings
from speech.text_turn import TextTurnModel

DECISION_S = 0.06


def main() -> None:
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    eot = EndOfTurn(defaults.silence_threshold_sec)
    policy = TextTurnPolicy(
        defaults.turn_text_unlikely,
        defaults.turn_text_likely,
        defaults.turn_text_hold_sec,
        defaults.turn_text_mid_sec,
    )
    model = TextTurnModel()

    def words(text: str) -> float:
        return eot.required_silence(text)

    def with_text(text: str) -> float:
        required = eot.required_silence(text)
        return policy.required(required, model.end_probability(text), eot)

    rows = []
    synth = [c for c in json.loads((SYNTH / "labels.json").read_text()) if c["label"] in ("turn", "pause")]
    real = json.loads((REAL / "labels.json").read_text())
    for name, decide in (("words only (before)", words), ("words + text model (shipped)", with_text)):
        waits = [decide(c["text"].replace("…", "").replace("  ", " ")) for c in synth if c["label"] == "turn"]
        early = sum(
            c["pause_ms"] / 1000 >= decide(c["text"].split("…")[0].strip()) + DECISION_S
            for c in synth
            if c["label"] == "pause"
        )
        # the real set: a turn is answered early at its first pause that lasts the silence required;
        # with the habit, a pause the caller went on after raises the next ones (the shipped engine)
        real_early = real_early_habit = 0
        real_waits, real_waits_habit = [], []
        for c in real:
            habit = PauseHabit(defaults.turn_pause_margin_sec, defaults.turn_pause_cap_sec)
            early_plain = early_habit = False
            for (a, b), text in zip(c["pauses"], c["text_at_pauses"], strict=True):
                required = decide(text)
                early_plain |= (b - a) / 1000 >= required + DECISION_S
                if not early_habit:
                    early_habit = (b - a) / 1000 >= habit.required(required) + DECISION_S
                    habit.resumed_after((b - a) / 1000)
            real_early += early_plain
            real_early_habit += early_habit
            end = decide(c["text"])
            real_waits.append(end)
            real_waits_habit.append(habit.required(end))
        paused = sum(bool(c["pauses"]) for c in real)
        rows.append(
            [
                name,
                f"{statistics.median(waits) * 1000:.0f} / {sorted(waits)[int(0.95 * len(waits))] * 1000:.0f}",
                f"{sum(w > eot.silence_s for w in waits)}/{len(waits)}",
                f"{early}/{sum(c['label'] == 'pause' for c in synth)}",
                f"{real_early}/{paused} ({real_early_habit}/{paused} with the habit)",
                f"{statistics.median(real_waits) * 1000:.0f} ({statistics.median(real_waits_habit) * 1000:.0f})",
            ]
        )
    body = (
        f"SILENCE_THRESHOLD_SEC={defaults.silence_threshold_sec}, text tiers: p < {policy.unlikely} → "
        f"{policy.hold_s} s, p < {policy.likely} → {policy.mid_s} s, else the threshold; habit margin "
        f"{defaults.turn_pause_margin_sec} s, cap {defaults.turn_pause_cap_sec} s. Replayed on the words "
        "(no STT timing, no machine load).\n\n"
        + markdown_table(
            [
                "policy",
                "synthetic complete turns: wait p50 / p95 ms",
                "synthetic complete held > threshold",
                "synthetic pauses answered early",
                "real: paused turns answered early",
                "real: end wait p50 ms",
            ],
            rows,
        )
    )
    write_result("turns_replay", "Turn-taking decisions replayed on both sets", body)


if __name__ == "__main__":
    main()
