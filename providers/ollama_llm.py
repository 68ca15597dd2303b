"""Ollama LLM: streamed chat replies and native tool calls from an Ollama server, via the official SDK.

The model stays loaded between calls (``OLLAMA_KEEP_ALIVE``); ``json_schema`` maps to Ollama's
structured outputs (``format``). Every server or transport failure surfaces as ``LLMError``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import ollama

from config import Settings
from providers.base import ChatMessage, LLMChunk, LLMError, ToolCall, ToolSpec

log = logging.getLogger(__name__)

AVAILABILITY_TIMEOUT_S = 1.5
# Connecting must fail fast when nothing listens; reads stay unbounded because a cold model load
# can take a while, and the engine bounds every turn with its own timeout.
HTTP_TIMEOUT = httpx.Timeout(None, connect=3.0)
# ValueError covers a malformed stream line (bad JSON, or a shape the SDK's models reject).
FAILURES = (ollama.ResponseError, ollama.RequestError, httpx.HTTPError, OSError, ValueError)


def _to_ollama(message: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.role == "tool" and message.tool_name:
        out["tool_name"] = message.tool_name
    if message.tool_calls:
        out["tool_calls"] = [
            {"function": {"name": c.name, "arguments": c.arguments}} for c in message.tool_calls
        ]
    return out


def _describe(exc: BaseException) -> str:
    """A short reason without the host URL or headers (which may carry credentials)."""
    if isinstance(exc, ollama.ResponseError):
        return f"ollama error {exc.status_code}: {str(exc.error)[:160]}"
    if isinstance(exc, httpx.TimeoutException):
        return "ollama timed out"
    if isinstance(exc, httpx.ConnectError | ConnectionError):
        return "ollama unreachable"
    return f"ollama failed: {type(exc).__name__}"


class OllamaLLMProvider:
    name = "ollama"
    supports_tools = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client = ollama.AsyncClient(host=settings.ollama_host, timeout=HTTP_TIMEOUT)

    async def is_available(self) -> bool:
        """True when the server answers quickly and has the configured model pulled; never raises."""
        try:
            async with asyncio.timeout(AVAILABILITY_TIMEOUT_S):
                listed = await self._client.list()
        except Exception as exc:
            log.info("ollama not available", extra={"fields": {"error": type(exc).__name__}})
            return False
        model = self.settings.ollama_model
        # Ollama names an untagged model "<name>:latest".
        wanted = {model, model if ":" in model else f"{model}:latest"}
        if any(m.model in wanted for m in listed.models):
            return True
        log.info("ollama model not pulled", extra={"fields": {"model": model}})
        return False

    async def warm(self) -> None:
        """Load the model now so the first caller doesn't wait for it (a chat with no messages)."""
        try:
            await self._client.chat(
                model=self.settings.ollama_model, messages=[], keep_alive=self.settings.ollama_keep_alive
            )
        except Exception as exc:
            log.warning("ollama warm-up failed", extra={"fields": {"error": type(exc).__name__}})

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
        """Stream the reply; ``json_schema`` constrains the output to that schema (Ollama ``format``)."""
        stream: AsyncIterator[ollama.ChatResponse] | None = None
        try:
            stream = await self._client.chat(
                model=model or self.settings.ollama_model,
                messages=[_to_ollama(m) for m in messages],
                tools=[t.as_openai() for t in tools] if tools else None,
                stream=True,
                options={"temperature": temperature, "num_predict": max_tokens},
                keep_alive=self.settings.ollama_keep_alive,
                format=json_schema,
            )
            async for part in stream:
                message = part.message
                if message.content:
                    yield LLMChunk(text=message.content)
                if message.tool_calls:
                    # Ollama gives tool calls no id; one is made up so results can be matched to calls.
                    calls = [
                        ToolCall(c.function.name, dict(c.function.arguments), f"call_{uuid.uuid4().hex[:12]}")
                        for c in message.tool_calls
                    ]
                    yield LLMChunk(tool_calls=calls)
            yield LLMChunk(done=True)
        except FAILURES as exc:
            raise LLMError(_describe(exc)) from exc
        finally:
            # The SDK's generator owns the HTTP response: closing it now (not at garbage collection)
            # drops the connection, which also makes Ollama stop generating.
            if stream is not None:
                await stream.aclose()  # type: ignore[attr-defined]

    async def aclose(self) -> None:
        await self._client.close()
