"""When is the caller's turn over? Silence plus the STT's endpoint, with a guard for unfinished sentences."""

from __future__ import annotations

import re

# A final transcript ending like this is probably a mid-sentence pause ("I'd like to… um…").
_TRAILING_INCOMPLETE = re.compile(
    r"(?:\b(?:um+|uh+|er+|hmm+|and|or|but|so|to|the|a|an|of|for|with|like|my|our|your|is|are|was|"
    r"i'd|i'm|we're|that|because|about|around|at|on|in|if|then|maybe|just|than|until|since|from|by|as|"
    r"will|would|can|could|should|have|has|had|be|been|there|this|these|those|some|any|very|really|"
    r"more|less|when|where|which|who|whether|um|uh)|,|-|…|\.\.\.)\s*$",
    re.IGNORECASE,
)


def looks_incomplete(text: str) -> bool:
    """True when the words so far read like the caller paused mid-sentence."""
    stripped = text.strip()
    if not stripped:
        return False
    if stripped.endswith(("?", "!")):
        return False
    return bool(_TRAILING_INCOMPLETE.search(stripped.rstrip(".")))


class EndOfTurn:
    """Decides that the caller's turn has ended.

    The turn ends when the STT has delivered final text and the caller has been
    silent for ``silence_s`` (SILENCE_THRESHOLD_SEC); when the text so far looks
    unfinished, the silence needed grows to ``incomplete_hold_s``.
    """

    def __init__(self, silence_s: float, incomplete_hold_s: float = 1.2) -> None:
        self.silence_s = silence_s
        self.incomplete_hold_s = max(incomplete_hold_s, silence_s)

    def required_silence(self, text: str) -> float:
        return self.incomplete_hold_s if looks_incomplete(text) else self.silence_s

    def remaining(self, text: str, silence_so_far_s: float) -> float:
        """Seconds still to wait before the turn may end (<= 0: end it now)."""
        return self.required_silence(text) - silence_so_far_s
