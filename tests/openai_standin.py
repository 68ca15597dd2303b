"""A stand-in for an OpenAI-compatible server, speaking the chat-completions wire format for the real SDK.

Serves ``GET /v1/models`` and ``POST /v1/chat/completions`` on 127.0.0.1 at a free port: streaming as
server-sent events (``data: {chat.completion.chunk}`` lines, then ``data: [DONE]``), tool calls as
streamed deltas the way OpenAI sends them (the call's index, id and name first, its JSON arguments in
small pieces, then ``finish_reason: "tool_calls"``), one JSON object when not streaming. What it answers
comes from ``brain`` (a function of the request body): by default

- ``tool_script`` set and its next tool offered, answering the caller: a call to that tool;
- tools offered and the last user message mentions "book": a call to the first tool named "*book*";
- ``response_format`` json_schema: a JSON object filling the schema's properties;
- otherwise "You said: <last user message>." a word at a time.

It can be told to fail: ``fail_status`` (401/429/500…, with OpenAI's error body; 429 with Retry-After),
``fail_times`` (fail only the next N requests, then answer), ``drop_after_chunks`` (close the connection
mid-stream, no ``[DONE]``), ``end_after_chunks`` (the body ends cleanly but unfinished), ``error_after_chunks`` (an ``{"error": …}`` event mid-stream), delays before
the first chunk and between chunks. ``api_key`` set: requests without that bearer token get 401. It
records every request and notes when a client hangs up mid-stream.

``bench/capable_llm.py`` plugs a scripted "capable model" into ``brain`` for the SDR set's benchmark.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

DEFAULT_MODEL = "qwen2.5-7b-instruct"
BOOKING_ARGUMENTS = {"start_time": "2026-12-01T15:00:00Z", "notes": "demo"}
SAMPLE_VALUES = {"string": "demo", "number": 1.5, "integer": 1, "boolean": True, "array": [], "object": {}}
# The message OpenAI sends with a 401: it quotes part of the key, which must never reach our logs.
BAD_KEY_MESSAGE = "Incorrect API key provided: sk-live-****************cret. You can find your API key at …"


@dataclass
class Reply:
    """What the model says: words, and/or tool calls (name, arguments)."""

    text: str = ""
    tool_calls: list[tuple[str, Any]] = field(default_factory=list)  # arguments: a dict, or raw JSON text


def last_user(body: dict[str, Any]) -> str:
    return next((m.get("content") or "" for m in reversed(body["messages"]) if m["role"] == "user"), "")


def answering_caller(body: dict[str, Any]) -> bool:
    """The last message is the caller's (not a tool result the model is asked to word)."""
    return bool(body["messages"]) and body["messages"][-1]["role"] == "user"


