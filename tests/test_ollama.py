"""Ollama adapter: the real ``ollama`` SDK against a local stand-in that speaks Ollama's REST API."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from config import Settings
from events.analysis import _schema, analyze_conversation
from providers.base import ChatMessage, LLMChunk, LLMError, ToolCall, ToolSpec
from providers.ollama_llm import OllamaLLMProvider
from providers.registry import ProviderRegistry
from tests.conftest import free_port, make_settings
from tests.ollama_standin import BOOKING_ARGUMENTS, DEFAULT_MODEL, OllamaStandIn

BOOK = ToolSpec(
    "book_meeting",
    "Book a meeting with the caller.",
    {
        "type": "object",
        "properties": {
            "start_time": {"type": "string", "description": "ISO 8601 start time"},
            "notes": {"type": "string"},
        },
        "required": ["start_time"],
    },
)
END = ToolSpec("end_call", "Hang up.", {"type": "object", "properties": {}})


@pytest_asyncio.fixture
async def standin() -> AsyncIterator[OllamaStandIn]:
    async with OllamaStandIn() as server:
        yield server


@pytest_asyncio.fixture
async def provider(tmp_path: Path, standin: OllamaStandIn) -> AsyncIterator[OllamaLLMProvider]:
    llm = OllamaLLMProvider(make_settings(tmp_path, ollama_host=standin.url, ollama_model=DEFAULT_MODEL))
    yield llm
    await llm.aclose()


async def collect(stream: AsyncIterator[LLMChunk]) -> list[LLMChunk]:
    return [chunk async for chunk in stream]


@pytest.mark.asyncio
async def test_streams_text_in_chunks_and_sends_options(
    provider: OllamaLLMProvider, standin: OllamaStandIn
) -> None:
    chunks = await collect(
        provider.stream_chat(
            [ChatMessage("system", "Be brief."), ChatMessage("user", "hello there, how are you")],
            temperature=0.2,
            max_tokens=50,
        )
    )
    texts = [c.text for c in chunks if c.text]
    assert len(texts) >= 4
    assert "".join(texts) == "You said: hello there, how are you."
    assert chunks[-1].done and not any(c.done for c in chunks[:-1])
    assert not any(c.tool_calls for c in chunks)

    [body] = standin.chats
    assert body["model"] == DEFAULT_MODEL
    assert body["stream"] is True
    assert body["options"] == {"temperature": 0.2, "num_predict": 50}
    assert body["keep_alive"] == "30m"
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello there, how are you"},
    ]
    assert not body.get("tools") and "format" not in body


@pytest.mark.asyncio
async def test_model_override_reaches_the_server(tmp_path: Path) -> None:
    async with OllamaStandIn(models=[DEFAULT_MODEL, "qwen2.5:3b"]) as server:
        llm = OllamaLLMProvider(make_settings(tmp_path, ollama_host=server.url, ollama_keep_alive="5m"))
        try:
            chunks = await collect(llm.stream_chat([ChatMessage("user", "hi")], model="qwen2.5:3b"))
        finally:
            await llm.aclose()
    assert "".join(c.text for c in chunks) == "You said: hi."
    assert server.chats[0]["model"] == "qwen2.5:3b"
    assert server.chats[0]["keep_alive"] == "5m"
    assert server.chats[0]["options"] == {"temperature": 0.7, "num_predict": 200}


@pytest.mark.asyncio
async def test_tool_call_comes_back_as_tool_call(provider: OllamaLLMProvider, standin: OllamaStandIn) -> None:
    chunks = await collect(
        provider.stream_chat([ChatMessage("user", "Can you book me in for next Tuesday?")], tools=[END, BOOK])
    )
    calls = [call for c in chunks if c.tool_calls for call in c.tool_calls]
    assert len(calls) == 1
    call = calls[0]
    assert isinstance(call, ToolCall) and call.name == "book_meeting"
    assert type(call.arguments) is dict and call.arguments == BOOKING_ARGUMENTS
    assert call.id
    assert chunks[-1].done

    sent = standin.chats[0]["tools"]
    assert [t["type"] for t in sent] == ["function", "function"]
    assert [t["function"]["name"] for t in sent] == ["end_call", "book_meeting"]
    assert sent[1]["function"]["parameters"]["required"] == ["start_time"]
    assert set(sent[1]["function"]["parameters"]["properties"]) == {"start_time", "notes"}


@pytest.mark.asyncio
async def test_tool_results_are_sent_in_ollama_shape(
    provider: OllamaLLMProvider, standin: OllamaStandIn
) -> None:
    history = [
        ChatMessage("user", "Book me for Tuesday at 3."),
        ChatMessage(
            "assistant", "", tool_calls=[ToolCall("book_meeting", dict(BOOKING_ARGUMENTS), "call_1")]
        ),
        ChatMessage("tool", '{"booked": true}', tool_name="book_meeting"),
        ChatMessage("user", "thanks"),
    ]
    chunks = await collect(provider.stream_chat(history, tools=[BOOK]))
    assert "".join(c.text for c in chunks) == "You said: thanks."
    sent = standin.chats[0]["messages"]
    assert sent[1]["role"] == "assistant"
    assert sent[1]["tool_calls"] == [{"function": {"name": "book_meeting", "arguments": BOOKING_ARGUMENTS}}]
    assert sent[2] == {"role": "tool", "content": '{"booked": true}', "tool_name": "book_meeting"}


@pytest.mark.asyncio
async def test_is_available(tmp_path: Path, standin: OllamaStandIn) -> None:
    async def available(host: str, model: str = DEFAULT_MODEL) -> bool:
        llm = OllamaLLMProvider(make_settings(tmp_path, ollama_host=host, ollama_model=model))
        try:
            return await llm.is_available()
        finally:
            await llm.aclose()

    assert await available(standin.url)
    assert not await available(standin.url, model="mistral:7b")  # server up, model not pulled
    standin.models.append("phi3:latest")
    assert await available(standin.url, model="phi3")  # Ollama's implicit ":latest"

    started = time.monotonic()
    assert not await available(f"http://127.0.0.1:{free_port()}")  # nothing listens
    assert time.monotonic() - started < 1.6


@pytest.mark.asyncio
async def test_is_available_gives_up_on_a_server_that_hangs(tmp_path: Path) -> None:
    # A socket that accepts connections but never answers.
    held: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda reader, writer: held.append(writer), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    llm = OllamaLLMProvider(make_settings(tmp_path, ollama_host=f"http://127.0.0.1:{port}"))
    try:
        started = time.monotonic()
        assert not await llm.is_available()
        assert time.monotonic() - started < 2.0
    finally:
        await llm.aclose()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_server_errors_raise_llm_error(tmp_path: Path, standin: OllamaStandIn) -> None:
    standin.fail = "CUDA error: out of memory"
    llm = OllamaLLMProvider(make_settings(tmp_path, ollama_host=standin.url))
    try:
        with pytest.raises(LLMError) as raised:
            await collect(llm.stream_chat([ChatMessage("user", "hi")]))
        assert "500" in str(raised.value) and "out of memory" in str(raised.value)
        assert standin.url not in str(raised.value)
        await llm.warm()  # warm-up failures are logged, not raised
    finally:
        await llm.aclose()

    llm = OllamaLLMProvider(make_settings(tmp_path, ollama_host=f"http://127.0.0.1:{free_port()}"))
    try:
        with pytest.raises(LLMError, match="unreachable"):
            await collect(llm.stream_chat([ChatMessage("user", "hi")]))
    finally:
        await llm.aclose()


@pytest.mark.asyncio
async def test_unknown_model_raises_llm_error(provider: OllamaLLMProvider) -> None:
    with pytest.raises(LLMError, match="404"):
        await collect(provider.stream_chat([ChatMessage("user", "hi")], model="nope:1b"))


@pytest.mark.asyncio
async def test_closing_mid_stream_closes_the_http_stream(
    provider: OllamaLLMProvider, standin: OllamaStandIn
) -> None:
    standin.token_delay = 0.3
    stream = provider.stream_chat([ChatMessage("user", "tell me a long story " * 10)])
    first = await anext(stream)
    assert first.text
    started = time.monotonic()
    await asyncio.wait_for(stream.aclose(), 1.0)  # type: ignore[attr-defined]
    assert time.monotonic() - started < 0.2
    for _ in range(40):  # the stand-in notices at its next write
        if standin.hangups:
            break
        await asyncio.sleep(0.05)
    assert standin.hangups == 1


@pytest.mark.asyncio
async def test_engine_timeout_cancels_a_slow_first_token(
    provider: OllamaLLMProvider, standin: OllamaStandIn
) -> None:
    standin.first_token_delay = 0.6
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):  # what the voice pipeline wraps every turn in
            await collect(provider.stream_chat([ChatMessage("user", "hi")]))
    assert time.monotonic() - started < 0.5
    for _ in range(40):
        if standin.hangups:
            break
        await asyncio.sleep(0.05)
    assert standin.hangups == 1
    # The client is still usable afterwards.
    standin.first_token_delay = 0.0
    assert "".join(c.text for c in await collect(provider.stream_chat([ChatMessage("user", "again")]))) == (
        "You said: again."
    )


@pytest.mark.asyncio
async def test_json_schema_reaches_the_server_as_format(
    provider: OllamaLLMProvider, standin: OllamaStandIn
) -> None:
    schema = {
        "type": "object",
        "properties": {"summary": {"type": "string"}, "score": {"type": ["number", "null"]}},
        "required": ["summary"],
    }
    chunks = await collect(provider.stream_chat([ChatMessage("user", "summarize")], json_schema=schema))
    assert standin.chats[0]["format"] == schema
    assert json.loads("".join(c.text for c in chunks)) == {"summary": "demo", "score": 1.5}


@pytest.mark.asyncio
async def test_post_call_analysis_uses_constrained_output(
    provider: OllamaLLMProvider, standin: OllamaStandIn
) -> None:
    fields = [{"name": "budget", "type": "number", "description": "monthly budget"}]
    turns = [("assistant", "Hi, this is Acme."), ("user", "Sounds good, our budget is about 2000.")]
    standin.wishes = {"outcome": "meeting_booked"}  # a model that would claim a booking
    result = await analyze_conversation(turns, fields, provider)
    body = standin.chats[0]
    talk = ["interested", "not_interested", "callback_requested"]  # what the facts allow: no booking
    assert body["format"] == _schema(fields, talk)
    assert body["options"]["temperature"] == 0.1
    assert result.outcome == "interested"  # constrained to the allowed enum (the stand-in takes its first)
    # the stand-in's budget (1.5) is not what the caller said (2000): grounded, it is dropped
    assert result.summary == "demo" and result.collected == {"budget": None}


@pytest.mark.asyncio
async def test_warm_loads_the_model(provider: OllamaLLMProvider, standin: OllamaStandIn) -> None:
    await provider.warm()
    [body] = standin.chats
    assert body["model"] == DEFAULT_MODEL and body["messages"] == [] and body["keep_alive"] == "30m"


@pytest.mark.asyncio
async def test_registry_auto_prefers_ollama_when_it_is_up(tmp_path: Path, standin: OllamaStandIn) -> None:
    def settings(host: str) -> Settings:
        return make_settings(tmp_path, llm_provider="auto", ollama_host=host, ollama_model=DEFAULT_MODEL)

    registry = ProviderRegistry(settings(standin.url))
    try:
        assert await registry.llm_name() == "ollama"
        assert (await registry.llm()).name == "ollama"
    finally:
        await registry.aclose()

    registry = ProviderRegistry(settings(f"http://127.0.0.1:{free_port()}"))
    try:
        assert await registry.llm_name() == "local"  # only the choice: the local model is not loaded
        assert ("llm", "local") not in registry._instances
    finally:
        await registry.aclose()


@pytest.mark.asyncio
async def test_error_mid_stream_raises_after_the_text_so_far(
    provider: OllamaLLMProvider, standin: OllamaStandIn
) -> None:
    """Ollama reports a crash inside the NDJSON stream; the words already streamed stay delivered."""
    standin.fail_after_tokens = 2
    received: list[str] = []
    with pytest.raises(LLMError) as raised:
        async for chunk in provider.stream_chat([ChatMessage("user", "tell me about pricing")]):
            received.append(chunk.text)
    assert len([t for t in received if t]) == 2
    assert "terminated" in str(raised.value) and standin.url not in str(raised.value)
