"""Off-script turns on the embedded brain: short, no repeats, call endings taken, no invented facts.

    python -m bench.brain_bench                 # runs the set, prints the table, writes bench/results/brain.json
    python -m bench.brain_bench --label before  # store this run under another label (before/after)

Each conversation of ``bench/offscript_turns.json`` is held through the real ``call.responder.Responder``
(intent rules, knowledge, the embedded SmolLM2 with its real sampling), with the speaker replaced by a
recorder: the replies the caller would hear, turn after turn, each seeing the conversation so far.
The knowledge base is the set's own few sentences, retrieved by word overlap (no embedding model here).

Measures, per reply:
- sentences: at most two spoken sentences;
- repeat: a near-duplicate of the previous agent line (word-set Jaccard ≥ 0.6, or one contained in the other);
- ending turns: the call ends (the reply hangs up) and the reply is polite (thanks / bye / email);
- invented facts: a number, price, date or capitalised name in the reply that is in none of the system
  prompt, the knowledge base, the caller's words or the greeting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SET = ROOT / "bench" / "offscript_turns.json"

_SENT_END = re.compile(r"(?<=[.!?])\s+(?=\S)")
_NUMBER_WORDS = (
    "zero two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen twenty "
    "thirty forty fifty sixty seventy eighty ninety hundred thousand million billion percent"
).split()
_MONTHS = (
    "january february march april may june july august september october november december "
    "monday tuesday wednesday thursday friday saturday sunday"
).split()
_COMMON_CAPS = {"i", "i'm", "i'll", "i've", "i'd", "ok", "okay", "orbit", "crm", "ava", "ai"}


def sentences(text: str) -> list[str]:
    return [s for s in _SENT_END.split(text.strip()) if re.search(r"[A-Za-z0-9]", s)]


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9']+", text.lower()))


def near_duplicate(a: str, b: str) -> bool:
    wa, wb = words(a), words(b)
    if not wa or not wb:
        return False
    na, nb = " ".join(re.findall(r"[a-z0-9']+", a.lower())), " ".join(re.findall(r"[a-z0-9']+", b.lower()))
    return len(wa & wb) / len(wa | wb) >= 0.6 or (len(na) > 20 and (na in nb or nb in na))


def facts(text: str) -> set[str]:
    """Numbers, prices, dates and capitalised names (not at a sentence's start) in ``text``."""
    found: set[str] = set(re.findall(r"\d[\d,.]*", text))
    lowered = words(text)
    found |= {w for w in lowered if w in _NUMBER_WORDS or w in _MONTHS}
    for sentence in sentences(text):
        tokens = re.findall(r"[A-Za-z][A-Za-z'’-]*", sentence)
        for token in tokens[1:]:
            if token[0].isupper() and token.lower() not in _COMMON_CAPS:
                found.add(token.lower())
    return found


def invented(reply: str, context: str) -> set[str]:
    known = words(context) | set(re.findall(r"\d[\d,.]*", context))
    return {f for f in facts(reply) if f.rstrip(".,") not in known and f not in known}


POLITE = re.compile(r"\b(thank|thanks|bye|goodbye|email|great day|take care)\b", re.IGNORECASE)


class RecordingSpeaker:
    def __init__(self) -> None:
        self.said: list[str] = []

    async def say(self, turn: Any, lines: list[str]) -> None:
        turn.planned.extend(lines)
        self.said.extend(lines)

    async def speak(self, turn: Any, queue: asyncio.Queue[str | None]) -> None:
        while (sentence := await queue.get()) is not None:
            turn.planned.append(sentence)
            self.said.append(sentence)

    async def wait_played(self, turn: Any) -> None:
        return None


class WordOverlapKnowledge:
    """The set's knowledge sentences, retrieved by content-word overlap."""

    STOP = words("a an the is are do does you your we our for of to in on and or what how it its with can i")

    def __init__(self, facts_: list[str]) -> None:
        from knowledge.store import RetrievedChunk

        self.chunks = [RetrievedChunk(text=f, document_id="kb", title="Orbit CRM", score=0.0) for f in facts_]

    def _score(self, question: str, sentence: str) -> float:
        q = words(question) - self.STOP
        return len(q & words(sentence)) / max(1, len(q))

    async def query(self, agent_id: str, text: str, context: str = "", **_: Any) -> list[Any]:
        scored = sorted(self.chunks, key=lambda c: -self._score(text, c.text))
        return [c for c in scored[:2] if self._score(text, c.text) > 0.2]

    async def best_sentence(self, question: str, chunks: list[Any]) -> tuple[str, float]:
        best = max(chunks, key=lambda c: self._score(question, c.text))
        return best.text, self._score(question, best.text)

    def wake_indexer(self) -> None:
        return None

    @staticmethod
    def format_for_prompt(chunks: list[Any]) -> str:
        return "\n".join(f"[{i}] ({c.title}) {c.text}" for i, c in enumerate(chunks, start=1))


class NoTools:
    def filler_for(self, name: str) -> str:
        return "One moment."

    def transfer_mode(self, agent: Any, call: Any) -> str | None:
        return None  # a transfer here is a tool call like any other (nothing is dialled)

    async def execute(self, agent: Any, call: Any, ctx: Any) -> Any:
        ends = call.name in ("end_call", "add_to_dnc")
        return SimpleNamespace(success=True, duration_ms=1.0, say="", result={}, error=None, ends_call=ends)


async def run_set(data: dict[str, Any], settings: Any = None) -> list[dict[str, Any]]:
    """The set's replies; ``settings`` chooses the embedded model (default: the environment's)."""
    from call.bargein import TurnSettings
    from call.clock import CallClock
    from call.intents import detect_intent
    from call.profile import AgentProfile
    from call.reply_turn import ReplyTurn
    from call.responder import Responder
    from call.transcript import CallState, CallTranscript
    from config import Settings
    from providers.base import ChatMessage
    from providers.local_llm import LocalLLMProvider

    settings = settings or Settings()
    llm = LocalLLMProvider(settings)
    await llm.warm()
    agent_cfg = data["agent"]
    knowledge = WordOverlapKnowledge(agent_cfg["knowledge"])
    context_base = " ".join([agent_cfg["system_prompt"], agent_cfg["first_message"], *agent_cfg["knowledge"]])
    rows: list[dict[str, Any]] = []
    for conversation in data["conversations"]:
        agent = SimpleNamespace(
            id="bench", documents=[SimpleNamespace(status="ready")], llm_model=None, temperature=0.7
        )
        profile = AgentProfile(
            agent, agent_cfg["system_prompt"], agent_cfg["first_message"], TurnSettings(), [], {}
        )
        speaker = RecordingSpeaker()
        transcript = CallTranscript(None, CallClock().ms)
        transcript.set_state(CallState.DISCOVERY)
        transcript.history.append(ChatMessage("assistant", agent_cfg["first_message"]))
        responder = Responder(
            profile=profile, llm=llm, speaker=speaker, transcript=transcript, tool_runner=NoTools(),  # type: ignore[arg-type]
            tool_context=None, knowledge=knowledge, settings=settings, ms=CallClock().ms,  # type: ignore[arg-type]
        )  # fmt: skip
        heard = ""
        for index, item in enumerate(conversation["turns"]):
            previous = transcript.last_agent_line()
            speaker.said.clear()
            turn = ReplyTurn(index + 1, item["caller"], index)
            started = time.perf_counter()
            await responder.answer(turn, detect_intent(item["caller"]))
            reply = " ".join(speaker.said).strip()
            heard += " " + item["caller"]
            rows.append(
                {
                    "conversation": conversation["name"],
                    "category": item["category"],
                    "caller": item["caller"],
                    "previous": previous,
                    "reply": reply,
                    "source": str(turn.source),
                    "ends_call": turn.hang_up_after is not None,
                    "sentences": len(sentences(reply)),
                    "repeat": near_duplicate(reply, previous),
                    "invented": sorted(invented(reply, context_base + heard)),
                    "seconds": round(time.perf_counter() - started, 2),
                }
            )
            transcript.history.append(ChatMessage("user", item["caller"]))
            transcript.history.append(ChatMessage("assistant", reply))
            if turn.hang_up_after is not None:  # that call is over: the next turn starts a fresh one
                transcript.history[:] = [ChatMessage("assistant", agent_cfg["first_message"])]
    await llm.aclose()
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    endings = [r for r in rows if r["category"] == "ending"]
    polite_end = [r for r in endings if r["ends_call"] and POLITE.search(r["reply"])]
    not_endings = [r for r in rows if r["category"] != "ending"]
    return {
        "turns": n,
        "short_pct": round(100 * sum(r["sentences"] <= 2 for r in rows) / n, 1),
        "repeat_pct": round(100 * sum(r["repeat"] for r in rows) / n, 1),
        "ending_pct": round(100 * len(polite_end) / max(1, len(endings)), 1),
        "ended_wrongly": sum(r["ends_call"] for r in not_endings),
        "invented_pct": round(100 * sum(bool(r["invented"]) for r in rows) / n, 1),
        "mean_words": round(sum(len(r["reply"].split()) for r in rows) / n, 1),
        "mean_seconds": round(sum(r["seconds"] for r in rows) / n, 2),
    }


def table(runs: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| run | turns | replies ≤ 2 sentences | repeating the previous agent turn | call-ending turns "
        "ended politely | other turns that ended the call | replies with an invented fact | mean words "
        "| mean s / reply |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, s in runs.items():
        lines.append(
            f"| {label} | {s['turns']} | {s['short_pct']}% | {s['repeat_pct']}% | {s['ending_pct']}% | "
            f"{s['ended_wrongly']} | {s['invented_pct']}% | {s['mean_words']} | {s['mean_seconds']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", default="after")
    args = parser.parse_args()
    data = json.loads(SET.read_text())
    rows = asyncio.run(run_set(data))
    RESULTS.mkdir(parents=True, exist_ok=True)
    store = RESULTS / "brain.json"
    runs = json.loads(store.read_text()) if store.exists() else {}
    runs[args.label] = {"summary": summarise(rows), "rows": rows}
    store.write_text(json.dumps(runs, indent=1) + "\n")
    summaries = {label: run["summary"] for label, run in runs.items()}
    text = table(summaries)
    print(text)
    samples = []
    for label, run in runs.items():
        samples.append(f"\n### {label}: replies to the issue's turns\n")
        for r in run["rows"]:
            if r["caller"].startswith(("We are a team of twelve", "Send me an email instead")):
                samples.append(f"- caller: {r['caller']}\n  agent: {r['reply']}")
    (RESULTS / "brain.md").write_text(
        "# Off-script turns on the embedded brain (bench/brain_bench.py)\n\n"
        f"{sum(len(c['turns']) for c in data['conversations'])} caller turns in "
        f"{len(data['conversations'])} conversations (bench/offscript_turns.json): objections, small talk, "
        "questions the knowledge base does not answer, ways of ending a call. SmolLM2-135M (embedded), "
        "agent temperature 0.7, the README's agent with a five-sentence knowledge base.\n\n"
        + text
        + "\n"
        + "\n".join(samples)
        + "\n"
    )


if __name__ == "__main__":
    main()
