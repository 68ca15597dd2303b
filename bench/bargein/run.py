"""Run the labelled set over the real path and report barge-in and end-of-turn figures.

A server process on the shipped defaults (``uvicorn main:app``; embedded Whisper STT, the instant
LLM/TTS so the agent's speech is long and steady) takes one call per case through the Media Streams
WebSocket. The client plays Twilio: 20 ms frames in real time, marks echoed as played.

- while-agent-speaks cases (interrupt, backchannel, noise, silence) start 1.5 s into a long greeting;
  ``paused`` = a ``clear`` arrived; ``cut off`` = the stored greeting turn is marked interrupted (the
  agent stopped for good). Detection = cut off on an interruption; false interruption = cut off on
  anything else. Latency = first speech frame sent → ``clear`` received.
- turn cases: response gap = last speech frame sent (RMS > ``SPEECH_RMS``) → first agent frame received.
- pause cases: premature = the agent starts answering before the caller's second half has ended.

    python -m bench.bargein.run [--concurrency 2]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import websockets

from bench.bargein.generate import DATA, SET_VERSION, generate
from bench.load import API_KEY, Server
from bench.report import markdown_table, pcts, write_result
from speech.audio import frame_energy

LONG_GREETING = (
    "Hi, this is Alex from Acme Analytics, calling about the webinar your team joined last week. "
    "I wanted to share how other sales teams use our dashboards to spend less time on reports."
)
SHORT_GREETING = "Hi, this is Alex."
BARGE_AT_S = 1.5
FRAME = 160
SILENCE = b"\xff" * FRAME
SPEECH_RMS = 200.0  # as the simulator trims an utterance (simulator.caller.frames_of)


async def make_agent(api: httpx.AsyncClient, greeting: str, number: str) -> None:
    agent = await api.post(
        "/v1/convai/agents",
        json={"name": "Barge-in bench", "system_prompt": "You are Alex.", "first_message": greeting},
    )
    agent.raise_for_status()
    created = await api.post(
        "/v1/convai/phone-numbers", json={"phone_number": number, "agent_id": agent.json()["agent_id"]}
    )
    created.raise_for_status()


class CaseCall:
    """One call, one case: Twilio's side with exact timestamps."""

    def __init__(self, base_url: str, number: str, case: dict, audio: bytes, index: int) -> None:
        self.base_url, self.number, self.case, self.audio = base_url, number, case, audio
        self.call_sid = f"CA{index:032x}"
        self.stream_sid = "MZ" + self.call_sid[2:]
        self.first_agent_frame: float | None = None
        self.agent_frames: list[float] = []
        self.clears: list[float] = []
        self.conversation_id = ""

    async def run(self, http: httpx.AsyncClient) -> dict:
        twiml = (
            await http.post(
                f"{self.base_url}/twiml/voice",
                data={"CallSid": self.call_sid, "From": "+15550001111", "To": self.number},
            )
        ).text
        url = re.search(r'<Stream url="([^"]+)"', twiml)
        if url is None:
            return {"error": "no stream"}
        params = dict(re.findall(r'<Parameter name="([^"]+)" value="([^"]*)"', twiml))
        self.conversation_id = params["conversation_id"]
        async with websockets.connect(url.group(1), compression=None) as ws:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            await ws.send(
                json.dumps(
                    {
                        "event": "start",
                        "streamSid": self.stream_sid,
                        "start": {
                            "streamSid": self.stream_sid,
                            "callSid": self.call_sid,
                            "customParameters": params,
                            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                        },
                    }
                )
            )
            receiver = asyncio.create_task(self._receive(ws))
            try:
                result = await self._drive(ws)
            finally:
                receiver.cancel()
            await ws.send(json.dumps({"event": "stop", "streamSid": self.stream_sid}))
        return result

    async def _receive(self, ws: websockets.ClientConnection) -> None:
        async for raw in ws:
            now = time.perf_counter()
            msg = json.loads(raw)
            if msg["event"] == "media":
                self.agent_frames.append(now)
                self.first_agent_frame = self.first_agent_frame or now
            elif msg["event"] == "mark":
                await ws.send(
                    json.dumps({"event": "mark", "streamSid": self.stream_sid, "mark": msg["mark"]})
                )
            elif msg["event"] == "clear":
                self.clears.append(now)

    async def _play(self, ws: websockets.ClientConnection, frames: list[bytes]) -> tuple[float, float]:
        """Send frames on a 20 ms clock; returns (first frame sent, last frame sent) times."""
        first = last = 0.0
        next_tick = time.perf_counter()
        for k, frame in enumerate(frames):
            payload = base64.b64encode(frame).decode()
            await ws.send(
                json.dumps(
                    {
                        "event": "media",
                        "streamSid": self.stream_sid,
                        "media": {"track": "inbound", "payload": payload},
                    }
                )
            )
            last = time.perf_counter()
            first = first or last
            next_tick += 0.02
            await asyncio.sleep(max(0.0, next_tick - time.perf_counter()))
            del k
        return first, last

    async def _silence_until(self, ws: websockets.ClientConnection, predicate, timeout: float) -> None:  # type: ignore[no-untyped-def]
        deadline = time.perf_counter() + timeout
        while not predicate() and time.perf_counter() < deadline:
            await self._play(ws, [SILENCE] * 5)

    async def _drive(self, ws: websockets.ClientConnection) -> dict:
        frames = [self.audio[i : i + FRAME] for i in range(0, len(self.audio), FRAME)]
        frames[-1] = frames[-1].ljust(FRAME, b"\xff")
        label = self.case["label"]
        await self._silence_until(ws, lambda: self.first_agent_frame is not None, 20)
        if self.first_agent_frame is None:
            return {"error": "no greeting"}
        if label in ("turn", "pause"):
            # Let the short greeting finish, then speak.
            await self._silence_until(ws, lambda: time.perf_counter() - self.agent_frames[-1] > 0.6, 10)
            frames_before = len(self.agent_frames)
            if label == "pause":
                cut = self.case["first_part_ms"] // 20 + self.case["pause_ms"] // 20
                await self._play(ws, frames[:cut])
                premature_window_start = len(self.agent_frames)
                _, end = await self._play(ws, frames[cut:])
                premature = (
                    len(self.agent_frames) > premature_window_start or len(self.agent_frames) > frames_before
                )
                await self._silence_until(ws, lambda: len(self.agent_frames) > frames_before, 6)
                return {"premature": premature}
            # The gap starts at the last frame with speech in it: a case's file may end in up to ~0.3 s
            # of silence, which would otherwise count as the agent's time.
            spoken = max((k for k, f in enumerate(frames) if frame_energy(f) > SPEECH_RMS), default=0)
            _, end = await self._play(ws, frames[: spoken + 1])
            await self._silence_until(ws, lambda: len(self.agent_frames) > frames_before, 8)
            answered = [t for t in self.agent_frames[frames_before:] if t > end]
            return {"gap_s": answered[0] - end if answered else None}
        # While the agent speaks: wait until BARGE_AT_S into the greeting, then play the case.
        await self._silence_until(ws, lambda: time.perf_counter() - self.first_agent_frame >= BARGE_AT_S, 5)
        first_sent, _ = await self._play(ws, frames)
        onset = first_sent + self.case.get("speech_onset_ms", 0) / 1000  # words start after a noise bed
        await self._play(ws, [SILENCE] * 100)  # 2 s for the engine to decide (and to resume)
        # Stay on the line until the agent is done (the greeting finished, or its answer to the
        # interruption did): hanging up earlier would store the greeting as cut short either way.
        await self._silence_until(ws, lambda: time.perf_counter() - self.agent_frames[-1] > 1.5, 30)
        clear_after = [t for t in self.clears if t >= first_sent - 0.02]
        return {"paused": bool(clear_after), "latency_s": clear_after[0] - onset if clear_after else None}


