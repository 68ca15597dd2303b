"""Turn-taking on the real set (bench.turns_real.build) through the real Media Streams path.

The barge-in bench's harness (bench.bargein.run): a server on the ``bargein`` profile (embedded Whisper
STT, instant echo LLM/TTS, so what is timed is the turn-taking decision) and a Twilio-like client that
plays each recorded turn in real time, 20 ms frames, after the agent's short greeting. Per turn:

- ``premature``: agent audio arrived before the caller's true end (its last voiced frame was sent);
- ``response``: true end → first agent frame, on turns not answered prematurely;
- ``unanswered``: no agent audio after the true end within ``ANSWER_WINDOW_S`` (a premature reply
  that ran into the end counts as answered).

``--per-caller``: each speaker's turns in one call, in the order spoken (a caller's later turns are
where a per-caller adaptation shows). The set is played ``--repeat`` times (one call at a time); figures are per run, and the table gives the
median run (the machine is 2 shared cores with other work running). Server settings can be varied
with ``--env KEY=VALUE`` (e.g. the turn-taking levers); the per-turn outcomes go to
``bench/data/turns_real/outcomes_<name>.json`` for bench.turns_real.compare.

    python -m bench.turns_real.build && python -m bench.turns_real.run [--repeat 3] [--name ours]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from bench.bargein.run import FRAME, SHORT_GREETING, SILENCE, CaseCall, make_agent
from bench.load import API_KEY, Server
from bench.report import markdown_table, write_result
from bench.turns_real.build import DATA, SET_VERSION, build

ROOT = Path(__file__).resolve().parents[2]
PIPECAT_VERSION = "1.14.0"
ANSWER_WINDOW_S = 5.0
NUMBER = "+15550002602"


class RealTurnCall(CaseCall):
    """Recorded turns of one caller, played after the greeting; agent audio timed against each turn's
    labels. One turn a call by default; ``--per-caller``: each speaker's turns in one call, in order, each
    after the agent's reply to the one before (what a per-caller adaptation can learn from)."""

    def __init__(self, base_url: str, number: str, turns: list[tuple[dict, bytes]], index: int) -> None:
        super().__init__(base_url, number, turns[0][0], turns[0][1], index)
        self.turns = turns

    async def _drive(self, ws) -> dict:  # type: ignore[no-untyped-def]
        await self._silence_until(ws, lambda: self.first_agent_frame is not None, 20)
        if self.first_agent_frame is None:
            return {"error": "no greeting"}
        outcomes = []
        for case, audio in self.turns:
            # the agent is done talking (greeting or the reply to the caller's previous turn)
            await self._silence_until(ws, lambda: time.perf_counter() - self.agent_frames[-1] > 0.6, 15)
            outcomes.append(await self._one_turn(ws, case, audio))
        return {"turns": outcomes}

    async def _one_turn(self, ws, case: dict, audio: bytes) -> dict:  # type: ignore[no-untyped-def]
        frames = [audio[i : i + FRAME] for i in range(0, len(audio), FRAME)]
        frames[-1] = frames[-1].ljust(FRAME, b"\xff")
        before = len(self.agent_frames)
        end_frame = max(0, case["end_ms"] // 20 - 1)
        start, end = await self._play(ws, frames[: end_frame + 1])  # up to the last voiced frame
        spoke_early = len(self.agent_frames) > before
        # where in the turn the agent cut in (ms of the recording): which pause it took for an end
        cut_in_ms = round((self.agent_frames[before] - start) * 1000) if spoke_early else None
        await self._play(ws, frames[end_frame + 1 :])
        await self._silence_until(
            ws, lambda: any(t > end for t in self.agent_frames[before:]), ANSWER_WINDOW_S
        )
        await self._play(ws, [SILENCE] * 10)
        after = [t for t in self.agent_frames[before:] if t > end]
        answered = bool(after) and after[0] - end <= ANSWER_WINDOW_S
        return {
            "premature": spoke_early,
            "answered": answered or spoke_early,
            "response_s": after[0] - end if answered and not spoke_early else None,
            "cut_in_ms": cut_in_ms,
        }


def callers(cases: list[dict], per_caller: bool) -> list[list[dict]]:
    """The calls to place: one turn each, or (``per_caller``) one per speaker of a recording, their turns
    in the order spoken (the asterisk prompts: one speaker; the silero clip's turns, whose speakers are not
    labelled: one call each)."""
    if not per_caller:
        return [[c] for c in cases]
    groups: dict[tuple[str, str], list[dict]] = {}
    for case in cases:
        recording = case["id"].rsplit("_", 1)[0] if case["id"].startswith("ami_") else case["source"]
        speaker = case.get("speaker") or case["id"]  # the silero clip's turns: speakers not labelled
        groups.setdefault((recording, speaker), []).append(case)
    return list(groups.values())  # build.py lists each recording's turns in the order spoken


def load_cases() -> list[dict]:
    path = DATA / "labels.json"
    cases = json.loads(path.read_text()) if path.exists() else []
    if not cases or any(c.get("set_version") != SET_VERSION for c in cases):
        cases = build()
    return cases


class PipecatServer:
    """bench/turns_real/pipecat_bot.py in its own venv (bench/.pipecat_venv), on a free port."""

    def __init__(self, workdir: Path) -> None:
        from bench.load import free_port
        from providers.local_stt import packaged_model_dir

        python = ROOT / "bench" / ".pipecat_venv" / "bin" / "python"
        if not python.exists():
            raise SystemExit(
                "no bench/.pipecat_venv: python3 -m venv bench/.pipecat_venv && "
                "bench/.pipecat_venv/bin/pip install -r bench/turns_real/pipecat_requirements.txt"
            )
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = open(workdir / "pipecat.log", "wb")
        self.proc = subprocess.Popen(
            [
                str(python),
                str(Path(__file__).with_name("pipecat_bot.py")),
                str(self.port),
                str(packaged_model_dir()),
            ],
            cwd=workdir,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    async def ready(self) -> None:
        async with httpx.AsyncClient() as client:
            for _ in range(600):
                try:
                    if (await client.get(f"{self.base_url}/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError("the Pipecat bot did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


async def run_once(
    server: Server | PipecatServer, cases: list[dict], round_no: int, per_caller: bool = False
) -> list[dict]:
    out = []
    async with httpx.AsyncClient(
        base_url=server.base_url, headers={"xi-api-key": API_KEY}, timeout=30
    ) as api:
        if round_no == 0 and isinstance(server, Server):
            await make_agent(api, SHORT_GREETING, NUMBER)
        for k, group in enumerate(callers(cases, per_caller)):
            turns = [(case, (DATA / f"{case['id']}.ulaw").read_bytes()) for case in group]
            call = RealTurnCall(server.base_url, NUMBER, turns, round_no * 1000 + k + 1)
            try:
                result = await asyncio.wait_for(call.run(api), 60 * len(turns))
                outcomes = result.get("turns") or [result] * len(turns)
            except Exception as exc:  # a failed call is reported, not fatal
                outcomes = [{"error": type(exc).__name__}] * len(turns)
            for n, (case, outcome) in enumerate(zip(group, outcomes, strict=True)):
                out.append(
                    {
                        "id": case["id"],
                        "paused": bool(case["pauses"]),
                        "split": case.get("split", "fit"),
                        "round": round_no,
                        "turn_in_call": n,
                        **outcome,
                    }
                )
                print(f"  [{round_no}] {case['id']:<16} {json.dumps(outcome)}", flush=True)
    return out


def figures(outcomes: list[dict]) -> dict:
    """One run's figures."""
    ok = [o for o in outcomes if "error" not in o]
    paused = [o for o in ok if o["paused"]]
    responses = sorted(o["response_s"] for o in ok if o.get("response_s") is not None)

    def q(p: float) -> float:
        return (
            responses[min(len(responses) - 1, int(p * len(responses)))] * 1000 if responses else float("nan")
        )

    return {
        "turns": len(ok),
        "paused": len(paused),
        "premature_paused": sum(o["premature"] for o in paused),
        "premature_all": sum(o["premature"] for o in ok),
        "response_p50": statistics.median(responses) * 1000 if responses else float("nan"),
        "response_p95": q(0.95),
        "unanswered": sum(not o["answered"] for o in ok),
        "errors": len(outcomes) - len(ok),
    }


SPLITS = ("fit", "held_out")


def split_rows(name: str, outcomes: list[dict], split_of: dict[str, str]) -> list[list]:
    """One row per split present (median run of each): ``fit`` (the sources the thresholds were fitted
    on) and ``held_out`` (build.py's asterisk prompts)."""
    rows = []
    for split in SPLITS:
        mine = [o for o in outcomes if o.get("split", split_of.get(o["id"], "fit")) == split]
        rounds = sorted({o["round"] for o in mine})
        if not mine or len({o.get("split", split_of.get(o["id"], "fit")) for o in outcomes}) < 2:
            continue
        runs = [figures([o for o in mine if o["round"] == r]) for r in rounds]
        rows.append(table_row(f"{name}: {split} (median of {len(runs)})", median_run(runs)))
    return rows


def median_run(runs: list[dict]) -> dict:
    keys = runs[0].keys()
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def table_row(name: str, fig: dict) -> list:
    return [
        name,
        f"{fig['premature_paused']:g}/{fig['paused']:g} ({fig['premature_paused'] / max(fig['paused'], 1):.0%})",
        f"{fig['premature_all']:g}/{fig['turns']:g}",
        f"{fig['response_p50']:.0f}",
        f"{fig['response_p95']:.0f}",
        f"{fig['unanswered']:g}/{fig['turns']:g}",
    ]


HEADER = [
    "system",
    "premature, paused turns",
    "premature, all turns",
    "response p50 ms",
    "response p95 ms",
    "unanswered",
]


def save_outcomes(name: str, outcomes: list[dict], runs: list[dict], settings: str) -> None:
    (DATA / f"outcomes_{name}.json").write_text(
        json.dumps({"name": name, "settings": settings, "runs": runs, "outcomes": outcomes}, indent=1)
    )


async def main_async(
    repeat: int, name: str, env: dict[str, str], ids: set[str], pipecat: bool, per_caller: bool = False
) -> None:
    cases = [c for c in load_cases() if not ids or c["id"] in ids]
    os.environ.update(env)
    load_before = os.getloadavg()[1]
    outcomes: list[dict] = []
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = PipecatServer(Path(tmp)) if pipecat else Server("bargein", Path(tmp), max_calls=2)
        try:
            await server.ready()
            for r in range(repeat):
                one = await run_once(server, cases, r, per_caller)
                outcomes += one
                runs.append(figures(one))
        finally:
            server.stop()
            if keep_log := os.environ.get("BENCH_SERVER_LOG"):  # e.g. with BENCH_SERVER_LOG_LEVEL=INFO
                shutil.copy(
                    server.log_path if isinstance(server, Server) else Path(tmp) / "pipecat.log", keep_log
                )
    settings = ", ".join(f"{k}={v}" for k, v in env.items()) or "shipped defaults"
    if pipecat:
        settings = f"Pipecat {PIPECAT_VERSION} bot (its defaults: Silero VAD, Smart Turn v3 stop strategy)"
    if per_caller:
        settings += "; per caller: each speaker's turns in one call"
    save_outcomes(name, outcomes, runs, settings)
    per_run = markdown_table(HEADER, [table_row(f"run {k + 1}", f) for k, f in enumerate(runs)])
    body = (
        f"Server: {settings}; STT Whisper base (the same packaged model), echo LLM/TTS (bench.turns_real.run, "
        f"{len(cases)} turns × {repeat} runs, one call at a time). The 2 cores are shared with other "
        f"engineers' work: 5-min load average {load_before:.1f} at the start, {os.getloadavg()[1]:.1f} at "
        "the end.\n\n"
        + markdown_table(
            HEADER,
            [
                table_row(f"{name} (median of {repeat} runs)", median_run(runs)),
                *split_rows(name, outcomes, {}),
            ],
        )
        + "\n\n"
        + per_run
    )
    write_result(f"turns_real_{name}", f"Turn-taking on real speech: {name}", body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--name", default="ours")
    parser.add_argument("--env", action="append", default=[], help="server setting KEY=VALUE")
    parser.add_argument("--ids", default="", help="only these case ids (comma-separated)")
    parser.add_argument("--pipecat", action="store_true", help="the Pipecat bot instead of our server")
    parser.add_argument("--per-caller", action="store_true", help="each speaker's turns in one call")
    args = parser.parse_args()
    env = dict(kv.split("=", 1) for kv in args.env)
    ids = {x for x in args.ids.split(",") if x}
    asyncio.run(main_async(args.repeat, args.name, env, ids, args.pipecat, args.per_caller))


if __name__ == "__main__":
    main()
