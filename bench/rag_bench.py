"""Knowledge-base benchmark: ingestion throughput and retrieval latency at 1k and 10k chunks.

The real path: ``KnowledgeStore`` (paragraph chunking, packaged MiniLM embeddings on the CPU, an
embedded ChromaDB in a temp dir). Retrieval is timed as a call turn sees it (``await store.query``:
embed the question, search, filter by score), 100 questions per size.

    python -m bench.rag_bench [--sizes 1000,10000] [--queries 100]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

from bench.report import markdown_table, pcts, write_result

PRODUCTS = ["Orbit CRM", "Pulse Dialer", "Beacon Analytics", "Atlas Scheduler", "Nova Inbox", "Vector Forms"]
TOPICS = [
    (
        "pricing",
        "{p} costs ${n} per seat per month on the {t} plan, billed annually, with a {d}-day free trial.",
    ),
    (
        "integrations",
        "{p} integrates with Salesforce, HubSpot and Zendesk; the {t} plan adds {n} API calls per day.",
    ),
    (
        "security",
        "{p} is SOC 2 Type II certified, encrypts data at rest with AES-256 and keeps backups for {d} days.",
    ),
    (
        "onboarding",
        "Onboarding for {p} takes about {d} days and includes {n} hours of training on the {t} plan.",
    ),
    (
        "support",
        "{p} support answers within {d} hours on the {t} plan and offers a dedicated manager above {n} seats.",
    ),
    ("limits", "The {t} plan of {p} allows {n} users and {d} GB of storage per workspace."),
]
TIERS = ["Starter", "Growth", "Scale", "Enterprise"]


def paragraph(rng: random.Random, i: int) -> str:
    product, (topic, template) = rng.choice(PRODUCTS), rng.choice(TOPICS)
    fact = template.format(p=product, t=rng.choice(TIERS), n=rng.randint(5, 500), d=rng.randint(2, 90))
    filler = (
        f" Customers in {rng.choice(['retail', 'fintech', 'healthcare', 'logistics', 'education'])} often ask "
        f"about {topic} during discovery calls, and note {i} in the playbook covers the usual follow-up questions."
    )
    return fact + filler


def documents(chunks: int, rng: random.Random) -> list[str]:
    """Documents of 50 paragraphs; each paragraph is long enough (>80 chars) to be its own chunk."""
    paragraphs = [paragraph(rng, i) for i in range(chunks)]
    return ["\n\n".join(paragraphs[i : i + 50]) for i in range(0, chunks, 50)]


QUESTIONS = [
    "How much does Orbit CRM cost per seat?",
    "Does Pulse Dialer integrate with Salesforce?",
    "Is Beacon Analytics SOC 2 certified?",
    "How long does onboarding take for Atlas Scheduler?",
    "How fast does Nova Inbox support answer?",
    "How many users does the Growth plan of Vector Forms allow?",
    "Is there a free trial?",
    "Where is my data stored and is it encrypted?",
]
AGENT_LINE = "Hi, this is Ava from Orbit CRM. Do you have a minute to talk about your sales pipeline?"


async def measure(size: int, queries: int) -> dict[str, object]:
    from config import Settings
    from knowledge.store import KnowledgeStore

    rng = random.Random(size)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(_env_file=None, chroma_path=str(Path(tmp) / "chroma"))  # type: ignore[call-arg]
        store = KnowledgeStore(settings)
        await store.warm()
        docs = documents(size, rng)
        started = time.perf_counter()
        stored = 0
        for i, text in enumerate(docs):
            stored += await store.add_document("agent_bench", f"doc_{i}", f"Playbook {i}", text)
        ingest_s = time.perf_counter() - started
        for question in QUESTIONS[:3]:
            await store.query("agent_bench", question)  # warm the index
        latencies, in_context, hits = [], [], 0
        for k in range(queries):
            question = QUESTIONS[k % len(QUESTIONS)]
            t = time.perf_counter()
            chunks = await store.query("agent_bench", question)
            latencies.append(time.perf_counter() - t)
            hits += bool(chunks)
            t = time.perf_counter()  # as a call turn asks: also in the context of the agent's last line
            await store.query("agent_bench", question, context=AGENT_LINE)
            in_context.append(time.perf_counter() - t)
        store.close()
    return {
        "size": stored,
        "ingest_chunks_s": stored / ingest_s,
        "ingest_s": ingest_s,
        "query": pcts(latencies),
        "in_context": pcts(in_context),
        "hit_rate": hits / queries,
    }


async def main_async(sizes: list[int], queries: int) -> None:
    rows = []
    for size in sizes:
        r = await measure(size, queries)
        q = r["query"]
        rows.append(
            [
                r["size"],
                f"{r['ingest_chunks_s']:.0f}",
                f"{r['ingest_s']:.1f}",
                q["n"],
                q["p50"],
                q["p95"],
                q["p99"],
                f"{r['in_context']['p50']} / {r['in_context']['p95']}",
                f"{r['hit_rate']:.0%}",
            ]
        )
    body = (
        "One agent's collection, all-MiniLM-L6-v2 (packaged, CPU), embedded ChromaDB (HNSW, cosine), top-k 3, "
        "min score 0.25. Retrieval = embed the question + search + filter, awaited as a call turn does. With "
        "the agent's last line: the turn is searched on its own and after what the agent said (two "
        "embeddings, one search), as the call path does.\n\n"
        + markdown_table(
            [
                "chunks",
                "ingest chunks/s",
                "ingest s",
                "queries",
                "retrieval p50 ms",
                "p95 ms",
                "p99 ms",
                "with the agent's last line p50 / p95 ms",
                "questions with ≥1 chunk",
            ],
            rows,
        )
    )
    write_result("rag_bench", "RAG: ingestion and retrieval", body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main_async([int(s) for s in args.sizes.split(",")], args.queries))


if __name__ == "__main__":
    main()
