"""An API burst for the fault suite, from a process of its own (so the client's work does not skew the
timing of the call it runs beside):

    python -m tests.api_burst BASE_URL KEY OTHER_KEY REQUESTS

sends REQUESTS ``GET /v1/convai/agents`` with KEY, 20 at a time; right after, one more with KEY and one
with OTHER_KEY, then the health probes. Prints one JSON line with what came back.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

import httpx


async def burst(base_url: str, key: str, other_key: str, requests: int) -> dict[str, object]:
    statuses: Counter[int] = Counter()
    sem = asyncio.Semaphore(20)
    async with httpx.AsyncClient(base_url=base_url, headers={"xi-api-key": key}, timeout=30) as api:

        async def one() -> None:
            async with sem:
                statuses[(await api.get("/v1/convai/agents")).status_code] += 1

        started, started_at = time.monotonic(), time.time()
        await asyncio.gather(*(one() for _ in range(requests)))
        seconds = time.monotonic() - started
        limited = await api.get("/v1/convai/agents")
        other = await api.get("/v1/convai/agents", headers={"xi-api-key": other_key})
        probes = [(await api.get(path)).status_code for path in ("/healthz", "/readyz") * 5]
    return {
        "statuses": {str(k): v for k, v in statuses.items()},
        "seconds": seconds,
        "started_at": started_at,
        "limited": {
            "status": limited.status_code,
            "content_type": limited.headers.get("content-type", ""),
            "retry_after": limited.headers.get("retry-after"),
            "body": limited.json(),
        },
        "other_key_status": other.status_code,
        "probes": probes,
    }


if __name__ == "__main__":
    base_url, key, other_key, requests = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    print(json.dumps(asyncio.run(burst(base_url, key, other_key, requests))), flush=True)