def offered(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [t["function"] for t in body.get("tools") or []]


def _value_for(schema: dict[str, Any]) -> Any:
    if schema.get("enum"):
        return schema["enum"][0]
    kinds = schema.get("type", "string")
    kind = next((k for k in kinds if k != "null"), "null") if isinstance(kinds, list) else kinds
    return SAMPLE_VALUES.get(kind)


def words(text: str) -> list[str]:
    """Pieces the way a tokenizer streams them: each word with its leading space."""
    out: list[str] = []
    for i, word in enumerate(text.split(" ")):
        out.append(word if i == 0 else " " + word)
    return [w for w in out if w]


class OpenAIStandIn:
    def __init__(
        self,
        models: list[str] | None = None,
        *,
        api_key: str = "",
        brain: Callable[[dict[str, Any]], Reply] | None = None,
        first_token_delay: float = 0.0,
        token_delay: float = 0.0,
        port: int = 0,
    ) -> None:
        self.port = port
        self.models = models if models is not None else [DEFAULT_MODEL]
        self.api_key = api_key
        self.brain = brain or self.default_brain
        self.first_token_delay = first_token_delay
        self.token_delay = token_delay
        self.fail_status: int | None = None
        self.fail_times: int | None = None  # None: every request while fail_status is set
        self.drop_after_chunks: int | None = None
        self.error_after_chunks: int | None = None
        self.end_after_chunks: int | None = (
            None  # the response ends cleanly, but with no finish and no [DONE]
        )
        self.argument_piece = 7  # characters of a tool call's JSON arguments per delta
        self.tool_script: list[tuple[str, dict[str, Any]]] = []
        self.requests: list[tuple[str, str, dict[str, Any] | None, dict[str, str]]] = []
        self.hangups = 0
        self.url = ""  # the base URL the SDK takes: http://127.0.0.1:PORT/v1
        self._runner: web.AppRunner | None = None

    @property
    def chats(self) -> list[dict[str, Any]]:
        return [body for _, path, body, _ in self.requests if path.endswith("/chat/completions") and body]

    @property
    def headers(self) -> list[dict[str, str]]:
        return [h for _, _, _, h in self.requests]

    async def __aenter__(self) -> OpenAIStandIn:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------ the default brain

    def default_brain(self, body: dict[str, Any]) -> Reply:
        tools = offered(body)
        names = [t["name"] for t in tools]
        if self.tool_script and answering_caller(body) and self.tool_script[0][0] in names:
            name, arguments = self.tool_script.pop(0)
            return Reply(tool_calls=[(name, arguments)])
        booking = next((n for n in names if "book" in n), None)
        if booking and answering_caller(body) and "book" in last_user(body).lower():
            return Reply(tool_calls=[(booking, dict(BOOKING_ARGUMENTS))])
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            schema = fmt["json_schema"]["schema"]
            return Reply(json.dumps({k: _value_for(v) for k, v in schema.get("properties", {}).items()}))
        if body["messages"] and body["messages"][-1]["role"] == "tool":
            return Reply("All done, it went through.")
        return Reply(f"You said: {last_user(body)}.")

    # ------------------------------------------------------------ routes

    def _record(self, request: web.Request, body: dict[str, Any] | None) -> None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append((request.method, request.path, body, headers))

    def _refused(self, request: web.Request) -> web.Response | None:
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._error(401, BAD_KEY_MESSAGE, "invalid_api_key")
        return None

    @staticmethod
    def _error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> web.Response:
        kind = {401: "invalid_request_error", 429: "rate_limit_exceeded"}.get(status, "server_error")
        return web.json_response(
            {"error": {"message": message, "type": kind, "param": None, "code": code}},
            status=status,
            headers=headers,
        )

    async def _models(self, request: web.Request) -> web.Response:
        self._record(request, None)
        if (refused := self._refused(request)) is not None:
            return refused
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 1733000000, "owned_by": "standin"}
                    for m in self.models
                ],
            }
        )

    def _failing(self) -> bool:
        if self.fail_status is None:
            return False
        if self.fail_times is None:
            return True
        if self.fail_times <= 0:
            return False
        self.fail_times -= 1
        return True

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self._record(request, body)
        if (refused := self._refused(request)) is not None:
            return refused
        if body.get("model") not in self.models:
            return self._error(404, f"The model `{body.get('model')}` does not exist.", "model_not_found")
        if self._failing():
            status = self.fail_status or 500
            if status == 429:
                return self._error(
                    429, "Rate limit reached for requests", "rate_limit_exceeded", {"Retry-After": "0"}
                )
            return self._error(
                status, "The server had an error while processing your request.", "server_error"
            )
        reply = self.brain(body)
        if not body.get("stream"):
            return web.json_response(self._completion(body, reply))
        return await self._stream(request, body, reply)

    def _completion(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if reply.tool_calls:
            message["tool_calls"] = [
                {"id": f"call_{uuid.uuid4().hex[:10]}", "type": "function",
                 "function": {"name": n, "arguments": json.dumps(a)}}
                for n, a in reply.tool_calls
            ]  # fmt: skip
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if reply.tool_calls else "stop",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
        }

    async def _stream(self, request: web.Request, body: dict[str, Any], reply: Reply) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        ident, created, model = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time()), body["model"]

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": "fp_standin",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }  # fmt: skip

        events: list[dict[str, Any]] = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": piece}) for piece in words(reply.text)]
        for index, (name, arguments) in enumerate(reply.tool_calls):
            call_id = f"call_{uuid.uuid4().hex[:10]}"
            events.append(
                chunk({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                       "function": {"name": name, "arguments": ""}}]})
            )  # fmt: skip
            text = arguments if isinstance(arguments, str) else json.dumps(arguments)  # str: sent as is
            for start in range(0, len(text), self.argument_piece):
                piece = text[start : start + self.argument_piece]
                events.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
        events.append(chunk({}, "tool_calls" if reply.tool_calls else "stop"))
        try:
            if self.first_token_delay:
                await asyncio.sleep(self.first_token_delay)
            for sent, event in enumerate(events):
                if self.drop_after_chunks is not None and sent >= self.drop_after_chunks:
                    assert request.transport is not None
                    request.transport.abort()  # the connection drops: no [DONE], no chunk terminator
                    return response
                if self.end_after_chunks is not None and sent >= self.end_after_chunks:
                    await response.write_eof()  # a proxy or a crashed worker ending the body early
                    return response
                if self.error_after_chunks is not None and sent >= self.error_after_chunks:
                    error = {
                        "error": {"message": "model runner crashed", "type": "server_error", "code": None}
                    }
                    await response.write(f"data: {json.dumps(error)}\n\n".encode())
                    return response
                await response.write(f"data: {json.dumps(event)}\n\n".encode())
                if self.token_delay:
                    await asyncio.sleep(self.token_delay)
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            self.hangups += 1
            raise
        return response
