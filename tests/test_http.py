"""The capped reader shared by webhook delivery and HTTP tools: a body over the cap is cut, not read to the end."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from core.http import read_capped


def client_for(body: AsyncIterator[bytes]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(200, content=body)))


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.mark.asyncio
async def test_a_body_under_or_at_the_cap_is_read_whole() -> None:
    async with client_for(chunks(b"abc", b"def")) as client, client.stream("GET", "http://t/") as response:
        body = await read_capped(response, 10)
    assert body.data == b"abcdef" and not body.truncated
    async with (
        client_for(chunks(b"abcde", b"fghij")) as client,
        client.stream("GET", "http://t/") as response,
    ):
        body = await read_capped(response, 10)
    assert body.data == b"abcdefghij" and not body.truncated


@pytest.mark.asyncio
async def test_a_body_over_the_cap_is_cut_and_the_rest_is_never_read() -> None:
    pulled = 0

    async def long_body() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(100):
            pulled += 1
            yield b"x" * 1000

    async with client_for(long_body()) as client, client.stream("GET", "http://t/") as response:
        body = await read_capped(response, 2500)
    assert body.truncated
    assert body.data == b"x" * 2500
    assert pulled == 3  # stopped at the first chunk that went over


@pytest.mark.asyncio
async def test_one_byte_over_the_cap_counts_as_over() -> None:
    async with (
        client_for(chunks(b"abcde", b"fghijk")) as client,
        client.stream("GET", "http://t/") as response,
    ):
        body = await read_capped(response, 10)
    assert body.truncated and body.data == b"abcdefghij"
