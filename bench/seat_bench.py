"""The supervisor seat's figures: listen delay, `say` to first word, take-over switch, and 100 calls with 20
listeners against 100 calls without.

    python -m bench.seat_bench                 # everything (~6 min on 2 cores)
    python -m bench.seat_bench --skip-load     # the latencies only (~2 min)

- listen delay: a caller frame's send → its arrival at a listener (``inbound``), and the agent's frame
  reaching the caller → reaching the listener (``outbound``), with 1 and with 20 listeners on the call;
- control ``say``: the POST → the first frame of the line at the caller (the agent quiet before);
- take-over switch: the POST ``takeover`` → the first frame of the supervisor's audio at the caller (the
  supervisor already streaming on the take-over socket);
- both once on one instance (SQLite) and once with two instances on PostgreSQL, the call on A and the
  supervisor (control and listen) on B: control through the per-call command channel (LISTEN/NOTIFY),
  listen relayed from A.

These run the service in this process (uvicorn on loopback, echo providers: the engine's own cost), the
caller and listeners in the same event loop. The load comparison runs ``bench.load``'s overhead profile
(its own server process, callers in worker processes) at 100 calls, once as is and once with 20 listeners
attached to live calls from this process, and compares the calls' jitter and loop lag with the limits.
Output: tables on stdout and bench/results/seat.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import tempfile
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import markdown_table, pcts, write_result  # noqa: E402
from speech.audio import pcm16_to_mulaw  # noqa: E402
from tests.conftest import API_KEY, LiveServer, free_port, make_settings  # noqa: E402

NUMBER = "+15550100001"
FRAME = 160
SILENCE = b"\xff" * FRAME
# between load rounds: the last round's post-call work (analysis, webhooks, rollup) ends before the next
SETTLE_S = 15.0


def noise_frames(count: int, seed: int, level: float = 6000) -> list[bytes]:
    """Frames that never repeat (each identifies itself): speech-loud, or quiet enough to be silence."""
    rng = np.random.default_rng(seed)
    pcm = rng.normal(0, level, count * FRAME).clip(-32000, 32000).astype(np.int16)
    audio = pcm16_to_mulaw(pcm)
    return [audio[i * FRAME : (i + 1) * FRAME] for i in range(count)]


class Line:
    """Twilio's side of one call: quiet unique frames every 20 ms (send times kept), agent frames timed."""

    def __init__(self, ws: Any, call_sid: str, cid: str) -> None:
        self.ws, self.call_sid, self.cid = ws, call_sid, cid
        self.sent_at: dict[bytes, float] = {}
        self.heard_at: dict[bytes, float] = {}
        self.frames: list[tuple[float, bytes]] = []
        self._quiet = iter(noise_frames(20000, seed=hash(call_sid) % 2**32, level=30))
        self._tasks = [asyncio.create_task(self._send()), asyncio.create_task(self._recv())]

    async def _send(self) -> None:
        tick = time.perf_counter()
        while True:
            frame = next(self._quiet)
            self.sent_at[frame] = time.perf_counter()
            payload = base64.b64encode(frame).decode()
            await self.ws.send(json.dumps({"event": "media", "media": {"payload": payload}}))
            tick += 0.02
            await asyncio.sleep(max(0.0, tick - time.perf_counter()))

    async def _recv(self) -> None:
        async for raw in self.ws:
            msg = json.loads(raw)
            if msg["event"] == "media":
                frame = base64.b64decode(msg["media"]["payload"])
                now = time.perf_counter()
                self.heard_at.setdefault(frame, now)
                self.frames.append((now, frame))
            elif msg["event"] == "mark":
                await self.ws.send(json.dumps({"event": "mark", "mark": msg["mark"]}))

    def last_frame_at(self) -> float:
        return self.frames[-1][0] if self.frames else 0.0

    async def quiet(self, seconds: float = 0.5) -> None:
        """Until the agent has sent nothing for ``seconds``."""
        while time.perf_counter() - self.last_frame_at() < seconds:
            await asyncio.sleep(0.05)

    async def first_frame_after(self, t0: float, timeout: float = 10.0) -> float:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.frames and self.frames[-1][0] >= t0:
                return next(at for at, _ in self.frames if at >= t0)
            await asyncio.sleep(0.002)
        raise TimeoutError("nothing heard")

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.ws.close()


