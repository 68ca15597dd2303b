"""When is the caller's turn over? Silence plus the STT's endpoint, with a guard for unfinished sentences."""

from __future__ import annotations

import re

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
