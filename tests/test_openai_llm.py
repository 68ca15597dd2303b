"""OpenAI-compatible LLM provider: the real ``openai`` SDK against a local server speaking the
chat-completions streaming wire format (tests/openai_standin.py), alone, through the registry, and
through a whole text call."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from events.analysis import analyze_conversation
from providers.base import ChatMessage, LLMChunk, LLMError, ToolCall, ToolSpec
from providers.openai_llm import OpenAICompatLLMProvider
from providers.registry import ProviderRegistry
from tests.conftest import LiveServer, free_port, make_settings
from tests.ollama_standin import OllamaStandIn
from tests.openai_standin import BAD_KEY_MESSAGE, BOOKING_ARGUMENTS, DEFAULT_MODEL, OpenAIStandIn, Reply

KEY = "sk-live-0123456789abcdef-secret"
BOOK = ToolSpec(
    "book_meeting",
    "Book a meeting with the caller.",
    {
        "type": "object",
        "properties": {"start_time": {"type": "string"}, "notes": {"type": "string"}},
        "required": ["start_time"],
    },
)
END = ToolSpec("end_call", "Hang up.", {"type": "object", "properties": {"reason": {"type": "string"}}})


def settings_for(tmp_path: Path, server: OpenAIStandIn | None = None, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "openai_base_url": server.url if server else f"http://127.0.0.1:{free_port()}/v1",
        "openai_api_key": KEY,
        "openai_model": DEFAULT_MODEL,
        "openai_max_retries": 0,
        "llm_provider": "openai",
        **overrides,
    }
    return make_settings(tmp_path, **values)


@pytest_asyncio.fixture
async def standin() -> AsyncIterator[OpenAIStandIn]:
    async with OpenAIStandIn(api_key=KEY) as server:
        yield server


@pytest_asyncio.fixture
async def provider(tmp_path: Path, standin: OpenAIStandIn) -> AsyncIterator[OpenAICompatLLMProvider]:
    llm = OpenAICompatLLMProvider(settings_for(tmp_path, standin))
    yield llm
    await llm.aclose()


async def collect(stream: AsyncIterator[LLMChunk]) -> list[LLMChunk]:
    return [chunk async for chunk in stream]


@pytest.mark.asyncio
async def test_streams_text_word_by_word_with_the_key_and_options(
    provider: OpenAICompatLLMProvider, standin: OpenAIStandIn
) -> None:
    chunks = await collect(
        provider.stream_chat(
            [ChatMessage("system", "Be brief."), ChatMessage("user", "hello there, how are you")],
            temperature=0.2,
            max_tokens=50,
        )
    )
    texts = [c.text for c in chunks if c.text]
    assert len(texts) >= 5
    assert "".join(texts) == "You said: hello there, how are you."
    assert chunks[-1].done and not any(c.done for c in chunks[:-1])
    [body] = standin.chats
    assert body["model"] == DEFAULT_MODEL and body["stream"] is True
    assert body["temperature"] == 0.2 and body["max_tokens"] == 50
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello there, how are you"},
    ]
    assert "tools" not in body and "response_format" not in body
    assert standin.headers[0]["authorization"] == f"Bearer {KEY}"


@pytest.mark.asyncio
async def test_streamed_tool_call_deltas_become_whole_tool_calls(
    provider: OpenAICompatLLMProvider, standin: OpenAIStandIn
) -> None:
    standin.argument_piece = 3  # the JSON arguments arrive in many small pieces
    chunks = await collect(
        provider.stream_chat([ChatMessage("user", "Can you book me in for next Tuesday?")], tools=[END, BOOK])
    )
    calls = [call for c in chunks if c.tool_calls for call in c.tool_calls]
    assert len(calls) == 1
    [call] = calls
    assert isinstance(call, ToolCall) and call.name == "book_meeting"
    assert call.arguments == BOOKING_ARGUMENTS and call.id.startswith("call_")
    assert chunks[-1].done
    sent = standin.chats[0]["tools"]
    assert [t["function"]["name"] for t in sent] == ["end_call", "book_meeting"]
    assert sent[1] == BOOK.as_openai()


@pytest.mark.asyncio
async def test_two_tool_calls_and_words_in_one_reply(tmp_path: Path) -> None:
    def brain(body: dict[str, Any]) -> Reply:
        return Reply(
            "Booking that now.", [("book_meeting", {"start_time": "2026-12-02T10:00:00Z"}), ("end_call", {})]
        )

    async with OpenAIStandIn(brain=brain) as server:
        llm = OpenAICompatLLMProvider(settings_for(tmp_path, server, openai_api_key=""))
        try:
            chunks = await collect(llm.stream_chat([ChatMessage("user", "book it")], tools=[BOOK, END]))
        finally:
            await llm.aclose()
    assert "".join(c.text for c in chunks) == "Booking that now."
    calls = [call for c in chunks if c.tool_calls for call in c.tool_calls]
    assert [(c.name, c.arguments) for c in calls] == [
        ("book_meeting", {"start_time": "2026-12-02T10:00:00Z"}),
        ("end_call", {}),
    ]
    assert calls[0].id != calls[1].id
    assert server.headers[-1]["authorization"] == "Bearer not-needed"  # a local server without a key


@pytest.mark.asyncio
async def test_a_tool_call_with_broken_arguments_is_dropped_not_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def brain(body: dict[str, Any]) -> Reply:
        return Reply("One moment.", [("book_meeting", '{"start_time": "2026-12-0'), ("end_call", "{}")])

    async with OpenAIStandIn(brain=brain) as server:
        llm = OpenAICompatLLMProvider(settings_for(tmp_path, server))
        try:
            chunks = await collect(llm.stream_chat([ChatMessage("user", "book it")], tools=[BOOK, END]))
        finally:
            await llm.aclose()
    assert "".join(c.text for c in chunks) == "One moment."
    assert [c.name for chunk in chunks for c in chunk.tool_calls or []] == ["end_call"]
    assert any(r.getMessage() == "malformed tool call dropped" for r in caplog.records)


@pytest.mark.asyncio
async def test_tool_results_go_back_with_the_calls_id(
    provider: OpenAICompatLLMProvider, standin: OpenAIStandIn
) -> None:
    history = [
        ChatMessage("user", "Book me for Tuesday at 3."),
        ChatMessage(
            "assistant", "", tool_calls=[ToolCall("book_meeting", dict(BOOKING_ARGUMENTS), "call_42")]
        ),
        ChatMessage("tool", '{"booked": true}', tool_name="book_meeting"),
    ]
    chunks = await collect(provider.stream_chat(history, tools=[BOOK]))
    assert "".join(c.text for c in chunks) == "All done, it went through."
    sent = standin.chats[0]["messages"]
    assert sent[1]["role"] == "assistant" and sent[1]["content"] is None
    assert sent[1]["tool_calls"] == [
        {"id": "call_42", "type": "function",
         "function": {"name": "book_meeting", "arguments": json.dumps(BOOKING_ARGUMENTS)}}
    ]  # fmt: skip
    assert sent[2] == {"role": "tool", "tool_call_id": "call_42", "content": '{"booked": true}'}


@pytest.mark.asyncio
async def test_a_refused_key_is_a_clear_error_that_never_carries_the_key(
    tmp_path: Path, standin: OpenAIStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    llm = OpenAICompatLLMProvider(settings_for(tmp_path, standin, openai_api_key="sk-wrong-key-abcdef"))
    try:
        with pytest.raises(LLMError) as raised:
            await collect(llm.stream_chat([ChatMessage("user", "hi")]))
        assert not await llm.is_available()
        await llm.warm()  # logged, not raised
    finally:
        await llm.aclose()
    message = str(raised.value)
    assert "401" in message and "OPENAI_API_KEY" in message
    assert "sk-wrong" not in message and "cret" not in message and "127.0.0.1" not in message
    logged = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')} {r.args}" for r in caplog.records)
    assert "sk-wrong-key" not in logged and BAD_KEY_MESSAGE[:30] not in logged
    assert "refused the API key" in logged  # the warm-up said why


@pytest.mark.asyncio
async def test_rate_limit_and_server_errors(tmp_path: Path, standin: OpenAIStandIn) -> None:
    llm = OpenAICompatLLMProvider(settings_for(tmp_path, standin))
    try:
        standin.fail_status = 429
        with pytest.raises(LLMError, match=r"rate-limited.*429"):
            await collect(llm.stream_chat([ChatMessage("user", "hi")]))
        standin.fail_status = 500
        with pytest.raises(LLMError, match="error 500: The server had an error"):
            await collect(llm.stream_chat([ChatMessage("user", "hi")]))
        with pytest.raises(LLMError, match=r"404.*OPENAI_MODEL"):
            standin.fail_status = None
            await collect(llm.stream_chat([ChatMessage("user", "hi")], model="nope-1b"))
    finally:
        await llm.aclose()
    assert len(standin.chats) == 3  # no retries with OPENAI_MAX_RETRIES=0

    # One retry (the default): a single 429 or 500 is ridden out inside the same turn.
    llm = OpenAICompatLLMProvider(settings_for(tmp_path, standin, openai_max_retries=1))
    try:
        for status in (429, 500):
            standin.fail_status, standin.fail_times = status, 1
            before = len(standin.chats)
            chunks = await collect(llm.stream_chat([ChatMessage("user", "again")]))
            assert "".join(c.text for c in chunks) == "You said: again."
            assert len(standin.chats) == before + 2
    finally:
        await llm.aclose()


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["dropped", "cut_short", "error_event"])
async def test_a_stream_that_breaks_raises_after_the_words_so_far(
    provider: OpenAICompatLLMProvider, standin: OpenAIStandIn, how: str
) -> None:
    if how == "dropped":
        standin.drop_after_chunks = 3  # the role chunk and two words, then the connection is cut
    elif how == "cut_short":
        standin.end_after_chunks = 3  # the body ends cleanly after them: no finish_reason, no [DONE]
    else:
        standin.error_after_chunks = 3
    received: list[str] = []
    with pytest.raises(LLMError) as raised:
        async for chunk in provider.stream_chat([ChatMessage("user", "tell me about pricing please")]):
            received.append(chunk.text)
    assert [t for t in received if t] == ["You", " said:"]
    reason = str(raised.value)
    assert ("dropped" in reason) if how != "error_event" else ("model runner crashed" in reason)
    assert "127.0.0.1" not in reason


@pytest.mark.asyncio
async def test_a_dropped_tool_call_stream_is_an_error_not_a_half_call(
    provider: OpenAICompatLLMProvider, standin: OpenAIStandIn
) -> None:
    standin.argument_piece = 4
    standin.drop_after_chunks = 4  # mid-arguments
    received: list[LLMChunk] = []
    with pytest.raises(LLMError, match="dropped"):
        async for chunk in provider.stream_chat([ChatMessage("user", "book a demo")], tools=[BOOK]):
            received.append(chunk)
    assert not any(c.tool_calls for c in received)


@pytest.mark.asyncio
async def test_unreachable_server_fails_fast(tmp_path: Path) -> None:
    llm = OpenAICompatLLMProvider(settings_for(tmp_path))
    try:
        started = time.monotonic()
        with pytest.raises(LLMError, match="unreachable"):
            await collect(llm.stream_chat([ChatMessage("user", "hi")]))
        assert not await llm.is_available()
        assert time.monotonic() - started < 2.0
    finally:
        await llm.aclose()


@pytest.mark.asyncio
async def test_closing_mid_stream_hangs_up_on_the_server(
    provider: OpenAICompatLLMProvider, standin: OpenAIStandIn
) -> None:
    standin.token_delay = 0.3
    stream = provider.stream_chat([ChatMessage("user", "tell me a long story " * 10)])
    first = await anext(stream)
    while not first.text:
        first = await anext(stream)
    started = time.monotonic()
    await asyncio.wait_for(stream.aclose(), 1.0)  # type: ignore[attr-defined]
    assert time.monotonic() - started < 0.3
    for _ in range(40):
        if standin.hangups:
            break
        await asyncio.sleep(0.05)
    assert standin.hangups == 1


@pytest.mark.asyncio
async def test_json_schema_and_post_call_analysis(
    provider: OpenAICompatLLMProvider, standin: OpenAIStandIn
) -> None:
    schema = {"type": "object", "properties": {"summary": {"type": "string"}, "score": {"type": "number"}}}
    chunks = await collect(provider.stream_chat([ChatMessage("user", "summarize")], json_schema=schema))
    assert json.loads("".join(c.text for c in chunks)) == {"summary": "demo", "score": 1.5}
    assert standin.chats[0]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "reply", "schema": schema, "strict": False},
    }
    turns = [("assistant", "Hi, this is Acme."), ("user", "Sounds good, call me next week.")]
    result = await analyze_conversation(turns, [], provider)
    assert result.summary == "demo" and result.outcome  # the schema's first enum value, constrained
    assert standin.chats[1]["response_format"]["type"] == "json_schema"


@pytest.mark.asyncio
async def test_is_available_and_warm(tmp_path: Path, standin: OpenAIStandIn) -> None:
    async def available(**overrides: Any) -> bool:
        llm = OpenAICompatLLMProvider(settings_for(tmp_path, standin, **overrides))
        try:
            return await llm.is_available()
        finally:
            await llm.aclose()

    assert await available()
    assert await available(openai_model="whatever")  # a single-model server (llama.cpp) serves any name
    standin.models.append("other-model")
    assert not await available(openai_model="whatever")
    assert not await available(openai_model="")
    llm = OpenAICompatLLMProvider(settings_for(tmp_path, standin))
    try:
        await llm.warm()
    finally:
        await llm.aclose()
    assert standin.chats[-1]["max_tokens"] == 1


@pytest.mark.asyncio
async def test_registry_picks_it_by_name_and_auto_prefers_it_when_it_serves(tmp_path: Path) -> None:
    async with OpenAIStandIn() as server, OllamaStandIn() as ollama:
        registry = ProviderRegistry(settings_for(tmp_path, server))
        try:
            assert (await registry.llm()).name == "openai"
        finally:
            await registry.aclose()
        auto = settings_for(tmp_path, server, llm_provider="auto", ollama_host=ollama.url)
        registry = ProviderRegistry(auto)
        try:
            assert await registry.llm_name() == "openai"
            assert registry.llm_choice() is not None and registry.llm_choice()["fallback"] is False  # type: ignore[index]
        finally:
            await registry.aclose()
        server.models = ["another"] * 2  # up, but not serving OPENAI_MODEL: Ollama is next in line
        registry = ProviderRegistry(auto)
        try:
            assert await registry.llm_name() == "ollama"
        finally:
            await registry.aclose()
    registry = ProviderRegistry(settings_for(tmp_path, None, llm_provider="auto", ollama_host=ollama.url))
    try:
        assert await registry.llm_name() == "local"  # both gone: the embedded model
    finally:
        await registry.aclose()


@pytest.mark.asyncio
async def test_a_text_call_on_an_openai_compatible_server_runs_its_tool_calls(tmp_path: Path) -> None:
    """The whole engine on it: an agent whose per-agent LLM is "openai" (the service's is the echo
    stand-in) takes a caller's turns; the model's streamed tool calls run (a webhook tool, sandboxed in a
    test run, and the booking), the webhook tool's result goes back with the call's id and the model's
    words about it are said; every request carries the key."""
    async with OpenAIStandIn(api_key=KEY) as server:
        server.tool_script = [("crm_lookup", {"company": "Acme"})]
        settings = settings_for(tmp_path, server, llm_provider="echo")
        async with LiveServer(settings) as live, live.client() as client:
            created = await client.post(
                "/v1/convai/agents",
                json={"name": "Booker", "system_prompt": "You book demos.", "first_message": "Hi, this is Booker.",
                      "builtin_tools": ["book_meeting", "end_call"], "providers": {"llm": "openai"}},
            )  # fmt: skip
            assert created.status_code == 201, created.text
            agent_id = created.json()["agent_id"]
            tool = await client.post(
                f"/v1/convai/agents/{agent_id}/tools",
                json={"name": "crm_lookup", "description": "Look up a company in the CRM", "kind": "webhook",
                      "parameters": {"type": "object", "properties": {"company": {"type": "string"}}},
                      "config": {"url": "http://127.0.0.1:9/crm"}},
            )  # fmt: skip
            assert tool.status_code == 201, tool.text
            scenario = {
                "name": "runs the server's tool calls",
                "caller": [{"say": "Hi, can you look up Acme?"}, {"say": "Nice. Can we book a demo?", "pause_s": 0.3}],
                "criteria": {"tools_called": [{"name": "crm_lookup", "success": True},
                                              {"name": "book_meeting", "success": True}]},
            }  # fmt: skip
            ran = await client.post(
                f"/v1/convai/agents/{agent_id}/tests/run?wait=true",
                json={"mode": "text", "scenarios": [scenario]},
            )
            assert ran.status_code == 200, ran.text
    [result] = ran.json()["results"]
    assert ran.json()["status"] == "passed", result
    chats = server.chats
    followups = [body["messages"] for body in chats if body["messages"][-1]["role"] == "tool"]
    assert followups, [body["messages"][-1] for body in chats]
    call_message, tool_message = followups[0][-2], followups[0][-1]
    [call] = call_message["tool_calls"]
    assert call["function"]["name"] == "crm_lookup" and json.loads(call["function"]["arguments"]) == {
        "company": "Acme"
    }
    assert tool_message["tool_call_id"] == call["id"]
    spoken = json.dumps(result)
    assert "All done, it went through." in spoken  # the model's words about the result were said
    assert all(h.get("authorization") == f"Bearer {KEY}" for h in server.headers)


@pytest.mark.asyncio
async def test_a_failing_server_gets_a_spoken_fallback_and_the_next_turn_works(tmp_path: Path) -> None:
    """As with Ollama: a 500, a rate limit and a refused key each cost one turn a short spoken fallback,
    never silence or a dead call, and the next turn is answered by the model again."""
    async with OpenAIStandIn(api_key=KEY) as server:
        settings = settings_for(tmp_path, server)  # LLM_PROVIDER=openai, no retries
        async with LiveServer(settings) as live, live.client() as client:
            created = await client.post(
                "/v1/convai/agents",
                json={"name": "Ava", "system_prompt": "You sell.", "first_message": "Hi, this is Ava."},
            )
            assert created.status_code == 201, created.text
            agent_id = created.json()["agent_id"]
            agent_lines: list[str] = []
            for status in (500, 429, 401):
                server.fail_status, server.fail_times = status, 1
                if status == 401:
                    server.fail_status, server.fail_times, server.api_key = None, None, "rotated-key"
                scenario = {"name": f"fails with {status}",
                            "caller": [{"say": "Tell me about your product please."},
                                       {"say": "And the pricing?", "pause_s": 0.3}],
                            "criteria": {"agent_never_says": ["Traceback"]}}  # fmt: skip
                if status == 401:
                    scenario["caller"] = scenario["caller"][:1]
                ran = await client.post(
                    f"/v1/convai/agents/{agent_id}/tests/run?wait=true",
                    json={"mode": "text", "scenarios": [scenario]},
                )
                assert ran.status_code == 200, ran.text
                [result] = ran.json()["results"]
                lines = [t["text"] for t in result["transcript"] if t["role"] not in ("user", "caller")]
                agent_lines.append(" / ".join(lines))
                assert result["error"] is None, result
    for status, said in zip((500, 429, 401), agent_lines, strict=True):
        assert "could you say that again" in said or "say it once more" in said, (status, said)
    assert "You said: And the pricing?." in agent_lines[0] and "You said: And the pricing?." in agent_lines[1]
