"""Any OpenAI-compatible chat-completions server (vLLM, llama.cpp server, LM Studio, OpenAI, Groq…).

Through the official ``openai`` SDK: streamed replies, and tool calls assembled from the streamed
deltas (a call's id and name come first, its arguments in pieces, keyed by ``index``). ``json_schema``
maps to ``response_format`` ``json_schema``. Every failure surfaces as ``LLMError`` with a short reason
that never carries the API key, the server's URL or the server's own words about the key: 401/403,
429 (after the SDK's retries, which honour Retry-After), 5xx, a timeout, an unreachable server, and a
stream that stops before the server says it is finished (a dropped connection).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx2  # the openai SDK's HTTP client: a dropped stream may surface as its error
import openai

from config import Settings
from providers.base import ChatMessage, LLMChunk, LLMError, ToolCall, ToolSpec

log = logging.getLogger(__name__)
# The SDK logs request options at DEBUG; keep its chatter (and anything it might carry) out of ours.
logging.getLogger("openai").setLevel(logging.INFO)

AVAILABILITY_TIMEOUT_S = 1.5
NO_KEY = "not-needed"  # local servers take any key; the SDK insists on one
SERVER = "openai-compatible server"


def _tool_call_ids(messages: list[ChatMessage]) -> list[str | None]:
    """The ``tool_call_id`` of each tool message: the id of the latest assistant call to that tool
    (the engine's tool messages name the tool, the OpenAI wire format wants the call's id)."""
    pending: dict[str, list[str]] = {}
    ids: list[str | None] = []
    for m in messages:
        if m.role == "assistant" and m.tool_calls:
            for c in m.tool_calls:
                pending.setdefault(c.name, []).append(c.id)
        if m.role == "tool":
            queue = pending.get(m.tool_name or "", [])
            ids.append(queue.pop(0) if queue else None)
        else:
            ids.append(None)
    return ids


def to_openai(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    # An assistant call with no id (the embedded model's, Ollama's) gets one here, shared with its result.
    for m in messages:
        if m.tool_calls:
            for c in m.tool_calls:
                c.id = c.id or f"call_{uuid.uuid4().hex[:12]}"
    for m, call_id in zip(messages, _tool_call_ids(messages), strict=True):
        if m.role == "tool":
            out.append(
                {"role": "tool", "tool_call_id": call_id or f"call_{m.tool_name}", "content": m.content}
            )
            continue
        item: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            item["content"] = m.content or None
            item["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                }
                for c in m.tool_calls
            ]
        out.append(item)
    return out


def describe(exc: BaseException) -> str:
    """A short reason: never the key, the URL or headers; for 401/403 not even the server's message
    (OpenAI's quotes part of the key)."""
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return f"openai-compatible server refused the API key ({exc.status_code}): check OPENAI_API_KEY"
    if isinstance(exc, openai.RateLimitError):
        return "openai-compatible server rate-limited the request (429)"
    if isinstance(exc, openai.NotFoundError):
        return f"{SERVER}: model or endpoint not found (404): check OPENAI_MODEL and OPENAI_BASE_URL"
    if isinstance(exc, openai.APIStatusError):
        return f"openai-compatible server error {exc.status_code}: {_message(exc)}"
    if isinstance(exc, openai.APITimeoutError):
        return "openai-compatible server timed out"
    if isinstance(exc, openai.APIConnectionError):
        return "openai-compatible server unreachable or the connection dropped"
    if isinstance(exc, openai.APIError):  # an error event inside the stream
        return f"openai-compatible server failed mid-stream: {_message(exc)}"
    return f"openai-compatible server failed: {type(exc).__name__}"


def _message(exc: openai.APIError) -> str:
    body = exc.body
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or exc.message)[:160]