async def stored_greeting(api: httpx.AsyncClient, conversation_id: str) -> dict | None:
    for _ in range(50):
        body = (await api.get(f"/v1/convai/conversations/{conversation_id}")).json()
        if body.get("call_state") == "ENDED":
            greetings = [t for t in body["transcript"] if t["kind"] == "greeting"]
            return greetings[0] if greetings else None
        await asyncio.sleep(0.1)
    return None


async def run_cases(
    server: Server, cases: list[dict], concurrency: int, turn_concurrency: int = 1
) -> list[dict]:
    semaphore = asyncio.Semaphore(concurrency)
    results: list[dict] = []
    async with httpx.AsyncClient(
        base_url=server.base_url, headers={"xi-api-key": API_KEY}, timeout=30
    ) as api:
        await make_agent(api, LONG_GREETING, "+15550002001")
        await make_agent(api, SHORT_GREETING, "+15550002002")

        async def one(index: int, case: dict) -> None:
            number = "+15550002002" if case["label"] in ("turn", "pause") else "+15550002001"
            audio = (DATA / f"{case['id']}.ulaw").read_bytes()
            async with semaphore:
                call = CaseCall(server.base_url, number, case, audio, index + 1)
                try:
                    outcome = await asyncio.wait_for(call.run(api), 60)
                except Exception as exc:
                    outcome = {"error": type(exc).__name__}
                over_speech = case["label"] not in ("turn", "pause")  # "cut off" is about those alone
                greeting = (
                    await stored_greeting(api, call.conversation_id)
                    if call.conversation_id and over_speech
                    else None
                )
                outcome["cut_off"] = bool(greeting and greeting["interrupted"])
                results.append({**case, **outcome})
                print(
                    f"  {case['id']:<24} {json.dumps({k: v for k, v in outcome.items() if v is not None})}",
                    flush=True,
                )

        # Cases over the agent's speech run `concurrency` at a time; turn-taking cases run alone, so the
        # response gap measures one call's turn, not the queue for the shared embedded STT.
        over_speech = [(i, c) for i, c in enumerate(cases) if c["label"] not in ("turn", "pause")]
        await asyncio.gather(*(one(i, c) for i, c in over_speech))
        semaphore = asyncio.Semaphore(turn_concurrency)
        turn_taking = [(i, c) for i, c in enumerate(cases) if c["label"] in ("turn", "pause")]
        await asyncio.gather(*(one(i, c) for i, c in turn_taking))
        metrics = (await api.get("/metrics")).text
    results.append({"label": "_metrics", "id": "_metrics", "text": metrics})
    return results


