"""Chooses and owns the process's STT/TTS/LLM providers.

``auto`` picks the cloud provider when its credentials/server are there and
the embedded local model otherwise. Providers are created once, lazily, and
shared by every call (the local models are loaded once per process).

For the LLM, ``auto`` asks the OpenAI-compatible server (when OPENAI_BASE_URL or OPENAI_API_KEY is set),
then Ollama, at start and asks again later: a call or ``/readyz`` that finds the answer older than
LLM_AUTO_REPROBE_SEC starts a new probe in the background (never waited for), so a server started after
the service is used from the next call on, and one that goes away is left for the next in line (the
embedded model last).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from config import BENCH_PROVIDERS, Settings, bench_provider_refusal
from providers.base import LLMProvider, ProviderError, STTProvider, TTSProvider

log = logging.getLogger(__name__)

WARM_ORDER = ("tts", "vad", "stt", "llm")


def warm_vad() -> None:
    """WebRTC VAD and the spectral check of a loud frame, once (the first call's barge-in detector)."""
    from speech.vad import FrameClassifier

    loud = bytes(range(0, 160))  # mu-law bytes near 0 are loud
    FrameClassifier().classify(loud, spectrum_above=0.0)


class BenchProviderRefused(ValueError):
    """A benchmark stand-in asked for without ALLOW_BENCH_PROVIDERS."""


class ProviderRegistry:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._instances: dict[tuple[str, str], Any] = {}
        self._llm_auto_choice: str | None = None
        self._llm_probed_at = 0.0  # time.monotonic() of the last probe's answer
        self._llm_probe: asyncio.Task[None] | None = None
        self._warm_task: asyncio.Task[None] | None = None
        self._warmed: dict[str, bool] = {}

    # ------------------------------------------------------------ choice

    def stt_name(self, override: str | None = None) -> str:
        choice = override or self.settings.stt_provider
        if choice == "auto":
            return "deepgram" if self.settings.deepgram_api_key.get_secret_value() else "local"
        return choice

    def tts_name(self, override: str | None = None) -> str:
        choice = override or self.settings.tts_provider
        if choice == "auto":
            return "deepgram" if self.settings.deepgram_api_key.get_secret_value() else "local"
        return choice

    async def llm_name(self, override: str | None = None) -> str:
        choice = override or self.settings.llm_provider
        if choice != "auto":
            return choice
        if self._llm_auto_choice is None:
            await self._probe_servers()
        else:
            self._reprobe_if_stale()
        assert self._llm_auto_choice is not None
        return self._llm_auto_choice

    async def _probe_servers(self) -> None:
        choice = "local"
        candidates = ["openai"] if self._openai_configured() else []
        for name in [*candidates, "ollama"]:
            if await self._get("llm", name).is_available():
                choice = name
                break
        self._llm_probed_at = time.monotonic()
        if choice != self._llm_auto_choice:
            changed = self._llm_auto_choice is not None
            self._llm_auto_choice = choice
            log.info("llm provider chosen", extra={"fields": {"provider": choice, "changed": changed}})
            if changed and choice != "local":
                await self._get("llm", choice).warm()  # load the model before the next call asks it

    def _openai_configured(self) -> bool:
        s = self.settings
        return bool(s.openai_base_url or s.openai_api_key.get_secret_value())

    def _reprobe_if_stale(self) -> None:
        """Start a background probe when the last answer is stale and none is running."""
        stale = time.monotonic() - self._llm_probed_at >= self.settings.llm_auto_reprobe_sec
        if stale and (self._llm_probe is None or self._llm_probe.done()):
            self._llm_probe = asyncio.create_task(self._probe_servers(), name="probe-llm-servers")

    def llm_choice(self) -> dict[str, Any] | None:
        """For /readyz: which LLM ``auto`` gives a call now, and whether that is the embedded fallback.
        None when no ``auto`` choice is made (a fixed LLM_PROVIDER)."""
        if self._llm_auto_choice is None:
            return None
        self._reprobe_if_stale()
        return {
            "provider": self._llm_auto_choice,
            "fallback": self._llm_auto_choice == "local",
            "checked_s_ago": round(time.monotonic() - self._llm_probed_at, 1),
        }

    # ------------------------------------------------------------ instances

    def stt(self, override: str | None = None) -> STTProvider:
        return self._get("stt", self.stt_name(override))

    def tts(self, override: str | None = None) -> TTSProvider:
        return self._get("tts", self.tts_name(override))

    async def llm(self, override: str | None = None) -> LLMProvider:
        return self._get("llm", await self.llm_name(override))

    def _get(self, kind: str, name: str) -> Any:
        if name in BENCH_PROVIDERS and not self.settings.allow_bench_providers:
            # Asked on every use: an agent stored before the API refused stand-ins (or written around the
            # API) must not get one on a real call either.
            raise BenchProviderRefused(bench_provider_refusal(f"{kind} provider", name))
        key = (kind, name)
        if key not in self._instances:
            self._instances[key] = self._create(kind, name)
        return self._instances[key]

    def _create(self, kind: str, name: str) -> Any:
        s = self.settings
        match (kind, name):
            case ("stt", "deepgram"):
                from providers.deepgram_stt import DeepgramSTTProvider

                return DeepgramSTTProvider(s)
            case ("stt", "local"):
                from providers.local_stt import LocalSTTProvider

                return LocalSTTProvider(s)
            case ("tts", "deepgram"):
                from providers.deepgram_tts import DeepgramTTSProvider

                return DeepgramTTSProvider(s)
            case ("tts", "local"):
                from providers.local_tts import LocalTTSProvider

                return LocalTTSProvider(s)
            case ("llm", "ollama"):
                from providers.ollama_llm import OllamaLLMProvider

                return OllamaLLMProvider(s)
            case ("llm", "openai"):
                from providers.openai_llm import OpenAICompatLLMProvider

                return OpenAICompatLLMProvider(s)
            case ("llm", "local"):
                from providers.local_llm import LocalLLMProvider

                return LocalLLMProvider(s)
            case (_, "echo" | "delayed"):
                from providers import instant

                return instant.create(kind, name, s)
        raise ValueError(f"unknown {kind} provider {name!r}")

    # ------------------------------------------------------------ lifecycle

    def warm_in_background(self) -> asyncio.Task[None]:
        """Load the chosen models and run each once as a call would; /readyz reports progress.

        Order follows a call: TTS first (the greeting is the first thing a call needs), then the VAD and
        the STT (the caller's first words), then the LLM (the first reply). Each is run once, not only
        loaded: ONNX Runtime, CTranslate2 and llama.cpp allocate and pick kernels on their first run,
        which would otherwise land on the first call's greeting or first reply.
        """
        for kind in WARM_ORDER:
            self._warmed[kind] = False  # before the task runs: /readyz must not report ready meanwhile
        self._warm_task = asyncio.create_task(self._warm(), name="warm-providers")
        return self._warm_task

    @property
    def warm_task(self) -> asyncio.Task[None] | None:
        return self._warm_task

    async def _warm(self) -> None:
        started = time.perf_counter()
        seconds: dict[str, float] = {}
        try:
            for kind in WARM_ORDER:
                t0 = time.perf_counter()
                if kind == "vad":
                    await asyncio.to_thread(warm_vad)
                else:
                    provider = (
                        await self.llm() if kind == "llm" else self.stt() if kind == "stt" else self.tts()
                    )
                    warm = getattr(provider, "warm", None)
                    if warm is not None:
                        await warm()
                self._warmed[kind] = True
                seconds[kind] = round(time.perf_counter() - t0, 2)
            log.info(
                "providers warm",
                extra={"fields": {**seconds, "total_s": round(time.perf_counter() - started, 2)}},
            )
        except Exception as exc:
            fields = {"error": type(exc).__name__}
            if isinstance(exc, ProviderError):  # our own words (no URL, no key): e.g. a refused model file
                fields["reason"] = str(exc)[:300]
            log.error("provider warm-up failed", extra={"fields": fields})

    def readiness(self) -> dict[str, bool]:
        return {f"{kind}_loaded": ok for kind, ok in self._warmed.items()}

    async def aclose(self) -> None:
        for task in (self._warm_task, self._llm_probe):
            if task is not None and not task.done():
                task.cancel()
        for provider in self._instances.values():
            close = getattr(provider, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception as exc:
                    log.warning("provider close failed", extra={"fields": {"error": type(exc).__name__}})
