"""Answering-machine detection from the call's own audio and words (outbound calls).

Twilio's AMD answers too when it is asked for (``AnsweredBy`` on the status callback); this detector
works without it, so the embedded default and the simulator detect machines as well. Three signals:

- the greeting's length: a person says "Hello?" or "Yeah, this is Dana" and waits (under ~2.5 s of
  speech, then quiet); a voicemail greeting talks on ("Hi, you've reached…", 4 s and more);
- voicemail phrases in the transcript ("leave a message", "after the tone", "not available"…);
- the beep: a pure tone (spectral flatness near 0, its peak steady in one 50 Hz bin) for ≥ 200 ms.

Hanging up on a person is the worst error, so every doubt resolves to ``human``: a short greeting
followed by quiet is a person; a long one is a machine only if it goes on past ``machine_after_s``.
After a ``machine`` decision the detector goes on listening and says when the greeting is over (the
beep ended — the last of several short tones too —, or the quiet after the greeting) so a voicemail
can be left at the right moment.

A person answers the agent's greeting; a recording does not. A ``human`` decided from a short greeting
(``short_greeting``, ``greeting_then_quiet``) stays open to one revision: if nobody starts speaking while
the agent is quiet after it has spoken (its greeting played, or was cut by the greeting talking on, and
any reply to those words played), and the line stays quiet for ``silent_after_greeting_s`` after the
agent's last frame played, it was a machine (``silent_after_greeting``). A person who says "Hello?",
hears the greeting and then says nothing that long is taken for a machine and hears the voicemail
message (a documented limit).

Two more kinds of answer are told by their words, and win over a ``machine`` decided by the audio:
a call screener (Google Call Screen, iOS Call Screening, carrier screeners: "say your name and why
you're calling") is ``screener``, and a phone menu ("press 1 for sales") is ``ivr``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from providers.base import FRAME_MS
from speech.audio import tone

FRAME_S = FRAME_MS / 1000

_VOICEMAIL = re.compile(
    r"leave (?:me |us )?(?:a |your )?(?:message|name|number|voicemail)|after the (?:tone|beep)|"
    r"at the (?:tone|beep)|(?:is|are) (?:not|n't) available|unavailable|"
    r"can(?:no|')?t (?:take|come to|get to) (?:your|the) (?:call|phone)|voice ?mail|mailbox|"
    r"you(?:'ve| have) reached|record your message|out of the office|missed you|"
    r"get back to you|away from (?:my|the) (?:desk|phone)|reached the (?:voicemail|mailbox)|"
    r"(?:finished|done) recording|hang up or press",
    re.IGNORECASE,
)
# A screener's own words; and words a voicemail greeting may say too ("…and the reason for your call").
_SCREENER = re.compile(
    r"screening service|call screen|(?:is|are) screening|screens? (?:your|this|the) call|"
    r"see if (?:this|the) person is available|before (?:your|this) call is connected",
    re.IGNORECASE,
)
_SCREENER_ASK = re.compile(
    r"(?:say|state|record) your name|why you(?:'re| are) calling|reason for (?:your |the )?call(?:ing)?",
    re.IGNORECASE,
)
_IVR = re.compile(
    r"\bpress (?:\d|one|two|three|four|five|six|seven|eight|nine|zero|star|pound)\b|"
    r"\bdial (?:\d|one|two|three|zero)\b|(?:party'?s|their|the) extension|main menu|"
    r"menu options|para español|say or press|to speak (?:to|with) an? (?:operator|representative)|"
    r"for (?:sales|support|billing|customer service),? (?:press|say|dial)",
    re.IGNORECASE,
)


class AnsweredBy(StrEnum):
    HUMAN = "human"
    MACHINE = "machine"
    SCREENER = "screener"  # a call screener asks who is calling; the person may pick up after
    IVR = "ivr"  # a phone menu
    FAX = "fax"  # Twilio's AMD only
    UNKNOWN = "unknown"


# Decided from the words, these are never revised by the audio (a screener's long prompt is no voicemail).
_BY_WORDS = (AnsweredBy.SCREENER, AnsweredBy.IVR)

# Twilio's asynchronous AMD (DetectMessageEnd) posts its verdict to /twiml/amd, which sends it to the live
# call as this command (storage.commands); "machine_end_*" means the greeting (and its beep) is over.
CARRIER_VERDICT = "amd_verdict"
CARRIER_METHOD = "twilio_amd"
_MACHINE_END = frozenset({"machine_end_beep", "machine_end_silence", "machine_end_other"})
# A person decided from a hello this short is confirmed only by answering the agent (see the docstring).
_UNCONFIRMED = frozenset({"short_greeting", "greeting_then_quiet"})
SILENT_AFTER_GREETING = "silent_after_greeting"


@dataclass(slots=True, frozen=True)
class AmdDecision:
    answered_by: AnsweredBy
    method: str  # short_greeting | greeting_length | phrase | beep | no_speech | silent_after_greeting …
    at_s: float  # seconds since the call was answered


@dataclass(slots=True, frozen=True)
class GreetingOver:
    """A machine's greeting (and its beep) ended: a message may be left now."""

    reason: str  # beep | silence
    at_s: float