def turn_model_figures(results: list[dict]) -> str:
    """Decisions of the turn-end model over the run, from the server's /metrics histogram."""
    text = next((r["text"] for r in results if r["label"] == "_metrics"), "")
    buckets = [
        (float(le), float(v))
        for le, v in re.findall(r'ai_sdr_turn_model_seconds_bucket\{le="([0-9.e+-]+)"\} ([0-9.e+]+)', text)
    ]
    count = re.search(r"ai_sdr_turn_model_seconds_count ([0-9.e+]+)", text)
    total = re.search(r"ai_sdr_turn_model_seconds_sum ([0-9.e+]+)", text)
    if not count or not float(count.group(1)):
        return "Turn-end model: no decisions (TURN_MODEL=off, or not loaded)."
    n = float(count.group(1))

    def quantile(q: float) -> str:
        below = next((le for le, v in buckets if v >= q * n), None)
        return f"≤ {below * 1000:.0f} ms" if below is not None else "> 1 s"

    turns = sum(1 for r in results if r["label"] in ("turn", "pause") and "error" not in r)
    return (
        f"Turn-end model: {n:.0f} decisions over {turns} turn-taking calls ({n / max(turns, 1):.1f} per call, "
        "a paused turn has two pauses to judge); CPU per decision mean "
        f"{float(total.group(1)) / n * 1000:.0f} ms (p50 {quantile(0.5)}, p95 {quantile(0.95)}, histogram buckets)."
        if total
        else ""
    )


