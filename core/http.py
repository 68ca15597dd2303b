"""Reading the body of an HTTP response we did not choose (webhook receivers, HTTP tools) up to a size cap."""

from __future__ import annotations

from typing import NamedTuple

import httpx


class CappedBody(NamedTuple):
    data: bytes  # at most ``limit`` bytes
    truncated: bool  # the body was longer than ``limit``; the rest was not read


async def read_capped(response: httpx.Response, limit: int) -> CappedBody:
    """Stream ``response``'s body, keeping at most ``limit`` bytes and stopping as soon as it goes over,
    so a server cannot make us read (or hold) an unbounded body. Use on a response from ``client.stream``."""
    received = bytearray()
    async for chunk in response.aiter_bytes():
        received.extend(chunk)
        if len(received) > limit:
            return CappedBody(bytes(received[:limit]), True)
    return CappedBody(bytes(received), False)
