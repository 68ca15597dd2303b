"""Load and latency benchmark: N concurrent calls through the real WebSocket path, over loopback.

    python -m bench.load                       # all three profiles, default sweeps
    python -m bench.load --profile overhead --calls 1,10,50,100,200
    python -m bench.load --profile embedded --calls 1,2,4
    python -m bench.load --profile cloud --calls 1,10
    python -m bench.load --profile speech --calls 1   # local STT + TTS, LLM stand-in (250 ms first token)

Profiles (providers chosen by configuration, as an operator would):
- overhead: instant echo STT/LLM/TTS, so the figures are the engine's own cost;
- cloud: stand-ins with the fixed delays of Deepgram and a GPU Ollama (STT final 150 ms, LLM first token
  250 ms, TTS first audio 150 ms), to show how much the engine overlaps them;
- embedded: the real local STT, LLM and TTS;
- speech: the real local STT and TTS with an LLM stand-in (first token at 250 ms): voice-to-voice of the
  engine and the embedded speech stack (targets p50 ≤ 700 ms, p95 ≤ 900 ms at N = 1).

The server runs as its own process (uvicorn, as in production); callers run in 1–2 worker processes
(simulator/caller.py). Each call: greeting, two caller turns, then a barge-in over the second reply.
Output: tables on stdout, bench/results/load_<profile>.md/.json and PNG plots (latency CDF, jitter vs N).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import uvloop

from bench.load_report import (
    LIMITS,
    breakdown_table,
    capacity_plot,
    capacity_section,
    plots,
    table,
)
from bench.report import machine, pcts

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DATA = ROOT / "bench" / "data"
API_KEY = "bench-key-" + secrets.token_hex(4)
TO_NUMBER = "+15550009999"
CALLER_LINES = [
    "Hi, I got your message about the analytics platform.",
    "What does it cost for a team of twenty people?",
    "Actually, wait, can we book a demo next Tuesday?",
]

PROFILES: dict[str, dict[str, str]] = {
    "overhead": {"STT_PROVIDER": "echo", "LLM_PROVIDER": "echo", "TTS_PROVIDER": "echo"},
    "cloud": {"STT_PROVIDER": "delayed", "LLM_PROVIDER": "delayed", "TTS_PROVIDER": "delayed"},
    "embedded": {"STT_PROVIDER": "local", "LLM_PROVIDER": "local", "TTS_PROVIDER": "local"},
    # the embedded speech stack (local Whisper STT, local Piper TTS) with an LLM stand-in whose first
    # token comes 250 ms after the request (DELAYED_LLM_MS): the engine and speech are measured, not the
    # tiny embedded model
    "speech": {
        "STT_PROVIDER": "local",
        "LLM_PROVIDER": "delayed",
        "TTS_PROVIDER": "local",
        "DELAYED_LLM_MS": "250",
    },
    # the barge-in benchmark: real (embedded) STT, steady instant agent speech
    "bargein": {"STT_PROVIDER": "local", "LLM_PROVIDER": "echo", "TTS_PROVIDER": "echo"},
}
ENDPOINTING_MS = 300  # SILENCE_THRESHOLD_SEC of the shipped defaults
DEFAULT_SWEEPS = {
    "overhead": [1, 10, 50, 100, 200],
    "cloud": [1, 10, 50],
    "embedded": [1, 2, 4],
    "speech": [1],
}
# Calls arrive 20/s per caller process (40/s with two): a burst far beyond Twilio's default of 1 call
# per second per account, yet not a synthetic thundering herd of set-ups in the same millisecond.
RAMP_SPACING_S = 0.05
CLIENT_PROCS = 2  # caller processes for points above 50 calls
CALL_TIMEOUT_S = {"overhead": 90, "cloud": 90, "embedded": 240, "speech": 120}
# A sweep point with few calls is repeated (rounds run one after another, samples pooled) until it has
# at least this many caller turns: a p50 of 3 turns moves by hundreds of ms from run to run.
MIN_TURNS_PER_POINT = 15  # --min-turns
TURNS_PER_CALL = 3


# ------------------------------------------------------------------ caller audio


def caller_audio() -> list[bytes]:
    """The caller's lines as 8 kHz mu-law, synthesized once by a real TTS and cached."""
    DATA.mkdir(parents=True, exist_ok=True)
    out = []
    for index, line in enumerate(CALLER_LINES):
        path = DATA / f"load_caller_{index}.ulaw"
        if not path.exists():
            from simulator.speech import synthesize_caller

            path.write_bytes(synthesize_caller(line))
        out.append(path.read_bytes())
    return out


