"""Each speech stage alone: Whisper final, Piper first clause, turn-end model (wall and CPU time).

python -m bench.stage_costs      # ~1 min; see bench/results/latency_budget.md
"""

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


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def main():
    s = Settings(_env_file=None)
    w = WhisperEngine(s)
    w.load()
    w.transcribe(np.zeros(8000, np.int16))
    lines = [MULAW_TO_PCM16[np.frombuffer(a, np.uint8)] for a in caller_audio()]
    out = {"whisper_final": [], "piper_first_clause": [], "turn_model": []}
    for _ in range(3):
        for pcm in lines:
            c, t = cpu(), time.perf_counter()
            w.transcribe(pcm[: len(pcm)])
            out["whisper_final"].append((time.perf_counter() - t, cpu() - c))
    tts = LocalTTSProvider(s)
    await tts.warm()
    for text in [
        "You said: Hi, I got your message",
        "You said: What does it cost for a team",
        "You said: Actually, wait, can we book",
    ] * 3:
        tts._phrases.clear()
        c, t = cpu(), time.perf_counter()
        async for _ in tts.synthesize(text):
            out["piper_first_clause"].append((time.perf_counter() - t, cpu() - c))
            break
    j = TurnJudge()
    j.load()
    for pcm in lines * 3:
        c, t = cpu(), time.perf_counter()
        j.submit(pcm, 8000).result()
        out["turn_model"].append((time.perf_counter() - t, cpu() - c))
    for k, v in out.items():
        wall = sorted(x[0] for x in v)
        cp = sorted(x[1] for x in v)
        print(
            f"{k}: n={len(v)} wall p50 {wall[len(v) // 2] * 1000:.0f} ms (min {wall[0] * 1000:.0f}), cpu p50 {cp[len(v) // 2] * 1000:.0f} ms"
        )


asyncio.run(main())