class Listener:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.at: dict[str, dict[bytes, float]] = {"inbound": {}, "outbound": {}}
        self.outbound_times: list[float] = []  # the agent's frames are alike (a tone): matched by order
        self._task = asyncio.create_task(self._recv())

    async def _recv(self) -> None:
        try:
            async for raw in self.ws:
                if raw.startswith('{"event":"media"'):
                    msg, now = json.loads(raw), time.perf_counter()
                    self.at[msg["track"]].setdefault(base64.b64decode(msg["payload"]), now)
                    if msg["track"] == "outbound":
                        self.outbound_times.append(now)
        except websockets.ConnectionClosed:
            pass

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.ws.close()


async def make_agent(api: httpx.AsyncClient) -> None:
    agent = await api.post(
        "/v1/convai/agents",
        json={"name": "Seat", "system_prompt": "Hello.", "first_message": "Hi, this is Ava."},
    )
    await api.post(
        "/v1/convai/phone-numbers", json={"phone_number": NUMBER, "agent_id": agent.json()["agent_id"]}
    )


async def call(server: LiveServer, http: httpx.AsyncClient) -> Line:
    from tests.phone_line import open_stream

    sid = "CA" + uuid.uuid4().hex
    ws, cid = await open_stream(http, f"{server.base_url}/twiml/voice", sid, "+15550001111", NUMBER)
    line = Line(ws, sid, cid)
    await asyncio.sleep(0.5)
    await line.quiet()
    return line


async def listen(server: LiveServer, cid: str) -> Listener:
    url = f"{server.ws_url}/v1/convai/conversations/{cid}/listen"
    return Listener(await websockets.connect(url, additional_headers={"xi-api-key": API_KEY}, max_size=2**20))


def delays(sent: dict[bytes, float], got: dict[bytes, float]) -> list[float]:
    return [got[f] - t for f, t in sent.items() if f in got and f != SILENCE]


def bursts(times: list[float], gap_s: float = 0.15) -> list[list[float]]:
    out: list[list[float]] = []
    for t in times:
        if not out or t - out[-1][-1] > gap_s:
            out.append([])
        out[-1].append(t)
    return out


def burst_delays(at_caller: list[float], at_listener: list[float]) -> list[float]:
    """The agent's frames at the caller and at a listener, burst by burst (each ``say``), frame by frame."""
    got = []
    for heard, listened in zip(bursts(at_caller), bursts(at_listener), strict=False):
        if len(heard) == len(listened):
            got += [b - a for a, b in zip(heard, listened, strict=True)]
    return got


