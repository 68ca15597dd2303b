"""The objections a caller raised, from their turns: the turn intents first, then keyword rules.

Run once per call, at its end (``storage.analytics``), over the caller's turns; never on the call path.
A call counts each objection once, however often it came up. The categories:

``price``          "too expensive", "no budget", "can't afford", "costs too much"
``timing``         "not a good time", "call me back", "maybe next quarter", "busy right now"
``competitor``     "we already use …", "we're happy with our current …", "we have a vendor"
``authority``      "not my decision", "talk to my boss", "I'm not the right person"
``no_need``        "we don't need", "no use for", "we're all set"
``send_info``      "send me an email", "send me some information"
``trust``          "how did you get my number", "is this a scam", "is this a robot"
``not_interested`` "not interested", "no thanks"
``do_not_call``    "take me off your list", "stop calling"

The turn intents (``call.intents``) map: NOT_INTERESTED → not_interested, CALLBACK_LATER → timing,
EMAIL_INSTEAD → send_info, DO_NOT_CALL → do_not_call.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

INTENT_OBJECTIONS = {
    "NOT_INTERESTED": "not_interested",
    "CALLBACK_LATER": "timing",
    "EMAIL_INSTEAD": "send_info",
    "DO_NOT_CALL": "do_not_call",
}

_RULES: dict[str, tuple[str, ...]] = {
    "price": (
        r"too (expensive|pricey|much)",
        r"(no|out of|don'?t have (the|a)|tight) budget",
        r"can'?t afford",
        r"costs? too much",
        r"(cheaper|lower price)",
    ),
    "timing": (
        r"not a good time",
        r"bad time",
        r"call (me )?(back|later)",
        r"(next|another) (week|month|quarter|year)",
        r"busy right now",
        r"in a meeting",
    ),
    "competitor": (
        r"(already|currently) (use|using|have|work with)",
        r"happy with (our|what we|the one)",
        r"(we have|got) a (vendor|provider|solution|system)",
        r"under contract",
    ),
    "authority": (
        r"not (my|the) (decision|call)",
        r"(talk|speak|check) (to|with) my (boss|manager|team|partner)",
        r"not the right person",
        r"(don'?t|do not) (make|handle) (the )?(decisions?|purchasing)",
    ),
    "no_need": (r"(don'?t|do not) need", r"no (use|need) for", r"we'?re all set", r"not (a )?priority"),
    "send_info": (
        r"send (me |us )?(an |some |the |more )?(email|info|information|details|brochure)",
        r"email me",
    ),
    "trust": (
        r"how did you get (my|this) number",
        r"(is|sounds like) (this|a) (a )?(scam|spam)",
        r"(is this|are you) a (robot|bot|machine)",
    ),
    "not_interested": (r"not interested", r"no,? thanks?( you)?\b"),
    "do_not_call": (r"(take|remove) (me|us) off", r"stop calling", r"do not call", r"don'?t call"),
}
_COMPILED = {name: re.compile("|".join(f"(?:{p})" for p in pats)) for name, pats in _RULES.items()}
CATEGORIES = tuple(_RULES)


def objections(turns: Iterable[tuple[str, str | None]]) -> list[str]:
    """The objection categories in a call's caller turns, given as ``(text, intent)`` pairs, sorted."""
    found: set[str] = set()
    for text, intent in turns:
        if intent in INTENT_OBJECTIONS:
            found.add(INTENT_OBJECTIONS[intent])
        said = " ".join(re.sub(r"[^a-z0-9' ]+", " ", (text or "").lower()).split())
        for name, pattern in _COMPILED.items():
            if pattern.search(said):
                found.add(name)
    return sorted(found)
