"""Fault suite, overload: calls beyond MAX_CONCURRENT_CALLS hear the busy line, and API bursts get 429
from the per-key rate limit while a live call's frames keep their pace."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.rate_limit import TokenBuckets
from simulator.caller import SimulatedCaller, Utterance, frames_of
from tests.conftest import API_KEY, ROOT, LiveServer, make_settings
from tests.fault_calls import NUMBER, HeldCall, inbound_twiml, make_agent, stream_of
from tests.service_process import ServiceProcess, service_env
from voice_pipeline import BUSY_LINE

# ---------------------------------------------------------------- the token bucket


def test_token_bucket_allows_the_burst_then_the_rate_per_key() -> None:
    now = [0.0]
    buckets = TokenBuckets(per_minute=60, burst=5, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(5)] == [0.0] * 5
    assert buckets.take("a") == pytest.approx(1.0)  # one token a second: the next in 1 s
    assert buckets.take("b") == 0.0  # another key has its own bucket
    now[0] = 0.5
    assert buckets.take("a") == pytest.approx(0.5)
    now[0] = 1.0
    assert buckets.take("a") == 0.0 and buckets.take("a") > 0
    now[0] = 100.0  # a long pause refills up to the burst, not beyond
    assert sum(buckets.take("a") == 0.0 for _ in range(10)) == 5
    assert TokenBuckets(per_minute=0, burst=5).enabled is False


# ---------------------------------------------------------------- busy line


@pytest.mark.asyncio
async def test_calls_beyond_max_concurrent_calls_hear_the_busy_line(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_concurrent_calls=2)
    async with LiveServer(settings) as server, server.client() as client:
        await make_agent(client)
        # A call whose TwiML was fetched while there was room, and whose stream comes after the line is full.
        late_url, late_params = stream_of(await inbound_twiml(server.base_url, "CA" + "c" * 32))
        held = []
        for sid in ("CA" + "a" * 32, "CA" + "b" * 32):
            url, params = stream_of(await inbound_twiml(server.base_url, sid))
            held.append(await HeldCall(url, params, sid).open())
        for _ in range(100):
            if server.runtime.calls.active == 2:
                break
            await asyncio.sleep(0.05)
        assert server.runtime.calls.active == 2

        # The third caller: the webhook answers with the busy line and hangs up; no stream is offered.
        twiml = await inbound_twiml(server.base_url, "CA" + "d" * 32)
        assert BUSY_LINE in twiml and "<Hangup />" in twiml and "<Stream" not in twiml

        # A stream that arrives anyway (its TwiML was fetched earlier) is told the busy line and closed.
        late = await HeldCall(late_url, late_params, "CA" + "c" * 32).open()
        code, reason = await late.wait_closed(15)
        assert (code, reason) == (1000, "capacity")
        assert late.frames_received > 20  # the busy line was spoken (echo TTS: a tone per character)
        await late.close()
        conv = await client.get("/v1/convai/calls/live")
        assert sorted(c["call_sid"] for c in conv.json()["calls"]) == sorted(h.call_sid for h in held)
        assert all(h.closed is None for h in held)  # the two live calls went on

        # Room again once a call ends: the next caller is offered a stream.
        await held[0].close()
        for _ in range(100):
            if server.runtime.calls.active == 1:
                break
            await asyncio.sleep(0.05)
        assert "<Stream" in await inbound_twiml(server.base_url, "CA" + "e" * 32)
        await held[1].close()


# ---------------------------------------------------------------- API rate limit


OTHER_KEY = "other-key-456"


@pytest.fixture(scope="module")
def hello() -> list[bytes]:
    from simulator.speech import synthesize_caller

    return frames_of(synthesize_caller("Hi, I got your message about the demo."))


async def _call(base_url: str, call_sid: str, hello: list[bytes]) -> SimulatedCaller:
    caller = SimulatedCaller(base_url, call_sid, NUMBER, [Utterance(hello)])
    async with httpx.AsyncClient() as http:
        result = await caller.run(http)
    assert result.error is None and len(result.voice_to_voice_s) == 1, result
    return caller


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else 0.0


@pytest.mark.asyncio
async def test_api_burst_gets_429_per_key_while_a_live_call_keeps_its_pace(
    tmp_path: Path, hello: list[bytes]
) -> None:
    env = service_env(
        tmp_path,
        api_keys=f"{API_KEY},{OTHER_KEY}",
        api_rate_limit_per_min=60,
        api_rate_limit_burst=10,
        log_level="WARNING",
    )
    long_greeting = "Hi, this is Ava from the demo team, thanks for picking up, I will be brief today."
    async with ServiceProcess(tmp_path, env) as service, service.client() as client:
        await make_agent(client, first_message=long_greeting)
        quiet = await _call(service.base_url, "CA" + "1" * 32, hello)

        async def burst() -> dict[str, Any]:
            await asyncio.sleep(0.5)  # the greeting is playing
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.api_burst",
                service.base_url,
                API_KEY,
                OTHER_KEY,
                "300",
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 120)
            return json.loads(out.decode().strip().splitlines()[-1])

        burst_task = asyncio.create_task(burst())
        busy = await _call(service.base_url, "CA" + "2" * 32, hello)
        call_ended_at = time.time()
        stats = await burst_task
        assert stats["started_at"] < call_ended_at - 1.0, stats  # the burst fell inside the call

        statuses = stats["statuses"]
        # The burst of 10, then one a second while it lasts.
        assert statuses.get("200", 0) <= 10 + stats["seconds"] + 2, statuses
        assert statuses.get("429", 0) == 300 - statuses.get("200", 0) >= 270, statuses
        limited = stats["limited"]
        assert limited["status"] == 429 and limited["content_type"].startswith("application/json")
        assert "rate limit exceeded" in limited["body"]["detail"]
        assert 1 <= int(limited["retry_after"]) <= 60
        assert stats["other_key_status"] == 200  # another key has its own bucket
        assert stats["probes"] == [200] * 10  # the probes are never limited
        assert (await client.get("/v1/convai/agents", headers={"xi-api-key": "wrong"})).status_code == 401

    q, b = quiet.result, busy.result
    print(
        f"\nrate limit: {statuses} in {stats['seconds']:.2f} s; "
        f"frame jitter p99 quiet/burst {_p99(q.interarrival_s) * 1000:.1f}/{_p99(b.interarrival_s) * 1000:.1f} ms, "
        f"max gap {max(q.interarrival_s) * 1000:.0f}/{max(b.interarrival_s) * 1000:.0f} ms, "
        f"underruns {q.underruns}/{b.underruns}, v2v {q.voice_to_voice_s[0] * 1000:.0f}/"
        f"{b.voice_to_voice_s[0] * 1000:.0f} ms"
    )
    # The burst is refused in microseconds: the call's frames keep their 20 ms pace (a stall behind the
    # burst would show as gaps of hundreds of ms). Bounds relative to the quiet call on the same (shared,
    # noisy) machine.
    assert _p99(b.interarrival_s) < max(2 * _p99(q.interarrival_s), 0.06) + 0.03
    assert max(b.interarrival_s) < max(2 * max(q.interarrival_s), 0.2) + 0.2
    assert b.voice_to_voice_s[0] < 2 * q.voice_to_voice_s[0] + 0.3
