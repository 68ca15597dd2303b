"""A scripted stand-in for an Ollama server, speaking its REST API closely enough for the real SDK.

Serves ``GET /api/version``, ``GET /api/tags`` and ``POST /api/chat`` (NDJSON when streaming, one
JSON object otherwise) on 127.0.0.1 at a free port. Replies are deterministic:

- no messages: the "model loaded" answer Ollama gives to a warm-up request;
- ``tool_script`` set and its next tool offered, answering the caller: a call to that tool;
- tools offered and the last user message mentions "book": a call to the first tool named "*book*";
- ``format`` given: a JSON object filling the schema's properties (``wishes`` where the schema allows
  them, else an enum's first value or a sample of the type), or ``{"reply": ...}`` for "json";
- otherwise: "You said: <last user message>." token by token.

It records every request and can be told to fail (HTTP 500) or to be slow (before the first token
and between tokens), or to stream garbage (``garbage = "invalid_json"``: lines that are not JSON;
``"empty"``: a finished reply without a word). It notes when a client hangs up mid-stream.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

from aiohttp import web

DEFAULT_MODEL = "llama3:8b-instruct-q4_K_S"
BOOKING_ARGUMENTS = {"start_time": "2026-12-01T15:00:00Z", "notes": "demo"}
SAMPLE_VALUES = {"string": "demo", "number": 1.5, "integer": 1, "boolean": True, "array": [], "object": {}}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())


def _value_for(schema: dict[str, Any], wished: Any = None) -> Any:
    """A value of the type a (simple) JSON-schema property asks for: ``wished`` when the schema allows
    it (constrained decoding never leaves an enum), else the enum's first value or a sample."""
    if schema.get("enum"):
        return wished if wished in schema["enum"] else schema["enum"][0]
    kinds = schema.get("type", "string")
    kind = next((k for k in kinds if k != "null"), "null") if isinstance(kinds, list) else kinds
    return SAMPLE_VALUES.get(kind)