async def latencies(
    caller_side: LiveServer, seat_side: LiveServer, http: httpx.AsyncClient
) -> dict[str, Any]:
    """Listen delay (1 and 20 listeners), say → first word, take-over switch: the call on
    ``caller_side``, the supervisor on ``seat_side`` (the same server, or another instance)."""
    out: dict[str, Any] = {}
    async with seat_side.client() as api:
        line = await call(caller_side, http)
        cid = line.cid
        for count in (1, 20):
            listeners = [await listen(seat_side, cid) for _ in range(count)]
            await asyncio.sleep(1.0)
            mark = time.perf_counter()
            for _ in range(3):  # the agent speaks: its frames reach the caller and the listeners
                await api.post(
                    f"/v1/convai/conversations/{cid}/control", json={"type": "say", "text": "Okay."}
                )
                await asyncio.sleep(1.2)
            await asyncio.sleep(4.0)
            inbound = [d for x in listeners for d in delays(line.sent_at, x.at["inbound"])]
            heard = [t for t, _ in line.frames if t >= mark]
            outbound = [
                d for x in listeners for d in burst_delays(heard, [t for t in x.outbound_times if t >= mark])
            ]
            out[f"listen_inbound_{count}"] = pcts(inbound)
            out[f"listen_outbound_{count}"] = pcts(outbound)
            for x in listeners:
                await x.close()
        say: list[float] = []
        for _ in range(25):
            await line.quiet(0.4)
            posted = time.perf_counter()
            r = await api.post(
                f"/v1/convai/conversations/{cid}/control", json={"type": "say", "text": "Okay."}
            )
            assert r.status_code == 202, r.text
            say.append(await line.first_frame_after(posted) - posted)
        out["say"] = pcts(say)
        switch: list[float] = []
        voice = noise_frames(5000, seed=7, level=3000)
        url = f"{seat_side.ws_url}/v1/convai/conversations/{cid}/takeover"
        supervisor = await websockets.connect(url, additional_headers={"xi-api-key": API_KEY})

        async def stream() -> None:
            tick = time.perf_counter()
            for frame in voice:
                payload = base64.b64encode(frame).decode()
                await supervisor.send(json.dumps({"event": "media", "track": "outbound", "payload": payload}))
                tick += 0.02
                await asyncio.sleep(max(0.0, tick - time.perf_counter()))

        streaming = asyncio.create_task(stream())
        supervisor_frames = set(voice)
        for _ in range(10):
            await line.quiet(0.4)
            posted = time.perf_counter()
            await api.post(f"/v1/convai/conversations/{cid}/control", json={"type": "takeover"})
            while not any(at >= posted and f in supervisor_frames for at, f in line.frames[-50:]):
                await asyncio.sleep(0.005)
            first = next(at for at, f in line.frames if at >= posted and f in supervisor_frames)
            switch.append(first - posted)
            await asyncio.sleep(0.5)
            await api.post(f"/v1/convai/conversations/{cid}/control", json={"type": "release"})
            await asyncio.sleep(0.5)
        out["takeover"] = pcts(switch)
        streaming.cancel()
        await supervisor.close()
        await line.close()
    return out


@asynccontextmanager
async def one_instance(tmp: Path) -> Any:
    await asyncio.to_thread(tmp.mkdir, parents=True, exist_ok=True)
    async with LiveServer(make_settings(tmp, log_level="ERROR")) as server:
        yield server, server


@asynccontextmanager
async def two_instances(tmp: Path) -> Any:
    from tests.pg_server import PostgresServer, find_bin_dir

    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise SystemExit("PostgreSQL is not installed (Debian package postgresql)")
    pg = PostgresServer(bin_dir).start()
    for sub in ("a", "b"):
        await asyncio.to_thread((tmp / sub).mkdir, parents=True, exist_ok=True)
    try:
        url = await pg.create_database()
        ports = free_port(), free_port()
        shared = {
            "database_url": url,
            "multi_instance": True,
            "chroma_host": "127.0.0.1",
            "log_level": "ERROR",
        }
        a_settings = make_settings(
            tmp / "a", instance_id="app-a", instance_url=f"http://127.0.0.1:{ports[0]}", **shared
        )
        b_settings = make_settings(
            tmp / "b", instance_id="app-b", instance_url=f"http://127.0.0.1:{ports[1]}", **shared
        )
        async with LiveServer(a_settings, port=ports[0]) as a, LiveServer(b_settings, port=ports[1]) as b:
            yield a, b
    finally:
        pg.stop()


def latency_table(results: dict[str, dict[str, Any]]) -> str:
    rows = []
    labels = {
        "listen_inbound_1": "listen delay, caller track (wire → listener), 1 listener",
        "listen_inbound_20": "listen delay, caller track, 20 listeners on the call",
        "listen_outbound_1": "listen delay, agent track (at the caller → at the listener), 1 listener",
        "listen_outbound_20": "listen delay, agent track, 20 listeners",
        "say": "control `say` POST → first frame at the caller",
        "takeover": "control `takeover` POST → supervisor's audio at the caller",
    }
    for key, label in labels.items():
        cells = [label]
        for mode in results:
            p = results[mode][key]
            cells.append(f"{p['p50']} / {p['p95']} (n={p['n']})")
        rows.append(cells)
    return markdown_table(["ms, p50 / p95", *results], rows)


