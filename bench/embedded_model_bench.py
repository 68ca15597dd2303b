"""The embedded LLMs side by side: speed as a call turn sees it, and the brain bench's off-script turns.

    python -m bench.embedded_model_bench                       # smollm2-135m and qwen2.5-0.5b
    python -m bench.embedded_model_bench --models smollm2-135m --runs 10

qwen2.5-0.5b needs ``make setup-qwen`` first (the file is checked against its pinned sha256 on load).
For each model: ``bench.llm_bench.measure`` (load, first token, tokens/s, whole reply on an SDR prompt
with knowledge), then ``bench.brain_bench.run_set`` (44 off-script caller turns through the real
``Responder``) with its measures, plus three read from the replies:

- name misuse: the agent's own name (Ava) used other than in "I'm Ava" / "this is Ava" / "Ava from" —
  the issue's "calling the prospect by the agent's name";
- refusals: "I can't help with that", "as an AI"…;
- meta talk: the reply talks about the conversation instead of to the caller ("the user", "the caller",
  "this is a common phrase").

Writes bench/results/embedded_models.md (tables, and every reply side by side) and embedded_models.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
from pathlib import Path
from typing import Any

from bench.brain_bench import RESULTS, SET, run_set, summarise
from bench.llm_bench import TIMING_HEADERS, TIMING_NOTE, measure, timing_row
from bench.report import machine, markdown_table, pcts

AGENT_NAME = "Ava"
OWN_NAME_OK = re.compile(
    rf"\b(?:I'm|I am|this is|it's|my name is|name's)\s+{AGENT_NAME}\b|\b{AGENT_NAME}\s+from\b", re.I
)
REFUSAL = re.compile(
    r"\b(?:I can(?:'|no)t (?:help|assist|do that|provide)|I'm (?:sorry|afraid),? but I can|as an AI|"
    r"language model|I am not able to)\b",
    re.I,
)
META = re.compile(
    r"\b(?:the user|the caller|the prospect|common phrase|this conversation|main conversation)\b", re.I
)


def name_misused(reply: str) -> bool:
    return bool(re.search(rf"\b{AGENT_NAME}\b", OWN_NAME_OK.sub("", reply)))


def quality(rows: list[dict[str, Any]]) -> dict[str, Any]:
    llm_rows = [r for r in rows if r["source"] == "llm"]
    fallbacks = [r for r in rows if r["source"] == "fallback"]
    seconds = [r["seconds"] for r in rows]
    p = pcts(seconds)
    return {
        "llm_replies": len(llm_rows),
        "fallbacks": len(
            fallbacks
        ),  # the engine's deadline (or the model) failed: "could you say that again?"
        "name_misuse": sum(name_misused(r["reply"]) for r in rows),
        "refusals": sum(bool(REFUSAL.search(r["reply"])) for r in rows),
        "meta_talk": sum(bool(META.search(r["reply"])) for r in rows),
        "turn_p50_ms": p["p50"],
        "turn_p95_ms": p["p95"],
        "turn_mean_s": round(statistics.fmean(seconds), 2) if seconds else 0.0,
    }


# The cold-call lines, asked of the model itself (the engine's prompt builder, no fixed lines, no
# reply shaping), with the bare agent prompt: what the words say about the model, K times each.
PROBE_SYSTEM = "You are Sam, a friendly sales rep for Acme Analytics."
PROBE_GREETING = "Hi, this is Sam from Acme Analytics. Do you have a minute?"
NOT_SAM = re.compile(r"(?<!I'm )(?<!I am )(?<!this is )(?<!name is )\bSam\b(?! from)", re.I)
PROBES: list[dict[str, Any]] = [
    {"caller": "Sure, but I only have a minute. What is this about?",
     "must": r"acme|analytic|data|dashboard|report|insight", "must_not": r"i'?m not sure what"},
    {"caller": "Wait, is this a robot?",
     "must": r"\b(ai|artificial|virtual|automated|assistant|bot)\b",
     "must_not": r"not a (robot|bot)|real person|i'?m (a )?human|i am (a )?human|this is a human"},
    {"caller": "Who is this, and how did you get my number?", "must": r"\bsam\b|acme", "must_not": r"$^"},
    {"caller": "We already use Tableau for our reporting.", "must": r"\?|acme|analytic", "must_not": r"$^"},
    {"caller": "Just send me an email.", "must": r"email|send", "must_not": r"$^"},
    {"caller": "I'm not interested.", "must": r"understand|no problem|thank|appreciate|of course|okay|sure",
     "must_not": r"$^"},
]  # fmt: skip


def probe_verdict(probe: dict[str, Any], reply: str) -> dict[str, bool]:
    return {
        "said_what_it_must": bool(re.search(probe["must"], reply, re.I)),
        "clean": not re.search(probe["must_not"], reply, re.I),
        "no_refusal": not REFUSAL.search(reply),
        "no_name_misuse": not NOT_SAM.search(reply),
        "not_empty": bool(reply.strip()),
    }


async def run_probes(llm: Any, k: int) -> list[dict[str, Any]]:
    from call.prompt import build_messages
    from providers.base import ChatMessage

    out = []
    for probe in PROBES:
        for trial in range(k):
            messages = build_messages(
                PROBE_SYSTEM, "DISCOVERY", "", [ChatMessage("assistant", PROBE_GREETING)], probe["caller"]
            )
            reply = ""
            async for chunk in llm.stream_chat(messages, temperature=0.7, max_tokens=60):
                reply += chunk.text
            reply = " ".join(reply.split())
            verdict = probe_verdict(probe, reply)
            out.append({"caller": probe["caller"], "trial": trial, "reply": reply, **verdict,
                        "passed": all(verdict.values())})  # fmt: skip
    return out


def cpu_figures(m: dict[str, Any], threads: int) -> tuple[float, float]:
    """Median CPU seconds a reply, and tokens a second of one reply's wall time on an idle machine
    (tokens / (CPU seconds / threads)): what the model costs, whatever else the machine was doing."""
    pairs = [(c, n) for c, n in m["cpu"] if n > 0]
    if not pairs:
        return float("nan"), float("nan")
    per_reply = statistics.median(c for c, _ in pairs)
    rate = statistics.median(n / (c / threads) for c, n in pairs if c > 0)
    return round(per_reply, 2), round(rate, 1)


async def run_model(name: str, runs: int, patient: bool, k: int) -> dict[str, Any]:
    from config import Settings
    from providers.local_llm import LocalLLMProvider

    deadlines = {"llm_first_token_timeout_sec": 60.0, "llm_timeout_sec": 120.0} if patient else {}
    settings = Settings(_env_file=None, llm_provider="local", embedded_llm_model=name, **deadlines)  # type: ignore[call-arg]
    load_before = os.getloadavg()[0]
    llm = LocalLLMProvider(settings)
    try:
        timing = await measure(llm, runs)
        probed = await run_probes(llm, k)
    finally:
        await llm.aclose()
    rows = await run_set(json.loads(SET.read_text()), settings)
    cpu_reply, idle_rate = cpu_figures(timing, settings.local_llm_threads)
    return {
        "timing": timing,
        "probes": probed,
        "rows": rows,
        "brain": summarise(rows),
        "quality": quality(rows),
        "cpu": {"reply_cpu_s_p50": cpu_reply, "idle_tokens_per_s": idle_rate},
        "load": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "patient": patient,
    }


def report(results: dict[str, dict[str, Any]]) -> str:
    timing = markdown_table(
        [*TIMING_HEADERS, "CPU s / reply p50", "tokens/s from CPU time", "load avg before → after"],
        [
            [*timing_row(n, r["timing"]), r["cpu"]["reply_cpu_s_p50"], r["cpu"]["idle_tokens_per_s"],
             f"{r['load'][0]} → {r['load'][1]}"]
            for n, r in results.items()
        ],
    )  # fmt: skip
    patient = any(r["patient"] for r in results.values())
    deadline_note = (
        "Run with patient deadlines (LLM_FIRST_TOKEN_TIMEOUT_SEC=60, LLM_TIMEOUT_SEC=120): the replies are "
        "what each model says, whatever the machine's load; turn times still show what a caller would wait."
        if patient
        else "Run with the engine's deadlines (first token 3 s, reply 8 s): a slow turn is a spoken fallback."
    )
    brain = markdown_table(
        ["model", "turns", "≤ 2 sentences", "repeats", "endings polite", "other turns ended", "invented fact",
         "mean words", "LLM-worded replies", "fallbacks", "name misuse", "refusals", "meta talk", "turn p50 ms",
         "turn p95 ms"],
        [
            [n, b["turns"], f"{b['short_pct']}%", f"{b['repeat_pct']}%", f"{b['ending_pct']}%",
             b["ended_wrongly"], f"{b['invented_pct']}%", b["mean_words"], q["llm_replies"], q["fallbacks"],
             q["name_misuse"],
             q["refusals"], q["meta_talk"], q["turn_p50_ms"], q["turn_p95_ms"]]
            for n, r in results.items()
            for b, q in [(r["brain"], r["quality"])]
        ],
    )  # fmt: skip
    names = list(results)
    probe_rows = []
    for probe in PROBES:
        row: list[Any] = [probe["caller"]]
        for n in names:
            got = [p for p in results[n]["probes"] if p["caller"] == probe["caller"]]
            row.append(f"{sum(p['passed'] for p in got)}/{len(got)}")
        probe_rows.append(row)
    totals: list[Any] = ["all"]
    for n in names:
        got = results[n]["probes"]
        totals.append(f"**{sum(p['passed'] for p in got)}/{len(got)}**")
    probe_rows.append(totals)
    checks = ["said_what_it_must", "clean", "no_refusal", "no_name_misuse", "not_empty"]
    failing = markdown_table(
        ["model", *checks],
        [[n, *(sum(not p[c] for p in results[n]["probes"]) for c in checks)] for n in names],
    )
    probe_replies = markdown_table(
        ["model", "caller", "reply", "passed"],
        [[n, p["caller"], p["reply"].replace("|", "/"), "yes" if p["passed"] else "**no**"]
         for n in names for p in results[n]["probes"]],
    )  # fmt: skip
    first = results[names[0]]["rows"]
    side = markdown_table(
        ["caller", *names],
        [
            [row["caller"], *(results[n]["rows"][i]["reply"].replace("|", "/") for n in names)]
            for i, row in enumerate(first)
        ],
    )
    return (
        f"# Embedded LLMs compared (bench/embedded_model_bench.py)\n\nMachine: {machine()} (shared with other "
        "work: timings are noisy).\n\n## Speed (bench.llm_bench.measure)\n\n"
        + TIMING_NOTE
        + "\n\n"
        + timing
        + "\n\nWall times depend on what else ran (the load average is shown); the CPU columns do much less: "
        "CPU seconds a reply, and the tokens a second that CPU time gives on the model's own threads.\n\n"
        "## Off-script turns (bench.brain_bench's set through the real Responder)\n\n"
        + deadline_note
        + " Turn times are whole turns as the Responder answers them (fixed lines are instant). "
        "Name misuse, refusals and meta talk are counts of replies (see the module's docstring).\n\n"
        + brain
        + "\n\n## The issue's cold-call lines, asked of the model itself\n\n"
        'The issue\'s bare agent prompt ("You are Sam, a friendly sales rep for Acme Analytics."), its greeting, '
        "then each line K times at temperature 0.7 through the engine's prompt builder, without fixed lines or "
        "reply shaping: what the model says on its own. A reply passes when it says what the line needs "
        "(the reason for the call; that it is an AI; who is calling; keeps the conversation going; agrees to "
        'email; accepts a no), denies nothing it must not ("I\'m a real person"), refuses nothing, and does '
        "not call the prospect Sam (the agent's name). Criteria in `PROBES`.\n\n"
        + markdown_table(["caller", *names], probe_rows)
        + "\n\nFailed checks (count of replies):\n\n"
        + failing
        + "\n\n## Every reply to the off-script set\n\n"
        + side
        + "\n\n## Every reply to the cold-call lines\n\n"
        + probe_replies
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="smollm2-135m,qwen2.5-0.5b")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--patient", action="store_true", help="long LLM deadlines: judge words, not load")
    parser.add_argument("-k", type=int, default=5, help="trials of each cold-call probe")
    parser.add_argument("--out", default="embedded_models", help="bench/results/<out>.md and .json")
    parser.add_argument(
        "--combine",
        nargs="+",
        metavar="JSON",
        help="no run: one report from earlier runs' JSON files (one per model)",
    )
    args = parser.parse_args()
    if args.combine:
        results = {n: r for path in args.combine for n, r in json.loads(Path(path).read_text()).items()}
    else:
        results = {
            name: asyncio.run(run_model(name, args.runs, args.patient, args.k))
            for name in args.models.split(",")
        }
    text = report(results)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.md").write_text(text)
    stored = {
        n: {k: r[k] for k in ("brain", "quality", "timing", "cpu", "load", "patient", "probes", "rows")}
        for n, r in results.items()
    }
    (RESULTS / f"{args.out}.json").write_text(json.dumps(stored, indent=1) + "\n")


if __name__ == "__main__":
    main()
