"""Try the product without a phone: ``python -m simulator call --agent ID --say "…" --say "…"``.

``python -m simulator test <file.json|agent_id> [--mode text|audio] [--repeat K]`` runs scenario tests
(see ``simulator/scenario_cli.py``).

Plays Twilio's part against a running server: a signed inbound webhook, the Media Stream from its
TwiML, the caller's speech in real time (synthesized from ``--say`` by the local TTS, or read from
``--wav``), the agent's audio played out like Twilio does (marks echoed when played, buffer dropped on
``clear``). Prints the transcript live with each reply's latency and records both sides to a stereo WAV.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import time
import uuid
import wave
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from simulator import scenario_cli
from simulator.caller import SimulatedCaller, Utterance, frames_of
from speech.audio import pcm16_to_mulaw, resample_to_8k_mulaw
from storage.recordings import CallRecorder


def api_key(explicit: str | None) -> str:
    """``--api-key``, else $XI_API_KEY, else the key file a server with no API_KEYS generated."""
    if explicit:
        return explicit
    if os.environ.get("XI_API_KEY"):
        return os.environ["XI_API_KEY"]
    for candidate in (os.environ.get("API_KEY_FILE", ""), ".api_key"):
        if candidate and Path(candidate).is_file():
            return Path(candidate).read_text().strip()
    keys = os.environ.get("API_KEYS", "")
    return keys.split(",")[0].strip()


def wav_to_mulaw(path: str) -> bytes:
    with wave.open(path, "rb") as wav:
        if wav.getsampwidth() != 2:
            raise SystemExit(f"{path}: only 16-bit PCM WAV files are supported")
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
        if wav.getnchannels() > 1:
            pcm = pcm.reshape(-1, wav.getnchannels())[:, 0].copy()
        rate = wav.getframerate()
    if rate == 8000:
        return pcm16_to_mulaw(pcm)
    return resample_to_8k_mulaw(pcm.astype(np.float32) / 32768.0, rate)


async def caller_script(args: argparse.Namespace) -> list[Utterance]:
    from simulator.speech import synthesize_caller

    script: list[Utterance] = []
    for kind, value in args.turns:
        if kind == "say":
            audio = await asyncio.to_thread(synthesize_caller, value, voice=args.voice)
            script.append(Utterance(frames_of(audio)))
        elif kind == "wav":
            script.append(Utterance(frames_of(await asyncio.to_thread(wav_to_mulaw, value))))
        else:
            script.append(Utterance([], dtmf=value))
    if args.barge_in_after is not None and script:
        script[-1].barge_in_after_s = args.barge_in_after
    return script


async def number_for_agent(api: httpx.AsyncClient, agent_id: str) -> str:
    """The agent's inbound number; an agent without one gets a test number (said out loud, not hidden)."""
    listed = await api.get("/v1/convai/phone-numbers", params={"agent_id": agent_id})
    if listed.status_code == 401:
        raise SystemExit("the server refused the API key: pass --api-key or set XI_API_KEY")
    listed.raise_for_status()
    numbers = listed.json().get("phone_numbers", [])
    if numbers:
        return numbers[0]["phone_number"]
    digits = int(hashlib.sha256(agent_id.encode()).hexdigest(), 16) % 10**7
    number = f"+1555{digits:07d}"
    created = await api.post(
        "/v1/convai/phone-numbers", json={"phone_number": number, "agent_id": agent_id, "label": "simulator"}
    )
    if created.status_code == 404:
        raise SystemExit(f"no agent {agent_id!r} on this server")
    created.raise_for_status()
    print(f"simulator: attached test number {number} to agent {agent_id}", file=sys.stderr)
    return number


def describe_turn(turn: dict[str, Any]) -> str:
    at = (turn.get("start_ms") or 0) / 1000
    who = "agent " if turn["role"] == "agent" else "caller"
    line = f"[{at:6.1f}s] {who}: {turn['text']}"
    if turn.get("interrupted"):
        line += "  (interrupted)"
    v2v = turn.get("voice_to_voice_ms")
    if v2v is not None:
        parts = []
        end = turn.get("user_speech_end_ms")
        for label, key in (
            ("stt", "stt_final_ms"),
            ("llm", "llm_first_token_ms"),
            ("tts", "tts_first_audio_ms"),
        ):
            if end is not None and turn.get(key) is not None:
                parts.append(f"{label} +{turn[key] - end:.0f}")
        line += f"\n{'':10}voice-to-voice {v2v:.0f} ms ({', '.join(parts)})"
    return line