# ------------------------------------------------------------------ 100 calls, 20 listeners


async def attach_listeners(base_url: str, count: int, stop: asyncio.Event, stats: dict[str, int]) -> None:
    """Keep ``count`` listeners on live calls (calls end: listen to the next ones)."""
    active: dict[str, asyncio.Task[None]] = {}

    async def one(cid: str) -> None:
        url = base_url.replace("http", "ws") + f"/v1/convai/conversations/{cid}/listen"
        try:
            async with websockets.connect(url, additional_headers={"xi-api-key": bench_key()}) as ws:
                stats["connected"] += 1
                async for raw in ws:
                    stats["messages"] += 1
                    stats["bytes"] += len(raw)
                if ws.close_code == 4001:
                    stats["dropped"] += 1
        except (websockets.WebSocketException, OSError):
            pass

    async with httpx.AsyncClient(base_url=base_url, headers={"xi-api-key": bench_key()}, timeout=30) as api:
        while not stop.is_set():
            for cid in [c for c, t in active.items() if t.done()]:
                del active[cid]
            if len(active) < count:
                try:
                    live = (await api.get("/v1/convai/calls/live")).json()["calls"]
                except httpx.HTTPError:
                    live = []
                for c in live:
                    cid = c["conversation_id"]
                    if cid and cid not in active and len(active) < count:
                        active[cid] = asyncio.create_task(one(cid))
            await asyncio.sleep(0.2)
    for task in active.values():
        task.cancel()
    await asyncio.gather(*active.values(), return_exceptions=True)


async def listener_cost(calls: int, listeners: int, window_s: float) -> dict[str, Any]:
    """A fixed workload, so CPU time compares on a busy machine: ``calls`` calls held open (the callers'
    audio, the agent quiet) on ``bench.load``'s server, ``window_s`` without listeners, then ``window_s``
    with ``listeners`` spread over them. The server's CPU seconds (psutil) and loop lag in each window."""
    from bench import load

    out: dict[str, Any] = {"calls": calls, "listeners": listeners, "window_s": window_s}
    with tempfile.TemporaryDirectory(prefix="bench-seat-cost-") as tmp:
        server = load.Server("overhead", Path(tmp), calls)
        try:
            await server.ready()
            await load.prepare_agent(server.base_url)
            async with httpx.AsyncClient() as http:
                from tests.phone_line import open_stream

                lines = []
                for _ in range(calls):
                    sid = "CA" + uuid.uuid4().hex
                    url = f"{server.base_url}/twiml/voice"
                    ws, cid = await open_stream(http, url, sid, "+15550001111", load.TO_NUMBER)
                    lines.append(Line(ws, sid, cid))
                await asyncio.sleep(5.0)  # the greetings are over
                for key, count in (("without", 0), ("with", listeners)):
                    attached = []
                    for n in range(count):
                        cid = lines[n % calls].cid
                        url = server.base_url.replace("http", "ws") + f"/v1/convai/conversations/{cid}/listen"
                        ws = await websockets.connect(url, additional_headers={"xi-api-key": load.API_KEY})
                        attached.append(Listener(ws))
                    await asyncio.sleep(1.0)
                    await load.loop_lag(server, reset=True)
                    before = sum(load.tree_cpu_s(server.processes()).values())
                    received_before = sum(len(x.at["inbound"]) + len(x.outbound_times) for x in attached)
                    await asyncio.sleep(window_s)
                    cpu = sum(load.tree_cpu_s(server.processes()).values()) - before
                    received = sum(len(x.at["inbound"]) + len(x.outbound_times) for x in attached)
                    messages = received - received_before
                    lag = await load.loop_lag(server, reset=False)
                    out[key] = {
                        "cpu_s": round(cpu, 2),
                        "messages": messages,
                        "loop_lag_p99_ms": lag["p99_ms"],
                    }
                    for x in attached:
                        await x.close()
                for line in lines:
                    await line.close()
        finally:
            server.stop()
    extra = out["with"]["cpu_s"] - out["without"]["cpu_s"]
    out["us_per_message"] = round(extra * 1e6 / max(1, out["with"]["messages"]), 1)
    return out


