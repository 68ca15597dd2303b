"""Keep a streamed phone reply on script: short, in persona, not a repeat, no facts out of thin air.

``ReplyShaper`` sits between the sentence chunker and the speaker. Each piece (a first clause or a
sentence) is checked before it is spoken:

- a persona-breaking opening ("As an AI, …", "As a customer service rep, …") is cut off, and a sentence
  that says the agent is an AI or a language model is dropped — unless the caller asked whether this is
  a bot (``disclose_ai``): then "I'm an AI assistant" is the honest answer and is kept, and a reply
  that does not open by saying so ("No, I'm not a robot.") is replaced by ``HONEST_AI_LINE``;
- a piece that repeats the previous agent line (or that line's start), parrots the caller's turn, or
  recites the engine's own instructions, is dropped with the rest of its sentence;
- a piece naming a number, price, date or name found nowhere in what the agent was told (system prompt,
  knowledge, the conversation) ends the reply there: said first, it becomes a short "I don't have that"
  with a follow-up offer;
- after the second sentence (or a line break: a list is coming) the reply is over, and ``done`` tells the
  caller to stop the model.

Pure text: no I/O, cheap enough to run on every piece.
"""

from __future__ import annotations

import re

MAX_SENTENCES = 2

NO_ANSWER_LINES = (
    "I don't have that detail in front of me, but I can have someone follow up by email.",
    "Good question; I'm not sure, so I'll have a colleague email you the answer.",
    "That one I can't answer right now, but our team can send it to you in writing.",
)
NO_ANSWER_LINE = NO_ANSWER_LINES[0]
# Asked whether this is a bot, a reply that does not open by saying so ("No, I'm not a robot.", "No, I'm a
# sales rep.", both heard from the embedded models) is replaced by this, and ends there.
HONEST_AI_LINE = (
    "I'm an AI assistant, calling on behalf of the team."  # no "yes": also for "can I talk to a real person?"
)
NEUTRAL_LINES = (
    "I hear you. Would a short email with the details help?",
    "Understood. Is there anything specific I can answer for you?",
)

_PERSONA_OPENING = re.compile(
    r"^\s*(?:well,\s*|honestly,\s*)?as an?\s+(?:[\w'-]+\s+){0,4}?"
    r"(?:ai|a\.i\.|assistant|language model|model|bot|chatbot|robot|rep|representative|agent|"
    r"salesperson|sales rep|customer service(?:\s+\w+)?|professional|employee)\b[^,.!?]*[,.!?]?\s*",
    re.IGNORECASE,
)
_AI_NOUN = r"(?:ai|a\.i\.|artificial intelligence|(?:ai\s+)?language model|virtual assistant|chatbot|bot)"
# "I'm an AI": out of character unless the caller asked
_SELF_AS_AI = re.compile(rf"\b(?:i am|i'm|i’m)\s+(?:just\s+|only\s+)?an?\s+{_AI_NOUN}\b", re.IGNORECASE)
# the honest answer when asked, in more words
_SAYS_AI = re.compile(
    rf"\b(?:i am|i'm|i’m|this is)\s+(?:just\s+|only\s+)?an?\s+(?:automated assistant|{_AI_NOUN})\b",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"[.!?…][\"')\]]*(?=\s|$)")
_WORD = re.compile(r"[a-z0-9']+")

_NUMBER_WORDS = frozenset(
    "zero two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand "
    "million billion percent dozen".split()
)
_CALENDAR = frozenset(
    "january february march april june july august september october november december "
    "monday tuesday wednesday thursday friday saturday sunday".split()
)
# Capitalised words a reply may use without their being a fact: pronouns, greetings, fillers.
_PLAIN_CAPS = frozenset(
    "i i'm i'll i've i'd i’m ok okay oh hi hello hey yes no sure thanks thank great good".split()
)


