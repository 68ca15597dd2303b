"""The SDR conversation set: caller lines a prospect really says on a cold call, answered at every stage.

    python -m bench.sdr_bench --llm local                   # SmolLM2 (embedded default), with the starter playbook
    python -m bench.sdr_bench --llm local --no-playbook     # the same agent without a playbook
    python -m bench.sdr_bench --llm ollama --setting ollama_host=http://127.0.0.1:11434 --label llama3
    python -m bench.sdr_bench --capable                     # the OpenAI-compatible stand-in of a capable model
    python -m bench.sdr_bench --table                       # print the table of every stored run

The model is a parameter: ``--llm`` is any LLM provider name the service knows (``local``, ``ollama``,
``echo``, or one added later such as an OpenAI-compatible server), ``--setting key=value`` passes the
settings it needs. Each line of ``bench/sdr_set.json`` is one text-mode call (``scenarios.text_call``:
the real responder, intents, playbook, tools and LLM; no audio): the caller lines of the line's stage
lead there, then the line is said, and the agent's reply to it is checked:

- must say: each group of phrases, one of them at least (case-insensitive);
- must not say: the line's phrases and the set's (never denies being an AI, no "You said:", no
  ``{{`` left in, never calls the prospect by the agent's own name);
- stage reached (with a playbook): the stage is entered on that turn;
- fields collected (with a playbook): the value contains what is expected;
- the tool called, and whether the agent ended the call.

A line passes at K=5 when all its K runs pass; the table gives lines passed and runs passed. Without a
playbook the stage and field criteria have nothing to read and are not counted (the content ones are).
Results: ``bench/results/sdr.json`` (every run label) and ``bench/results/sdr.md``.
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

ROOT = Path(__file__).resolve().parent.parent
SET = ROOT / "bench" / "sdr_set.json"
RESULTS = ROOT / "bench" / "results"
API_KEY = "sdr-bench-key"
BATCH = 3  # lines run (K times each) before the partial results are written


def settings_for(tmp: Path, llm: str, extra: dict[str, str]) -> Any:
    from config import Settings

    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp / 'sdr.db'}",
        "chroma_path": str(tmp / "chroma"),
        "api_keys": API_KEY,
        "api_key_file": str(tmp / ".api_key"),
        "recordings_dir": str(tmp / "recordings"),
        "stt_provider": "echo",
        "tts_provider": "echo",
        "llm_provider": llm,
        "allow_bench_providers": True,
        "warm_embeddings": False,
        "log_level": "WARNING",
        # what is measured is what the model says, not the shared machine's load: a slow first token is
        # waited for (the engine's default, 3 s, answers "sorry, could you say that again?" instead)
        # (the whole reply stays under the text call's own 90 s limit for a reply)
        "llm_first_token_timeout_sec": 60.0,
        "llm_timeout_sec": 80.0,
        **extra,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def model_name(llm: str, extra: dict[str, str]) -> str:
    """What answered: the embedded model's name, the server's model, or the provider."""
    if llm == "local":
        return extra.get("embedded_llm_model", "smollm2-135m")
    return extra.get("openai_model") or extra.get("ollama_model") or llm


def last_reply(transcript: list[dict[str, Any]]) -> str:
    """What the agent said after the caller's last line."""
    last_user = max((i for i, t in enumerate(transcript) if t["role"] == "user"), default=-1)
    return " ".join(t["text"] for t in transcript[last_user + 1 :] if t["role"] == "agent" and t.get("text"))


def reply_sources(transcript: list[dict[str, Any]]) -> list[str]:
    last_user = max((i for i, t in enumerate(transcript) if t["role"] == "user"), default=-1)
    return [str(t.get("source")) for t in transcript[last_user + 1 :] if t["role"] == "agent"]


def prefix_path(playbook: dict[str, Any], lines: list[str]) -> list[str]:
    """The stages the lines before the tested one lead through (the playbook's rules alone)."""
    from call.playbook import PlaybookRun

    run = PlaybookRun(playbook, {"agent_name": "Sam"})
    for line in lines:
        run.on_turn(line)
    return run.path