def report(results: list[dict], settings_line: str) -> str:
    figures = turn_model_figures(results)
    results = [r for r in results if r["label"] != "_metrics"]

    def of(label: str) -> list[dict]:
        return [r for r in results if r["label"] == label and "error" not in r]

    interrupts, noises = of("interrupt"), of("noise")
    # (row, cases, what "cut off" means for them)
    groups = [
        ("interrupt", interrupts, "detection"),
        ("… of which under noise (15 dB SNR)", [r for r in interrupts if r.get("noise")], "detection"),
        ("backchannel", of("backchannel"), "false interruptions"),
        ("noise", noises, "false interruptions"),
        ("… of which held out", [r for r in noises if r["id"].endswith("held_out")], "false interruptions"),
        ("silence", of("silence"), "false interruptions"),
    ]
    rows = []
    for name, items, measure in groups:
        cut = sum(r["cut_off"] for r in items)
        paused = sum(r.get("paused", False) for r in items)
        rate = f"{cut / len(items):.0%}" if items else "n/a"
        rows.append([name, len(items), f"{paused}", f"{cut}", f"{measure} {rate}"])
    latency = pcts([r["latency_s"] for r in of("interrupt") if r.get("latency_s") is not None])
    gaps = pcts([r["gap_s"] for r in of("turn") if r.get("gap_s") is not None])
    pauses = of("pause")
    premature = sum(r["premature"] for r in pauses)
    errors = [r for r in results if "error" in r]
    by_case = markdown_table(
        ["case", "paused", "cut off", "onset→clear ms"],
        [
            [
                r["id"],
                r.get("paused", ""),
                r["cut_off"],
                round(r["latency_s"] * 1000) if r.get("latency_s") is not None else "",
            ]
            for r in sorted(results, key=lambda r: r["id"])
            if r["label"] not in ("turn", "pause")
        ],
    )
    return (
        f"Shipped defaults: {settings_line}. Caller audio starts {BARGE_AT_S} s into the agent's greeting.\n"
        "`paused` = the agent went quiet (Twilio `clear`); `cut off` = the agent stopped for good and its turn "
        "was stored as interrupted (a pause without words resumes the agent).\n\n"
        + markdown_table(["case type", "cases", "paused", "cut off", "rate"], rows)
        + "\n\n"
        + markdown_table(
            ["measure", "n", "p50 ms", "p95 ms", "target"],
            [
                [
                    "speech onset → clear (interruptions)",
                    latency["n"],
                    latency["p50"],
                    latency["p95"],
                    "p95 ≤ 200 ms",
                ],
                ["response gap after the caller stops", gaps["n"], gaps["p50"], gaps["p95"], ""],
            ],
        )
        + f"\n\nPremature answers on mid-sentence pauses (0.8–1.5 s): {premature}/{len(pauses)}"
        + f"\n\n{figures}"
        + "\n\n"
        + markdown_table(
            ["turn-taking case", "voice", "noise", "gap ms / premature"],
            [
                [
                    r["id"],
                    r.get("voice", ""),
                    r.get("noise") or "",
                    round(r["gap_s"] * 1000) if r.get("gap_s") is not None else r.get("premature", ""),
                ]
                for r in sorted(results, key=lambda r: r["id"])
                if r["label"] in ("turn", "pause")
            ],
        )
        + (
            f"\n\nCases that failed to run: {len(errors)} ({', '.join(r['id'] for r in errors)})"
            if errors
            else ""
        )
        + "\n\n<details><summary>Every case</summary>\n\n"
        + by_case
        + "\n\n</details>"
    )


async def main_async(concurrency: int, labels: set[str] | None = None, turn_concurrency: int = 1) -> None:
    from config import Settings

    labels_path = DATA / "labels.json"
    cases = json.loads(labels_path.read_text()) if labels_path.exists() else []
    if not cases or any(c.get("set_version") != SET_VERSION for c in cases):
        cases = generate()
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    settings_line = (
        f"INTERRUPT_MIN_ENERGY={defaults.interrupt_min_energy:g}, "
        f"INTERRUPT_BASELINE_FACTOR={defaults.interrupt_baseline_factor:g}, "
        f"INTERRUPT_MIN_SPEECH_MS={defaults.interrupt_min_speech_ms}, "
        f"INTERRUPT_DEBOUNCE_MS={defaults.interrupt_debounce_ms}, "
        f"SILENCE_THRESHOLD_SEC={defaults.silence_threshold_sec:g}, TURN_MODEL={defaults.turn_model}, "
        "STT local Whisper base"
    )
    if labels:
        cases = [c for c in cases if c["label"] in labels]
    with tempfile.TemporaryDirectory() as tmp:
        server = Server("bargein", Path(tmp), max_calls=concurrency)
        try:
            await server.ready()
            results = await run_cases(server, cases, concurrency, turn_concurrency)
        finally:
            server.stop()
            if keep_log := os.environ.get("BENCH_SERVER_LOG"):  # e.g. with BENCH_SERVER_LOG_LEVEL=INFO
                shutil.copy(Path(tmp) / "server.log", keep_log)
    name = "bargein" if not labels else f"bargein_{'_'.join(sorted(labels))}_{defaults.turn_model}"
    write_result(name, "Barge-in and end of turn (labelled set)", report(results, settings_line))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--labels", default="", help="only these case labels, e.g. turn,pause")
    parser.add_argument(
        "--turn-concurrency", type=int, default=1, help="turn-taking calls at once (1: each alone)"
    )
    args = parser.parse_args()
    labels = {x.strip() for x in args.labels.split(",") if x.strip()} or None
    asyncio.run(main_async(args.concurrency, labels, args.turn_concurrency))


if __name__ == "__main__":
    main()