def normalized(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def near_duplicate(text: str, previous: str, threshold: float = 0.6) -> bool:
    """``text`` says what ``previous`` said: most of the same words, or one contains the other."""
    a, b = normalized(text), normalized(previous)
    if not a or not b:
        return False
    if (len(a) >= 15 and a in b) or (len(b) >= 15 and b in a):
        return True
    wa, wb = set(a.split()), set(b.split())
    return len(wa & wb) / len(wa | wb) >= threshold


def strip_persona(text: str) -> str:
    """Cut "As an AI, …"-style openings; "" when the whole piece is about being an AI."""
    stripped = _PERSONA_OPENING.sub("", text, count=1)
    if _SELF_AS_AI.search(stripped):
        return ""
    if stripped is not text and stripped:
        stripped = stripped[0].upper() + stripped[1:]
    return stripped.strip()


def facts_in(text: str) -> set[str]:
    """Numbers, prices, dates and names (capitalised words not opening a sentence) in ``text``."""
    found = set(re.findall(r"\d+(?:[.,:]\d+)*", text))
    words = _WORD.findall(text.lower())
    found |= {w for w in words if w in _NUMBER_WORDS or w in _CALENDAR}
    for sentence in re.split(r"(?<=[.!?])\s+", text.strip()):
        tokens = re.findall(r"[A-Za-z][A-Za-z'’-]*", sentence)
        found |= {t.lower() for t in tokens[1:] if t[0].isupper() and t.lower() not in _PLAIN_CAPS}
    if "$" in text or "€" in text or "£" in text:
        found.add("$")
    return found


def unsupported_facts(text: str, known: str) -> set[str]:
    """The facts of ``text`` that ``known`` (what the agent was told and heard) does not contain."""
    known_words = set(_WORD.findall(known.lower())) | set(re.findall(r"\d+(?:[.,:]\d+)*", known))
    if any(sign in known for sign in "$€£") or "dollar" in known_words:
        known_words.add("$")
    return {f for f in facts_in(text) if f not in known_words}


def fresh_line(lines: tuple[str, ...], previous: str) -> str:
    """The first of ``lines`` that does not repeat ``previous``."""
    return next((line for line in lines if not near_duplicate(line, previous)), lines[0])


def echoes(text: str, instructions: str, n: int = 6) -> bool:
    """``text`` recites ``instructions`` (shares a run of ``n`` words with them)."""
    words, told = normalized(text).split(), f" {normalized(instructions)} "
    return any(f" {' '.join(words[i : i + n])} " in told for i in range(len(words) - n + 1))


def sentence_ends(text: str) -> list[int]:
    """Offsets just after each sentence end in ``text``."""
    return [m.end() for m in _SENTENCE_END.finditer(text)]


class ReplyShaper:
    """Shapes one streamed reply; feed it the chunker's pieces in order."""

    def __init__(
        self,
        previous: str = "",
        known: str = "",
        max_sentences: int = MAX_SENTENCES,
        instructions: str = "",
        caller: str = "",
        disclose_ai: bool = False,
    ) -> None:
        self.previous = previous  # the agent's last line
        self.caller = caller  # the caller's turn: a small model parrots it ("Sorry, we're not interested.")
        self.known = known  # everything a fact may come from
        self.instructions = instructions  # the engine's own rules: a small model recites them
        # the caller asked whether this is a bot: "I'm an AI assistant" is the honest answer, kept; a
        # reply that does not begin by saying so is replaced by HONEST_AI_LINE
        self.disclose_ai = disclose_ai
        self.max_sentences = max_sentences
        self.sentences = 0
        self.spoken: list[str] = []
        self.done = False  # the reply is over: stop the model
        self.dropped: list[str] = []  # why pieces were dropped: "repeat", "persona", "fact"
        self._at_sentence_start = True
        self._skip_sentence = False  # the sentence's start was dropped: drop its rest too

    def push(self, piece: str) -> str | None:
        """The piece to speak (maybe trimmed), or None to drop it."""
        if self.done:
            return None
        text = piece.strip()
        if "\n" in text:  # a list or a second paragraph is coming: the spoken reply ends here
            text = text.split("\n", 1)[0].strip()
            self.done = True
        starts_sentence = self._at_sentence_start
        ends = sentence_ends(text)
        self._at_sentence_start = bool(ends) and ends[-1] >= len(text.rstrip())
        if self._skip_sentence:
            self._skip_sentence = not self._at_sentence_start
            return None
        if starts_sentence and text and not self.disclose_ai:
            trimmed = strip_persona(text)
            if trimmed != text:
                self.dropped.append("persona")
            text = trimmed
        if not text or not re.search(r"[A-Za-z0-9]", text):
            return None
        if self.disclose_ai and not self.spoken and not _SAYS_AI.search(text):
            self.dropped.append("not disclosed")
            self.done = True
            return self._keep(HONEST_AI_LINE)
        repeat = bool(self.previous) and near_duplicate(text, self.previous)
        parrot = bool(self.caller) and near_duplicate(text, self.caller, threshold=0.75)
        if repeat or parrot or (self.instructions and echoes(text, self.instructions)):
            self.dropped.append("repeat" if repeat else "parrot" if parrot else "echo")
            self._skip_sentence = not self._at_sentence_start
            return None
        # asked whether it is a bot, "AI" is the honest answer, not a fact out of thin air
        known = f"{self.known} AI A.I. chatbot bot" if self.disclose_ai else self.known
        if self.known and unsupported_facts(text, known):
            self.dropped.append("fact")
            self.done = True
            if not self.spoken:
                return self._keep(fresh_line(NO_ANSWER_LINES, self.previous))
            return None
        room = self.max_sentences - self.sentences
        ends = sentence_ends(text)
        if len(ends) >= room:
            text = text[: ends[room - 1]].strip()
            self.done = True
        self.sentences += min(len(ends), room)
        return self._keep(text)

    def _keep(self, text: str) -> str:
        self.spoken.append(text)
        return text

    def fallback(self) -> str | None:
        """What to say when every piece was dropped (None: something was said)."""
        if self.spoken:
            return None
        return fresh_line(NO_ANSWER_LINES if "fact" in self.dropped else NEUTRAL_LINES, self.previous)
