"""``make bench``: every benchmark in turn, each bounded in time, then one Markdown report.

Each benchmark is a module runnable on its own (``python -m bench.<name>``) that prints its tables and
writes ``bench/results/<name>.md``; this runner only sequences them and stitches the report together.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

# (module, time limit in seconds, result files it writes)
BENCHMARKS: list[tuple[str, int, list[str]]] = [
    ("bench.speech_bench", 600, ["speech_bench.md"]),
    ("bench.llm_bench", 600, ["llm_bench.md"]),
    ("bench.rag_bench", 600, ["rag_bench.md"]),
    ("bench.tool_bench", 900, ["tools.md"]),
    ("bench.bargein.run", 2400, ["bargein.md"]),  # 81 cases; turns run one at a time
    ("bench.load", 3600, ["load_overhead.md", "load_cloud.md", "load_embedded.md"]),
]


def main() -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    only = set(sys.argv[1:])
    failures = []
    for module, limit, _ in BENCHMARKS:
        if only and module.split(".", 1)[1] not in only:
            continue
        print(f"\n=== {module} (limit {limit} s)", flush=True)
        started = time.monotonic()
        try:
            code = subprocess.run([sys.executable, "-m", module], cwd=ROOT, timeout=limit).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
        outcome = "ok" if code == 0 else code
        print(f"=== {module}: {outcome} in {time.monotonic() - started:.0f} s", flush=True)
        if code != 0:
            failures.append(module)
    parts = ["# Benchmark report\n"]
    for _, _, files in BENCHMARKS:
        for name in files:
            path = RESULTS / name
            if path.exists():
                parts.append(path.read_text().strip() + "\n")
    (RESULTS / "REPORT.md").write_text("\n".join(parts))
    print(f"\nreport: {RESULTS / 'REPORT.md'}" + (f"; failed: {', '.join(failures)}" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
