"""When is the caller's turn over? Silence plus the STT's endpoint, with a guard for unfinished sentences."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from providers.base import TranscriptEvent

# Words a sentence does not end on: the caller paused mid-sentence ("I'd like to… um…"), even if the
# STT put a question mark after them ("Could you tell me if?").
_NEVER_FINAL = (
    r"um+|uh+|er+|hmm+|and|or|but|so|the|a|an|my|our|your|their|his|her|its|i'd|i'm|we're|they're|"
    r"you're|because|if|than|whether|then|maybe|just|very|really|like|is|are|was|were|will|would|"
    r"can|could|should|have|has|had|be|been|that's|it's|there's|some|any|more|less|until|since"
)
# Words a statement does not end on, but a question may ("Who is this for?", "What's it about?").
# Not "that"/"this" alone: they end sentences as pronouns ("I'm interested in that."), but not after
# "is" ("The problem is that…").
_NOT_FINAL_IN_STATEMENTS = (
    r"to|of|for|with|about|around|at|on|in|from|by|as|when|where|which|who|whom|how|what|why|"
    r"(?:is|was|are|were) (?:that|this)"
)
_TRAILING_NEVER_FINAL = re.compile(rf"(?:\b(?:{_NEVER_FINAL})|,|-|…|\.\.\.)\W*$", re.IGNORECASE)
_TRAILING_STATEMENT_ONLY = re.compile(rf"\b(?:{_NOT_FINAL_IN_STATEMENTS})\W*$", re.IGNORECASE)
# A question that strands its preposition usually opens with a wh-word; one that does not
# ("Can you send the pricing to?") is a sentence the caller has not finished.
_WH_OPENING = re.compile(r"^\W*(?:who|whom|what|where|which|whose|how|why|when)\b", re.IGNORECASE)


def looks_incomplete(text: str) -> bool:
    """True when the words so far read like the caller paused mid-sentence."""
    stripped = text.strip()
    if not stripped:
        return False
    if _TRAILING_NEVER_FINAL.search(stripped):
        return True
    if not _TRAILING_STATEMENT_ONLY.search(stripped):
        return False
    if stripped.endswith("!"):
        return False
    if stripped.endswith("?"):
        last_sentence = re.split(r"(?<=[.!?])\s+", stripped)[-1]
        return not _WH_OPENING.search(last_sentence)
    return True


def ends_open(text: str) -> bool:
    """A few words and no closing punctuation. Punctuating STTs (Whisper, Deepgram's smart format)
    close a finished sentence with a stop or a question mark and leave one that trails off open
    ("So what we really wanted"); short replies ("Yes", "Sounds good") often come unpunctuated."""
    stripped = text.strip()
    return len(stripped.split()) >= 3 and not stripped.endswith((".", "?", "!"))


class EndOfTurn:
    """Decides that the caller's turn has ended.

    The turn ends when the STT has delivered final text and the caller has been silent for
    ``silence_s`` (SILENCE_THRESHOLD_SEC). The silence needed grows to ``incomplete_hold_s`` when
    the text so far reads unfinished, and to ``uncertain_hold_s`` when it may be: the STT was unsure
    of what it heard (confidence below ``min_confidence``) or left the sentence open. Mumbled,
    trailing-off or cut words are where callers most often pause and go on, and a moment's wait
    costs less than answering half a turn.
    """

    def __init__(
        self,
        silence_s: float,
        incomplete_hold_s: float = 1.2,
        uncertain_hold_s: float = 0.8,
        min_confidence: float = 0.5,
    ) -> None:
        self.silence_s = silence_s
        self.incomplete_hold_s = max(incomplete_hold_s, silence_s)
        self.uncertain_hold_s = max(uncertain_hold_s, silence_s)
        self.min_confidence = min_confidence

    def required_silence(self, text: str, confidence: float | None = None, final: bool = True) -> float:
        """``final``: the text is the STT's final (interim text is routinely left unpunctuated)."""
        if looks_incomplete(text):
            return self.incomplete_hold_s
        if (confidence is not None and confidence < self.min_confidence) or (final and ends_open(text)):
            return self.uncertain_hold_s
        return self.silence_s

    def remaining(self, text: str, silence_so_far_s: float, confidence: float | None = None) -> float:
        """Seconds still to wait before the turn may end (<= 0: end it now)."""
        return self.required_silence(text, confidence) - silence_so_far_s


FINALIZE_AFTER_S = 0.25  # silence beyond the end-of-turn threshold with only partials: ask for the final
PREEMPT_AFTER_S = 0.12  # caller quiet this long with words heard: a reply may start before the endpoint


@dataclass(slots=True, frozen=True)
class CallerTurn:
    """The caller's finished turn, with its offsets (ms since stream start)."""

    text: str
    speech_start_ms: float | None
    speech_end_ms: float | None
    stt_final_ms: float | None
    peak_energy: float


class VoiceCue:
    """What one caller frame tells the engine about the turn: bits of an int (per-frame code, and an
    ``enum.Flag`` operation costs ~1.6 µs where an int's costs 0.06)."""

    NONE = 0
    KEPT_TALKING = 1  # voice again after words: a reply guessed on the pause answers half a turn
    QUIET_WITH_WORDS = 2  # words heard and the caller quiet for PREEMPT_AFTER_S
    ASK_FINAL = 4  # words heard, long quiet, still no final: ask the STT for it


class TurnAssembler:
    """Turn assembly: caller voicing and transcript events → "the caller's turn is over".

    ``on_voice`` per 20 ms frame, ``on_transcript`` per STT event; ``check`` says whether the turn is
    over (a ``CallerTurn``) or how long to wait before asking again.
    """

    def __init__(self, eot: EndOfTurn, ms: Callable[..., float], now: float) -> None:
        self.eot = eot
        self._ms = ms  # CallClock.ms
        self.finals: list[str] = []
        self.confidence: float | None = None  # the least sure final of the turn so far
        self.partial = ""  # the latest partial transcript of the turn
        self.partial_pending = False  # a partial with no final yet
        self.last_voice_at = now
        self._final_at: float | None = None  # when the STT's endpoint (speech_final) came
        self._voiced_run = 0
        self._peak_energy = 0.0
        self._speech_start_ms: float | None = None
        self._speech_end_ms: float | None = None
        self._stt_final_ms: float | None = None

    @property
    def words_pending(self) -> bool:
        return bool(self.finals) or self.partial_pending

    @property
    def has_finals(self) -> bool:
        return bool(self.finals)

    def sounds_finished(self) -> bool:
        """The words so far need no more than the plain silence threshold to end the turn."""
        return self.required_silence() <= self.eot.silence_s

    @property
    def text_so_far(self) -> str:
        return " ".join([*self.finals, self.partial]).strip()

    def on_voice(self, energy: float, voiced: bool, now: float) -> int:
        cue = VoiceCue.NONE
        if voiced:
            self.last_voice_at = now
            self._peak_energy = max(self._peak_energy, energy)
            self._voiced_run += 1
            if self._voiced_run == 3:
                # The caller kept talking after the STT's final: that endpoint was a pause.
                self._final_at = None
                cue |= VoiceCue.KEPT_TALKING
            return cue
        self._voiced_run = 0
        quiet = now - self.last_voice_at
        if (self.finals or self.partial) and quiet >= PREEMPT_AFTER_S:
            cue |= VoiceCue.QUIET_WITH_WORDS
        if self.partial_pending and quiet > self.eot.silence_s + FINALIZE_AFTER_S:
            self.partial_pending = False
            cue |= VoiceCue.ASK_FINAL
        return cue

    def on_transcript(self, event: TranscriptEvent, now: float, t0: float) -> bool:
        """Feed an STT event; True when the end of the turn should be checked now."""
        if self._speech_start_ms is None and event.kind in ("speech_started", "partial", "final"):
            started = t0 + event.start_s if event.start_s is not None else now
            self._speech_start_ms = self._ms(min(started, now))
        if event.kind == "partial":
            self.partial = event.text.strip()
            self.partial_pending = bool(self.partial)
            return False
        if event.kind == "final":
            self.partial_pending = False
            self.partial = ""
            text = event.text.strip()
            if not text:
                return False
            self.finals.append(text)
            if event.confidence is not None:
                self.confidence = min(self.confidence or 1.0, event.confidence)
            if self._speech_end_ms is None or event.end_s is not None:
                end = self._ms(t0 + event.end_s) if event.end_s is not None else self._ms(self.last_voice_at)
                self._speech_end_ms = min(end, self._ms(now))
            self._stt_final_ms = self._ms(now)
            if event.speech_final:
                self._final_at = now
            return True
        if event.kind == "utterance_end" and self.finals:
            self._final_at = self._final_at or now
            return True
        return False

    def check(self, now: float) -> CallerTurn | float | None:
        """The finished turn, or seconds to wait before checking again (None: no words yet)."""
        if not self.finals:
            return None
        text = " ".join(self.finals)
        silence = now - self.last_voice_at
        if self._final_at is not None:
            # The STT's endpoint is evidence of silence too (our VAD may hear line noise as voice).
            silence = max(silence, now - self._final_at + self.eot.silence_s)
        remaining = self.eot.remaining(text, silence, self.confidence)
        if remaining > 0:
            return remaining
        turn = CallerTurn(
            text, self._speech_start_ms, self._speech_end_ms, self._stt_final_ms, self.take_peak()
        )
        self.finals.clear()
        self.confidence = None
        self.partial = ""
        self._final_at = None
        self._speech_end_ms = self._speech_start_ms = None
        return turn

    def take_peak(self) -> float:
        """The loudest voiced frame since the last turn (and start over)."""
        peak, self._peak_energy = self._peak_energy, 0.0
        return peak

    def required_silence(self) -> float:
        """The silence the words so far need before they may end the turn."""
        return self.eot.required_silence(self.text_so_far, self.confidence, final=not self.partial)


class DtmfBuffer:
    """Keypad digits: a turn when '#' is pressed or after ``gap_s`` without another key."""

    def __init__(self, gap_s: float = 1.5) -> None:
        self.gap_s = gap_s
        self._digits: list[str] = []

    def push(self, digit: str) -> str | None:
        """The finished digits on '#', else None (then flush after ``gap_s``)."""
        if digit == "#":
            return self.flush()
        self._digits.append(digit)
        return None

    def flush(self) -> str | None:
        digits = "".join(self._digits)
        self._digits.clear()
        return digits or None