async def print_transcript_live(api: httpx.AsyncClient, conversation_id: str, done: asyncio.Event) -> None:
    shown: set[int] = set()
    while True:
        finished = done.is_set()
        response = await api.get(f"/v1/convai/conversations/{conversation_id}")
        if response.status_code == 200:
            for turn in response.json()["transcript"]:
                if turn["seq"] not in shown and turn["text"]:
                    shown.add(turn["seq"])
                    print(describe_turn(turn), flush=True)
        if finished:
            return
        try:
            await asyncio.wait_for(done.wait(), 0.5)
        except TimeoutError:
            pass


async def call(args: argparse.Namespace) -> int:
    headers = {"xi-api-key": api_key(args.api_key)}
    async with httpx.AsyncClient(base_url=args.url, headers=headers, timeout=30) as api:
        to_number = args.to or await number_for_agent(api, args.agent)
        script = await caller_script(args)
        call_sid = "CA" + uuid.uuid4().hex
        recorder = (
            CallRecorder(Path(args.record).parent, Path(args.record).stem, append_legs=False)
            if args.record
            else None
        )
        caller = SimulatedCaller(
            args.url,
            call_sid,
            to_number,
            script,
            auth_token=args.auth_token or os.environ.get("TWILIO_AUTH_TOKEN", ""),
            public_url=args.public_url or os.environ.get("PUBLIC_URL") or args.url,
            recorder=recorder,
        )
        done = asyncio.Event()
        started = time.perf_counter()
        run = asyncio.create_task(caller.run(api))
        while not run.done() and not caller.result.conversation_id:  # noqa: ASYNC110 (set by the webhook step)
            await asyncio.sleep(0.05)
        printer = None
        if caller.result.conversation_id:
            print(f"call {call_sid} · conversation {caller.result.conversation_id}", flush=True)
            printer = asyncio.create_task(print_transcript_live(api, caller.result.conversation_id, done))
        result = await run
        await asyncio.sleep(1.0)  # the last turn is written when its audio has played
        done.set()
        if printer is not None:
            await printer
        if result.error:
            print(f"call failed: {result.error}", file=sys.stderr)
            return 1
        v2v = sorted(result.voice_to_voice_s)
        if result.hung_up_by_agent:
            print("the agent hung up")
        print(
            f"\n{result.turns_sent} caller turns in {time.perf_counter() - started:.1f} s;"
            + (f" voice-to-voice at the caller: median {v2v[len(v2v) // 2] * 1000:.0f} ms" if v2v else "")
        )
        if recorder is not None:
            path = await recorder.save()
            print(f"recording (caller left, agent right): {path}")
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("call", help="hold one call with an agent, as Twilio would")
    who = c.add_mutually_exclusive_group(required=True)
    who.add_argument("--agent", help="agent id (its phone number is used, or a test number is attached)")
    who.add_argument("--to", help="the dialled number (E.164) of an agent's phone number")
    c.add_argument(
        "--say",
        dest="turns",
        action="append",
        type=lambda v: ("say", v),
        default=[],
        help="a caller turn, spoken by the local TTS (repeatable, in order)",
    )
    c.add_argument(
        "--wav",
        dest="turns",
        action="append",
        type=lambda v: ("wav", v),
        help="a caller turn read from a 16-bit WAV file",
    )
    c.add_argument(
        "--dtmf",
        dest="turns",
        action="append",
        type=lambda v: ("dtmf", v),
        help="a caller turn of keypad digits, e.g. 1 or 42#",
    )
    c.add_argument(
        "--barge-in-after",
        type=float,
        default=None,
        help="speak the last turn this many seconds into the agent's previous reply",
    )
    c.add_argument("--voice", default="piper", help="caller voice: piper or espeak:<voice>")
    c.add_argument("--url", default="http://127.0.0.1:9001", help="the server")
    c.add_argument("--public-url", default=None, help="PUBLIC_URL of the server, for the webhook signature")
    c.add_argument("--api-key", default=None, help="xi-api-key (default: $XI_API_KEY or ./.api_key)")
    c.add_argument("--auth-token", default=None, help="TWILIO_AUTH_TOKEN to sign the webhook with")
    c.add_argument("--record", default="simulator-call.wav", help="stereo WAV of the call ('' to skip)")
    scenario_cli.add_parser(sub)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.command == "test":
        return scenario_cli.main(args, api_key(args.api_key))
    return asyncio.run(call(args))


if __name__ == "__main__":
    raise SystemExit(main())
