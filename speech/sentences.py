"""Cut a streamed LLM reply into sentences so the first one can be spoken before the reply is complete."""

from __future__ import annotations

import re

# A sentence ends at . ! ? (optionally followed by closing quotes/brackets) and then whitespace.
_BOUNDARY = re.compile(r"""(?<=[.!?…])["')\]]*\s+""")
_CLAUSE = re.compile(r"[,;:]\s+|\s[-–—]\s+")
# Abbreviations whose trailing dot is not the end of a sentence.
_ABBREVIATIONS = {
    "mr.",
    "mrs.",
    "ms.",
    "dr.",
    "st.",
    "vs.",
    "e.g.",
    "i.e.",
    "etc.",
    "inc.",
    "jr.",
    "sr.",
    "no.",
}


class SentenceChunker:
    """Accumulates text deltas; ``push`` returns the sentences completed so far, ``flush`` the remainder.

    Very short fragments ("Sure.") are held back and joined to the next sentence when ``min_chars`` is set,
    so TTS is not asked for a dozen tiny requests.
    """

    def __init__(
        self,
        min_chars: int = 0,
        max_chars: int = 240,
        first_clause_chars: int = 0,
        first_words_chars: int = 24,
    ) -> None:
        self._buffer = ""
        self.min_chars = min_chars
        self.max_chars = max_chars
        # The first piece may end at a clause (", " "; " " - ") once this long: the caller hears the
        # reply start a sentence's worth of tokens sooner. 0 disables.
        self.first_clause_chars = first_clause_chars
        # With no clause mark, the first piece is cut at a word only past this many characters (with
        # 1.5x that buffered): a piece cut mid-phrase is spoken with a final tone, so not too short.
        self.first_words_chars = max(first_words_chars, first_clause_chars)
        self._emitted = False

    def push(self, delta: str) -> list[str]:
        self._buffer += delta
        out: list[str] = []
        start = 0
        for match in _BOUNDARY.finditer(self._buffer):
            candidate = self._buffer[start : match.start()].strip()
            last_word = candidate.rsplit(" ", 1)[-1].lower()
            if last_word in _ABBREVIATIONS or re.fullmatch(r"\d+\.", last_word):
                continue
            if len(candidate) < self.min_chars:
                continue
            if candidate:
                out.append(candidate)
            start = match.end()
        self._buffer = self._buffer[start:]
        if not out and not self._emitted and self.first_clause_chars:
            clause = _CLAUSE.search(self._buffer, self.first_clause_chars)
            if clause is not None:
                out.append(self._buffer[: clause.start() + 1].strip())
                self._buffer = self._buffer[clause.end() :]
            elif len(self._buffer) >= self.first_words_chars * 3 // 2:
                # No punctuation yet: start speaking at a word boundary rather than wait for the period.
                cut = self._buffer.find(" ", self.first_words_chars)
                if cut > 0:
                    out.append(self._buffer[:cut].strip())
                    self._buffer = self._buffer[cut + 1 :]
        self._emitted = self._emitted or bool(out)
        # A run-on reply without punctuation: cut at a comma or space so speech can start.
        while len(self._buffer) > self.max_chars:
            cut = max(self._buffer.rfind(", ", 0, self.max_chars), self._buffer.rfind(" ", 0, self.max_chars))
            if cut <= 0:
                cut = self.max_chars
            out.append(self._buffer[: cut + 1].strip())
            self._buffer = self._buffer[cut + 1 :]
        return out

    def flush(self) -> str | None:
        rest = self._buffer.strip()
        self._buffer = ""
        return rest or None