def carrier_verdicts(
    detector: AnsweringMachineDetector | None,
    act: Callable[[AmdDecision | GreetingOver], None],
    hang_up: Callable[[str], Awaitable[None]],
) -> dict[str, Callable[[Any], Awaitable[None]]]:
    """The call's handler of Twilio's verdict command (``storage.commands``): what the detector makes of
    it goes to ``act`` as its own decisions do; a fax is hung up on. None for a call without detection."""

    async def on_verdict(command: Any) -> None:
        assert detector is not None
        for event in detector.on_carrier_verdict(str(command.payload.get("answered_by", ""))):
            if isinstance(event, AmdDecision) and event.answered_by is AnsweredBy.FAX:
                await hang_up("fax")
            else:
                act(event)

    return {CARRIER_VERDICT: on_verdict} if detector is not None else {}


def is_voicemail_text(text: str) -> bool:
    return bool(_VOICEMAIL.search(text))


def is_screener_text(text: str) -> bool:
    return bool(_SCREENER.search(text)) or (bool(_SCREENER_ASK.search(text)) and not is_voicemail_text(text))


def is_ivr_text(text: str) -> bool:
    # "…hang up or press pound for more options" ends many a voicemail greeting: the voicemail wins
    return bool(_IVR.search(text)) and not is_voicemail_text(text)


def screener_line(variables: dict[str, Any]) -> str:
    """One sentence for a call screener: who calls, from where, for whom, why (the call's variables:
    ``agent_name``, ``company``/``company_name``, ``customer_name``, ``call_reason``/``reason``)."""

    def first(*keys: str) -> str:
        return next((str(variables[k]).strip() for k in keys if str(variables.get(k) or "").strip()), "")

    line = f"Hi, this is {first('agent_name') or 'a representative'}"
    if company := first("company", "company_name", "agent_company"):
        line += f" from {company}"
    if customer := first("customer_name", "name", "first_name"):
        line += f", calling for {customer}"
    reason = first("call_reason", "reason", "reason_for_call")
    return line + (f" about {reason.rstrip('.')}." if reason else ".")


def answered_by_words(text: str) -> AnsweredBy | None:
    """What the words alone say answered: a screener, a phone menu or a voicemail greeting."""
    if is_screener_text(text):
        return AnsweredBy.SCREENER
    if is_voicemail_text(text):
        return AnsweredBy.MACHINE
    if is_ivr_text(text):
        return AnsweredBy.IVR
    return None


