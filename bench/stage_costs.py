"""Each speech stage alone: Whisper final, Piper first clause, turn-end model (wall and CPU time).

python -m bench.stage_costs      # ~1 min; see bench/results/latency_budget.md
"""

from __future__ import annotations

import asyncio
import resource
import time

import numpy as np

from bench.load import caller_audio
from config import Settings
from providers.local_stt import WhisperEngine
from providers.local_tts import LocalTTSProvider
from speech.audio import MULAW_TO_PCM16
from speech.turn_model import TurnJudge

FIRST_CLAUSES = [
    "You said: Hi, I got your message",
    "You said: What does it cost for a team",
    "You said: Actually, wait, can we book",
]


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def main() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    whisper = WhisperEngine(settings)
    whisper.load()
    whisper.transcribe(np.zeros(8000, np.int16))
    lines = [MULAW_TO_PCM16[np.frombuffer(a, np.uint8)] for a in caller_audio()]
    out: dict[str, list[tuple[float, float]]] = {
        "whisper_final": [],
        "piper_first_clause": [],
        "turn_model": [],
    }
    for pcm in lines * 3:
        c, t = cpu(), time.perf_counter()
        whisper.transcribe(pcm)
        out["whisper_final"].append((time.perf_counter() - t, cpu() - c))
    tts = LocalTTSProvider(settings)
    await tts.warm()
    for text in FIRST_CLAUSES * 3:
        c, t = cpu(), time.perf_counter()
        async for _ in tts.synthesize(text):
            out["piper_first_clause"].append((time.perf_counter() - t, cpu() - c))
            break
    judge = TurnJudge()
    judge.load()
    for pcm in lines * 3:
        c, t = cpu(), time.perf_counter()
        judge.submit(pcm, 8000).result()
        out["turn_model"].append((time.perf_counter() - t, cpu() - c))
    for name, values in out.items():
        wall = sorted(v[0] for v in values)
        spent = sorted(v[1] for v in values)
        mid = len(values) // 2
        print(
            f"{name}: n={len(values)} wall p50 {wall[mid] * 1000:.0f} ms (min {wall[0] * 1000:.0f}), "
            f"cpu p50 {spent[mid] * 1000:.0f} ms"
        )
    await tts.aclose()
    whisper.close()


if __name__ == "__main__":
    asyncio.run(main())
