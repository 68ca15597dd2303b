"""Should the small embedded model word the acknowledgement inside a playbook stage? (issue 27, item 3)

    python -m bench.stage_ack_bench [--model smollm2-135m|qwen2.5-0.5b] [--repeat 3]

Today, when the playbook's rules do not recognise a caller line, the embedded default answers with a fixed
acknowledgement ("Got it.", "I hear you.", …) and the stage's question again
(``call/playbook_turns.py``, ``PlaybookTurns.within_stage``). The alternative measured here: the model
words a short acknowledgement, guarded —
one sentence of at most 12 words, no question, no name, number or claim that is not in the caller's line
or the playbook's facts, no promise of an action ("booked", "I'll send"), nothing the SDR set forbids
(denying being an AI, calling the prospect by the agent's name) — and the fixed one is said when the
guard rejects it.

Step 1 counts how many tested lines of the SDR set and the two held-out sets reach that branch at all
(their stage's rules alone, ``PlaybookRun``): the change can only move the pass rate of those. Step 2
forces every caller line of the three sets through the branch (as if the rules had not recognised it,
the worst case for unseen phrasing) and asks the model K times: how often the guard keeps its words, why
it rejects them, and whether a kept one breaks the line's or the set's "must not say" criteria. Results:
``bench/results/stage_ack.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.sdr_bench import ROOT, SET, settings_for

SETS = [SET, ROOT / "bench" / "sdr_heldout.json", ROOT / "bench" / "sdr_heldout2.json"]
RESULTS = ROOT / "bench" / "results" / "stage_ack.md"
MAX_WORDS = 12
MAX_TOKENS = 24
CLAIMS = re.compile(
    r"\b(booked|scheduled|sent|send|emailed|removed|added|confirmed|guarantee|promise|free|discount|"
    r"price|cost|will|i'll|we'll|sign(ed)? up)\b",
    re.IGNORECASE,
)
DENIES = re.compile(r"\b(not an? (ai|robot|bot|machine)|real person|i'm human|i am human)\b", re.IGNORECASE)


def guard(text: str, caller: str, facts: str, agent_name: str) -> str | None:
    """Why the model's acknowledgement is not said (None: it is)."""
    from speech.reply_shape import sentence_ends, strip_persona, unsupported_facts

    said = text.strip().strip('"').strip()
    if not said:
        return "empty"
    ends = sentence_ends(said)
    if not ends or ends[0] < len(said.rstrip()):
        return "not one whole sentence"
    if len(said.split()) > MAX_WORDS:
        return "too long"
    if "?" in said:
        return "a question"
    if strip_persona(said) != said:
        return "persona"
    if re.search(rf"\b{re.escape(agent_name)}\b", said, re.IGNORECASE):
        return "a name (the agent's)"
    if unsupported_facts(said, f"{caller} {facts}"):
        return "a name, number or date not in the facts"
    if CLAIMS.search(said):
        return "a claim or promise"
    if DENIES.search(said):
        return "denies being an AI"
    return None


def forbidden(line: dict[str, Any], spec: dict[str, Any], reply: str) -> list[str]:
    said = reply.lower()
    hits = [p for p in [*line.get("must_not_say", []), *spec.get("never_say", [])] if p.lower() in said]
    hits += [f"/{p}/" for p in spec.get("never_match", []) if re.search(p, said)]
    return hits


def reaching_the_branch() -> list[tuple[str, str, str]]:
    """Tested lines whose stage's rules leave them in the stage (the acknowledgement branch)."""
    from call.playbook import PlaybookRun, starter_playbook

    found = []
    for path in SETS:
        spec = json.loads(path.read_text())
        for line in spec["lines"]:
            run = PlaybookRun(starter_playbook(), {"agent_name": "Sam"})
            for said in spec["stages"][line["stage"]]:
                run.on_turn(said)
            step = run.on_turn(line["say"])
            if step.stay:
                found.append((path.stem, line["id"], step.intent))
    return found