class AnsweringMachineDetector:
    """Fed every caller frame (``on_frame``) and transcript text (``on_text``) of an outbound call."""

    # The room's level: follows energy down fast and up slowly (~1 s), so words (with dips between them)
    # keep it low while continuous background chatter raises it.
    FLOOR_RISE = 0.02
    FLOOR_FALL = 0.3
    FOREGROUND_FACTOR = 3.0
    MIN_VOICED = 0.35
    # A beep is one pure tone; a held vowel is harmonic (its 20 ms frames sit above ~0.003).
    BEEP_FLATNESS = 0.002
    SHORT_TONE_FRAMES = 4  # 80 ms of one pure tone: a short beep, if another follows
    SHORT_TONE_GAP_S = 0.6
    AFTER_TONE_S = 0.3  # a beep of several tones is over once none has sounded for this long
    # An answer to the agent: speech (this many voiced frames running) that starts after this much
    # quiet, while the agent is quiet (a greeting that talks on over the agent starts no new run).
    ANSWER_GAP_S = 0.5
    ANSWER_FRAMES = 3

    def __init__(
        self,
        *,
        human_max_speech_s: float = 2.6,  # a person's "hello" is shorter than this…
        human_quiet_s: float = 0.7,  # …and is followed by this much quiet
        machine_after_s: float = 4.0,  # this much speech without such a pause: a recorded greeting
        no_speech_s: float = 6.0,  # nobody says anything: unknown (treated as a person)
        greeting_over_quiet_s: float = 1.6,  # quiet after a machine's greeting with no beep heard
        beep_min_s: float = 0.2,
        speech_energy: float = 500.0,
        revise_within_s: float = 12.0,
        greeting_max_wait_s: float = 20.0,
        silent_after_greeting_s: float = 0.0,  # 0: a short hello's "human" is never revised by silence
    ) -> None:
        self.silent_after_greeting_s = silent_after_greeting_s
        # Whether the agent's voice is on the line now (playing, or held by a barge-in pause): set by
        # the call (``call.answering``); without it nothing is revised by silence.
        self.agent_speaking: Callable[[], bool] | None = None
        self._watching = False  # a person decided from a short hello, not confirmed by an answer yet
        self._agent_spoke = False
        self._agent_quiet_at: float | None = None  # when the agent last went quiet (after it spoke)
        self._voice_at = 0.0  # the far end's last voiced frame
        self._unvoiced_s = 0.0
        self._run_frames = 0
        self._run_may_answer = False  # the current voiced run started after a gap, the agent quiet
        self.greeting_max_wait_s = greeting_max_wait_s
        self.revise_within_s = revise_within_s
        self.human_max_speech_s = human_max_speech_s
        self.human_quiet_s = human_quiet_s
        self.machine_after_s = machine_after_s
        self.no_speech_s = no_speech_s
        self.greeting_over_quiet_s = greeting_over_quiet_s
        self.beep_frames = max(2, round(beep_min_s / FRAME_S))
        self.speech_energy = speech_energy
        self.decision: AmdDecision | None = None
        self.greeting_over: GreetingOver | None = None
        self._t = 0.0  # seconds of audio seen
        self._floor = 0.0
        self._speech_s = 0.0  # speech in the current run (pauses shorter than human_quiet_s included)
        self._run_voiced_s = 0.0  # …of which frames of speech
        self._total_speech_s = 0.0
        self._quiet_s = 0.0
        self._beep_run = 0
        self._beep_bin = -1.0
        self._beep_heard = False
        self._tone_ended_at: float | None = None
        self._tonal_at = -1.0  # when the last pure-tone frame sounded
        self._short_tones = 0
        self._short_tone_hz = 0.0
        self._short_tone_end = -1.0

    def on_frame(self, frame: bytes, energy: float, voiced: bool) -> AmdDecision | GreetingOver | None:
        """One 20 ms caller frame; returns a decision, or (after ``machine``) the end of the greeting."""
        self._t += FRAME_S
        beep = self._beep(frame, energy)
        # Background voices (a busy office) are voiced too: only speech well above the room's level counts.
        rate = self.FLOOR_RISE if energy > self._floor else self.FLOOR_FALL
        self._floor += rate * (energy - self._floor)
        loud = energy >= max(self.speech_energy, self._floor * self.FOREGROUND_FACTOR)
        speaking = voiced and loud and not self._beep_run
        if speaking:
            self._speech_s += FRAME_S + (self._quiet_s if self._speech_s else 0.0)
            self._run_voiced_s += FRAME_S
            self._total_speech_s += FRAME_S
            self._quiet_s = 0.0
        else:
            self._quiet_s += FRAME_S
            if self._quiet_s >= self.human_quiet_s:
                self._speech_s = self._run_voiced_s = 0.0
        if self.decision is None:
            return self._decide(beep)
        if self._watching and (revised := self._watch_answer(voiced)) is not None:
            return revised
        if (
            beep
            and self.decision.answered_by not in (AnsweredBy.MACHINE, *_BY_WORDS)
            and self._t <= self.revise_within_s
        ):
            return self._set(AnsweredBy.MACHINE, "beep")
        if self.decision.answered_by is AnsweredBy.MACHINE and self.greeting_over is None:
            return self._greeting_over(beep)
        return None

    @property
    def pending(self) -> bool:
        """Nobody knows yet who answered: the agent neither greets nor answers."""
        return self.decision is None

    def said_before_decision(self, speech_end_ms: float | None) -> bool:
        """Words that ended before anyone knew who answered (offsets on the call's clock)."""
        return self.decision is None or (speech_end_ms or 0.0) <= self.decision.at_s * 1000

    def on_text(self, text: str) -> AmdDecision | None:
        """Transcript words (partial or final) of the answer so far. A voicemail phrase decides ``machine``
        — also over an early ``human`` (a greeting that paused between its sentences) —, a screener's
        or a menu's words decide ``screener`` / ``ivr`` — also over ``machine`` —, within
        ``revise_within_s``. A decision by words is not revised by words of another kind. ``text`` is the
        caller's current turn: each sentence is judged on its own words ("You have reached Orbit Dental."
        then "Para español, oprima el dos." is a menu that opened like a voicemail)."""
        kind = answered_by_words(text)  # of the turn so far: a later phrase may tell more
        if kind is None or (self.decision is not None and self.decision.answered_by is kind):
            return None
        if self.decision is not None and (
            self._t > self.revise_within_s
            or self.decision.answered_by in _BY_WORDS
            or self.decision.method == "after_screener"
        ):
            return None
        return self._set(kind, "phrase")

    def person_after_screener(self) -> AmdDecision:
        """The screener put the call through: a person speaks now."""
        return self._set(AnsweredBy.HUMAN, "after_screener")

    def on_carrier_verdict(self, verdict: str) -> list[AmdDecision | GreetingOver]:
        """Twilio's ``AnsweredBy``, arriving while the call is live. It settles only what the audio has
        not: a machine whose greeting ended (leave the message now), a person (greet), a fax (hang up).
        A person the audio already heard is never turned into a machine by it."""
        undecided = self.decision is None or self.decision.answered_by is AnsweredBy.UNKNOWN
        events: list[AmdDecision | GreetingOver] = []
        if verdict == "human" and self.decision is None:
            events.append(self._set(AnsweredBy.HUMAN, CARRIER_METHOD))
        elif verdict == "fax" and undecided:
            events.append(self._set(AnsweredBy.FAX, CARRIER_METHOD))
        elif verdict in _MACHINE_END or verdict == "machine_start":
            if undecided:
                events.append(self._set(AnsweredBy.MACHINE, CARRIER_METHOD))
            assert self.decision is not None
            machine = self.decision.answered_by is AnsweredBy.MACHINE
            if machine and verdict in _MACHINE_END and self.greeting_over is None:
                self.greeting_over = GreetingOver("carrier", round(self._t, 2))
                events.append(self.greeting_over)
        return events

    # ---------------------------------------------------------------- internals

    def _beep(self, frame: bytes, energy: float) -> bool:
        """True on the frame that completes a beep: a steady pure tone, or the second of short ones."""
        if energy < self.speech_energy / 2:
            return self._end_tone(into_quiet=True)
        flatness, peak_hz = tone(frame)
        if (
            flatness < self.BEEP_FLATNESS
            and 300 <= peak_hz <= 3000
            and (self._beep_run == 0 or abs(peak_hz - self._beep_bin) <= 50)
        ):
            self._beep_run += 1
            self._beep_bin = peak_hz
            self._tonal_at = self._t
            if self._beep_run == self.beep_frames:
                self._beep_heard = True
                return True
            return False
        return self._end_tone(into_quiet=False)

    def _end_tone(self, *, into_quiet: bool) -> bool:
        """A tone (if any) ended. True when it was the second short tone of a beep of several: short
        tones of one pitch, each ending in quiet, close together (a held vowel ends into more speech)."""
        run, self._beep_run = self._beep_run, 0
        if run >= self.beep_frames:
            self._tone_ended_at = self._t
            return False
        if run < self.SHORT_TONE_FRAMES or not into_quiet:
            return False
        started = self._t - run * FRAME_S
        if (
            self._short_tones
            and abs(self._beep_bin - self._short_tone_hz) <= 50
            and started - self._short_tone_end <= self.SHORT_TONE_GAP_S
        ):
            self._short_tones += 1
        else:
            self._short_tones = 1
        self._short_tone_hz, self._short_tone_end = self._beep_bin, self._t
        if self._short_tones >= 2:
            self._tone_ended_at = self._t
            if not self._beep_heard:
                self._beep_heard = True
                return True
        return False

    def _decide(self, beep: bool) -> AmdDecision | None:
        if beep:
            return self._set(AnsweredBy.MACHINE, "beep")
        # A recorded greeting is speech most of the time; loud moments of background chatter are not.
        if self._speech_s >= self.machine_after_s and self._run_voiced_s >= self.MIN_VOICED * self._speech_s:
            return self._set(AnsweredBy.MACHINE, "greeting_length")
        if 0 < self._total_speech_s <= self.human_max_speech_s and self._quiet_s >= self.human_quiet_s:
            return self._set(AnsweredBy.HUMAN, "short_greeting")
        if self._total_speech_s > self.human_max_speech_s and self._quiet_s >= self.human_quiet_s:
            # longer than a hello, shorter than a recorded greeting, then quiet: a person waiting
            return self._set(AnsweredBy.HUMAN, "greeting_then_quiet")
        if self._t >= self.no_speech_s + self.machine_after_s:
            # Still talking on and off (a noisy room, a chatty person): in doubt, a person.
            return self._set(AnsweredBy.HUMAN if self._total_speech_s else AnsweredBy.UNKNOWN, "timeout")
        if self._total_speech_s == 0 and self._t >= self.no_speech_s:
            return self._set(AnsweredBy.UNKNOWN, "no_speech")
        return None

    def _greeting_over(self, beep: bool) -> GreetingOver | None:
        assert self.decision is not None
        tone_gone = not self._beep_run and self._t - self._tonal_at >= self.AFTER_TONE_S
        if self._t - self.decision.at_s >= self.greeting_max_wait_s:
            self.greeting_over = GreetingOver("timeout", round(self._t, 2))  # a machine that talks on
        elif self._tone_ended_at is not None and tone_gone and self._quiet_s >= self.AFTER_TONE_S:
            self.greeting_over = GreetingOver("beep", round(self._t, 2))
        elif not self._beep_heard and tone_gone and self._quiet_s >= self.greeting_over_quiet_s:
            self.greeting_over = GreetingOver("silence", round(self._t, 2))
        return self.greeting_over

    def _watch_answer(self, voiced: bool) -> AmdDecision | None:
        """A person decided from a short hello: confirmed once they start speaking while the agent is
        quiet (after it spoke); a machine once the line stays quiet ``silent_after_greeting_s`` after it."""
        speaking = self.agent_speaking is not None and self.agent_speaking()
        if speaking:
            self._agent_spoke, self._agent_quiet_at = True, None
        elif self._agent_spoke and self._agent_quiet_at is None:
            self._agent_quiet_at = self._t
        if voiced:
            if self._run_frames == 0:  # a run of speech starts: after a gap, with the agent quiet?
                after_gap = self._unvoiced_s >= self.ANSWER_GAP_S
                self._run_may_answer = after_gap and self._agent_quiet_at is not None
            self._run_frames += 1
            self._unvoiced_s = 0.0
            self._voice_at = self._t
            if self._run_may_answer and self._run_frames >= self.ANSWER_FRAMES:
                self._watching = False  # a person answered the agent
            return None
        self._run_frames = 0
        self._unvoiced_s += FRAME_S
        quiet_since = max(self._agent_quiet_at, self._voice_at) if self._agent_quiet_at is not None else None
        if quiet_since is not None and self._t - quiet_since >= self.silent_after_greeting_s:
            return self._set(AnsweredBy.MACHINE, SILENT_AFTER_GREETING)
        return None

    def _set(self, answered_by: AnsweredBy, method: str) -> AmdDecision:
        self.decision = AmdDecision(answered_by, method, round(self._t, 2))
        self._watching = (
            answered_by is AnsweredBy.HUMAN and method in _UNCONFIRMED and self.silent_after_greeting_s > 0
        )
        return self.decision
