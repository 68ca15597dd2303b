"""When is the caller's turn over? Silence plus the STT's endpoint, with a guard for unfinished sentences."""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Protocol

import numpy as np

from call.intents import is_hold_request
from providers.base import TranscriptEvent
from speech.audio import MULAW_TO_PCM16

# Words a sentence does not end on: the caller paused mid-sentence ("I'd like to… um…"), even if the
# STT put a question mark after them ("Could you tell me if?").
_NEVER_FINAL = (
    r"um+|uh+|er+|hmm+|and|or|but|the|a|an|my|our|your|their|his|her|its|i'd|i'm|we're|they're|"
    r"you're|because|if|than|whether|"
    # "so" trails off ("It's a bit pricey, so…") unless it is what was thought, hoped or said
    r"so(?<!think so)(?<!hope so)(?<!guess so)(?<!believe so)(?<!suppose so)(?<!said so)(?<!do so)"
)
# Words a sentence rarely ends on, but may ("I think so.", "Yes, I can.", "We don't have any more."):
# unfinished when the STT left them open, finished when it closed them with a stop or a question mark.
_SOFT_NEVER_FINAL = (
    r"so|then|maybe|just|very|really|like|is|are|was|were|will|would|can|could|should|have|has|had|be|"
    r"been|that's|it's|there's|some|any|more|less|until|since"
)
# Words a statement does not end on, but a question may ("Who is this for?", "What's it about?").
# Not "that"/"this" alone: they end sentences as pronouns ("I'm interested in that."), but not after
# "is" ("The problem is that…").
_NOT_FINAL_IN_STATEMENTS = (
    r"to|of|for|with|about|around|at|on|in|from|by|as|when|where|which|who|whom|how|what|why|"
    r"(?:is|was|are|were) (?:that|this)"
)
_TRAILING_NEVER_FINAL = re.compile(rf"(?:\b(?:{_NEVER_FINAL})|,|-|…|\.\.\.)\W*$", re.IGNORECASE)
_TRAILING_SOFT_OPEN = re.compile(rf"\b(?:{_SOFT_NEVER_FINAL})[\s,;:-]*$", re.IGNORECASE)
_TRAILING_STATEMENT_ONLY = re.compile(rf"\b(?:{_NOT_FINAL_IN_STATEMENTS})\W*$", re.IGNORECASE)
# A question that strands its preposition usually opens with a wh-word; one that does not
# ("Can you send the pricing to?") is a sentence the caller has not finished.
_WH_OPENING = re.compile(r"^\W*(?:who|whom|what|where|which|whose|how|why|when)\b", re.IGNORECASE)


@lru_cache(maxsize=1024)  # asked again on every quiet frame about the same words (~30 µs of regexes)
def looks_incomplete(text: str) -> bool:
    """True when the words so far read like the caller paused mid-sentence."""
    stripped = text.strip()
    if not stripped:
        return False
    if _TRAILING_NEVER_FINAL.search(stripped) or is_hold_request(stripped):
        return True  # a "wait" is mostly followed by what the caller wanted to say
    if _TRAILING_SOFT_OPEN.search(stripped):
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


class TurnJudgeLike(Protocol):
    """What the assembler needs of a turn-end model (``speech.turn_model.TurnJudge``)."""

    @property
    def ready(self) -> bool: ...

    def submit(self, pcm: np.ndarray, rate: int = 8000) -> Any: ...  # concurrent Future[float] | None