async def run(model: str, repeat: int, threads: int) -> dict[str, Any]:
    from call.playbook import PlaybookRun, starter_playbook
    from providers.base import ChatMessage
    from providers.local_llm import LocalLLMProvider

    playbook = starter_playbook()
    facts = " ".join(str(v) for v in playbook["variables"].values())
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_for(
            Path(tmp), "local", {"embedded_llm_model": model, "local_llm_threads": str(threads)}
        )
        llm = LocalLLMProvider(settings)
        await llm.warm()
        rows: list[dict[str, Any]] = []
        times: list[float] = []
        for path in SETS:
            spec = json.loads(path.read_text())
            for line in spec["lines"]:
                run_ = PlaybookRun(playbook, {"agent_name": "Sam"})
                for said in spec["stages"][line["stage"]]:
                    run_.on_turn(said)
                stage = run_.stage
                node = playbook["nodes"][stage]
                last_agent = run_.line_for(stage) if spec["stages"][line["stage"]] else run_.greeting("")
                system = (
                    "You are Sam, a friendly sales rep for Acme Analytics on a phone call. "
                    f"Your goal now: {node.get('goal') or node.get('label')}. "
                    "Acknowledge what the caller just said in one short sentence of at most eight words. "
                    "Do not ask a question, do not promise anything, do not use names."
                )
                messages = [
                    ChatMessage("system", system),
                    ChatMessage("assistant", last_agent),
                    ChatMessage("user", line["say"]),
                ]
                for _ in range(repeat):
                    started = time.perf_counter()
                    text = ""
                    stream = llm.stream_chat(messages, max_tokens=MAX_TOKENS, temperature=0.7)
                    async for chunk in stream:
                        text += chunk.text
                        if re.search(r"[.!?](\s|$)", text):
                            break
                    await stream.aclose()  # type: ignore[attr-defined]
                    times.append((time.perf_counter() - started) * 1000)
                    print(f"{line['id']}: {times[-1]:.0f} ms {text!r}", flush=True)
                    first = re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0] if text.strip() else ""
                    why = guard(first, line["say"], facts, "Sam")
                    ask = run_.ask_for(stage)
                    reply = f"{first if why is None else 'Got it.'} {ask}"
                    rows.append(
                        {
                            "set": path.stem,
                            "line": line["id"],
                            "stage": stage,
                            "model_said": first,
                            "rejected": why,
                            "forbidden": forbidden(line, spec, reply),
                        }
                    )
        await llm.aclose()
    ordered = sorted(times)
    return {
        "model": model,
        "repeat": repeat,
        "threads": threads,
        "rows": rows,
        "ms_p50": round(statistics.median(times)),
        "ms_p95": round(ordered[max(0, round(0.95 * len(ordered)) - 1)]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other work)",
        "load": [f"{x:.2f}" for x in os.getloadavg()],
    }


def report(result: dict[str, Any], branch: list[tuple[str, str, str]]) -> str:
    rows = result["rows"]
    kept = [r for r in rows if r["rejected"] is None]
    reasons: dict[str, int] = {}
    for r in rows:
        if r["rejected"]:
            reasons[r["rejected"]] = reasons.get(r["rejected"], 0) + 1
    bad = [r for r in rows if r["forbidden"]]
    lines = [
        f"## {result['model']}, K={result['repeat']}, {result['threads']} thread(s)",
        "",
        f"{result['date']}, {result['machine']}; load average at the end {' '.join(result['load'])}. "
        f"Acknowledgement first sentence p50 / p95: {result['ms_p50']} / {result['ms_p95']} ms "
        "(under `nice -n 15`, on a machine shared with other engineers' benchmarks: inflated).",
        "",
        f"- tested lines of the three sets that reach the acknowledgement branch: **{len(branch)} of "
        f"{sum(len(json.loads(p.read_text())['lines']) for p in SETS)}** "
        + ("(" + ", ".join(f"{s} {i} ({intent})" for s, i, intent in branch) + ")" if branch else ""),
        f"- all {len(rows) // result['repeat']} caller lines forced through it, {len(rows)} acknowledgements: "
        f"the guard kept **{len(kept)} ({100 * len(kept) / max(1, len(rows)):.0f}%)**; rejected: "
        + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])),
        f'- replies (acknowledgement + the stage\'s question) breaking a "must not say" criterion: **{len(bad)}**'
        + (
            ": " + "; ".join(f"{r['line']} {r['forbidden']} {r['model_said']!r}" for r in bad[:5])
            if bad
            else ""
        ),
        "",
        "Kept acknowledgements (first 25):",
        "",
        *[f"- {r['line']} at `{r['stage']}`: {r['model_said']!r}" for r in kept[:25]],
        "",
        "Rejected (first 15):",
        "",
        *[
            f"- {r['line']} at `{r['stage']}`: {r['model_said']!r} ({r['rejected']})"
            for r in rows
            if r["rejected"]
        ][:15],
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="LOCAL_LLM_THREADS (1 on a busy machine)")
    args = parser.parse_args()
    branch = reaching_the_branch()
    result = asyncio.run(run(args.model, args.repeat, args.threads))
    text = report(result, branch)
    print(text)
    RESULTS.write_text(
        "# The small model's acknowledgement inside a stage\n\n" + (__doc__ or "") + "\n" + text
    )


if __name__ == "__main__":
    main()
