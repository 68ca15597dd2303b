"""The side-by-side table of the real-set runs (bench.turns_real.run), median run of each.

python -m bench.turns_real.compare baseline ours pipecat [patient …]
"""

from __future__ import annotations

import json
import sys

from bench.report import markdown_table, write_result
from bench.turns_real.build import DATA
from bench.turns_real.run import HEADER, median_run, split_rows, table_row


def main() -> None:
    names = sys.argv[1:] or ["baseline", "ours", "pipecat"]
    rows, settings, per_turn = [], [], {}
    labels = {c["id"]: c for c in json.loads((DATA / "labels.json").read_text())}
    split_of = {tid: c.get("split", "fit") for tid, c in labels.items()}
    for name in names:
        path = DATA / f"outcomes_{name}.json"
        if not path.exists():
            print(f"no runs for {name} ({path})")
            continue
        saved = json.loads(path.read_text())
        rows.append(table_row(f"{name} (median of {len(saved['runs'])} runs)", median_run(saved["runs"])))
        rows += split_rows(name, saved["outcomes"], split_of)
        settings.append(f"- **{name}**: {saved['settings']}")
        for o in saved["outcomes"]:
            if "error" in o:
                continue
            cell = per_turn.setdefault(o["id"], {}).setdefault(name, [])
            cell.append(
                "P" if o["premature"] else "-" if not o["answered"] else f"{o['response_s'] * 1000:.0f}"
            )
    detail = markdown_table(
        ["turn", "pauses ms", *names],
        [
            [
                tid,
                " ".join(str(b - a) for a, b in labels[tid]["pauses"]) if tid in labels else "",
                *[" ".join(per_turn[tid].get(n, [])) for n in names],
            ]
            for tid in sorted(per_turn)
        ],
    )
    body = (
        "The machine's 2 cores are shared with other engineers' tests and benches (each run's load average "
        "is in its own result file): response times vary from run to run; each row is the median run. "
        "Splits: `fit` (AMI + silero clip, where the thresholds were fitted), `held_out` (asterisk prompts, "
        "bench.turns_real.build).\n\n"
        + markdown_table(HEADER, rows)
        + "\n\n"
        + "\n".join(settings)
        + "\n\nPer turn, each run: response ms after the true end, `P` premature (agent audio before the "
        "caller's true end), `-` unanswered.\n\n" + detail
    )
    write_result("turns_real", "Turn-taking on real speech: side by side", body)


if __name__ == "__main__":
    main()
