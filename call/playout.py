"""The agent's voice on the wire: paced 20 ms frames, marks, and `clear` for barge-in.

Frames are sent in real time with a small lead (Twilio plays what it has and
we keep the rest), so a `clear` drops at most the lead and the engine always
knows which frame the caller is hearing. Every spoken segment (a sentence) ends
with a Twilio `mark`; Twilio echoes a mark when playback reaches it, which is
how the engine learns exactly which words were heard.

The pacing clock is the process's ``FrameTicker`` (``call.clock``): a call with
audio to send joins it, and each 20 ms tick sends every such call's due frames.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from call.clock import FrameTicker, shared_ticker
from providers.base import FRAME_MS
from speech.audio import FrameSlicer

log = logging.getLogger(__name__)

FRAME_S = FRAME_MS / 1000
LEAD_FRAMES = 3  # frames sent ahead of real time: covers network jitter, bounds what a clear drops
# A late tick (a stalled event loop) sends at most this many frames beyond its own; audio further
# behind is not sent in a burst (it would grow the lead, and what a clear drops): the call's schedule
# moves on instead, as the caller's playback did while nothing arrived.
MAX_CATCH_UP_FRAMES = 2


@dataclass(slots=True)
class Segment:
    """A sentence of agent speech and where its audio sits in the outbound stream."""

    turn_id: int
    index: int
    text: str
    start_frame: int
    end_frame: int | None = None  # set when its audio is complete
    mark_sent: bool = False
    played: bool = False  # Twilio echoed its mark (or it was cleared for good)

    @property
    def mark_name(self) -> str:
        return f"t{self.turn_id}s{self.index}"


class AudioSink(Protocol):
    """Where paced audio goes (``call.transport.MediaStreamTransport`` on a call)."""

    async def send_media(self, frame: bytes) -> None: ...

    async def send_mark(self, name: str) -> None: ...

    async def send_clear(self) -> None: ...


class OutboundAudio:
    """One call's agent audio: a frame buffer paced onto the WebSocket.

    Frames stay in ``_frames`` until the buffer is idle and fully played, so a
    paused segment can be resumed from its start after a backchannel.
    """

    def __init__(self, sink: AudioSink, ticker: FrameTicker | None = None) -> None:
        self._sink = sink
        self._ticker = ticker  # None: the event loop's shared ticker, from start()
        self._frames: list[bytes] = []
        self._segments: list[Segment] = []
        self._sent = 0  # index of the next frame to send
        self._slicer = FrameSlicer()
        self._progress = asyncio.Event()  # set whenever playback advances (frames sent, marks back, clear)
        self._sending = False
        self._spurt_start = 0.0  # monotonic time the current run of frames started
        self._spurt_first_frame = 0
        self._spurt_tick = 0  # the run's frame LEAD_FRAMES + k is due on tick _spurt_tick + k
        self.paused = False
        self.on_first_frame: Callable[[int, float], None] | None = None  # (turn_id, monotonic time)
        self.on_frame_sent: Callable[[bytes, float], None] | None = None  # (frame, monotonic time): recording
        self._announced_turns: set[int] = set()
        self._live = False  # between start() and stop()
        self._heard_by = 0.0  # monotonic time the last frame sent has finished playing at the far end

    # ---------------------------------------------------------------- producer side

    def begin_segment(self, turn_id: int, index: int, text: str) -> Segment:
        self._compact()
        segment = Segment(turn_id, index, text, start_frame=len(self._frames))
        self._segments.append(segment)
        return segment

    def push_audio(self, mulaw: bytes) -> int:
        """Queue agent audio; returns how many whole frames were added."""
        frames = self._slicer.push(mulaw)
        if frames:
            self._frames.extend(frames)
            self._wake()
        return len(frames)

    def push_live(self, frame: bytes) -> None:
        """One frame of live audio outside any sentence (a supervisor's voice): played next, no mark."""
        self._compact()
        self._frames.append(frame)
        self._wake()

    def drop_after_current(self) -> int:
        """Keep what was sent and the sentence playing; drop the sentences queued after it. Returns the
        frame the kept audio ends at (what comes next plays from there)."""
        played = self.played_frame()
        current = next((s for s in self._segments if (s.end_frame or len(self._frames)) > played), None)
        if current is None:  # between sentences (or nothing queued): keep what was sent
            keep = self._sent
        else:
            keep = max(self._sent, current.end_frame if current.end_frame is not None else len(self._frames))
        del self._frames[keep:]
        self._slicer = FrameSlicer()
        dropped = [s for s in self._segments if s.start_frame >= keep and s is not current]
        for seg in dropped:
            self._segments.remove(seg)
        if current is not None and current.end_frame is None:
            current.end_frame = keep
        return keep

    def end_segment(self, segment: Segment) -> None:
        tail = self._slicer.flush()
        if tail is not None:
            self._frames.append(tail)
        segment.end_frame = len(self._frames)
        self._wake()

    def _compact(self) -> None:
        """Forget audio that was fully played once nothing is in flight."""
        if self._sent == len(self._frames) and all(s.played for s in self._segments):
            self._frames.clear()
            self._segments.clear()
            self._sent = 0
            self._spurt_first_frame = 0

    # ---------------------------------------------------------------- state

    @property
    def is_speaking(self) -> bool:
        """Audio queued or sent but not yet confirmed played: the agent is talking."""
        return (self._sent < len(self._frames) and not self.paused) or any(
            s.mark_sent and not s.played for s in self._segments
        )

    @property
    def idle(self) -> bool:
        return self._sent >= len(self._frames) and all(s.played or not s.mark_sent for s in self._segments)

    def played_out(self, now: float, margin_s: float) -> bool:
        """Every queued frame was sent and has had its time to play at the far end: confirmed by its
        mark (a peer may echo marks on receipt, so not before that time), or ``margin_s`` later without."""
        if self._sent < len(self._frames) or self.paused:
            return False
        return now >= self._heard_by + (0.0 if self.idle else margin_s)

    async def wait_idle(self, timeout: float, played_margin_s: float | None = None) -> bool:
        """Until everything queued has been sent and confirmed played (or ``timeout``); True if done.

        With ``played_margin_s``: until it has had its time to play (``played_out``), so a peer that
        echoes marks early is not hung up on early, and one that echoes none is not waited on to the
        timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        def done() -> bool:
            if played_margin_s is None:
                return self.idle
            return self.played_out(time.monotonic(), played_margin_s)

        while not done():
            self._progress.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            if played_margin_s is not None and self._sent >= len(self._frames):  # wake when it has played
                until = self._heard_by + (0.0 if self.idle else played_margin_s) - time.monotonic()
                remaining = min(remaining, max(0.005, until))
            try:
                await asyncio.wait_for(self._progress.wait(), remaining)
            except TimeoutError:
                pass
        return True

    def played_frame(self, now: float | None = None) -> int:
        """Best estimate of the frame the caller is hearing now."""
        if not self._sending:
            return self._sent
        now = time.monotonic() if now is None else now
        elapsed = int((now - self._spurt_start) / FRAME_S)
        return min(self._sent, self._spurt_first_frame + max(0, elapsed))

    def heard_text(self, turn_id: int, played: int | None = None) -> tuple[str, bool]:
        """The words of ``turn_id`` the caller heard up to frame ``played``, and whether cut short."""
        played = self.played_frame() if played is None else played
        parts: list[str] = []
        cut = False
        for seg in self._segments:
            if seg.turn_id != turn_id:
                continue
            end = seg.end_frame if seg.end_frame is not None else len(self._frames)
            if played >= end:
                parts.append(seg.text)
            elif played > seg.start_frame:
                words = seg.text.split()
                fraction = (played - seg.start_frame) / max(1, end - seg.start_frame)
                parts.append(" ".join(words[: int(len(words) * fraction)]))
                cut = True
            else:
                cut = True
        return " ".join(p for p in parts if p).strip(), cut

    # ---------------------------------------------------------------- Twilio events

    def on_mark(self, name: str) -> Segment | None:
        for seg in self._segments:
            if seg.mark_name == name and seg.mark_sent:
                seg.played = True
                self._progress.set()
                return seg
        return None

    async def clear(self) -> int:
        """Stop the agent for good: drop all queued audio, flush Twilio's buffer.

        Returns the frame the caller had reached.
        """
        played = self.played_frame()
        await self._sink.send_clear()
        del self._frames[played:]
        self._slicer = FrameSlicer()
        for seg in self._segments:
            seg.played = True
            if seg.end_frame is None or seg.end_frame > played:
                seg.end_frame = played
        self._sent = played
        self._sending = False
        self.paused = False
        self._progress.set()
        return played

    async def pause(self) -> int:
        """Stop sound now but keep the audio: resume() replays from the current sentence's start."""
        played = self.played_frame()
        await self._sink.send_clear()
        current = next((s for s in self._segments if (s.end_frame or len(self._frames)) > played), None)
        rewind = current.start_frame if current is not None else self._sent
        self._sent = min(rewind, self._sent)
        for seg in self._segments:
            if seg.end_frame is None or seg.end_frame > self._sent:
                seg.mark_sent = False
                seg.played = False
        self._sending = False
        self.paused = True
        return played

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self._wake()

    # ---------------------------------------------------------------- pacing

    def start(self) -> None:
        if self._ticker is None:
            self._ticker = shared_ticker()
        self._live = True
        self._wake()

    async def stop(self) -> None:
        self._live = False
        if self._ticker is not None:
            self._ticker.discard(self)

    def _wake(self) -> None:
        """Audio (or a mark) to send: join the ticker, and send the first frames now."""
        if self._live and self._ticker is not None and self not in self._ticker:
            self._ticker.add(self)
            self._ticker.kick(self)

    async def on_tick(self, tick: int, now: float) -> None:
        """The ticker's call: send the frames due on ``tick``, or leave the ticker when there are none."""
        assert self._ticker is not None
        if self._sent >= len(self._frames) or self.paused:
            await self._go_quiet()
            return
        if not self._sending:
            # A run of frames starts: the lead goes out now, and the next frame on the tick nearest
            # to 20 ms from now (a frame of a run is due every 20 ms, on the ticker's grid).
            self._sending = True
            self._spurt_start = now
            self._spurt_first_frame = self._sent
            self._spurt_tick = self._ticker.nearest_tick(now)
            due = LEAD_FRAMES + 1
        else:
            due = LEAD_FRAMES + 1 + tick - self._spurt_tick - (self._sent - self._spurt_first_frame)
            if due > 1 + MAX_CATCH_UP_FRAMES:  # a late tick: catch up a little, let the rest go
                behind = due - 1 - MAX_CATCH_UP_FRAMES
                self._spurt_tick += behind
                self._spurt_start += behind * FRAME_S
                due -= behind
        for _ in range(min(due, len(self._frames) - self._sent)):
            frame = self._frames[self._sent]
            self._sent += 1
            await self._sink.send_media(frame)
            # when it plays: the run's frames play back to back from its start
            plays_at = max(now, self._spurt_start + (self._sent - 1 - self._spurt_first_frame) * FRAME_S)
            self._heard_by = max(self._heard_by, plays_at + FRAME_S)
            if self.on_frame_sent is not None:  # stamped with when it plays (recording)
                k = self._sent - 1 - self._spurt_first_frame - LEAD_FRAMES
                self.on_frame_sent(frame, max(now, self._spurt_start + k * FRAME_S))
            if self.on_first_frame is not None:
                self._announce_first_frame(now)
            if self.paused or not self._sending:  # paused or cleared while a send waited
                break
        await self._send_due_marks()
        if self._sent >= len(self._frames):
            await self._go_quiet()

    async def _go_quiet(self) -> None:
        """Nothing left to send: the run ends, due marks go out, and the call leaves the ticker."""
        assert self._ticker is not None
        self._sending = False
        self._ticker.discard(self)
        await self._send_due_marks()
        self._progress.set()
        if self._live and self._sent < len(self._frames) and not self.paused:
            self._ticker.add(self)  # audio came while a mark waited to be sent: the next tick has it

    def _announce_first_frame(self, now: float) -> None:
        index = self._sent - 1
        for seg in self._segments:
            if (
                seg.start_frame <= index < (seg.end_frame or len(self._frames))
                and seg.turn_id not in self._announced_turns
            ):
                self._announced_turns.add(seg.turn_id)
                assert self.on_first_frame is not None
                self.on_first_frame(seg.turn_id, now)
                return

    async def _send_due_marks(self) -> None:
        for seg in self._segments:
            if (
                not seg.mark_sent
                and not seg.played
                and seg.end_frame is not None
                and seg.end_frame <= self._sent
            ):
                seg.mark_sent = True
                await self._sink.send_mark(seg.mark_name)
