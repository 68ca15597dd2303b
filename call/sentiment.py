"""A cheap estimate of how a caller feels, from their latest turns: for the supervisor's live-calls list.

Words from a small sales-call lexicon count +1 or -1 ("not"/"never"/"don't" just before a word flips it,
so "not interested" is negative and "not bad" positive); the latest turn weighs most. The label is
``positive`` / ``neutral`` / ``negative`` with a score in [-1, 1], or None before the caller said a word.
It is a hint for who to listen to first, not an analysis: no model, microseconds per call.
"""

from __future__ import annotations

import re

POSITIVE = frozenset(
    "great good love perfect interested interesting sure yes yeah awesome excellent helpful thanks thank "
    "like nice definitely absolutely happy excited wonderful fantastic glad agree sounds cool amazing "
    "appreciate curious book demo".split()
)
NEGATIVE = frozenset(
    "no nope stop busy expensive annoying annoyed frustrated frustrating angry terrible waste hate bad "
    "remove scam unsubscribe ridiculous complaint spam rude stupid awful useless worse worst problem "
    "disappointed confused lawsuit sue leave alone".split()
)
NEGATORS = frozenset("not never don't dont didn't isn't wasn't no".split())
WORD = re.compile(r"[a-z']+")
RECENCY = 0.6  # each older turn weighs this much of the one after it
THRESHOLD = 0.25  # |score| from which a call reads positive / negative


def estimate(turns: list[str]) -> tuple[str | None, float | None]:
    """``turns``: the caller's words, latest first. (label, score), or (None, None) if there are none."""
    if not any(t.strip() for t in turns):
        return None, None
    total = weight_sum = 0.0
    weight = 1.0
    for text in turns:
        words = WORD.findall(text.lower())
        hits = 0
        score = 0
        for i, word in enumerate(words):
            polarity = (word in POSITIVE) - (word in NEGATIVE)
            if not polarity:
                continue
            if any(w in NEGATORS for w in words[max(0, i - 2) : i]) and word not in NEGATORS:
                polarity = -polarity
            score += polarity
            hits += 1
        if hits:
            total += weight * score / hits
            weight_sum += weight
        weight *= RECENCY
    value = round(total / weight_sum, 2) if weight_sum else 0.0
    label = "positive" if value >= THRESHOLD else "negative" if value <= -THRESHOLD else "neutral"
    return label, value
