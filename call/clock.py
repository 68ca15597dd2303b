"""Time bases: a call's clock (ms since its media stream started) and the process's 20 ms frame ticker."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from providers.base import FRAME_MS, SAMPLE_RATE

log = logging.getLogger(__name__)

FRAME_S = FRAME_MS / 1000
EARLY_S = 0.002  # a tick that fires sooner than this before its time waits for it (timers: 1 ms grain)


class CallClock:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self._media_samples = 0  # caller audio received (8 kHz mu-law: a byte a sample)
        self._media_t0 = math.inf

    def restart(self) -> None:
        """The stream starts now (after the handshake and the call's set-up)."""
        self.t0 = time.monotonic()

    def media_received(self, samples: int, at: float) -> None:
        """``samples`` more of the caller's audio arrived at monotonic time ``at``."""
        self._media_samples += samples
        self._media_t0 = min(self._media_t0, at - self._media_samples / SAMPLE_RATE)

    @property
    def media_t0(self) -> float:
        """When the caller's audio started, as its least-delayed chunk tells: an STT's offset (seconds of
        audio) plus this is when that audio arrived. Not ``t0``: audio sent while the call was being set
        up arrives queued, and counting it from ``t0`` dates every offset late (by ~60 ms in the speech
        bench, so the server's voice-to-voice read that much under what the caller measured)."""
        return self._media_t0 if self._media_samples else self.t0

    def ms(self, t: float | None = None) -> float:
        """Milliseconds since the stream started, of monotonic time ``t`` (default: now)."""
        return round(((time.monotonic() if t is None else t) - self.t0) * 1000, 1)

    def sample_at(self, t: float) -> int:
        return int((t - self.t0) * SAMPLE_RATE)


class Ticking(Protocol):
    """A member of the ticker (``call.playout.OutboundAudio``): sends what is due on tick ``tick``."""

    def on_tick(self, tick: int, now: float) -> Coroutine[Any, Any, None]: ...


class FrameTicker:
    """One 20 ms clock for every call of the process: each tick sends every live call's due frames.

    One timer per tick for the whole process, instead of a task waking on a timer of its own per call
    and per frame. Ticks sit on an absolute grid (``t0 + n × period``), so they do not drift; a late
    tick carries the number of the tick it really is, and each member works out from it what is due
    (``OutboundAudio`` bounds its catch-up). Only members with audio to send are in: the timer stops
    when the last one leaves.

    A member's tick is a coroutine run eagerly in the timer's callback: a send that completes at once
    (the usual case: the socket takes it) costs no task. One that has to wait (a peer that stopped
    reading) finishes in a task of its own, and that member is skipped until it has, so one slow
    socket never holds the other calls' audio.
    """

    def __init__(
        self,
        period: float = FRAME_S,
        clock: Callable[[], float] = time.monotonic,
        call_later: Callable[[float, Callable[[], None]], object] | None = None,
    ) -> None:
        self.period = period
        self._clock = clock
        self._call_later = call_later  # None: the running event loop's (tests pass a simulated one)
        self.t0 = clock()
        self._members: dict[Ticking, None] = {}  # an ordered set
        self._waiting: dict[Ticking, asyncio.Task[None]] = {}  # members whose last tick had to wait
        self._timer: object | None = None
        self._next = 0  # the tick the timer is set for
        self.ticks = 0  # ticks run (tests, diagnostics)

    def tick_at(self, t: float) -> int:
        """The tick whose 20 ms slot ``t`` falls in."""
        return int((t - self.t0) // self.period)

    def nearest_tick(self, t: float) -> int:
        return round((t - self.t0) / self.period)

    def time_of(self, tick: int) -> float:
        return self.t0 + tick * self.period

    def __contains__(self, member: object) -> bool:
        return member in self._members

    def __len__(self) -> int:
        return len(self._members)

    @property
    def running(self) -> bool:
        """A tick is scheduled (false once the last member has left)."""
        return self._timer is not None

    def add(self, member: Ticking) -> None:
        self._members[member] = None
        if self._timer is None:
            self._schedule(self.tick_at(self._clock()) + 1)

    def discard(self, member: Ticking) -> None:
        """``member`` leaves; a send of its still waiting is cancelled (unless that is the caller)."""
        self._members.pop(member, None)
        task = self._waiting.get(member)
        if task is not None and task is not asyncio.current_task():
            del self._waiting[member]
            task.cancel()

    def kick(self, member: Ticking) -> None:
        """Run ``member``'s tick now, between ticks (audio arrived: its first frames go out at once)."""
        if member in self._members and member not in self._waiting:
            now = self._clock()
            self._drive(member, member.on_tick(self.tick_at(now), now))

    def _schedule(self, tick: int) -> None:
        self._next = tick
        delay = max(0.0, self.time_of(tick) - self._clock())
        self._timer = (self._call_later or asyncio.get_running_loop().call_later)(delay, self._run)

    def _run(self) -> None:
        self._timer = None
        now = self._clock()
        if now < self.time_of(self._next) - EARLY_S:
            # Fired early: uvloop counts a timer's delay from the start of the loop iteration that set
            # it, so after a busy iteration it fires that much too soon. Frames must not go out early.
            self._schedule(self._next)
            return
        tick = max(self._next, self.tick_at(now))  # late (a busy loop): the tick it really is
        self.ticks += 1
        for member in list(self._members):
            if member not in self._waiting and member in self._members:
                self._drive(member, member.on_tick(tick, now))
        if self._members:
            self._schedule(tick + 1)

    def _drive(self, member: Ticking, coro: Coroutine[Any, Any, None]) -> None:
        try:
            task = run_eagerly(coro, name="frame-ticker-wait")
        except Exception as exc:
            self._failed(member, exc)
            return
        if task is not None:
            self._waiting[member] = task
            task.add_done_callback(lambda t: self._done_waiting(member, t))

    def _done_waiting(self, member: Ticking, task: asyncio.Task[None]) -> None:
        if self._waiting.get(member) is task:
            del self._waiting[member]
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._failed(member, exc)

    def _failed(self, member: Ticking, exc: BaseException) -> None:
        """A member whose tick raised leaves (once, with one log line), not to fail 50 times a second."""
        fields = {"error": type(exc).__name__}  # the type only: a traceback can carry call data
        log.error("frame ticker: a call's tick failed; its audio stops", extra={"fields": fields})
        self.discard(member)


def run_eagerly(coro: Coroutine[Any, Any, None], name: str = "eager") -> asyncio.Task[None] | None:
    """Run ``coro`` up to its first wait, here and now; None if it finished, else the task finishing it.

    (Python 3.12's eager task factory does this for every task; on 3.11 the ticker does it itself.)
    """
    try:
        waited = coro.send(None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_resume(coro, waited), name=name)


async def _resume(coro: Coroutine[Any, Any, None], waited: Any) -> None:
    """Finish a coroutine that ``run_eagerly`` started and that stopped on ``waited``."""
    while True:
        try:
            if waited is None:  # a bare yield (asyncio.sleep(0)): give the loop one turn
                await asyncio.sleep(0)
            else:  # an asyncio future: the coroutine reads its result when resumed
                waited._asyncio_future_blocking = False  # what a task does with a future yielded to it
                await waited
        except BaseException as exc:  # passed on to the coroutine, as a task would
            try:
                waited = coro.throw(exc)
            except StopIteration:
                return
            continue
        try:
            waited = coro.send(None)
        except StopIteration:
            return


_TICKERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FrameTicker] = weakref.WeakKeyDictionary()


def shared_ticker() -> FrameTicker:
    """The frame ticker of the running event loop (one per loop: tests run many loops)."""
    loop = asyncio.get_running_loop()
    ticker = _TICKERS.get(loop)
    if ticker is None:
        ticker = _TICKERS[loop] = FrameTicker()
    return ticker