@dataclass(slots=True, frozen=True)
class TurnModelPolicy:
    """How the turn-end model's probability combines with the words (``EndOfTurn``'s holds).

    The model is asked at most once per pause, ``ask_after_s`` into it, on the caller's last 8 s of audio.
    - p >= ``complete``: the turn ends as soon as the STT's final text is in, even when the STT was
      *unsure* of the words (the 0.8 s hold for low confidence); not when it left the sentence open
      (also 0.8 s) unless ``shorten_open``; only p >= ``override`` (< 1.0) ends one whose words read
      *unfinished* (1.2 s). Why: on the labelled set (bench/results/turn_model.md) the model calls ~80%
      of synthesised mid-sentence pauses complete: it may overrule a doubt about the audio, not grammar.
    - p < ``incomplete``: the caller is mid-sentence; the turn needs ``hold_s`` of silence (never less
      than the words' own hold). The STT endpoint and ``hold_s`` remain the safety net: a turn always ends.
    - no answer within ``wait_s`` past the words' own requirement (model busy, failed, not loaded): the
      words decide alone, as without a model.
    ``shorten``/``extend`` switch each direction off (a bench may find one of them does not pay).

    ``early``: ask ``ask_after_s`` into *every* pause, so an "incomplete" can hold a turn whose words
    would end it. Off by default: the decision (~85 ms of CPU) then runs alongside the STT's final and,
    on 2 busy cores, delayed most answers (bench/results/turn_model.md: complete-turn gap p50 +140 to
    +370 ms in both server runs). Without it the model is asked only once the words hold a turn (the STT
    unsure or the sentence unfinished), after the final: no cost on turns that end on the plain silence.
    """

    ask_after_s: float = 0.16
    complete: float = 0.7
    override: float = 1.0  # 1.0: never (on the labelled set p >= 0.97 at 5 of 36 mid-sentence pauses)
    incomplete: float = 0.2
    hold_s: float = 1.2
    wait_s: float = 0.12
    shorten: bool = True
    shorten_open: bool = False
    early: bool = False
    extend: bool = True

    def adjust(self, required: float, p: float, text: str, eot: EndOfTurn) -> float:
        """The words' required silence (s) for ``text``, once the model said ``p`` about this pause."""
        if p < self.incomplete:
            return max(required, self.hold_s) if self.extend else required
        if not self.shorten or p < self.complete:
            return required
        if required >= eot.incomplete_hold_s > eot.silence_s:
            # the words read unfinished: only a very sure model overrides them (off by default)
            overrides = self.override < 1.0 and p >= self.override
            return min(required, self.ask_after_s) if overrides else required
        if required > eot.silence_s and not self.shorten_open and ends_open(text):
            return required  # the STT left the sentence open: on the labelled set, mostly a real pause
        return min(required, self.ask_after_s)  # as soon as the STT's final text is in


class TextJudgeLike(Protocol):
    """What the assembler needs of a text end-of-turn model (``speech.text_turn.TextTurnJudge``)."""

    @property
    def ready(self) -> bool: ...

    def submit(self, text: str, prepare: bool = False) -> Any: ...  # Future[float] | None (cached)


@dataclass(slots=True, frozen=True)
class TextTurnPolicy:
    """How the text end-of-turn probability (the LM's "the sentence or message ends here") sets the
    silence a pause needs. Fitted on recorded speech (bench/results/turns_real.md): mid-phrase pauses
    ("we're ready to", "I don't want") score < 0.01; finished turns mostly 0.05–0.8.

    - p < ``unlikely``: the caller is mid-phrase: ``hold_s`` of silence.
    - ``unlikely`` ≤ p < ``likely``: it may go on: ``mid_s``.
    - p ≥ ``likely``: the plain silence threshold (SILENCE_THRESHOLD_SEC).
    Unfinished words (``looks_incomplete``) keep their own hold, never less. The answer replaces the
    words' doubt about an open or unsure final (the model reads the words better than the punctuation).
    No answer within ``wait_s`` past the words' own requirement: the words decide alone.
    """

    unlikely: float = 0.01
    likely: float = 0.3
    hold_s: float = 2.5
    mid_s: float = 0.6
    wait_s: float = 0.5

    def required(self, words_required: float, p: float, eot: EndOfTurn) -> float:
        tier = self.hold_s if p < self.unlikely else self.mid_s if p < self.likely else eot.silence_s
        if words_required >= eot.incomplete_hold_s > eot.silence_s:
            return max(words_required, tier)
        return max(tier, eot.silence_s)