def cost_text(cost: dict[str, Any]) -> str:
    w, o = cost["with"], cost["without"]
    per_s = cost["listeners"] * 100  # both tracks: 50 frames a second each
    return (
        f"Fixed workload ({cost['calls']} calls held open, the callers' audio flowing, {cost['window_s']} s "
        f"windows, `bench.load`'s server process): server CPU {o['cpu_s']} s without listeners, "
        f"{w['cpu_s']} s with {cost['listeners']} ({w['messages']} messages delivered): "
        f"**{cost['us_per_message']} µs of server CPU per message to a listener**, so {cost['listeners']} "
        f"listeners (both tracks, {per_s} messages a second) cost "
        f"~{round(per_s * cost['us_per_message'] / 1e4, 1)} % of one core. Loop lag p99 "
        f"{o['loop_lag_p99_ms']} → {w['loop_lag_p99_ms']} ms (the machine's load moves it as much)."
    )


def bench_key() -> str:
    from bench import load

    return load.API_KEY


async def load_comparison(calls: int, listeners: int) -> list[dict[str, Any]]:
    from bench import load

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-seat-load-") as tmp:
        server = load.Server("overhead", Path(tmp), calls)
        try:
            await server.ready()
            await load.prepare_agent(server.base_url)
            # a round not counted: the server's lazily loaded parts (the text end-of-turn model) load here
            await load.measure(server, "overhead", min(calls, 10))
            await asyncio.sleep(SETTLE_S)
            for with_listeners in (0, listeners, 0, listeners):  # alternated: the machine's noise shows
                stop, stats = asyncio.Event(), {"connected": 0, "messages": 0, "bytes": 0, "dropped": 0}
                attach = asyncio.create_task(attach_listeners(server.base_url, with_listeners, stop, stats))
                try:
                    row = await load.measure(server, "overhead", calls)
                except httpx.HTTPError as exc:  # the machine too busy to answer the bench in time
                    print(f"  {calls} calls, {with_listeners} listeners: failed ({type(exc).__name__})")
                    continue
                finally:
                    stop.set()
                    await attach
                row["server_cpu_s"] = round(row["server_cpu_pct"] * row["wall_s"] / 100, 2)
                row["listeners"], row["listen_stats"] = with_listeners, stats
                rows.append(row)
                print(
                    f"  {calls} calls, {with_listeners} listeners: jitter p99 {row['jitter_ms']['p99']} ms, "
                    f"loop lag p99 {row['loop_lag_ms']['p99_ms']} ms, errors {row['errors']}, "
                    f"lost {row['lost_turns']}, listen {stats}",
                    flush=True,
                )
                await asyncio.sleep(SETTLE_S)
        finally:
            server.stop()
    return rows


def listener_cost_us(rows: list[dict[str, Any]]) -> float | None:
    """The server's extra CPU per message to a listener: with listeners against without, paired in order."""
    without = [r for r in rows if not r["listeners"]]
    with_ = [r for r in rows if r["listeners"]]
    costs = [
        (w["server_cpu_s"] - o["server_cpu_s"]) * 1e6 / w["listen_stats"]["messages"]
        for w, o in zip(with_, without, strict=False)
        if w["listen_stats"]["messages"]
    ]
    return round(sum(costs) / len(costs), 1) if costs else None


