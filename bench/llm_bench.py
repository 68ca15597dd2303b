"""LLM benchmark: time to first token, tokens per second and a sample of replies, as a call turn sees them.

Runs the provider the service would use (``--provider local`` is the embedded model; ``ollama`` needs a
server at OLLAMA_HOST) with the real prompt builder: an SDR system prompt, retrieved knowledge and a
short history, then one caller question per run.

    python -m bench.llm_bench [--provider local] [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from bench.report import markdown_table, pcts, write_result

SYSTEM = (
    "You are Ava, a friendly sales development representative for Orbit CRM, calling Sam at Acme. "
    "Keep every reply to one or two short spoken sentences. Goal: book a 20-minute demo."
)
KNOWLEDGE = (
    "[1] Orbit CRM costs $49 per seat per month on the Growth plan, billed annually, with a 14-day free trial.\n"
    "[2] Orbit CRM integrates with Gmail, Outlook, Slack and HubSpot."
)
QUESTIONS = [
    "How much does it cost?",
    "Does it work with Outlook?",
    "Is there a free trial?",
    "Who are you and why are you calling?",
    "We already use a spreadsheet, why would we switch?",
]


async def measure(llm: Any, runs: int) -> dict[str, Any]:
    """Warm ``llm``, then ``runs`` caller questions: load seconds, first-token and reply times (s), the
    token rates after the first token, the first reply to each question, and each reply's process CPU
    seconds with its token count (``cpu``: steadier than wall time on a machine shared with other work)."""
    from call.prompt import build_messages

    load_started = time.perf_counter()
    if hasattr(llm, "warm"):
        await llm.warm()
    load_s = time.perf_counter() - load_started
    ttft, rates, totals, samples, cpu = [], [], [], [], []
    for i in range(runs):
        question = QUESTIONS[i % len(QUESTIONS)]
        messages = build_messages(SYSTEM, "ACTIVE", KNOWLEDGE, [], question)
        started, cpu_started = time.perf_counter(), time.process_time()
        first = None
        tokens = 0
        text = ""
        async for chunk in llm.stream_chat(messages, temperature=0.3, max_tokens=60):
            if chunk.text:
                tokens += 1
                text += chunk.text
                if first is None:
                    first = time.perf_counter()
        end = time.perf_counter()
        if first is not None:
            ttft.append(first - started)
            if tokens > 1 and end > first:
                rates.append((tokens - 1) / (end - first))
        totals.append(end - started)
        cpu.append((time.process_time() - cpu_started, tokens))
        if i < len(QUESTIONS):
            samples.append((question, " ".join(text.split())[:160]))
    return {
        "load_s": load_s,
        "ttft": ttft,
        "rates": sorted(rates),
        "totals": totals,
        "samples": samples,
        "cpu": cpu,
    }


def timing_row(name: str, m: dict[str, Any]) -> list[Any]:
    t, total, rates = pcts(m["ttft"]), pcts(m["totals"]), m["rates"]
    return [
        name,
        f"{m['load_s']:.1f}",
        t["n"],
        t["p50"],
        t["p95"],
        f"{rates[len(rates) // 2]:.1f}" if rates else "n/a",
        f"{rates[max(0, int(len(rates) * 0.05))]:.1f}" if rates else "n/a",
        total["p50"],
        total["p95"],
    ]


TIMING_HEADERS = [
    "model",
    "load s",
    "runs",
    "TTFT p50 ms",
    "TTFT p95 ms",
    "tokens/s median",
    "tokens/s p5",
    "reply p50 ms",
    "reply p95 ms",
]
TIMING_NOTE = (
    "Prompt = SDR system prompt + 2 knowledge chunks + the caller's question (~200 tokens); replies capped at "
    "60 tokens, temperature 0.3. Tokens/s counts streamed chunks after the first."
)


async def run(provider_name: str, runs: int) -> None:
    from config import Settings
    from providers.registry import ProviderRegistry

    settings = Settings(_env_file=None, llm_provider=provider_name, allow_bench_providers=True)  # type: ignore[call-arg]
    registry = ProviderRegistry(settings)
    llm = await registry.llm()
    m = await measure(llm, runs)
    await registry.aclose()
    body = (
        TIMING_NOTE
        + "\n\n"
        + markdown_table(TIMING_HEADERS, [timing_row(getattr(llm, "name", provider_name), m)])
        + "\n\nSample replies:\n\n"
        + markdown_table(["caller", "agent"], [[q, a.replace("|", "/")] for q, a in m["samples"]])
    )
    write_result("llm_bench", f"LLM: {getattr(llm, 'name', provider_name)}", body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--provider", default="local")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(run(args.provider, args.runs))


if __name__ == "__main__":
    main()