def check(line: dict[str, Any], spec: dict[str, Any], run: dict[str, Any], before: int | None) -> list[str]:
    """Why this run of the line fails (empty: it passes)."""
    problems: list[str] = []
    if run.get("error"):
        return [f"error: {run['error']}"]
    reply = last_reply(run["transcript"])
    said = reply.lower()
    if not said.strip():
        problems.append("no reply")
    for group in line.get("must_say", []):
        if not any(p.lower() in said for p in group):
            problems.append(f"did not say {' / '.join(group)!r}")
    for phrase in [*line.get("must_not_say", []), *spec.get("never_say", [])]:
        if phrase.lower() in said:
            problems.append(f"said {phrase!r}")
    for pattern in spec.get("never_match", []):
        if re.search(pattern, said):
            problems.append("addressed the prospect by the agent's name")
    if before is not None:  # a playbook: stages and fields
        if (stage := line.get("stage_reached")) and stage not in run["stage_path"][before:]:
            problems.append(
                f"stage {stage} not reached (went {' > '.join(run['stage_path'][before:]) or 'nowhere'})"
            )
        for name, want in (line.get("fields") or {}).items():
            got = (run.get("collected_data") or {}).get(name)
            if got is None or want.lower() not in str(got).lower():
                problems.append(f"field {name}={got!r}, expected {want!r}")
    if (tool := line.get("tool")) and not any(c["name"] == tool for c in run["tool_calls"]):
        problems.append(f"tool {tool} not called")
    if line.get("ends_call") is not None and (run.get("ended_by") == "agent") != line["ends_call"]:
        problems.append("did not end the call" if line["ends_call"] else "ended the call")
    return [f"{p} | reply: {reply[:160]!r}" for p in problems[:1]] + problems[1:]


async def run_bench(
    llm: str,
    playbook_on: bool,
    repeat: int,
    extra: dict[str, str],
    only: str | None,
    progress: Any = None,
    set_path: Path | None = None,
) -> dict[str, Any]:
    """Every line ``repeat`` times; ``progress(result)`` after each batch of lines (partial results)."""
    import httpx

    from call.playbook import starter_playbook
    from main import create_app
    from scenarios.runner import Scenario, run_suite
    from simulator.scenario import ScenarioSpec

    spec = json.loads((set_path or SET).read_text())
    lines = [x for x in spec["lines"] if not only or re.search(only, x["id"])]
    playbook = starter_playbook()
    result: dict[str, Any] = {
        "llm": llm,
        "model": model_name(llm, extra),
        "playbook": playbook_on,
        "repeat": repeat,
        "lines": {},
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other work, noisy)",
        "partial": True,
    }
    latencies: list[float] = []
    loads: list[float] = []  # the 1-minute load average after each batch (the machine is shared)
    sources: dict[str, int] = {}
    result["reply_sources"] = sources  # how the tested replies were produced (llm, playbook, tool, …)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(settings_for(Path(tmp), llm, extra))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            headers = {"xi-api-key": API_KEY}
            async with httpx.AsyncClient(
                transport=transport, base_url="http://bench", headers=headers
            ) as client:
                body = dict(spec["agent"])
                if playbook_on:
                    body["playbook"] = "starter"
                created = await client.post("/v1/convai/agents", json=body)
                created.raise_for_status()
                agent_id = created.json()["agent_id"]
            for first in range(0, len(lines), BATCH):
                batch = lines[first : first + BATCH]
                scenarios = [
                    Scenario(
                        ScenarioSpec.model_validate(
                            {
                                "name": line["id"],
                                "caller": [{"say": s} for s in [*spec["stages"][line["stage"]], line["say"]]],
                                "criteria": {"agent_never_says": ["{{"]},
                            }
                        )
                    )
                    for line in batch
                ]
                # one call at a time: the embedded model answers one reply at a time, and a call waiting
                # on another's reply would be measured on its deadline, not on what it says
                ran = await run_suite(app.state.runtime, agent_id, scenarios, repeat=repeat, concurrency=1)
                for line in batch:
                    before = (
                        len(prefix_path(playbook, spec["stages"][line["stage"]])) if playbook_on else None
                    )
                    runs = [r for r in ran["runs"] if r["scenario"] == line["id"]]
                    # a run the harness could not finish (the shared machine starved it past the text
                    # call's reply limit) says nothing about the model: counted apart, not as a failure
                    errors = [r for r in runs if r.get("error")]
                    measured = [r for r in runs if not r.get("error")]
                    failures = [check(line, spec, r, before) for r in measured]
                    for r in measured:
                        latencies.extend(r.get("v2v_ms") or [])
                        for source in reply_sources(r["transcript"]):
                            sources[source] = sources.get(source, 0) + 1
                    result["lines"][line["id"]] = {
                        "group": line["group"],
                        "runs": len(measured),
                        "errors": len(errors),
                        "passed": sum(not f for f in failures),
                        "failures": sorted({p for f in failures for p in f})[:4],
                    }
                result["wall_s"] = round(time.monotonic() - started, 1)
                loads.append(os.getloadavg()[0])
                result["load_1min"] = [min(loads), round(statistics.mean(loads), 1), max(loads)]
                result["reply_ms_p50"] = round(statistics.median(latencies), 1) if latencies else None
                ordered = sorted(latencies)
                result["reply_ms_p95"] = ordered[max(0, round(0.95 * len(ordered)) - 1)] if ordered else None
                result["partial"] = len(result["lines"]) < len(lines)
                if progress is not None:
                    progress(result)
    return result


