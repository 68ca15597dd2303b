"""Warm start: does the first call after boot greet as fast as the tenth?

    python -m bench.warm_start            # both modes, table on stdout and in bench/results/warm_start.md

Starts the service (``uvicorn main:app``, embedded STT/TTS/LLM, embeddings on) as a subprocess and places
simulator calls (simulator/caller.py, Twilio's side over loopback):

The agent is created on a first boot of the same database (a restart finds its agents there); then:

1. as soon as the port accepts a connection (as Twilio's webhook would, once the number points here);
2. as soon as /readyz answers 200;
3. then calls 3..10, one after another; the 10th is the steady state.

Greeting first audio: the webhook POST sent → the first agent audio frame received, at the caller.
Two modes: ``warm start`` (the default: start-up waits for the models to be loaded and run once before
the port opens, WARM_START_WAIT_SEC) and ``open at once`` (WARM_START_WAIT_SEC=0, as main was: the
port opens while the models load in the background).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from bench.load import API_KEY, PROFILES, TO_NUMBER, free_port, prepare_agent
from bench.report import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CALLS = 10
MODES = {"open at once (main)": "0", "warm start": "180"}


def start_server(workdir: Path, port: int, wait_s: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **PROFILES["embedded"],
        "DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'agents.db'}",
        "CHROMA_PATH": str(workdir / "chroma"),
        "RECORDINGS_DIR": str(workdir / "recordings"),
        "API_KEYS": API_KEY,
        "API_KEY_FILE": str(workdir / ".api_key"),
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "LOG_LEVEL": "INFO",
        "HF_HUB_OFFLINE": "1",
        "TWILIO_ACCOUNT_SID": "",
        "TWILIO_AUTH_TOKEN": "",
        "DEEPGRAM_API_KEY": "",
        "OLLAMA_HOST": "http://127.0.0.1:9",
        "WARM_EMBEDDINGS": "true",
        "WARM_START_WAIT_SEC": wait_s,
    }
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "main:app", "--host", "127.0.0.1", "--port", str(port)),
            *("--log-level", "warning", "--no-access-log"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "server.log", "wb"),  # the child owns it
    )


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.05)
        return s.connect_ex(("127.0.0.1", port)) == 0


async def greeting_ms(base_url: str) -> float:
    """One call with no caller turns: the time from the webhook to the greeting's first frame."""
    from simulator.caller import SimulatedCaller

    caller = SimulatedCaller(base_url, "CA" + uuid.uuid4().hex, TO_NUMBER, [])
    caller.REPLY_QUIET_S = caller.HANGUP_QUIET_S = 0.4  # hang up soon after the greeting
    async with httpx.AsyncClient(timeout=60) as http:
        result = await caller.run(http)
    if result.error or not caller._replies:
        raise RuntimeError(f"call failed: {result.error or 'no greeting'}")
    return round((caller._replies[0][0] - caller._t0) * 1000, 1)


async def create_agent_before_boot(workdir: Path) -> None:
    """A service restarts with its agents in the database: create the agent on a first boot."""
    port = free_port()
    proc = start_server(workdir, port, "0")
    try:
        while not port_open(port):
            await asyncio.sleep(0.05)
        await prepare_agent(f"http://127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(30)


async def run_mode(wait_s: str) -> dict[str, float]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        await create_agent_before_boot(Path(tmp))
        started = time.perf_counter()
        proc = start_server(Path(tmp), port, wait_s)
        try:
            while not port_open(port):
                if proc.poll() is not None or time.perf_counter() - started > 300:
                    raise RuntimeError("server did not start; see its log")
                await asyncio.sleep(0.02)
            out = {"port_open_s": round(time.perf_counter() - started, 2)}

            async def ready() -> None:
                async with httpx.AsyncClient(timeout=5) as http:
                    while (await http.get(base_url + "/readyz")).status_code != 200:
                        await asyncio.sleep(0.05)
                out["ready_s"] = round(time.perf_counter() - started, 2)

            readiness = asyncio.create_task(ready())  # watched while the first call runs
            out["first_call_ms"] = await greeting_ms(base_url)
            await readiness
            out["call_at_ready_ms"] = await greeting_ms(base_url)
            for _ in range(CALLS - 3):
                await greeting_ms(base_url)
            out["tenth_call_ms"] = await greeting_ms(base_url)
            warm_line = [
                x for x in (Path(tmp) / "server.log").read_text().splitlines() if "providers warm" in x
            ]
            print(f"{wait_s=}: {warm_line[-1] if warm_line else 'no warm-up line'}", file=sys.stderr)
            return out
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> None:
    only = sys.argv[1:]  # e.g. "warm start": one mode only
    rows = {label: asyncio.run(run_mode(wait)) for label, wait in MODES.items() if not only or label in only}
    lines = [
        "| mode | port open after | /readyz 200 after | call 1 (at port open): greeting first audio "
        "| call 2 (at ready) | call 10 |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        lines.append(
            f"| {label} | {r['port_open_s']} s | {r['ready_s']} s | {r['first_call_ms']:.0f} ms "
            f"| {r['call_at_ready_ms']:.0f} ms | {r['tenth_call_ms']:.0f} ms |"
        )
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "warm_start.md").write_text(
        "# Warm start (bench/warm_start.py)\n\n"
        f"{machine()}. Embedded STT/TTS/LLM and embeddings; each call: the webhook, the Media Stream, the "
        "greeting, hang-up. Greeting first audio: webhook POST sent → first agent frame at the caller. "
        "Call 1 is placed the moment the port accepts a connection, call 2 the moment /readyz says 200, "
        "calls 3-10 right after.\n\n" + table + "\n"
    )


if __name__ == "__main__":
    main()