class PauseHabit:
    """How long this caller pauses and then goes on: a pause they resumed after (mid-turn, or right
    after a turn we ended too soon) raises the silence their later pauses need to
    ``longest + margin_s``, at most ``cap_s``. Some people think in 1 s pauses; waiting 0.3 s on them
    answers every other sentence."""

    def __init__(self, margin_s: float = 0.15, cap_s: float = 1.6, min_pause_s: float = 0.3) -> None:
        self.margin_s, self.cap_s, self.min_pause_s = margin_s, cap_s, min_pause_s
        self.longest = 0.0

    def resumed_after(self, pause_s: float) -> None:
        if self.min_pause_s <= pause_s <= self.cap_s:
            self.longest = max(self.longest, pause_s)

    def required(self, required: float) -> float:
        if self.longest <= 0.0:
            return required
        return max(required, min(self.cap_s, self.longest + self.margin_s))


@dataclass(slots=True, frozen=True)
class WordDoubt:
    """The STT was unsure of the last word it heard: a pause needs ``hold_s`` of silence.

    Whisper completes a phrase cut by a pause with words it is not sure of ("Yeah go for a…" → "Yeah,
    go for it.", p 0.27 on the last word), and the completed words then read finished to the text model.
    On the real set's fit split (bench/results/turns_real.md) the last word scored below 0.3 at 11 of 26
    mid-turn pauses and at 4 of 22 true ends (held out: 1 of 9 pauses, 1 of 33 ends). Not the whole
    transcript's confidence: a sure start says nothing about the words the caller stopped on."""

    below: float = 0.3
    hold_s: float = 1.0

    def required(self, required: float, last_word_p: float | None) -> float:
        if last_word_p is None or self.below <= 0.0 or last_word_p >= self.below:
            return required
        return max(required, self.hold_s)


@dataclass(slots=True, frozen=True)
class Eagerness:
    """How soon a pause after finished-sounding words ends the turn: the text tier that answers at
    once (``likely``), the silence of the tier below it (``mid_s``) and the hold on an unsure last word
    (``doubt_hold_s``). None: as configured (TURN_TEXT_LIKELY, TURN_TEXT_MID_SEC,
    TURN_WORD_DOUBT_HOLD_SEC). Per agent as ElevenLabs' ``turn_eagerness``.

    Why a choice and not one setting: on recorded speech (bench/results/turns_real.md) callers pause
    0.6–1.6 s after words that read finished and then go on; no cue here tells those pauses from a true
    end, so waiting them out costs the same wait on every finished turn. A team calling people who think
    aloud picks "patient"; one that wants snappy answers, "eager"."""

    likely: float | None = None
    mid_s: float | None = None
    doubt_hold_s: float | None = None

    def text_policy(self, policy: TextTurnPolicy) -> TextTurnPolicy:
        return replace(
            policy,
            likely=policy.likely if self.likely is None else self.likely,
            mid_s=policy.mid_s if self.mid_s is None else self.mid_s,
        )

    def word_doubt(self, doubt: WordDoubt) -> WordDoubt:
        return doubt if self.doubt_hold_s is None else replace(doubt, hold_s=self.doubt_hold_s)


# Fitted by replaying the decisions on both sets (bench/results/turns_real.md, "turn eagerness").
EAGERNESS: dict[str, Eagerness] = {
    "eager": Eagerness(likely=0.15, mid_s=0.45, doubt_hold_s=0.7),
    "normal": Eagerness(),
    "patient": Eagerness(likely=1.0, mid_s=1.2, doubt_hold_s=1.2),  # 1.0: every finished-sounding pause
}


RECOVERY_S = 1.0  # the caller went on this soon after we ended their turn: that pause was theirs


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
    model_p: float | None = None  # the turn-end model's probability at the pause that ended the turn
    text_p: float | None = None  # the text model's end probability for the turn's words


