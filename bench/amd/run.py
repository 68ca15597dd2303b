"""Who answered, through the real call path: the labelled set played into outbound calls over the wire.

Each case is one outbound call on the service (``LiveServer``, the app as deployed): a ``SimulatedCaller``
plays the case's audio as Twilio's side of the Media Stream (20 ms mu-law frames in real time) and
plays out what the agent sends, as Twilio does (marks echoed when their audio has played). The words
come from the Deepgram stand-in, scripted with the case's sentences (each sentence is one utterance of
the audio; its final comes after the stand-in's endpointing, interims every 500 ms): recognition is
perfect here, the timing is the wire's. A person answers the agent's greeting once it is over
(``<id>.reply.ulaw``: their pause, then "Yeah, who's this?"), their office or noisy room on the line all
along (``<id>.room.ulaw``), and hangs up once the agent has answered them. The agent leaves a voicemail (``leave_message``); its TTS is the
echo provider (a tone as long as the text) — what matters is how much of it the far end played.

Per case: the decision stored on the conversation (``answered_by``, method, seconds from the stream's
start), the end reason, whether the voicemail message went to anything but a machine, and, for
machines, the share of the message the far end heard whole before the hang-up.

    python -m bench.amd.generate && python -m bench.amd.run [--parallel 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.amd.generate import DATA, GREETING_QUIET_S, LABELS, VERSION, sentences
from bench.report import RESULTS, machine, markdown_table
from providers.base import FRAME_BYTES, SAMPLE_RATE
from simulator.caller import SimulatedCaller, Utterance
from speech.audio import silence
from tests.conftest import LiveServer, make_settings
from tests.deepgram_standin import DeepgramStandIn

NUMBER, LEAD, KEY = "+15550100001", "+15550107777", "dg-bench"
STARTING = asyncio.Lock()
MESSAGE = (
    "Hi Dana, it's Ava from Orbit CRM. I'm calling about your team's weekly reporting. "
    "Call me back at five five five, zero one two three. Talk soon!"
)
AGENT = {
    "name": "Ava",
    "system_prompt": "You are Ava from Orbit CRM.",
    "first_message": "Hi {{customer_name}}, this is Ava from Orbit CRM.",
    "voicemail_action": "leave_message",
    "voicemail_message": MESSAGE,
}
VARIABLES = {"customer_name": "Dana", "company": "Orbit CRM", "call_reason": "your team's weekly reporting"}


def frames(audio: bytes) -> list[bytes]:
    padded = audio + b"\xff" * (-len(audio) % FRAME_BYTES)
    return [padded[i : i + FRAME_BYTES] for i in range(0, len(padded), FRAME_BYTES)]


async def message_seconds(settings: Any) -> float:
    from call.speaker import spoken_pieces
    from providers.registry import ProviderRegistry

    tts = ProviderRegistry(settings).tts()
    total = 0
    for piece in spoken_pieces(MESSAGE):
        async for chunk in tts.synthesize(piece):
            total += len(chunk)
    return total / SAMPLE_RATE


async def _call(
    server: LiveServer, script: list[Utterance], room: list[bytes] | None = None
) -> tuple[Any, dict, tuple]:
    from models import Conversation

    async with server.client() as client:
        agent_id = (await client.post("/v1/convai/agents", json=AGENT)).json()["agent_id"]
        async with server.runtime.db.session() as session:
            conversation = Conversation(
                agent_id=agent_id,
                direction="outbound",
                from_number=NUMBER,
                to_number=LEAD,
                dynamic_variables=VARIABLES,
            )
            session.add(conversation)
        caller = SimulatedCaller(
            server.base_url,
            "CA" + "b7" * 16,
            LEAD,
            script,
            from_number=NUMBER,
            webhook_path=f"/twiml/voice_outbound?conversation_id={conversation.id}",
            answers_first=True,
            room=room,
        )
        caller.REPLY_QUIET_S = GREETING_QUIET_S  # a person answers the greeting once it is over
        async with httpx.AsyncClient() as http:
            result = await caller.run(http)
        for _ in range(100):
            detail = (await client.get(f"/v1/convai/conversations/{conversation.id}")).json()
            if detail.get("call_state") == "ENDED":
                break
            await asyncio.sleep(0.1)
        async with server.runtime.db.session() as session:
            row = await session.get(Conversation, conversation.id)
            assert row is not None
            at_s = (
                (row.answered_by_at - row.started_at).total_seconds()
                if row.answered_by_at and row.started_at
                else None
            )
            decided = row.answered_by, row.answered_by_method, at_s, row.end_reason
    return result, detail, decided


async def run_case(case: dict, workdir: Path, message_s: float) -> dict:

    audio = (DATA / f"{case['id']}.ulaw").read_bytes()
    said = sentences(case["text"]) * (2 if case.get("style") == "twice" else 1)
    # the far end stays on the line until the agent is done (a mailbox records, a screener waits)
    tail = {"machine": message_s + 12, "screener": 7.0, "ivr": 5.0}.get(case["label"], 0.0)
    script = [Utterance(frames(audio + silence(int(tail * 1000))))]
    room = None
    if case["label"] == "human":  # hello; the greeting; their answer to it; then they hang up
        script.append(Utterance(frames((DATA / f"{case['id']}.reply.ulaw").read_bytes())))
        said += sentences(case["reply"])
        if (room_file := DATA / f"{case['id']}.room.ulaw").exists():
            room = frames(room_file.read_bytes())
    (workdir / case["id"]).mkdir(parents=True, exist_ok=True)
    async with DeepgramStandIn(KEY, transcripts=said) as deepgram:
        settings = make_settings(
            workdir / case["id"],
            stt_provider="deepgram",
            deepgram_api_key=KEY,
            deepgram_url=deepgram.url,
            screener_wait_sec=3.0,
        )
        server = LiveServer(settings)
        async with STARTING:  # one service starting at a time: startups (migrations) must not overlap
            await server.__aenter__()
        try:
            result, detail, decided = await _call(server, script, room)
        finally:
            await server.__aexit__(None, None, None)
    agent_said = [t["text"] for t in detail.get("transcript", []) if t["role"] == "agent"]
    return {
        **case,
        "answered_by": decided[0],
        "method": decided[1],
        "at_s": round(decided[2], 2) if decided[2] is not None else None,
        "end_reason": decided[3],
        "message_left": MESSAGE in agent_said,
        "heard_share": round(result.last_reply_heard_s / message_s, 3) if MESSAGE in agent_said else None,
        "error": result.error,
    }


def _pct(values: list[float], q: float) -> str:
    return f"{float(np.percentile(values, q)):.2f}" if values else "-"


def report(rows: list[dict], message_s: float, command: str) -> list[str]:
    table = []
    for label in LABELS:
        cases = [r for r in rows if r["label"] == label]
        right = [r for r in cases if r["answered_by"] == label]
        as_machine = [r for r in cases if r["answered_by"] == "machine"]
        times = [r["at_s"] for r in right if r["at_s"] is not None]
        wrong = {}
        for r in cases:
            if r["answered_by"] != label:
                wrong[r["answered_by"] or "none"] = wrong.get(r["answered_by"] or "none", 0) + 1
        left = [r for r in cases if r["message_left"]]
        heard = [r["heard_share"] for r in left]
        table.append(
            [
                label,
                len(cases),
                f"{len(right)}/{len(cases)} ({100 * len(right) / max(1, len(cases)):.0f}%)",
                ", ".join(f"{k} {v}" for k, v in sorted(wrong.items())) or "0",
                f"{len(as_machine)}/{len(cases)}",
                f"{_pct(times, 50)} / {_pct(times, 95)}",
                f"{len(left)}/{len(cases)}",
                f"{min(heard) * 100:.1f}% / {sum(h >= 0.99 for h in heard)} of {len(heard)}"
                if heard
                else "-",
            ]
        )
    return [
        "## Who answered: people, voicemail, screeners, menus (through the call path)",
        "",
        f"Machine: {machine()} (shared with other work while it ran). {len(rows)} outbound calls, one per "
        "case of the labelled set (`bench/amd/generate.py`: voices Piper and espeak-ng, 8 kHz mu-law), "
        "each played by a simulated Twilio side over the Media Stream WebSocket to the service. Words: the "
        "Deepgram stand-in scripted with each case's sentences (perfect recognition, the wire's timing). "
        "People answer the agent's greeting (\"Yeah, who's this?\") 0.5-2 s after it ended, three of them "
        "2.5 s, their office or noisy room on the line all along, and hang up once the agent answered them. "
        f"The voicemail message is {message_s:.2f} s of audio (echo TTS); the heard share is what the far "
        "end played whole before the hang-up, over that length. A machine's time to decide is that of its "
        "last decision (a revision: the beep, the words, or the quiet after the agent's greeting).",
        "",
        f"Command: `{command}`",
        "",
        markdown_table(
            [
                "answered by",
                "cases",
                "decided right",
                "decided wrong (as)",
                'decided "machine"',
                "time to decide p50 / p95 s",
                "voicemail message left",
                "message heard: least / whole (≥ 99%)",
            ],
            table,
        ),
        "",
        "Targets: 0 people called machines; ≥ 95% of machines and ≥ 90% of screeners recognised; every "
        "message heard whole; no message left to anything but a machine.",
        "",
        "<details><summary>Every case</summary>",
        "",
        markdown_table(
            ["case", "label", "kind", "decided", "method", "at s", "end reason", "message heard"],
            [
                [
                    r["id"],
                    r["label"],
                    r.get("style") or f"{r.get('greeting', '')} {r.get('beep', '')}".strip() or "-",
                    r["answered_by"] or "-",
                    r["method"] or "-",
                    r["at_s"] if r["at_s"] is not None else "-",
                    r["end_reason"] or "-",
                    f"{r['heard_share'] * 100:.1f}%" if r["heard_share"] is not None else "-",
                ]
                for r in rows
            ],
        ),
        "",
        "</details>",
    ]


async def amain(parallel: int, only: str | None) -> list[dict]:
    labels = json.loads((DATA / "labels.json").read_text())
    if labels.get("version") != VERSION:
        raise SystemExit("the labelled set is out of date: python -m bench.amd.generate")
    cases = [c for c in labels["cases"] if only is None or c["label"] == only]
    gate = asyncio.Semaphore(parallel)
    with tempfile.TemporaryDirectory() as tmp:
        message_s = await message_seconds(make_settings(Path(tmp)))

        async def one(case: dict) -> dict:
            async with gate:
                row = await run_case(case, Path(tmp), message_s)
                print(
                    f"{row['id']}: {row['answered_by']} ({row['method']}, {row['at_s']} s) "
                    f"end {row['end_reason']} heard {row['heard_share']}",
                    flush=True,
                )
                return row

        rows = await asyncio.gather(*(one(c) for c in cases))
    return [{**r, "message_s": message_s} for r in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--parallel", type=int, default=4, help="calls at once")
    parser.add_argument("--only", choices=LABELS, help="one class")
    args = parser.parse_args()
    rows = asyncio.run(amain(args.parallel, args.only))
    command = "python -m bench.amd.generate && python -m bench.amd.run" + (
        f" --parallel {args.parallel}" if args.parallel != 4 else ""
    )
    lines = report(rows, rows[0]["message_s"] if rows else 0.0, command)
    print("\n".join(lines))
    if args.only is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "amd.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
