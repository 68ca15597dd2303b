"""The process-wide 20 ms frame ticker that paces every call's outbound audio (call.clock, call.playout).

Time is simulated: the ticker's clock and timer are a ``SimTime`` whose timers fire a little late, like
a busy event loop's, so drift and catch-up are checked exactly and the tests take no real time.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from call.clock import EARLY_S, CallClock, FrameTicker
from call.playout import LEAD_FRAMES, MAX_CATCH_UP_FRAMES, OutboundAudio
from providers.base import FRAME_BYTES

PERIOD = 0.02


class SimTime:
    """A clock and ``call_later`` for the ticker; timers fire 0–2 ms late (seeded)."""

    def __init__(self, start: float = 1000.0, late_s: float = 0.002, early_s: float = 0.0) -> None:
        self.now = start
        self.timers: list[tuple[float, Callable[[], None]]] = []
        self.fired = 0
        self._rng = random.Random(7)
        self._late_s = late_s
        self._early_s = early_s  # uvloop: a timer set late in a busy iteration fires that much early

    def clock(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> object:
        self.timers.append((self.now + delay, callback))
        return object()

    def run_until(self, t: float, stall: tuple[float, float] | None = None) -> None:
        """Fire due timers in order until ``t``; ``stall=(at, seconds)``: the loop is blocked then."""
        while self.timers:
            self.timers.sort(key=lambda x: x[0])
            when, callback = self.timers[0]
            fire_at = max(self.now, when + self._rng.uniform(-self._early_s, self._late_s))
            if stall is not None and fire_at >= stall[0]:
                fire_at = max(fire_at, stall[0] + stall[1])
                stall = None
            if fire_at > t:
                break
            self.timers.pop(0)
            self.now = fire_at
            self.fired += 1
            callback()
        self.now = max(self.now, t)


class RecordingSink:
    """A socket that takes every message at once; remembers when each frame went out."""

    def __init__(self, sim: SimTime) -> None:
        self.sim = sim
        self.frames: list[float] = []
        self.marks: list[str] = []

    async def send_media(self, frame: bytes) -> None:
        self.frames.append(self.sim.now)

    async def send_mark(self, name: str) -> None:
        self.marks.append(name)

    async def send_clear(self) -> None:
        pass


def speaking_call(ticker: FrameTicker, sink: RecordingSink, frames: int) -> OutboundAudio:
    out = OutboundAudio(sink, ticker)
    out.start()
    segment = out.begin_segment(1, 0, "hello")
    out.push_audio(b"\x7f" * FRAME_BYTES * frames)
    out.end_segment(segment)
    return out


@pytest.mark.asyncio
async def test_one_ticker_paces_every_call_at_20_ms_without_drift() -> None:
    sim = SimTime()
    ticker = FrameTicker(PERIOD, clock=sim.clock, call_later=sim.call_later)
    sinks, calls = [], []
    for _ in range(50):  # calls start at any phase of the ticker's 20 ms grid
        sim.run_until(sim.now + 0.0037)
        sink = RecordingSink(sim)
        sinks.append(sink)
        calls.append(speaking_call(ticker, sink, frames=150))
    sim.run_until(sim.now + 4.0)
    ticks = sim.fired
    for sink in sinks:
        times = sink.frames
        assert len(times) == 150 and sink.marks == ["t1s0"]
        assert times[LEAD_FRAMES] == times[0]  # the lead goes out at once…
        first_gap = times[LEAD_FRAMES + 1] - times[LEAD_FRAMES]
        assert 0.010 - 0.0021 <= first_gap <= 0.030 + 0.0021  # …the next on the grid tick nearest 20 ms
        gaps = [b - a for a, b in zip(times[LEAD_FRAMES + 1 :], times[LEAD_FRAMES + 2 :], strict=False)]
        assert max(abs(g - PERIOD) for g in gaps) < 0.0021  # one frame per tick (timers 0–2 ms late)
        # No drift: frame k is sent on the grid tick k, however late the timers fire.
        start = times[LEAD_FRAMES + 1]
        expected_last = start + (150 - LEAD_FRAMES - 2) * PERIOD
        assert abs(times[-1] - expected_last) < 0.0021
    # One timer per tick for all 50 calls (not one per call and frame), and none once all are quiet.
    assert ticks < 150 + 50
    assert len(ticker) == 0 and not ticker.running


@pytest.mark.asyncio
async def test_a_call_that_ends_or_stops_leaves_the_ticker() -> None:
    sim = SimTime()
    ticker = FrameTicker(PERIOD, clock=sim.clock, call_later=sim.call_later)
    short_sink, long_sink, stopped_sink = RecordingSink(sim), RecordingSink(sim), RecordingSink(sim)
    short = speaking_call(ticker, short_sink, frames=10)
    long = speaking_call(ticker, long_sink, frames=100)
    stopped = speaking_call(ticker, stopped_sink, frames=100)
    assert len(ticker) == 3
    sim.run_until(sim.now + 0.3)
    assert len(short_sink.frames) == 10 and short not in ticker  # its audio is out: it left
    assert short_sink.marks == ["t1s0"] and short.is_speaking  # its mark is out, not yet echoed
    await stopped.stop()  # the call hung up mid-sentence
    sent_when_stopped = len(stopped_sink.frames)
    assert stopped not in ticker
    sim.run_until(sim.now + 3.0)
    assert len(stopped_sink.frames) == sent_when_stopped
    assert len(long_sink.frames) == 100 and long not in ticker
    assert len(ticker) == 0 and not ticker.running  # no timer runs for nobody
    # New audio on a quiet call joins again and goes out at once.
    segment = short.begin_segment(2, 0, "again")
    short.push_audio(b"\x7f" * FRAME_BYTES * 5)
    short.end_segment(segment)
    assert short in ticker and len(short_sink.frames) == 10 + LEAD_FRAMES + 1


@pytest.mark.asyncio
async def test_a_late_tick_catches_up_a_bounded_number_of_frames() -> None:
    sim = SimTime(late_s=0.0)
    ticker = FrameTicker(PERIOD, clock=sim.clock, call_later=sim.call_later)
    sink = RecordingSink(sim)
    out = speaking_call(ticker, sink, frames=200)
    sim.run_until(sim.now + 0.5)
    before = len(sink.frames)
    stall_at = sim.now + 0.005
    sim.run_until(sim.now + 0.3, stall=(stall_at, 0.2))  # the loop is blocked for 200 ms (10 ticks)
    times = sink.frames[before:]
    per_tick: dict[float, int] = {}
    for t in times:
        per_tick[t] = per_tick.get(t, 0) + 1
    late_tick = min(per_tick, key=lambda t: t if t >= stall_at else float("inf"))
    assert per_tick[late_tick] == 1 + MAX_CATCH_UP_FRAMES  # some catch-up, no burst of 10
    assert all(n == 1 for t, n in per_tick.items() if t != late_tick)  # then one per tick again
    # The lead the caller's side holds stays bounded: what was not sent was not heard either.
    assert out.played_frame(sim.now) >= len(sink.frames) - (LEAD_FRAMES + 1 + MAX_CATCH_UP_FRAMES)


class StuckSink(RecordingSink):
    """A peer that stopped reading: a send waits until ``unblock`` is set."""

    def __init__(self, sim: SimTime) -> None:
        super().__init__(sim)
        self.unblock = asyncio.Event()
        self.waiting = 0  # sends waiting at once
        self.most_waiting = 0

    async def send_media(self, frame: bytes) -> None:
        if len(self.frames) == 6:
            self.waiting += 1
            self.most_waiting = max(self.most_waiting, self.waiting)
            await self.unblock.wait()
            self.waiting -= 1
        self.frames.append(self.sim.now)


@pytest.mark.asyncio
async def test_a_socket_that_does_not_take_a_frame_holds_only_its_own_call() -> None:
    sim = SimTime()
    ticker = FrameTicker(PERIOD, clock=sim.clock, call_later=sim.call_later)
    stuck_sink, fine_sink = StuckSink(sim), RecordingSink(sim)
    stuck = speaking_call(ticker, stuck_sink, frames=50)
    speaking_call(ticker, fine_sink, frames=50)
    sim.run_until(sim.now + 0.3)
    await asyncio.sleep(0)
    assert len(stuck_sink.frames) == 6 and stuck_sink.most_waiting == 1  # its 7th send waits, alone…
    assert len(fine_sink.frames) >= LEAD_FRAMES + 1 + 14  # …and the other call kept its pace
    stuck_sink.unblock.set()
    for _ in range(3):
        await asyncio.sleep(0)
    sim.run_until(sim.now + 1.5)
    assert len(stuck_sink.frames) == 50 and len(fine_sink.frames) == 50
    assert stuck not in ticker and len(ticker) == 0


class BrokenSink(RecordingSink):
    """A sink whose fifth frame raises (a bug in a call's send path)."""

    async def send_media(self, frame: bytes) -> None:
        if len(self.frames) == 4:
            raise RuntimeError("boom")
        self.frames.append(self.sim.now)


@pytest.mark.asyncio
async def test_a_call_whose_tick_fails_leaves_the_ticker_with_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim = SimTime()
    ticker = FrameTicker(PERIOD, clock=sim.clock, call_later=sim.call_later)
    broken_sink, fine_sink = BrokenSink(sim), RecordingSink(sim)
    broken = speaking_call(ticker, broken_sink, frames=50)
    speaking_call(ticker, fine_sink, frames=50)
    with caplog.at_level("ERROR", logger="call.clock"):
        sim.run_until(sim.now + 1.5)
    assert broken not in ticker and len(broken_sink.frames) == 4
    assert len(fine_sink.frames) == 50  # the other call played on
    assert [r.getMessage() for r in caplog.records].count(
        "frame ticker: a call's tick failed; its audio stops"
    ) == 1


@pytest.mark.asyncio
async def test_a_timer_that_fires_early_sends_nothing_before_its_tick() -> None:
    sim = SimTime(late_s=0.001, early_s=0.008)  # timers fire up to 8 ms early, as after busy iterations
    ticker = FrameTicker(PERIOD, clock=sim.clock, call_later=sim.call_later)
    sink = RecordingSink(sim)
    speaking_call(ticker, sink, frames=100)
    sim.run_until(sim.now + 2.5)
    paced = sink.frames[LEAD_FRAMES + 1 :]
    assert len(paced) == 100 - LEAD_FRAMES - 1
    for t in paced:  # every paced frame leaves on (or just after) its grid tick, never before it
        grid = ticker.time_of(ticker.nearest_tick(t))
        assert -EARLY_S - 1e-9 <= t - grid <= 0.001 + 1e-9


def test_the_call_clock_dates_caller_audio_by_its_arrival_not_by_the_set_up() -> None:
    """Audio sent while the call was set up arrives queued (a burst after ``restart``); offsets in that
    audio (an STT's end of speech) must still map to when the audio arrived."""
    clock = CallClock()
    sent_from = clock.t0 - 0.06  # the caller's audio started 60 ms before the stream's clock
    clock.media_received(160 * 5, clock.t0 + 0.05)  # five frames queued during set-up, read at once
    for k in range(6, 56):  # then one frame every 20 ms, as it is spoken (+2 ms on the wire)
        clock.media_received(160, sent_from + k * 0.02 + 0.002)
    assert clock.media_t0 == pytest.approx(sent_from + 0.002, abs=1e-6)
    # The end of speech at 1.0 s of audio arrived at sent_from + 1.002, not t0 + 1.0 (60 ms later).
    assert clock.ms(clock.media_t0 + 1.0) == pytest.approx(1000 - 60 + 2, abs=0.2)
    assert CallClock().media_t0 > 0  # before any audio: the stream's start
