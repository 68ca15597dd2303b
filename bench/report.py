"""What every benchmark shares: percentiles, the machine line, Markdown tables, the results folder."""

from __future__ import annotations

import os
import platform
import statistics
import sys
from pathlib import Path

import psutil

RESULTS = Path(__file__).resolve().parent / "results"


def pcts(values: list[float]) -> dict[str, float | int]:
    """n, median, p95 and p99 of values in seconds, reported in milliseconds."""
    if not values:
        return {"n": 0, "p50": float("nan"), "p95": float("nan"), "p99": float("nan")}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered) * 1000, 1),
        "p95": at(0.95),
        "p99": at(0.99),
    }


def machine() -> str:
    memory_gib = round(psutil.virtual_memory().total / 2**30)
    return (
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), {memory_gib} GiB, "
        f"Python {sys.version.split()[0]}"
    )


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_result(name: str, title: str, body: str) -> Path:
    """Print the section and save it as ``bench/results/<name>.md``."""
    text = f"## {title}\n\nMachine: {machine()}.\n\n{body.strip()}\n"
    print("\n" + text, flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(text)
    return path