class OllamaStandIn:
    def __init__(
        self,
        models: list[str] | None = None,
        *,
        first_token_delay: float = 0.0,
        token_delay: float = 0.0,
        fail: str | None = None,
        fail_after_tokens: int | None = None,
        port: int = 0,
    ) -> None:
        self.port = port  # 0: a free one; a fixed one for a server configured before this one starts
        self.models = models if models is not None else [DEFAULT_MODEL]
        self.first_token_delay = first_token_delay
        self.token_delay = token_delay
        self.fail = fail  # an error message: /api/chat answers HTTP 500 {"error": fail}
        # Like a crashed model runner: after this many tokens the stream carries {"error": …} and ends.
        self.fail_after_tokens = fail_after_tokens
        self.garbage: str | None = None  # "invalid_json" | "empty": a 200 stream of no use
        # What the model "wants" to answer for a JSON property (kept only where the schema allows it),
        # e.g. {"outcome": "no_answer"}: the small-model mistake of calling a talker a no-answer.
        self.wishes: dict[str, Any] = {}
        # Tool calls to make, in order: each chat that offers the next one's tool and answers a caller
        # (not a tool result) calls it with these arguments.
        self.tool_script: list[tuple[str, dict[str, Any]]] = []
        self.requests: list[tuple[str, str, dict[str, Any] | None]] = []  # (method, path, JSON body)
        self.hangups = 0  # streams the client closed before the reply was complete
        self.url = ""
        self._runner: web.AppRunner | None = None

    @property
    def chats(self) -> list[dict[str, Any]]:
        """The JSON bodies of the /api/chat requests received, in order."""
        return [body for method, path, body in self.requests if path == "/api/chat" and body is not None]

    async def __aenter__(self) -> OllamaStandIn:
        app = web.Application()
        app.router.add_get("/api/version", self._version)
        app.router.add_get("/api/tags", self._tags)
        app.router.add_post("/api/chat", self._chat)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------ routes

    async def _version(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path, None))
        return web.json_response({"version": "0.12.6"})

    async def _tags(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path, None))
        return web.json_response(
            {
                "models": [
                    {
                        "name": name,
                        "model": name,
                        "modified_at": "2026-01-15T10:00:00.000000Z",
                        "size": 4_661_224_676,
                        "digest": "365c0bd3c000a25d28ddbf732fe1c6add414de7275464c4e4d1c3b5fcb5d8ad1",
                        "details": {
                            "parent_model": "",
                            "format": "gguf",
                            "family": "llama",
                            "families": ["llama"],
                            "parameter_size": "8.0B",
                            "quantization_level": "Q4_K_S",
                        },
                    }
                    for name in self.models
                ]
            }
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append((request.method, request.path, body))
        if self.fail is not None:
            return web.json_response({"error": self.fail}, status=500)
        model = body.get("model", "")
        if model not in self.models:
            return web.json_response({"error": f"model '{model}' not found"}, status=404)
        messages = body.get("messages") or []
        if not messages:  # what Ollama answers to a load (warm-up) request
            return web.json_response(
                {
                    "model": model,
                    "created_at": _now(),
                    "message": {"role": "assistant", "content": ""},
                    "done_reason": "load",
                    "done": True,
                }
            )
        parts = self._reply(body)
        stats = {
            "done_reason": "stop",
            "total_duration": 412_345_678,
            "load_duration": 1_234_567,
            "prompt_eval_count": 26,
            "prompt_eval_duration": 34_567_890,
            "eval_count": len(parts),
            "eval_duration": 300_000_000,
        }
        if not body.get("stream", True):  # Ollama streams unless told not to
            await asyncio.sleep(self.first_token_delay)
            message: dict[str, Any] = {
                "role": "assistant",
                "content": "".join(p.get("content", "") for p in parts),
            }
            calls = [c for p in parts for c in p.get("tool_calls", [])]
            if calls:
                message["tool_calls"] = calls
            return web.json_response(
                {"model": model, "created_at": _now(), "message": message, "done": True, **stats}
            )

        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        if self.garbage == "invalid_json":
            await response.write(b'{"model": "' + model.encode() + b'", "message": {"role": "assis\n')
            await response.write(b"<html>502 Bad Gateway</html>\n")
            await response.write_eof()
            return response
        if self.garbage == "empty":
            parts = []
        try:
            await asyncio.sleep(self.first_token_delay)
            for i, part in enumerate(parts):
                if i == self.fail_after_tokens:
                    await response.write(
                        json.dumps({"error": "llama runner process has terminated"}).encode() + b"\n"
                    )
                    await response.write_eof()
                    return response
                if i:
                    await asyncio.sleep(self.token_delay)
                line = {
                    "model": model,
                    "created_at": _now(),
                    "message": {"role": "assistant", **part},
                    "done": False,
                }
                await response.write(json.dumps(line).encode() + b"\n")
            final = {
                "model": model,
                "created_at": _now(),
                "message": {"role": "assistant", "content": ""},
                "done": True,
                **stats,
            }
            await response.write(json.dumps(final).encode() + b"\n")
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            self.hangups += 1
            raise
        return response

    # ------------------------------------------------------------ script

    def _reply(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The reply as the message parts the stream will carry, one per line."""
        last_user = next(
            (m.get("content", "") for m in reversed(body["messages"]) if m.get("role") == "user"), ""
        )
        tools = body.get("tools") or []
        offered = {t.get("function", {}).get("name") for t in tools}
        answering_caller = bool(body["messages"]) and body["messages"][-1].get("role") == "user"
        if self.tool_script and self.tool_script[0][0] in offered and answering_caller:
            name, arguments = self.tool_script.pop(0)
            call = {
                "id": f"call_script_{name}",
                "function": {"index": 0, "name": name, "arguments": arguments},
            }
            return [{"content": "", "tool_calls": [call]}]
        booking = next((t for t in tools if "book" in t.get("function", {}).get("name", "")), None)
        if booking is not None and "book" in last_user.lower():
            call = {
                "id": "call_standin1",
                "function": {"index": 0, "name": booking["function"]["name"], "arguments": BOOKING_ARGUMENTS},
            }
            return [{"content": "", "tool_calls": [call]}]
        fmt = body.get("format")
        if fmt:
            if isinstance(fmt, dict) and fmt.get("properties"):
                value = {
                    name: _value_for(prop, self.wishes.get(name)) for name, prop in fmt["properties"].items()
                }
            else:
                value = {"reply": f"You said: {last_user.strip()}."}
            text = json.dumps(value)
            return [{"content": text[i : i + 8]} for i in range(0, len(text), 8)]
        return [{"content": token} for token in re.findall(r"\s*\S+", f"You said: {last_user.strip()}.")]
