"""What a prospect's words mean to a playbook: the intent a transition names, and the values of fields.

Rules, no model: the intents a cold call meets ("what is this about?", "is this a robot?", "we already
use X", "too expensive", the gatekeeper, the wrong person…) first, then the engine's own intents
(``call.intents``) by their lower-case names. Field values by type: a meeting time (day and time), an
email address (also as spoken: "jane at acme dot com"), a number, a yes/no, or the caller's own words.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from call.intents import Intent, detect_intent, extract_meeting_request

# The intents a playbook's transitions may name: the cold-call ones here and the engine's own.
SDR_INTENTS = (
    "small_talk",
    "do_not_call",
    "callback_later",
    "robot",
    "how_got_number",
    "wrong_person",
    "gatekeeper",
    "what_about",
    "who_are_you",
    "competitor",
    "price",
    "timing",
)
ENGINE_INTENTS = tuple(i.value.lower() for i in Intent)
INTENTS = frozenset(SDR_INTENTS) | frozenset(ENGINE_INTENTS)
FIELD_TYPES = ("string", "number", "boolean", "email", "datetime", "when", "phone")


def _words(text: str) -> str:
    text = text.lower().replace("’", "'")
    return " " + re.sub(r"\s+", " ", re.sub(r"[^a-z0-9' ]+", " ", text)).strip() + " "


# Ordered: the first that matches wins (a do-not-call request beats everything said with it).
_RULES: list[tuple[str, re.Pattern[str]]] = [
    (
        "do_not_call",
        re.compile(
            r" (don't call (me|us|this number|here)|do not call|stop calling|remove me|take me off|"
            r"take (my|this) number off|lose my number|never call|don't ever call|put me on .{0,20}list) "
        ),
    ),
    (
        "robot",
        re.compile(
            r" (robot|a bot|bot|chat ?bot|artificial|real person|real human|live person|actual person|"
            r"actual human|recorded message|a recording|automated|"
            r"ai (call|calls|voice|agent|caller|thing|system|generated)|one of those ai|"
            r"(are you|is this|am i (talking|speaking) (to|with)|is it|you're|you are|this is|is there) "
            r"(just |really |even |actually )?(a |an )?(real |live |actual )?(ai|person|human|machine|"
            r"computer|real|agent|rep|representative)|you sound like a (robot|machine|computer|bot))"
            r"( |$)"
        ),
    ),
    (
        "how_got_number",
        re.compile(
            r" (how did you get|where did you get|how'd you get|where'd you get|who gave you|"
            r"how do you have|why do you have) (my|this|our) (number|info|details|name|contact)"
        ),
    ),
    (
        "wrong_person",
        re.compile(
            r" (wrong (person|guy|number|department)|not the right (person|guy|one)|not the person|"
            r"i don't (handle|deal with|do) (that|this|those|any)|not my (area|department|call|job)|"
            r"you (want|need) to (talk|speak) (to|with)|someone else handles|that's not me|"
            r"i'm not (in charge|responsible|the one)|doesn't work here|no longer (works|with)|"
            r"not my department|not (the one|who) (who )?(makes|decides|handles))"
        ),
    ),
    (
        "gatekeeper",
        re.compile(
            r" (i'm (his|her|their|the) (assistant|receptionist|office manager|ea)|this is (the )?"
            r"(front desk|reception)|you've reached|take a message|leave a message|"
            r"(he|she|they)('s| is| are|'re) (not (available|in|here|around)|in a meeting|out|away|busy|"
            r"on (another|a) call|unavailable|out of (the )?office|off today|not in today)|"
            r"can i tell (him|her|them)|screen(ing)? (his|her) calls|this is reception|"
            r"who are you trying to reach) "
        ),
    ),
    (
        "what_about",
        re.compile(
            r" (what('s| is| was) (this|it|the call|your call) (about|regarding|for|in regards to)|"
            r"what are you calling (about|for)|why are you calling|why (did|do) you call|"
            r"what do you want|what can i do for you|what's this regarding|what is this regarding|"
            r"what are you selling|what('s| is) the reason for|get to the point|what's it about|"
            r"what is it you do|what do you guys do|what (do|does) (you|your company) (do|sell|offer)|"
            r"what's this call|what is this call|make it quick|you've got (thirty|30) seconds|"
            r"what's up|what is this|what is it|what's it|what (this|it) is about|what this is regarding|"
            r"(purpose|reason) (of|for) (the|this|your) call|what can i (help|do for) you|what do you need|"
            r"what('s| is) (this|the|your) call (for|about)|what('re| are) you (pitching|offering|selling)|"
            r"(calling|call) and why|what (exactly )?do you (do|sell|offer)|is this a sales call|"
            r"what's going on|what's this for|what is this for) "
        ),
    ),
    (
        "who_are_you",
        re.compile(
            r" (who('s| is) (this|calling|speaking)|who are you|who am i (speaking|talking) (to|with)|"
            r"what company|which company|who do you work for|who are you (with|calling from)|"
            r"where are you calling from|who('s| is) this again|your name again|who did you say) "
        ),
    ),
    (
        "small_talk",
        re.compile(r" (how are you|how's it going|how are things|how's your day)( doing)?( today)? $"),
    ),
    (
        "callback_later",
        re.compile(
            r" (call me (back )?(later|tomorrow|next week|another time|this afternoon|in an hour|after)|"
            r"i'm driving|i am driving|can't talk (right )?now|cannot talk (right )?now|"
            r"in the middle of something|catch me (later|tomorrow|another time)|try me (later|again|back|"
            r"tomorrow|this|next|on|in|after)|(walk|walking|go|going|head|heading) into a meeting) "
        ),
    ),
    (
        "competitor",
        re.compile(
            r" (already (have|using|got|use|work with|pay for)|"
            r"(we|i)('re| are| am)? (currently )?(use|using|work with|working with|went with|signed with|"
            r"rely on) (a|an|another|some) (tool|vendor|platform|solution|provider|company|system|product)|"
            r"(we|i)('re| are)? (currently )?(use|using|on|with) (salesforce|hubspot|gong|clari|tableau|"
            r"looker|power bi|outreach|salesloft|pipedrive|zoho|domo|sisense)|"
            r"we (already )?have (a|an) (tool|vendor|solution|system|platform|provider|partner)|"
            r"happy with (our|what we|the one|it|them)|locked (in|into)|under contract|"
            r"(do|handle) (that|it|this) in house|built our own|all set with|current (provider|vendor|tool|"
            r"solution|system|platform)|signed with (someone|somebody|another|a)|went with (someone|somebody|"
            r"another)|we're good with|already taken care of) "
        ),
    ),
    (
        "price",
        re.compile(
            r" (too expensive|expensive|no budget|don't have (the |a )?budget|budget('s| is) (tight|gone|"
            r"spent|frozen)|can't afford|how much (is it|does it|do you|would it|will it)|how much|"
            r"what does it cost|what('s| is) the (price|cost|pricing)|pricing|costs? too much|"
            r"out of (our|my) (budget|price range)|cheaper|not in (the|our) budget|no money|"
            r"can't spend|cannot spend|no budget|budget (this|next) year|spending freeze) "
        ),
    ),
    (
        "timing",
        re.compile(
            r" (not a priority|bad timing|not the right time|next (quarter|year|month)|"
            r"maybe (later|in a few months|next)|not (right )?now|too busy (right now|this|at the moment)|"
            r"revisit (this|it) later|in a few months|after (the holidays|q[1-4]|the new year)|"
            r"timing('s| is) (bad|not great|off)|other priorities|not this (quarter|year)) "
        ),
    ),
]


_RULES += [
    (
        "email_instead",
        re.compile(
            r" (send (it|that|this|something|them|the details|some details|info|me the details|me something|"
            r"me the info)( over)?( to| by e ?mail| via e ?mail| in an e ?mail)|e ?mail me|just e ?mail|"
            r"put it in (an )?e ?mail|in writing|shoot me an e ?mail|drop me an e ?mail) "
        ),
    ),
    (
        "not_interested",
        re.compile(
            r" (we'll pass|i'll pass|pass on (this|that|it)|not looking|don't need (it|this|that|anything)|"
            r"no thanks|no thank you|not interested|we're good|we are good|not for us) "
        ),
    ),
]

# "Sure, let's do it", "Yeah, that works for me": a yes the engine's short-answer rule does not see.
_YES = re.compile(
    r"^ ((oh|well|um|uh|okay|ok) )?(yes|yeah|yep|yup|sure|absolutely|definitely|of course|sounds good|"
    r"that works|that could work|let's do (it|that)|go ahead|why not|i'd like that|happy to) "
)
_NO = re.compile(r"^ ((oh|well|um|uh) )?(no|nope|nah|not really|i don't think so)( |$)")


def playbook_intent(text: str) -> str:
    """The playbook's name for what the caller means (an SDR intent, else the engine's, lower case)."""
    words = _words(text)
    engine = detect_intent(text)
    if engine in (Intent.DO_NOT_CALL, Intent.HOLD):
        return engine.value.lower()
    for name, pattern in _RULES:
        if pattern.search(words):
            if name == "timing" and engine == Intent.CALLBACK_LATER:
                return "callback_later"  # "bad time, call me back next week": a time, not an objection
            return name
    if engine in (Intent.OTHER, Intent.QUESTION) and not text.strip().endswith("?"):
        if _YES.search(words):
            return "confirm"
        if _NO.search(words):
            return "deny"
    return engine.value.lower()


# ---------------------------------------------------------------- field values

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_SPOKEN_EMAIL = re.compile(
    r"\b([a-z0-9][a-z0-9._-]*(?: (?:dot|underscore|dash) [a-z0-9]+)*) at "
    r"([a-z0-9-]+(?: dot [a-z0-9-]+)+)\b"
)
_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30,
    "forty": 40, "fifty": 50, "hundred": 100,
}  # fmt: skip
_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*")
_PHONE = re.compile(r"\+?\d[\d\s().-]{6,}\d")
_ANSWERS_NOTHING = {
    Intent.BACKCHANNEL, Intent.CONFIRM, Intent.DENY, Intent.HELLO, Intent.GOODBYE, Intent.HOLD,
}  # fmt: skip


_DAY = r"(monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_WHEN = re.compile(
    rf"\b(today|tonight|later today|tomorrow( morning| afternoon| evening)?|this (morning|afternoon|evening|"
    rf"week|month|quarter)|next (week|month|quarter|year|{_DAY}|spring|summer|fall|autumn|winter)|"
    rf"(on )?{_DAY}( morning| afternoon| evening)?|in (a|an|one|two|three|four|a few|a couple of|\d+) "
    rf"(minutes?|hours?|days?|weeks?|months?)|after (lunch|the holidays|the new year|q[1-4])|"
    rf"(at|around) \d{{1,2}}(:\d\d)?( ?[ap]\.?m\.?)?|end of (the )?(day|week|month|quarter)|"
    rf"(january|february|march|april|may|june|july|august|september|october|november|december))\b"
)


def _spoken_email(text: str) -> str | None:
    lowered = re.sub(r"[,!?]", " ", text.lower())
    match = _SPOKEN_EMAIL.search(lowered)
    if not match:
        return None
    local = match.group(1).replace(" dot ", ".").replace(" underscore ", "_").replace(" dash ", "-")
    domain = match.group(2).replace(" dot ", ".")
    return f"{local.replace(' ', '')}@{domain.replace(' ', '')}"


CALLBACK_CUE = re.compile(r"\b(call|try|ring|reach|back|better|works|free|after|later|next|maybe)\b", re.I)


def extract_field(kind: str, text: str, now: datetime | None = None) -> Any:
    """The value of a field of ``kind`` in the caller's words, or None when they do not carry one."""
    text = text.strip()
    if not text:
        return None
    if kind == "email":
        found = _EMAIL.search(text)
        return found.group(0).rstrip(".").lower() if found else _spoken_email(text)
    if kind == "datetime":
        request = extract_meeting_request(text, now)
        return request["start_time"] if request else None
    if kind == "when":
        found = [m.group(0) for m in _WHEN.finditer(text.lower())]
        return " ".join(found) if found else None
    if kind == "phone":
        found = _PHONE.search(text)
        return re.sub(r"[^\d+]", "", found.group(0)) if found else None
    intent = detect_intent(text)
    if kind == "boolean":
        return {Intent.CONFIRM: True, Intent.DENY: False}.get(intent)
    if kind == "number":
        found = _NUMBER.search(text)
        if found:
            value = float(found.group(0).replace(",", ""))
            return int(value) if value.is_integer() else value
        words = [_NUMBER_WORDS[w] for w in re.findall(r"[a-z]+", text.lower()) if w in _NUMBER_WORDS]
        return sum(words) if words else None
    # string: the caller's own words, when they say something (not "yeah", "no", "hello")
    if intent in _ANSWERS_NOTHING or len(re.findall(r"\w+", text)) < 2:
        return None
    return text[:300]


def spoken_value(kind: str, value: Any) -> str:
    """A collected value as the agent says it (a meeting time as "Tuesday, December 8 at 10 AM")."""
    if value is None:
        return ""
    if kind == "datetime":
        try:
            when = datetime.fromisoformat(str(value))
        except ValueError:
            return str(value)
        return when.strftime("%A, %B %-d at %-I:%M %p").replace(":00 ", " ")
    if kind == "email":
        return str(value)
    return str(value)