class VoiceCue:
    """What one caller frame tells the engine about the turn: bits of an int (per-frame code, and an
    ``enum.Flag`` operation costs ~1.6 µs where an int's costs 0.06)."""

    NONE = 0
    KEPT_TALKING = 1  # voice again after words: a reply guessed on the pause answers half a turn
    QUIET_WITH_WORDS = 2  # words heard and the caller quiet for PREEMPT_AFTER_S
    ASK_FINAL = 4  # words heard, long quiet, still no final: ask the STT for it
    CHECK_TURN = 8  # the turn-end model has answered: check the end of the turn now


class TurnAssembler:
    """Turn assembly: caller voicing and transcript events → "the caller's turn is over".

    ``on_voice`` per 20 ms frame, ``on_transcript`` per STT event; ``check`` says whether the turn is
    over (a ``CallerTurn``) or how long to wait before asking again.
    """

    WINDOW_FRAMES = 400  # 8 s of 20 ms frames: what the turn-end model listens to
    MIN_VOICED_FRAMES = 8  # 160 ms of voice before a pause is worth a decision

    def __init__(
        self,
        eot: EndOfTurn,
        ms: Callable[..., float],
        now: float,
        judge: TurnJudgeLike | None = None,
        policy: TurnModelPolicy | None = None,
        text_judge: TextJudgeLike | None = None,
        text_policy: TextTurnPolicy | None = None,
        habit: PauseHabit | None = None,
        doubt: WordDoubt | None = None,
    ) -> None:
        self.eot = eot
        self.doubt = doubt
        self.last_word_p: float | None = None  # the STT's certainty of the latest final's last word
        self.judge = judge
        self.policy = policy or TurnModelPolicy()
        self.text_judge = text_judge
        self.text_policy = text_policy or TextTurnPolicy()
        self.habit = habit
        self._text_future: Any = None  # Future of the end probability of ``_text_for`` (the finals)
        self._text_for = ""
        self._text_told = False
        self._gap_s = 0.0  # the silence before the current voiced run
        self._turn_ended_at: float | None = None  # when the last turn was ended (check returned it)
        self._audio: deque[bytes] = deque(maxlen=self.WINDOW_FRAMES)  # the caller's recent mu-law frames
        self._voiced_frames = 0  # since the last decision was asked: was there speech to judge?
        self._decision: Any = None  # Future of the current pause's probability (one at a time)
        self._decision_for: float | None = None  # the pause (its last_voice_at) the decision judges
        self._decision_told = False
        self.decisions = 0  # asked, over the call (bench: decisions per turn)
        self.model_ended = self.model_held = 0  # turns the model ended early / pauses it held
        self._ms = ms  # CallClock.ms
        self.finals: list[str] = []
        # How sure the STT was of the turn's last final: the words the caller stopped on. Not the least
        # sure of the turn: a mumbled fragment the caller then finished ("…way. Can we book a demo?")
        # says nothing about whether they are done.
        self.confidence: float | None = None
        self.partial = ""  # the latest partial transcript of the turn
        self.partial_pending = False  # a partial with no final yet
        self.last_voice_at = now
        self._words_behind = False  # the caller spoke since the latest words came: they are behind
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

    def on_voice(self, energy: float, voiced: bool, now: float, frame: bytes | None = None) -> int:
        cue = VoiceCue.NONE
        if frame is not None and self.judge is not None:
            self._audio.append(frame)
        if voiced:
            self._voiced_frames += 1
            if self._voiced_run == 0:
                self._gap_s = now - self.last_voice_at
            self.last_voice_at = now
            self._peak_energy = max(self._peak_energy, energy)
            self._voiced_run += 1
            if self._voiced_run == 3:
                # The caller kept talking after the STT's final: that endpoint was a pause. The interim
                # words heard at the pause are stale too (an STT that sends interim text only at pauses
                # would otherwise have the next pause guess a reply on them).
                self._learn_pause()  # before the stale words go: they say it was a pause mid-turn
                self._final_at = None
                self.partial = ""
                self._words_behind = True
                cue |= VoiceCue.KEPT_TALKING
            return cue
        self._voiced_run = 0
        quiet = now - self.last_voice_at
        if (self.finals or self.partial) and quiet >= PREEMPT_AFTER_S:
            cue |= VoiceCue.QUIET_WITH_WORDS
        if self.partial_pending and quiet > self.eot.silence_s + FINALIZE_AFTER_S:
            self.partial_pending = False
            cue |= VoiceCue.ASK_FINAL
        if self.judge is not None:
            cue |= self._ask_model(quiet)
        if self.text_judge is not None and self.finals:
            cue |= self._ask_text(" ".join(self.finals))
        return cue

    def _learn_pause(self) -> None:
        """The caller spoke again: a pause inside their turn (words heard, turn still open), or one we
        ended the turn on too soon, tells how long this caller pauses."""
        if self.habit is None:
            return
        ended = self._turn_ended_at
        recovered = ended is not None and self.last_voice_at - ended <= RECOVERY_S
        if self.finals or self.partial or recovered:
            self.habit.resumed_after(self._gap_s)
        self._turn_ended_at = None

    def _ask_text(self, text: str) -> int:
        """Ask the text model about the words the caller stopped on (once per text); CHECK_TURN once
        its answer is in."""
        if text != self._text_for:
            judge = self.text_judge
            if judge is None or not judge.ready or (future := judge.submit(text)) is None:
                return VoiceCue.NONE  # not loaded, or busy: asked again at the next quiet frame
            self._text_future, self._text_for, self._text_told = future, text, False
            return VoiceCue.NONE
        future = self._text_future
        if future is not None and future.done() and not self._text_told:
            self._text_told = True
            return VoiceCue.CHECK_TURN
        return VoiceCue.NONE

    def text_probability(self, text: str) -> float | None:
        """The text model's end probability for ``text``: None when not asked, not in yet or failed."""
        future = self._text_future
        if future is None or self._text_for != text or not future.done():
            return None
        if future.cancelled() or future.exception() is not None:
            return None
        return float(future.result())

    def _with_text(self, words_required: float, required: float, silence: float, text: str) -> float:
        """The silence the pause needs once the text model has read the words (else as before, with a
        short wait for its answer)."""
        self._ask_text(text)
        p = self.text_probability(text)
        if p is None:
            future = self._text_future
            pending = future is not None and self._text_for == text and not future.done()
            wait = self.text_policy.wait_s
            return required + wait if pending and silence < required + wait else required
        return self.text_policy.required(words_required, p, self.eot)

    def _ask_model(self, quiet: float) -> int:
        """Ask the turn-end model about this pause (once, when it is ``ask_after_s`` old); CHECK_TURN
        once its answer is in."""
        decision = self._decision
        if decision is not None and not decision.done():
            return VoiceCue.NONE  # one decision at a time per call
        if decision is not None and self._decision_for == self.last_voice_at:
            if self._decision_told:
                return VoiceCue.NONE
            self._decision_told = True
            return VoiceCue.CHECK_TURN
        if quiet < self.policy.ask_after_s or self._voiced_frames < self.MIN_VOICED_FRAMES:
            return VoiceCue.NONE
        if not self.policy.early and (
            self._words_behind or not (self.finals and self.required_silence() > self.eot.silence_s)
        ):
            # Only a pause the words hold is worth a decision (see TurnModelPolicy); and not on words the
            # caller has since talked past (their text is yet to come: an earlier fragment's doubt or
            # grammar is not about where they stopped).
            return VoiceCue.NONE
        judge = self.judge
        if judge is None or not judge.ready or not self._audio:
            return VoiceCue.NONE
        pcm = MULAW_TO_PCM16[np.frombuffer(b"".join(self._audio), dtype=np.uint8)]
        self._decision = judge.submit(pcm, 8000)
        self._decision_for = self.last_voice_at
        self._decision_told = False
        self._voiced_frames = 0
        if self._decision is not None:
            self.decisions += 1
        return VoiceCue.NONE

    def model_probability(self) -> float | None:
        """The model's answer about the current pause: None when not asked, not in yet, failed or stale."""
        decision = self._decision
        if decision is None or self._decision_for != self.last_voice_at or not decision.done():
            return None
        if decision.cancelled() or decision.exception() is not None:
            return None
        return float(decision.result())

    def _model_pending(self) -> bool:
        decision = self._decision
        return decision is not None and self._decision_for == self.last_voice_at and not decision.done()

    def _with_model(self, required: float, silence: float, text: str) -> float:
        """The words' required silence, adjusted by the model's answer about this pause."""
        policy, eot = self.policy, self.eot
        p = self.model_probability()
        if p is None:
            if self._model_pending() and silence < required + policy.wait_s:
                return required + policy.wait_s  # it is asked; wait a little for it (CHECK_TURN wakes us)
            return required
        return policy.adjust(required, p, text, eot)

    def on_transcript(self, event: TranscriptEvent, now: float, t0: float) -> bool:
        """Feed an STT event; True when the end of the turn should be checked now."""
        if self._speech_start_ms is None and event.kind in ("speech_started", "partial", "final"):
            started = t0 + event.start_s if event.start_s is not None else now
            self._speech_start_ms = self._ms(min(started, now))
        if event.kind == "partial":
            self.partial = event.text.strip()
            self.partial_pending = bool(self.partial)
            if self.partial:
                self._words_behind = False
                if self.text_judge is not None and self.text_judge.ready:
                    self.text_judge.submit(self.text_so_far, prepare=True)  # warms its cache for the pause
            return False
        if event.kind == "final":
            self.partial_pending = False
            self.partial = ""
            text = event.text.strip()
            if not text:
                return False
            self.finals.append(text)
            self._words_behind = False
            if self.text_judge is not None:
                self._ask_text(" ".join(self.finals))  # at once: the answer is needed at this pause
            self.confidence = event.confidence
            self.last_word_p = event.last_word_confidence
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
        required = words_only = self.eot.required_silence(text, self.confidence)
        if self.judge is not None:
            required = self._with_model(required, silence, text)
        if self.text_judge is not None:
            required = self._with_text(words_only, required, silence, text)
        if self.habit is not None:
            required = self.habit.required(required)
        if self.doubt is not None:
            required = self.doubt.required(required, self.last_word_p)
        remaining = required - silence
        if remaining > 0:
            return remaining
        if self.judge is not None:
            self.model_ended += required < words_only
            self.model_held += required > words_only + self.policy.wait_s
        p = self.model_probability() if self.judge is not None else None
        turn = CallerTurn(
            text, self._speech_start_ms, self._speech_end_ms, self._stt_final_ms, self.take_peak(), p,
            self.text_probability(text),
        )  # fmt: skip
        self._turn_ended_at = now
        self.finals.clear()
        self.confidence = self.last_word_p = None
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
        # With interim words after the last final, those are the words the caller stopped on: the
        # final's confidence is not theirs.
        confidence = None if self.partial else self.confidence
        return self.eot.required_silence(self.text_so_far, confidence, final=not self.partial)


class DtmfBuffer:
    """Keypad digits: a turn when '#' is pressed or after ``gap_s`` without another key."""

    def __init__(self, gap_s: float = 1.5) -> None:
        self.gap_s = gap_s
        self._digits: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

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

    def key(self, digit: str, deliver: Callable[[str], None]) -> None:
        """A key pressed: ``deliver`` gets the digits on '#' or once ``gap_s`` passed without another."""
        self.cancel()
        if (digits := self.push(digit)) is not None:
            deliver(digits)
        elif digit != "#":
            self._timer = asyncio.get_running_loop().call_later(self.gap_s, self._deliver_later, deliver)

    def _deliver_later(self, deliver: Callable[[str], None]) -> None:
        self._timer = None
        if (digits := self.flush()) is not None:
            deliver(digits)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
