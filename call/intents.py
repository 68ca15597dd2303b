"""Cheap, rule-based intent detection for each caller turn (no LLM round trip on the hot path)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import StrEnum


class Intent(StrEnum):
    HELLO = "HELLO"
    GOODBYE = "GOODBYE"
    CONFIRM = "CONFIRM"
    DENY = "DENY"
    QUESTION = "QUESTION"
    BOOK_MEETING = "BOOK_MEETING"
    NOT_INTERESTED = "NOT_INTERESTED"
    CALLBACK_LATER = "CALLBACK_LATER"
    TRANSFER_REQUEST = "TRANSFER_REQUEST"
    BACKCHANNEL = "BACKCHANNEL"
    DO_NOT_CALL = "DO_NOT_CALL"
    EMAIL_INSTEAD = "EMAIL_INSTEAD"  # "send me an email instead": a polite end, with a follow-up promised
    HOLD = "HOLD"  # "hold on", "one sec": the whole turn asks the agent to wait
    OTHER = "OTHER"


def _words(text: str) -> str:
    return " " + re.sub(r"\s+", " ", re.sub(r"[^a-z0-9' ]+", " ", text.lower())).strip() + " "


_BACKCHANNELS = {
    "uh huh",
    "uh-huh",
    "uhhuh",
    "mm hmm",
    "mm-hmm",
    "mhm",
    "mm",
    "hmm",
    "yeah",
    "yep",
    "yes",
    "right",
    "okay",
    "ok",
    "sure",
    "i see",
    "got it",
    "oh",
    "ah",
    "cool",
    "alright",
    "all right",
    "totally",
    "exactly",
    "true",
    "nice",
    "wow",
    "really",
    "great",
    "uh",
    "um",
    "yeah yeah",
    "right right",
}

# The whole turn is a request to wait, maybe after a filler: "Actually, wait." "Sorry, one sec."
_HOLD_PHRASE = (
    r"(wait|hold on|hang on|one sec|one second|one moment|just a (sec|second|moment)|"
    r"give me a (sec|second|moment)|bear with me|let me (think|see|check))"
    r"( (a|one) (sec|second|minute|moment))?( please)?"
)
_HOLD_REQUEST = re.compile(
    rf"^ ((oh|um|uh|er|actually|sorry|okay|ok|so|well|but|no|yeah|hmm) )*{_HOLD_PHRASE}( {_HOLD_PHRASE})* $"
)


def is_hold_request(text: str) -> bool:
    return bool(_HOLD_REQUEST.search(_words(text)))


# Ordered: the first rule that matches wins, so stronger signals come first.
_RULES: list[tuple[Intent, re.Pattern[str]]] = [
    (Intent.HOLD, _HOLD_REQUEST),
    (
        Intent.DO_NOT_CALL,
        re.compile(
            r" (don't call (me|us|this number)|do not call (me|us|this number)|stop calling|remove me|"
            r"take me off|take (my|this) number off|put me on (your|the) do not call|unsubscribe|"
            r"lose my number|never call (me|us|here)|don't ever call|do not ever call) "
        ),
    ),
    (
        Intent.TRANSFER_REQUEST,
        re.compile(
            r" (transfer me|speak (to|with) (a |an )?(human|person|someone|manager|representative|agent)|"
            r"talk (to|with) (a |an )?(human|person|someone|real person|manager|representative)|real person|"
            r"operator|put me through|connect me) "
        ),
    ),
    (
        Intent.NOT_INTERESTED,
        re.compile(r" (not interested|no thanks|no thank you|not for us|we're good|we are good|not a fit) "),
    ),
    (
        Intent.CALLBACK_LATER,
        re.compile(
            r" (call (me )?back|call later|another time|bad time|not a good time|busy right now|"
            r"try (me )?(again )?later|reach me later) "
        ),
    ),
    (
        Intent.EMAIL_INSTEAD,
        re.compile(
            r" (send (me|us|it|that|this|them|the details|the info|some info) (an |by |via |over |in an )?"
            r"e ?mail|e ?mail (me|us|it|that|the details|the info)|send (me|us) (the |some )?"
            r"(info|information|details)|(drop|shoot|send) (me|us) an e ?mail|just e ?mail) "
        ),
    ),
    (
        Intent.BOOK_MEETING,
        re.compile(r" (book|schedule|set up|arrange|put .{0,20}calendar|demo|meeting|appointment|slot) "),
    ),
    (
        Intent.GOODBYE,
        re.compile(
            r" (bye|goodbye|good bye|talk (to you )?later|have a (good|nice|great) (day|one)|that's all|"
            r"hang up|i'm gonna hang up|i'm going to hang up|i'm done here) "
        ),
    ),
    (
        # "I have to go", "not now", "I need to jump on another call" — said as the turn's end, not "I have
        # to go through my boss" or "we need to run a trial".
        Intent.GOODBYE,
        re.compile(
            r" ((i have|i've got|i got|i need|i gotta|gotta|got|have|need) to (go|run|head out|hop off|"
            r"jump on (a|another) (call|meeting))|gotta (go|run)|not (right )?now)"
            r"( now| sorry| soon| so)?(?= $| (bye|thanks|thank|sorry|i|i'm|but|anyway|okay|ok|please|maybe) )"
        ),
    ),
    (
        Intent.HELLO,
        re.compile(r"^ (hi|hello|hey|good (morning|afternoon|evening)|yes hello|hello there)( [a-z]+)? $"),
    ),
    (
        Intent.DENY,
        re.compile(r"^ (no|nope|nah|not really|no it's not|not at all|i don't think so)( [a-z]+)? $"),
    ),
    (
        Intent.CONFIRM,
        re.compile(
            r"^ (yes|yeah|yep|sure|correct|exactly|sounds good|that works|perfect|absolutely|of course|ok|okay)( [a-z]+){0,3} $"  # noqa: E501
        ),
    ),
]
_QUESTION = re.compile(
    r" (what|how|why|when|where|who|which|can you|could you|do you|does it|is it|are you|is there) "
)


def is_backchannel(text: str) -> bool:
    """Short acknowledgements said while someone else talks ("uh-huh", "yeah", "right")."""
    normalized = re.sub(r"[^a-z' -]+", " ", text.lower()).strip()
    normalized = re.sub(r"\s+", " ", normalized)
    if not normalized:
        return False
    letters = re.sub(r"[^a-z]", "", normalized)
    if len(letters) <= 5 and set(letters) <= set("mhuo"):
        return True  # a hummed "mm-hmm" comes out of STT as "MMO", "M.M.", "hm"…
    hummed = sum(letters.count(c) for c in "mh")
    if len(letters) <= 6 and not set(letters) & set("aeiouy") and hummed * 2 >= len(letters):
        return True  # no vowel, mostly m/h: a hum spelled out ("M-M-ZM"), not an acronym ("CRM", "TV")
    if normalized in _BACKCHANNELS:
        return True
    parts = normalized.replace("-", " ").split()
    return len(parts) <= 3 and all(
        p in {w for b in _BACKCHANNELS for w in b.replace("-", " ").split()} for p in parts
    )


def detect_intent(text: str) -> Intent:
    words = _words(text)
    if not words.strip():
        return Intent.OTHER
    for intent, pattern in _RULES:
        if pattern.search(words):
            return intent
    if is_backchannel(text):
        return Intent.BACKCHANNEL
    if text.strip().endswith("?") or _QUESTION.search(words):
        return Intent.QUESTION
    return Intent.OTHER


_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_NUMBER_WORDS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "noon": 12,
}
_TIME = re.compile(
    r"\b(?:at|around|by)?\s*(\d{1,2}|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|noon)"
    r"(?::(\d{2})|\s+(thirty|fifteen|forty[- ]five))?\s*(a\.?m\.?|p\.?m\.?|in the morning|in the afternoon|o'clock)?",  # noqa: E501
    re.IGNORECASE,
)


def _parse_day(text: str, now: datetime) -> datetime | None:
    lowered = text.lower()
    if "today" in lowered:
        return now
    if "tomorrow" in lowered:
        return now + timedelta(days=1)
    for index, name in enumerate(_WEEKDAYS):
        if re.search(rf"\b{name}\b", lowered):
            ahead = (index - now.weekday()) % 7 or 7
            return now + timedelta(days=ahead)
    return None


def _parse_time(text: str) -> tuple[int, int] | None:
    for match in _TIME.finditer(text):
        raw, minutes, spoken_minutes, half = match.groups()
        if not match.group(0).strip().lower().startswith(("at", "around", "by")) and not half and not minutes:
            continue
        hour = _NUMBER_WORDS.get(raw.lower()) if not raw.isdigit() else int(raw)
        if hour is None or hour > 23:
            continue
        minute = (
            int(minutes)
            if minutes
            else {"thirty": 30, "fifteen": 15}.get(
                (spoken_minutes or "").lower(), 45 if spoken_minutes else 0
            )
        )
        half = (half or "").lower()
        if half.startswith("p") or "afternoon" in half:
            hour = hour + 12 if hour < 12 else hour
        elif not half.startswith("a") and "morning" not in half and 1 <= hour <= 7:
            hour += 12  # "at three" on a sales call means the afternoon
        return hour, minute
    return None


def extract_meeting_request(text: str, now: datetime | None = None) -> dict[str, str] | None:
    """Pull a day and time out of "book a demo next Tuesday at three"; None when either is missing."""
    now = now or datetime.now().astimezone()
    day = _parse_day(text, now)
    clock = _parse_time(text)
    if day is None or clock is None:
        return None
    start = day.replace(hour=clock[0], minute=clock[1], second=0, microsecond=0)
    return {"start_time": start.isoformat(timespec="minutes"), "notes": text.strip()[:300]}


# Questions that are small talk or about the call, not about the product: the model may answer them
# without the knowledge base.
CONVERSATIONAL = re.compile(
    r"\b(how are you|how's your|how is your|how are things|your day|who is this|who's this|who am i|"
    r"real person|robot|a human|a bot|an ai|where are you|are you from|lunch|weather|your name|hear me|"
    r"repeat|say that again|tell me more|what do you mean|pardon|come again|why are you calling|"
    r"what is this about|what's this about|what do you (do|sell|offer)|what is (it|this))\b",
    re.IGNORECASE,
)