class _ToolCallBuilder:
    """Streamed tool-call deltas, put together by ``index``."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, str]] = {}

    def add(self, delta: Any) -> None:
        slot = self._calls.setdefault(delta.index or 0, {"id": "", "name": "", "arguments": ""})
        if delta.id:
            slot["id"] = delta.id
        if delta.function is not None:
            if delta.function.name:
                slot["name"] += delta.function.name
            if delta.function.arguments:
                slot["arguments"] += delta.function.arguments

    def calls(self) -> list[ToolCall]:
        out = []
        for _, slot in sorted(self._calls.items()):
            try:
                arguments = json.loads(slot["arguments"] or "{}")
            except ValueError:
                arguments = None
            if not slot["name"] or not isinstance(arguments, dict):
                # A call we cannot run is dropped, said in the log (never its arguments: the caller's words).
                log.warning("malformed tool call dropped", extra={"fields": {"tool": slot["name"][:64]}})
                continue
            out.append(ToolCall(slot["name"], arguments, slot["id"] or f"call_{uuid.uuid4().hex[:12]}"))
        self._calls.clear()
        return out


class OpenAICompatLLMProvider:
    name = "openai"
    supports_tools = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        key = settings.openai_api_key.get_secret_value() or NO_KEY
        self._client = openai.AsyncOpenAI(
            api_key=key,
            base_url=settings.openai_base_url or None,
            timeout=openai.Timeout(settings.openai_timeout_sec, connect=settings.openai_connect_timeout_sec),
            max_retries=settings.openai_max_retries,
        )

    @property
    def configured(self) -> bool:
        return bool(self.settings.openai_base_url or self.settings.openai_api_key.get_secret_value())

    async def is_available(self) -> bool:
        """True when the server answers ``GET /models`` quickly and serves OPENAI_MODEL (or serves a
        single model, as llama.cpp's server does whatever the name); never raises."""
        if not self.configured or not self.settings.openai_model:
            return False
        try:
            async with asyncio.timeout(AVAILABILITY_TIMEOUT_S):
                page = await self._client.models.list(timeout=AVAILABILITY_TIMEOUT_S)
                served = [m.id for m in page.data]
        except Exception as exc:
            log.info(
                "openai-compatible server not available", extra={"fields": {"error": type(exc).__name__}}
            )
            return False
        if self.settings.openai_model in served or len(served) == 1:
            return True
        log.info(
            "openai-compatible server lacks the model",
            extra={"fields": {"model": self.settings.openai_model}},
        )
        return False

    async def warm(self) -> None:
        """A one-token request: a server that loads models on demand (LM Studio, vLLM's first request)
        does it now, not on the first caller's turn. Failures are logged, not raised."""
        try:
            async for _ in self.stream_chat([ChatMessage("user", "Hi")], max_tokens=1):
                pass
        except LLMError as exc:
            log.warning("openai-compatible warm-up failed", extra={"fields": {"error": str(exc)}})

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
        kwargs: dict[str, Any] = {}
        if tools:
            kwargs["tools"] = [t.as_openai() for t in tools]
        if json_schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": json_schema, "strict": False},
            }
        stream: Any = None
        builder = _ToolCallBuilder()
        finished = False
        try:
            stream = await self._client.chat.completions.create(
                model=model or self.settings.openai_model,
                messages=to_openai(messages),  # type: ignore[arg-type]
                stream=True,
                temperature=temperature,
                max_tokens=max_tokens,
                **kwargs,
            )
            async for part in stream:
                for choice in part.choices[:1]:
                    delta = choice.delta
                    if delta is not None and delta.content:
                        yield LLMChunk(text=delta.content)
                    if delta is not None and delta.tool_calls:
                        for call_delta in delta.tool_calls:
                            builder.add(call_delta)
                    if choice.finish_reason:
                        finished = True
                        if calls := builder.calls():
                            yield LLMChunk(tool_calls=calls)
            if not finished:
                raise LLMError(
                    "openai-compatible server ended the stream before finishing (connection dropped)"
                )
            yield LLMChunk(done=True)
        except openai.OpenAIError as exc:
            raise LLMError(describe(exc)) from exc
        except (httpx2.HTTPError, OSError, ValueError) as exc:
            raise LLMError(describe(exc)) from exc
        finally:
            # Closing the SDK's stream closes the HTTP response: the server stops generating.
            if stream is not None:
                await stream.close()

    async def aclose(self) -> None:
        await self._client.close()