# ------------------------------------------------------------------ server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``uvicorn main:app`` in its own process on a fresh SQLite file."""

    def __init__(
        self, profile: str, workdir: Path, max_calls: int, uvicorn_args: list[str] | None = None
    ) -> None:
        self.port = free_port()
        self.log_path = workdir / "server.log"
        self.uvicorn_args = list(uvicorn_args or [])
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            **PROFILES[profile],
            "DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'agents.db'}",
            "CHROMA_PATH": str(workdir / "chroma"),
            "RECORDINGS_DIR": str(workdir / "recordings"),
            "API_KEYS": API_KEY,
            # shared by the processes of `--workers N`: a stream token is checked by whichever worker
            "JWT_SECRET": secrets.token_hex(32),
            "API_KEY_FILE": str(workdir / ".api_key"),
            "PUBLIC_URL": self.base_url,
            "MAX_CONCURRENT_CALLS": str(max_calls + 10),
            "API_RATE_LIMIT_PER_MIN": "0",  # it reads every call's transcript at once, past any burst
            "LOG_LEVEL": os.environ.get("BENCH_SERVER_LOG_LEVEL", "WARNING"),
            "HF_HUB_OFFLINE": "1",
            "ALLOW_BENCH_PROVIDERS": "true",  # the echo/delayed stand-ins of the profiles
            "TWILIO_ACCOUNT_SID": "",
            "TWILIO_AUTH_TOKEN": "",
            "DEEPGRAM_API_KEY": "",
            "OLLAMA_HOST": "http://127.0.0.1:9",  # nothing there: auto would fall back to local anyway
        }
        # `--workers N`: N processes with an event loop each; migrations run once before, as in a deploy
        self.workers = (
            int(self.uvicorn_args[self.uvicorn_args.index("--workers") + 1])
            if "--workers" in self.uvicorn_args
            else 1
        )
        if self.workers > 1:
            migrate = f"from storage.db import upgrade_schema; upgrade_schema({env['DATABASE_URL']!r})"
            subprocess.run(
                [sys.executable, "-c", migrate], cwd=ROOT, env=env, check=True, capture_output=True
            )
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--no-access-log",
                *self.uvicorn_args,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log_path, "wb"),
        )
        self.process = psutil.Process(self.proc.pid)  # with --workers: the supervisor of the workers

    def processes(self) -> list[psutil.Process]:
        """The server's process tree (the supervisor and its workers)."""
        try:
            return [self.process, *self.process.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    async def ready(self, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    tail = self.log_path.read_text(errors="replace").strip().splitlines()[-40:]
                    raise RuntimeError("server exited: " + " | ".join(tail))
                try:
                    response = await http.get(self.base_url + "/readyz", timeout=2)
                    if response.status_code == 200 and "llm_loaded" in response.json()["checks"]:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.5)
        raise RuntimeError("server not ready in time")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def prepare_agent(base_url: str) -> str:
    async with httpx.AsyncClient(base_url=base_url, headers={"xi-api-key": API_KEY}, timeout=30) as api:
        agent = await api.post(
            "/v1/convai/agents",
            json={
                "name": "Load Bot",
                "system_prompt": "You are Alex, a friendly SDR for Acme Analytics. Answer in one sentence.",
                "first_message": "Hi, this is Alex from Acme.",
            },
        )
        agent.raise_for_status()
        agent_id = agent.json()["agent_id"]
        number = await api.post(
            "/v1/convai/phone-numbers", json={"phone_number": TO_NUMBER, "agent_id": agent_id}
        )
        number.raise_for_status()
        return agent_id


# ------------------------------------------------------------------ one sweep point


def rounds_for(calls: int) -> int:
    return -(-MIN_TURNS_PER_POINT // (TURNS_PER_CALL * calls))


def run_workers(base_url: str, calls: int, timeout_s: float, offset: int = 0) -> tuple[list[dict], float]:
    """Callers split over worker processes so the client is not the bottleneck on its own core.

    Returns the calls' results and the CPU seconds the caller processes used."""
    workers = 1 if calls <= 50 else CLIENT_PROCS
    procs = []
    for w in range(workers):
        share = calls // workers + (1 if w < calls % workers else 0)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.load",
                    "--worker",
                    "--base-url",
                    base_url,
                    "--calls",
                    str(share),
                    "--offset",
                    str(offset + w * 10_000),
                    "--timeout",
                    str(timeout_s),
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    results: list[dict] = []
    cpu_s = 0.0
    for proc in procs:
        out, _ = proc.communicate(timeout=timeout_s + 60)
        for line in out.splitlines():
            if line.startswith('{"worker_cpu_s"'):
                cpu_s += json.loads(line)["worker_cpu_s"]
            elif line.startswith("{"):
                results.append(json.loads(line))
    return results, cpu_s


def tree_cpu_s(processes: list[psutil.Process]) -> dict[int, float]:
    out = {}
    for proc in processes:
        try:
            t = proc.cpu_times()
            out[proc.pid] = t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return out


def tree_rss(processes: list[psutil.Process]) -> int:
    total = 0
    for proc in processes:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


async def loop_lag(server: Server, reset: bool) -> dict[str, float]:
    """Loop-lag percentiles of every worker (worst p99 wins); a fresh connection per request, so that
    with ``--workers N`` each worker is reached."""
    seen: dict[int, dict] = {}
    for _ in range(1 if server.workers == 1 else 24):
        async with httpx.AsyncClient(
            base_url=server.base_url, headers={"xi-api-key": API_KEY}, timeout=30
        ) as api:
            response = await (api.post("/metrics/loop-lag/reset") if reset else api.get("/metrics/loop-lag"))
        snapshot = response.raise_for_status().json()
        seen.setdefault(int(snapshot.get("pid", 0)), snapshot)
        if len(seen) >= server.workers:
            break
    worst = max(seen.values(), key=lambda s: s["p99_ms"])
    return {**worst, "workers_seen": len(seen)}


async def measure(server: Server, profile: str, calls: int) -> dict:
    async with httpx.AsyncClient(
        base_url=server.base_url, headers={"xi-api-key": API_KEY}, timeout=30
    ) as api:
        await loop_lag(server, reset=True)
        processes = server.processes()
        rss_before = tree_rss(processes)
        cpu_before = tree_cpu_s(processes)
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        rounds = rounds_for(calls)
        results: list[dict] = []
        client_cpu_s = 0.0
        for round_index in range(rounds):
            got, used = await asyncio.to_thread(
                run_workers, server.base_url, calls, CALL_TIMEOUT_S[profile], 100_000 * round_index
            )
            results += got
            client_cpu_s += used
        wall = time.monotonic() - started
        cpu_after = tree_cpu_s(processes)
        rss_peak = tree_rss(processes)
        load_after = os.getloadavg()[0]
        lag = await loop_lag(server, reset=False)
        await asyncio.sleep(1.0)  # let the last turns land
        stored = await stored_turns(api, [r["conversation_id"] for r in results if r["conversation_id"]])
    cpu_s = sum(cpu_after[pid] - cpu_before.get(pid, 0.0) for pid in cpu_after)
    v2v = [x for r in results for x in r["voice_to_voice_s"]]
    barge = [x for r in results for x in r["barge_in_s"]]
    gaps = [x for r in results for x in r["interarrival_s"]]
    jitter = [abs(g - 0.02) for g in gaps]
    sent_turns = sum(r["turns_sent"] for r in results)
    # what the server handled: the callers' messages in, the agent's frames out
    messages = sum(r.get("messages_sent", 0) + r["frames_received"] for r in results)
    stored_user = sum(stored["user_turns"].get(r["conversation_id"], 0) for r in results)
    return {
        "profile": profile,
        "calls": calls,
        "rounds": rounds,
        "errors": sum(1 for r in results if r["error"]) + (calls * rounds - len(results)),
        "error_samples": [r["error"] for r in results if r["error"]][:3],
        "v2v_ms": pcts(v2v),
        "v2v_samples_ms": [round(x * 1000, 1) for x in v2v],
        # per call, in turn order (small points only): which turn of the script a slow sample is
        "v2v_per_call_ms": [[round(x * 1000) for x in r["voice_to_voice_s"]] for r in results]
        if calls <= 10
        else None,
        "barge_in_ms": pcts(barge),
        "barges_missed": sum(r["barges_missed"] for r in results),
        "jitter_ms": pcts(jitter),
        "underruns": sum(r["underruns"] for r in results),
        "frames_received": sum(r["frames_received"] for r in results),
        "turns_sent": sent_turns,
        "user_turns_stored": stored_user,
        "lost_turns": max(0, sent_turns - stored_user),
        "server_breakdown_ms": stored["breakdown"],
        "server_exposed_ms": stored["exposed"],
        "preempted_pct": stored["preempted_pct"],
        "loop_lag_ms": lag,
        "server_cpu_pct": round(100 * cpu_s / wall, 1),
        "server_cpu_ms_per_call_s": round(1000 * cpu_s / max(1e-9, wall * calls), 2),
        "client_cpu_pct": round(100 * client_cpu_s / wall, 1),
        # CPU per WebSocket message (in + out): the engine's efficiency, steadier than the limits when
        # other work shares the cores (a starved point handles fewer messages, not dearer ones)
        "server_cpu_us_per_msg": round(1e6 * cpu_s / max(1, messages), 1),
        # RSS at the end of the point (all server processes) and its growth across all rounds; the first
        # point also carries the models' lazy warm-up
        "server_rss_mb": round(rss_peak / 2**20, 1),
        "rss_growth_mb": round((rss_peak - rss_before) / 2**20, 1),
        "rss_per_call_kb": round((rss_peak - rss_before) / 1024 / calls, 1),
        "load_avg_1m": [round(load_before, 2), round(load_after, 2)],
        "wall_s": round(wall, 1),
    }


async def stored_turns(api: httpx.AsyncClient, conversation_ids: list[str]) -> dict:
    """What the server stored: user turns per call, and the per-turn latency breakdown of agent turns."""
    user_turns: dict[str, int] = {}
    # Milestones after the caller's end of speech. With preemptive replies the LLM and TTS may start
    # before the STT's final, so stages overlap; "exposed" is what each adds to the critical path.
    after_end: dict[str, list[float]] = {"stt_final": [], "llm_first_token": [], "tts_first_audio": []}
    after_end["first_frame"] = []  # = the server's voice-to-voice
    exposed: dict[str, list[float]] = {"endpointing+stt": [], "llm": [], "tts": [], "send": []}
    preempted: list[bool] = []
    sem = asyncio.Semaphore(8)

    async def one(conversation_id: str) -> None:
        async with sem:
            response = await api.get(f"/v1/convai/conversations/{conversation_id}")
        if response.status_code != 200:
            return
        transcript = response.json()["transcript"]
        user_turns[conversation_id] = sum(1 for t in transcript if t["role"] == "user")
        for t in transcript:
            end = t.get("user_speech_end_ms")
            stamps = [t.get(f"{k}_ms" if k != "first_frame" else "first_frame_sent_ms") for k in after_end]
            if t["role"] != "agent" or end is None or any(x is None for x in stamps):
                continue
            stt, llm, tts, frame = stamps
            for key, at in zip(after_end, stamps, strict=True):
                after_end[key].append((at - end) / 1000)
            exposed["endpointing+stt"].append((stt - end) / 1000)
            exposed["llm"].append(max(0.0, llm - stt) / 1000)
            exposed["tts"].append(max(0.0, tts - max(stt, llm)) / 1000)
            exposed["send"].append(max(0.0, frame - max(stt, tts)) / 1000)
            preempted.append(llm < stt)

    await asyncio.gather(*(one(c) for c in conversation_ids))
    return {
        "user_turns": user_turns,
        "breakdown": {k: pcts(v) for k, v in after_end.items()},
        "exposed": {k: pcts(v) for k, v in exposed.items()},
        "preempted_pct": round(100 * sum(preempted) / len(preempted), 1) if preempted else None,
    }


# ------------------------------------------------------------------ report


async def run_profile(profile: str, sweep: list[int], uvicorn_args: list[str] | None = None) -> list[dict]:
    caller_audio()  # synthesize before the server starts, so it does not compete
    rows = []
    with tempfile.TemporaryDirectory(prefix=f"bench-load-{profile}-") as tmp:
        server = Server(profile, Path(tmp), max(sweep), uvicorn_args)
        try:
            await server.ready()
            print(
                f"  server pid {server.proc.pid} ({' '.join(server.uvicorn_args) or 'defaults'})", flush=True
            )
            await prepare_agent(server.base_url)
            for calls in sweep:
                row = await measure(server, profile, calls)
                rows.append(row)
                print(
                    f"  {profile} N={calls}: v2v p50 {row['v2v_ms']['p50']} ms, jitter p99 "
                    f"{row['jitter_ms']['p99']} ms, loop lag p99 {row['loop_lag_ms']['p99_ms']} ms, "
                    f"barge-in p95 {row['barge_in_ms']['p95']} ms, server/client CPU "
                    f"{row['server_cpu_pct']}/{row['client_cpu_pct']} %, load {row['load_avg_1m']}, "
                    f"errors {row['errors']}, lost {row['lost_turns']}",
                    flush=True,
                )
                await asyncio.sleep(2)
        finally:
            server.stop()
    return rows


def verdict(profile: str, rows: list[dict]) -> str:
    """The figures each profile is judged by, in a sentence."""
    if not rows:
        return ""
    if profile == "overhead":
        within = [
            r["calls"] for r in rows if r["jitter_ms"]["p99"] <= 20 and r["loop_lag_ms"]["p99_ms"] <= 50
        ]
        held = max(within) if within else 0
        at_100 = next((r for r in rows if r["calls"] == 100), rows[-1])
        engine_ms = round(at_100["v2v_ms"]["p95"] - ENDPOINTING_MS, 1)
        return (
            f"Jitter p99 ≤ 20 ms and loop lag p99 ≤ 50 ms held up to N = {held} (target ≥ 200). "
            f"Engine cost at N = {at_100['calls']}: v2v p95 − {ENDPOINTING_MS} ms endpointing = {engine_ms} ms "
            "(target ≤ 5 ms; includes the client's 20 ms frame clock)."
        )
    if profile == "cloud":
        first = rows[0]
        serial = ENDPOINTING_MS + 150 + 250 + 150
        return (
            f"v2v p50 at N = {first['calls']}: {first['v2v_ms']['p50']} ms against endpointing + 450 ms = "
            f"{ENDPOINTING_MS + 450} ms (target) and the serial sum {serial} ms."
        )
    first = rows[0]
    x = first["server_exposed_ms"]
    target = "p50 ≤ 700 ms, p95 ≤ 900 ms" if profile == "speech" else "≤ 900 ms"
    phases = {k: x[k]["p50"] for k in ("endpointing+stt", "llm", "tts", "send")}
    largest = max(phases, key=lambda k: phases[k] if phases[k] == phases[k] else -1)
    return (
        f"v2v p50 / p95 at N = 1: {first['v2v_ms']['p50']} / {first['v2v_ms']['p95']} ms (target {target}). "
        "Largest stage on the critical "
        f"path: {largest} ({phases[largest]} ms p50)."
    )


def report(profile: str, rows: list[dict], stem: Path | None = None) -> str:
    """Writes ``<stem>.md``/``.json`` (default ``bench/results/load_<profile>``) and the plots."""
    stem = stem or RESULTS / f"load_{profile}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    images = plots(profile, rows, stem)
    text = (
        f"## Load benchmark — {profile} profile\n\nMachine: {machine()}. "
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Each call: greeting, two caller turns, "
        f"a barge-in over the second reply; a point with few calls is repeated until it has "
        f"≥ {MIN_TURNS_PER_POINT} caller turns (rounds in sequence, samples pooled); calls start {1 / RAMP_SPACING_S:.0f}/s per caller process. v2v = caller's last speech frame sent → "
        f"first agent frame received "
        f"(client side). Jitter = |inter-arrival − 20 ms| of agent frames after the lead.\n\n"
        f"{verdict(profile, rows)}\n\n{table(rows)}\n\nServer-side, from the stored turn timings: each "
        "milestone in ms after the caller's end of speech, and what each stage adds to the critical path "
        "(replies start on the interim transcript, so stages overlap):\n\n"
        f"{breakdown_table(rows)}\n\n" + "".join(f"![{name}]({name})\n" for name in images)
    )
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(
        json.dumps([{k: v for k, v in r.items() if k != "v2v_samples_ms"} for r in rows], indent=1)
    )
    return text


# ------------------------------------------------------------------ capacity curve


def capacity_report(rows: list[dict], uvicorn_args: str = "") -> str:
    """Adds (or replaces) this server configuration's curve in bench/results/capacity.md/.json/.png."""
    sweep = ",".join(str(r["calls"]) for r in rows)
    command = f"python -m bench.load --profile {rows[0]['profile']} --calls {sweep} --min-turns {MIN_TURNS_PER_POINT} --capacity"
    if uvicorn_args:
        command += f" --uvicorn-args '{uvicorn_args}'"
    label = f"uvicorn main:app {uvicorn_args}".strip() if uvicorn_args else "uvicorn main:app (one process)"
    store = RESULTS / "capacity.json"
    curves = json.loads(store.read_text()) if store.exists() else {}
    if not isinstance(curves, dict):
        curves = {}
    curves[label] = {
        "meta": {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": command},
        "rows": [{k: v for k, v in r.items() if k != "v2v_samples_ms"} for r in rows],
    }
    store.write_text(json.dumps(curves, indent=1))
    image = capacity_plot({name: c["rows"] for name, c in curves.items()})
    text = (
        f"## Capacity curve — {rows[0]['profile']} profile\n\nMachine: {machine()}. The server "
        "(`uvicorn main:app`, as configured in each section) and the load client's processes share the "
        "machine; each call: greeting, two caller turns, a barge-in over the second reply. Limits: "
        f"outbound frame jitter p99 ≤ {LIMITS['jitter_p99_ms']:.0f} ms, event-loop lag p99 ≤ "
        f"{LIMITS['loop_lag_p99_ms']:.0f} ms (worst worker), no lost turns, barge-in → clear p95 ≤ "
        f"{LIMITS['barge_in_p95_ms']:.0f} ms. CPU % is of one core (200 % = the machine); load avg is the "
        "machine's 1-minute load before → after the point (other work on the machine shows there). "
        "µs/msg: server CPU per WebSocket message in or out.\n\n"
        + "\n".join(capacity_section(name, c["rows"], c["meta"]) for name, c in curves.items())
        + f"\n![capacity]({image})\n"
    )
    (RESULTS / "capacity.md").write_text(text)
    return text


# ------------------------------------------------------------------ worker


async def worker(base_url: str, calls: int, offset: int, timeout_s: float) -> None:
    from simulator.caller import SimulatedCaller, Utterance, frames_of

    lines = [frames_of(audio) for audio in caller_audio()]
    script = [Utterance(lines[0]), Utterance(lines[1]), Utterance(lines[2], barge_in_after_s=0.6)]
    limits = httpx.Limits(max_connections=50)
    # Call SIDs are new in every round: an ended conversation is never reopened by a second stream.
    run = secrets.token_hex(4)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:

        async def one(index: int) -> dict:
            await asyncio.sleep(index * RAMP_SPACING_S)
            caller = SimulatedCaller(base_url, f"CA{run}{offset + index:024x}", TO_NUMBER, script)
            try:
                result = await asyncio.wait_for(caller.run(http), timeout_s)
            except TimeoutError:
                result = caller.result
                result.error = "timeout"
            # every message the caller sent numbers itself (Twilio's sequenceNumber)
            return {**result.__dict__, "messages_sent": caller._seq}

        for result in await asyncio.gather(*(one(i) for i in range(calls))):
            print(json.dumps(result), flush=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"worker_cpu_s": usage.ru_utime + usage.ru_stime}), flush=True)


def main() -> None:
    global MIN_TURNS_PER_POINT
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", choices=[*DEFAULT_SWEEPS, "all"], default="all")
    parser.add_argument("--calls", help="comma-separated sweep, e.g. 1,10,50")
    parser.add_argument(
        "--uvicorn-args", default="", help="extra server arguments, e.g. '--workers 2' or '--ws wsproto'"
    )
    parser.add_argument(
        "--out", help="write <OUT>.md/.json (and plots) instead of bench/results/load_<profile>.*"
    )
    parser.add_argument(
        "--min-turns",
        type=int,
        default=MIN_TURNS_PER_POINT,
        help=f"repeat a point until it has this many caller turns (default {MIN_TURNS_PER_POINT})",
    )
    parser.add_argument(
        "--capacity",
        action="store_true",
        help="also write the capacity curve: bench/results/capacity.md and capacity.png",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=90, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        # uvloop, as the server has: the callers' own sends and timers cost less of the shared cores
        uvloop.run(worker(args.base_url, int(args.calls), args.offset, args.timeout))
        return
    MIN_TURNS_PER_POINT = args.min_turns
    profiles = list(DEFAULT_SWEEPS) if args.profile == "all" else [args.profile]
    for profile in profiles:
        sweep = [int(x) for x in args.calls.split(",")] if args.calls else DEFAULT_SWEEPS[profile]
        print(f"load benchmark: {profile} profile, N = {sweep}", flush=True)
        rows = asyncio.run(run_profile(profile, sweep, shlex.split(args.uvicorn_args)))
        stem = Path(args.out).resolve() if args.out else None
        print(report(profile, rows, stem), flush=True)
        if args.capacity:
            print(capacity_report(rows, args.uvicorn_args), flush=True)


if __name__ == "__main__":
    main()