HELD_OUT_NOTE = """**How far the rules carry beyond the set.** The caller-word rules (`call/playbook_words.py`) and
`bench/sdr_set.json` were written together, so the set alone overstates them. `bench/sdr_heldout.json`
(20 lines written after them) passed **10/20** on its first run (2026-12-07, starter playbook, K=1):
"what's the purpose of the call?", "what can I help you with?", "are you a live agent?", "we're all
set with our current provider", "not in the budget this year", "send it over to tom at contoso dot
com", "we'll pass" were not recognised, and "he's out of the office today" was taken as a call-back
time. The rules were broadened (not line by line: the families of phrasing), and
`bench/sdr_heldout2.json`, written before that change, passed **19/20** on its first run ("I'm about to
walk into a meeting, try me this afternoon" was read as a booking request); that phrasing was added
too. The rows below for both held-out sets are after those changes, so they are tuned on: expect
unseen phrasing to land somewhat below them. A line the rules do not recognise is answered within the
stage (an acknowledgement and the stage's question again), never with an invented answer."""


def summary(result: dict[str, Any]) -> dict[str, Any]:
    lines = result["lines"]

    def rate(ids: list[str]) -> str:
        ok = sum(0 < lines[i]["passed"] == lines[i]["runs"] for i in ids)
        return f"{ok}/{len(ids)}"

    groups = {g: [i for i, x in lines.items() if x["group"] == g] for g in ("what_about", "robot")}
    runs = sum(x["runs"] for x in lines.values())
    passed = sum(x["passed"] for x in lines.values())
    line_ok = sum(0 < x["passed"] == x["runs"] for x in lines.values())
    return {
        "lines": f"{line_ok}/{len(lines)} ({100 * line_ok / max(1, len(lines)):.0f}%)",
        "runs": f"{passed}/{runs} ({100 * passed / max(1, runs):.0f}%)",
        "what_about": rate(groups["what_about"]),
        "robot": rate(groups["robot"]),
    }


