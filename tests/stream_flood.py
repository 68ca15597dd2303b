"""Malformed Media Streams traffic for the fault suite, run in a process of its own (so its work does not
skew the timing of the call it runs beside):

    python -m tests.stream_flood WS_BASE CALL_SID MESSAGES SECONDS

opens sockets to ``WS_BASE/ws/voice/…`` (the live call's SID among others) and sends MESSAGES bad
messages spread over about SECONDS: bad JSON, wrong types, huge payloads, binary frames, unknown events,
media before start, bad base64, absurd sequence numbers, and starts with bad or missing tokens. Prints
one JSON line: messages sent, sockets opened, how the server closed them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import sys
import time
from collections import Counter

import websockets

HUGE = "A" * 1_000_000  # 1 MB of (valid) base64
SOCKETS_AT_ONCE = 20
PER_SOCKET = 100


def bad_messages(call_sid: str) -> list[str | bytes]:
    good_frame = base64.b64encode(b"\xff" * 160).decode()
    stream = "MZ" + call_sid[2:]
    return [
        "{not json",
        "",
        "null",
        "[1, 2, 3]",
        '"a string"',
        "9" * 5000,
        "[" * 100_000,  # deep nesting
        b"\x00\x01binary frame\xff",
        bytes(2000),
        json.dumps({"event": 42}),
        json.dumps({"event": None, "media": "x"}),
        json.dumps({"event": "telemetry", "streamSid": stream}),
        json.dumps({"event": "media", "media": {"payload": good_frame}}),  # media before start
        json.dumps({"event": "media", "streamSid": stream, "media": {"payload": "***not base64***"}}),
        json.dumps({"event": "media", "streamSid": stream, "media": {"payload": 12345}}),
        json.dumps({"event": "media", "streamSid": stream, "media": "payload"}),
        json.dumps({"event": "media", "streamSid": stream, "media": {"payload": HUGE}}),
        json.dumps({"event": "mark", "mark": ["name"]}),
        json.dumps({"event": "dtmf", "dtmf": {"digit": "Z"}}),
        json.dumps({"event": "stop", "sequenceNumber": "-99999999999999999999999"}),
        json.dumps({"event": "media", "sequenceNumber": 10**40, "media": {"payload": good_frame}}),
        json.dumps({"event": "connected", "protocol": {"nested": [1, {"x": None}]}, "version": 1.5}),
        json.dumps({"event": "start", "start": "not an object"}),
        json.dumps({"event": "start", "streamSid": 'bad sid with spaces\n"}', "start": {}}),
        json.dumps(
            {"event": "start", "streamSid": stream, "start": {"customParameters": {"token": "forged"}}}
        ),
        json.dumps({"event": "start", "streamSid": stream, "start": {"customParameters": ["token"]}}),
        json.dumps({"event": "start", "streamSid": stream, "start": {"customParameters": {"token": 7}}}),
        json.dumps({"event": "médïa\u0000", "streamSid": "\udcff"}),  # a lone surrogate
    ]


async def flood(ws_base: str, call_sid: str, total: int, seconds: float) -> dict[str, object]:
    messages = bad_messages(call_sid)
    paths = [
        f"/ws/voice/{call_sid}",
        "/ws/voice/CA" + "0" * 32,
        "/ws/voice/" + "x" * 80,
        "/ws/voice/CA%00%ff",
    ]
    sent = 0
    sockets = 0
    closes: Counter[str] = Counter()
    started = time.monotonic()
    lock = asyncio.Lock()

    async def one_socket(k: int) -> None:
        nonlocal sent, sockets
        path = paths[k % len(paths)]
        order = list(messages)
        random.Random(k).shuffle(order)  # each socket meets a different bad start (or none) first
        try:
            async with websockets.connect(ws_base + path, max_size=2**24, compression=None) as ws:
                sockets += 1
                for i in range(PER_SOCKET):
                    async with lock:
                        if sent >= total:
                            break
                        sent += 1
                        n = sent
                    await ws.send(order[i % len(order)])
                    # Pace the flood over `seconds`, so it overlaps the whole live call.
                    ahead = started + seconds * n / total - time.monotonic()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                await ws.close()
                closes[f"client closed ({ws.close_code})"] += 1
        except websockets.ConnectionClosed as exc:
            closes[
                f"server closed {exc.rcvd.code if exc.rcvd else None} {exc.rcvd.reason if exc.rcvd else ''}"
            ] += 1
        except (OSError, websockets.InvalidHandshake) as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            closes[f"refused {type(exc).__name__}{f' {status}' if status else ''}"] += 1

    k = 0
    while sent < total:
        batch = [one_socket(k + j) for j in range(SOCKETS_AT_ONCE)]
        k += SOCKETS_AT_ONCE
        await asyncio.gather(*batch)
    return {"sent": sent, "sockets": sockets, "closes": dict(closes), "seconds": time.monotonic() - started}


if __name__ == "__main__":
    ws_base, call_sid, total, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    print(json.dumps(asyncio.run(flood(ws_base, call_sid, total, seconds))), flush=True)
