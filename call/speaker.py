"""The speaker: sentences → TTS → paced frames and marks, and what the caller heard of them.

Sentence N+1 synthesizes while sentence N plays. A turn's first audio is held until the turn may be
heard (``ReplyTurn.go``: a preemptive reply waits there for the caller's turn to be confirmed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from call.playout import AudioSink, OutboundAudio, Segment
from call.reply_turn import ReplyTurn
from core.metrics import VOICE_TO_VOICE
from providers.base import ProviderError, TTSProvider
from speech.sentences import SentenceChunker
from speech.text import clean_markdown_for_tts

log = logging.getLogger("ai_sdr.call")

# A reply's first clause this long (to a comma, colon, dash) goes to TTS without waiting for the full
# stop: Piper's time follows the text's length, so a short first piece is heard sooner (speech profile
# v2v p50 705-710 -> 660 ms at 12 instead of 24); the rest is synthesised while it plays.
FIRST_CLAUSE_CHARS = 12
TTS_RETRIES = 1  # a sentence whose synthesis fails before any audio is tried again this many times


def spoken_pieces(text: str) -> list[str]:
    """What ``Speaker.say`` hands the TTS for a fixed line, piece by piece (to prepare a greeting)."""
    chunker = SentenceChunker(first_clause_chars=FIRST_CLAUSE_CHARS)
    pieces = [*chunker.push(text + " "), *filter(None, [chunker.flush()])]
    return [spoken for piece in pieces if (spoken := clean_markdown_for_tts(piece)).strip()]


class Speaker:
    def __init__(
        self,
        sink: AudioSink,
        ms: Callable[..., float],
    ) -> None:
        self._ms = ms  # CallClock.ms
        self.tts: TTSProvider | None = None
        self.voice: str | None = None
        self.out = OutboundAudio(sink)
        self.out.on_first_frame = self._on_first_frame
        self._turns: dict[int, ReplyTurn] = {}  # turns with audio queued, for first-frame stamps
        self.log_fields: dict[str, object] = {}  # the call's log fields (call_sid, …), set by its owner
        # Audio counts as heard once its mark came back, or its duration and this margin passed since it
        # was sent (a peer that echoes no marks); None: marks only.
        self.played_margin_s: float | None = None
        self._taps: list[Callable[[bytes, float], None]] = []

    def tap(self, on_frame_sent: Callable[[bytes, float], None]) -> None:
        """Hear every frame as it is sent (call recording, the supervisor seat's listeners)."""
        self._taps.append(on_frame_sent)
        self.out.on_frame_sent = self._taps[0] if len(self._taps) == 1 else self._each_tap

    def _each_tap(self, frame: bytes, at: float) -> None:
        for tap in self._taps:
            tap(frame, at)

    def on_mark(self, name: str) -> None:
        self.out.on_mark(name)

    def use(self, tts: TTSProvider, voice: str | None) -> None:
        self.tts = tts
        self.voice = voice

    def start(self) -> None:
        self.out.start()

    async def stop(self) -> None:
        await self.out.stop()

    # ---------------------------------------------------------------- speaking

    async def say(self, turn: ReplyTurn, lines: list[str]) -> None:
        """Speak fixed lines, cut like a streamed reply (a long first sentence starts after a clause)."""
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        chunker = SentenceChunker(first_clause_chars=FIRST_CLAUSE_CHARS if not turn.planned else 0)
        for piece in chunker.push(" ".join(lines) + " "):
            queue.put_nowait(piece)
        if (rest := chunker.flush()) is not None:
            queue.put_nowait(rest)
        queue.put_nowait(None)
        await self.speak(turn, queue)

    async def speak(self, turn: ReplyTurn, sentences: asyncio.Queue[str | None]) -> None:
        """TTS each sentence as it comes and queue its audio, until a None arrives."""
        assert self.tts is not None
        while (sentence := await sentences.get()) is not None:
            spoken = clean_markdown_for_tts(sentence)
            if not spoken.strip():
                continue
            segment: Segment | None = None
            failure: ProviderError | None = None
            finished = False
            try:
                # A sentence that fails before any of its audio is tried once more; one that fails after
                # some audio (or twice) is given up: the rest of the reply is still spoken.
                for _ in range(1 + TTS_RETRIES):
                    try:
                        async for audio in self.tts.synthesize(spoken, voice=self.voice):
                            if "tts_first_audio_ms" not in turn.timings:
                                turn.timings["tts_first_audio_ms"] = self._ms()
                            if segment is None:
                                await turn.go.wait()  # a preemptive reply holds its audio until confirmed
                                self._turns[turn.turn_id] = turn
                                segment = self.out.begin_segment(
                                    turn.turn_id, len(turn.planned), sentence.strip()
                                )
                                turn.planned.append(sentence.strip())
                            self.out.push_audio(audio)
                        finished = True
                        break
                    except ProviderError as exc:
                        failure = exc
                        if segment is not None:
                            break
            finally:
                if segment is not None:
                    self.out.end_segment(segment)
            if failure is not None:  # one line per sentence: the error type only
                outcome = "retried" if finished else ("cut" if segment is not None else "skipped")
                fields = {"error": type(failure).__name__, "outcome": outcome}
                log.warning("tts sentence failed", extra={"fields": {**self.log_fields, **fields}})

    async def wait_played(self, turn: ReplyTurn) -> None:
        """Until the caller has heard every segment of the turn (its marks came back)."""
        # Bounded: a peer that never echoes marks must not hold the turn (and its storage) forever.
        await self.out.wait_idle(
            timeout=5 + len(" ".join(turn.planned)) * 0.09, played_margin_s=self.played_margin_s
        )

    async def wait_heard(self, max_wait_s: float) -> bool:
        """Before hanging up: until every frame sent has played at the far end (its mark came back, or
        its duration passed), at most ``max_wait_s``. True if it has."""
        return await self.out.wait_idle(timeout=max_wait_s, played_margin_s=self.played_margin_s)

    def _on_first_frame(self, turn_id: int, at: float) -> None:
        turn = self._turns.pop(turn_id, None)
        if turn is None or turn.audio_started:
            return
        turn.audio_started = True
        turn.timings.setdefault("first_frame_sent_ms", self._ms(at))
        if "user_speech_end_ms" in turn.timings:
            VOICE_TO_VOICE.observe(max(0.0, self._ms(at) - turn.timings["user_speech_end_ms"]) / 1000)

    # ---------------------------------------------------------------- barge-in

    @property
    def is_speaking(self) -> bool:
        return self.out.is_speaking

    @property
    def idle(self) -> bool:
        return self.out.idle

    def played_frame(self) -> int:
        return self.out.played_frame()

    async def pause(self) -> int:
        """Silence now, keep the audio; returns the frame the caller had reached."""
        return await self.out.pause()

    def resume(self) -> None:
        self.out.resume()

    async def clear(self) -> None:
        await self.out.clear()

    def keep_current_sentence(self) -> int:
        """Drop the queued sentences after the one playing (it plays to its end); the frame it ends at."""
        return self.out.drop_after_current()

    def play_live(self, frame: bytes) -> None:
        """A frame of someone else's voice (a supervisor who took the call over), paced like the agent's."""
        self.out.push_live(frame)

    def heard(self, turn: ReplyTurn, played_frame: int) -> str:
        return self.out.heard_text(turn.turn_id, played_frame)[0]