def table(stored: dict[str, Any]) -> str:
    rows = [
        '| run | LLM | playbook | lines passed (all K runs) | runs passed | "what is this about?" | "is this a robot?" | reply p50 / p95 ms |',
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, result in stored.items():
        s = summary(result)
        if result.get("partial"):
            label = f"{label} (partial: {len(result['lines'])} lines)"
        if errors := sum(x.get("errors", 0) for x in result["lines"].values()):
            label = f"{label} ({errors} runs not finished, not counted)"
        rows.append(
            f"| {label} | {result.get('model') or result['llm']} | {'starter' if result['playbook'] else 'none'} | {s['lines']} | "
            f"{s['runs']} | {s['what_about']} | {s['robot']} | {result['reply_ms_p50']} / {result['reply_ms_p95']} |"
        )
    return "\n".join(rows)


def write_markdown(stored: dict[str, Any]) -> None:
    parts = [
        "# SDR conversation set",
        "",
        "`python -m bench.sdr_bench --llm <provider> [--no-playbook]` (see the module's docstring). "
        f"{len(json.loads(SET.read_text())['lines'])} caller lines of `bench/sdr_set.json` (and two sets of 20 "
        "held-out lines, see below), each said at a "
        "stage of a cold call, K runs each; a line passes when all K pass. Text mode (no audio): reply "
        "latency is from the caller's line to the reply's first sentence, not voice-to-voice. Without a "
        "playbook only the content criteria count (there are no stages or fields to read).",
        "",
        "Rows: SmolLM2-135M (the embedded default: `--llm local`), Qwen2.5-Coder-0.5B (`--llm local "
        "--setting embedded_llm_model=qwen2.5-0.5b`, after `make setup-qwen`) and the OpenAI-compatible "
        "stand-in of a capable model (`--capable`: `bench/capable_llm.py` served on loopback, driven through "
        "the `openai` SDK), each with the starter playbook and without one (`--no-playbook`), every line of "
        "the set at K=5, the same settings for every row (the engine's reply cap of 64 tokens and two "
        "sentences; first-token and reply deadlines lifted to 60 / 80 s so that the words are judged, not "
        "the machine's load). The stand-in is rules, not a language model: it calls the tools a good model "
        "would and says the prompt's quoted lines; without a playbook the prompt holds none, so its content "
        "replies are generic — its no-playbook row measures tool calls and honesty more than words. Every "
        "run was under `nice -n 15` on 2 cores shared with other engineers' tests and latency benchmarks: "
        "the reply latencies are inflated (each run's load average is under its heading).",
        "",
        table(stored),
        "",
        HELD_OUT_NOTE,
        "",
    ]
    for label, result in stored.items():
        parts += [
            f"## {label}",
            "",
            f"{result['date']}, {result['machine']}; K={result['repeat']}; wall {result['wall_s']} s"
            + (
                f"; 1-minute load average min / mean / max {' / '.join(map(str, load))}."
                if (load := result.get("load_1min"))
                else "."
            ),
            "",
        ]
        if result.get("note"):
            parts += [result["note"], ""]
        if result.get("reply_sources"):
            shares = ", ".join(f"{k} {v}" for k, v in sorted(result["reply_sources"].items()))
            parts += [f"The tested replies, by how they were produced: {shares}.", ""]
        failed = {i: x for i, x in result["lines"].items() if x["passed"] < x["runs"]}
        if not failed:
            parts += ["Every line passed every run.", ""]
            continue
        parts += ["| line | passed | why (first failures) |", "|---|---|---|"]
        for line_id, x in failed.items():
            why = "; ".join(f.replace("|", "/") for f in x["failures"])[:400]
            parts.append(f"| {line_id} | {x['passed']}/{x['runs']} | {why} |")
        parts.append("")
    (RESULTS / "sdr.md").write_text("\n".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--llm", default="local", help="LLM provider: local, ollama, echo, …")
    parser.add_argument(
        "--no-playbook", action="store_true", help="the same agent without the starter playbook"
    )
    parser.add_argument("--repeat", type=int, default=5, help="K: runs of each line")
    parser.add_argument("--setting", action="append", default=[], help="key=value for the service's settings")
    parser.add_argument(
        "--label", default=None, help="name of this run in the results (default: llm+playbook)"
    )
    parser.add_argument("--only", default=None, help="a regex of line ids to run (stored only with --label)")
    parser.add_argument("--set", type=Path, default=None, help="another set file (bench/sdr_heldout.json)")
    parser.add_argument(
        "--capable",
        action="store_true",
        help="the OpenAI-compatible stand-in playing a capable model's tool calls (bench/capable_llm.py)",
    )
    parser.add_argument("--table", action="store_true", help="print the stored results and exit")
    args = parser.parse_args()
    store = RESULTS / "sdr.json"
    stored = json.loads(store.read_text()) if store.exists() else {}
    if args.table:
        print(table(stored))
        return
    extra = dict(s.split("=", 1) for s in args.setting)
    if args.capable:
        args.llm = "openai"
    label = args.label or f"{args.llm}, {'no playbook' if args.no_playbook else 'starter playbook'}"
    if args.set is not None and not args.label:
        label += f" ({args.set.stem})"

    def save(partial: dict[str, Any]) -> None:
        if args.only is None or args.label:
            stored.update(json.loads(store.read_text()) if store.exists() else {})  # other runs since
            stored[label] = partial
            store.write_text(json.dumps(stored, indent=1) + "\n")
            write_markdown(stored)
        print(f"{len(partial['lines'])} lines done, {partial['wall_s']} s", flush=True)

    async def bench() -> dict[str, Any]:
        if not args.capable:
            return await run_bench(
                args.llm, not args.no_playbook, args.repeat, extra, args.only, save, args.set
            )
        from bench.capable_llm import MODEL, capable_server

        async with capable_server() as server:  # served on loopback, driven through the `openai` SDK
            extra.update(openai_base_url=server.url, openai_model=MODEL)
            return await run_bench(
                args.llm, not args.no_playbook, args.repeat, extra, args.only, save, args.set
            )

    result = asyncio.run(bench())
    shown = {label: result}
    print(table(shown))
    for line_id, x in result["lines"].items():
        if x["passed"] < x["runs"]:
            print(f"  {line_id}: {x['passed']}/{x['runs']}  {x['failures'][:2]}")


if __name__ == "__main__":
    main()