def load_table(rows: list[dict[str, Any]]) -> str:
    from bench.load_report import LIMITS

    table = []
    for r in rows:
        s = r["listen_stats"]
        table.append(
            [
                r["calls"],
                r["listeners"],
                f"{r['jitter_ms']['p50']} / {r['jitter_ms']['p99']}",
                r["loop_lag_ms"]["p99_ms"],
                f"{r['v2v_ms']['p50']} / {r['v2v_ms']['p95']}",
                r["barge_in_ms"]["p95"],
                r["errors"],
                r["lost_turns"],
                f"{r['server_cpu_pct']} ({r['server_cpu_s']} s)",
                f"{s['connected']} sockets, {s['messages']} msgs, {s['dropped']} dropped"
                if r["listeners"]
                else "",
            ]
        )
    limits = (
        f"Limits (bench/load_report.py): jitter p99 ≤ {LIMITS['jitter_p99_ms']} ms, loop lag p99 ≤ "
        f"{LIMITS['loop_lag_p99_ms']} ms, barge-in p95 ≤ {LIMITS['barge_in_p95_ms']} ms, no errors or lost turns."
    )
    headers = [
        "calls",
        "listeners",
        "outbound jitter p50 / p99 ms",
        "loop lag p99 ms",
        "v2v p50 / p95 ms",
        "barge-in p95 ms",
        "errors",
        "lost turns",
        "server CPU % (s)",
        "listen sockets",
    ]
    cost = listener_cost_us(rows)
    per_message = (
        f"\n\nServer CPU per message to a listener (CPU with − without, ÷ messages): {cost} µs."
        if cost
        else ""
    )
    return markdown_table(headers, table) + "\n\n" + limits + per_message


async def main_async(args: argparse.Namespace) -> None:
    if args.cost_only:
        print(cost_text(await listener_cost(10, args.listeners, 15.0)))
        return
    saved = ROOT / "bench" / "results" / "seat.json"
    results: dict[str, dict[str, Any]] = {}
    if args.load_only:
        results = json.loads(saved.read_text())
    else:
        results = await measure_latencies()
        saved.write_text(json.dumps(results, indent=1))
    body = (
        "Command: `python -m bench.seat_bench` "
        f"({time.strftime('%Y-%m-%d')}). Echo providers (the engine's own cost); the service, the caller "
        "and the listeners in one process and event loop (two instances: both in it, on one PostgreSQL), "
        "so a second machine's network is not in the figures. Targets: listen p95 ≤ 300 ms, `say` → first "
        "word p95 ≤ 500 ms.\n\n" + latency_table(results)
    )
    if not args.skip_load:
        cost = await listener_cost(10, args.listeners, 15.0)
        print("  listener cost:", cost, flush=True)
        body += f"\n\n### What a listener costs the server\n\n{cost_text(cost)}"
        rows = await load_comparison(args.calls, args.listeners)
        body += (
            f"\n\n### {args.calls} live calls, with and without {args.listeners} listeners\n\n"
            "`bench.load`'s overhead profile (server in its own process, callers in worker processes), "
            "alternated without / with listeners attached from the bench process to live calls:\n\n"
            + load_table(rows)
        )
    write_result("seat", "Supervisor seat: listen, control, take-over", body)


async def measure_latencies() -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-seat-") as tmp:
        async with httpx.AsyncClient() as http:
            async with one_instance(Path(tmp) / "one") as (server, _):
                async with server.client() as api:
                    await make_agent(api)
                results["one instance (SQLite)"] = await latencies(server, server, http)
                print("  one instance:", results["one instance (SQLite)"], flush=True)
            async with two_instances(Path(tmp) / "two") as (a, b):
                async with a.client() as api:
                    await make_agent(api)
                results["two instances (PostgreSQL): call on A, seat on B"] = await latencies(a, b, http)
                print(
                    "  two instances:",
                    results["two instances (PostgreSQL): call on A, seat on B"],
                    flush=True,
                )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--skip-load", action="store_true", help="only the latencies")
    parser.add_argument(
        "--load-only", action="store_true", help="only the load comparison (latencies: seat.json)"
    )
    parser.add_argument("--cost-only", action="store_true", help="only what a listener costs (printed)")
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--listeners", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
