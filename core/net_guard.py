"""Outbound URL policy: webhooks and HTTP tools may not reach private, loopback or link-local addresses
(a request forger's favourite targets) unless the operator allows it (WEBHOOK_ALLOW_PRIVATE)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit


class UnsafeURLError(ValueError):
    pass


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def ensure_public_url(url: str, allow_private: bool) -> None:
    """Raise ``UnsafeURLError`` unless ``url`` is http(s) and every address its host resolves to is public."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeURLError("only http(s) URLs with a host are allowed")
    if allow_private:
        return
    host = parts.hostname
    try:
        addresses = (
            [host]
            if _looks_like_ip(host)
            else [
                info[4][0]
                for info in await asyncio.get_running_loop().getaddrinfo(
                    host, parts.port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
                )
            ]
        )
    except OSError as exc:
        raise UnsafeURLError(f"cannot resolve {host!r}") from exc
    if not addresses or not all(_is_public(a) for a in addresses):
        raise UnsafeURLError(f"{host!r} resolves to a private or reserved address")


def _looks_like_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
