"""Outbound URL policy: webhooks and HTTP tools may not reach private, loopback or link-local addresses
(a request forger's favourite targets) unless the operator allows it (WEBHOOK_ALLOW_PRIVATE).

Two layers:

* ``ensure_public_url`` refuses a URL early, with a clear message (scheme, host, where it resolves).
* ``guarded_client`` makes the check where it matters, when the connection is opened: the host is
  resolved once, every address is checked, and the socket is connected to a checked address. The HTTP
  client never resolves the name itself, so a DNS answer that changes between the check and the connect
  (DNS rebinding) cannot point it at 127.0.0.1. The URL is unchanged, so the Host header and the TLS
  server name (SNI, certificate check) are still those of the name.

NAT64 (64:ff9b::/96) and 6to4 (2002::/16) addresses count as what the IPv4 address inside them is;
local-use NAT64 (64:ff9b:1::/48) and IPv4-compatible (::/96) addresses are never public.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import typing
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import certifi
import httpcore
import httpx

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class UnsafeURLError(ValueError):
    pass


def _is_public(address: str) -> bool:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL or ip in _IPV4_COMPATIBLE:
            return False
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
    return ip.is_global and not ip.is_multicast


async def resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (an IP literal resolves to itself). Tests replace this."""
    if _looks_like_ip(host):
        return [host]
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


async def public_addresses(host: str, port: int) -> list[str]:
    """Resolve ``host`` once; its addresses if every one is public, else ``UnsafeURLError``."""
    try:
        addresses = await resolve(host, port)
    except OSError as exc:
        raise UnsafeURLError(f"cannot resolve {host!r}") from exc
    if not addresses or not all(_is_public(a) for a in addresses):
        raise UnsafeURLError(f"{host!r} resolves to a private or reserved address")
    return addresses


async def ensure_public_url(url: str, allow_private: bool) -> None:
    """Raise ``UnsafeURLError`` unless ``url`` is http(s) and every address its host resolves to is public."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeURLError("only http(s) URLs with a host are allowed")
    if allow_private:
        return
    await public_addresses(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))


def _looks_like_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore network backend that connects only to addresses it has just checked.

    httpcore passes the URL's host here and uses it again, unchanged, for TLS (SNI and the certificate
    check); the request's Host header comes from the URL too. Only the TCP connect is redirected to
    the checked address.
    """

    def __init__(self, allow_private: Callable[[], bool]) -> None:
        self._allow_private = allow_private
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if self._allow_private():
            addresses = [host]
        else:
            addresses = await public_addresses(host, port)
        last_error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise UnsafeURLError("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` whose connections go through ``PinnedBackend``."""

    def __init__(self, allow_private: Callable[[], bool], limits: httpx.Limits | None = None) -> None:
        super().__init__()
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        # httpx takes no network backend, its httpcore pool does: the same pool httpx would build.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl.create_default_context(cafile=certifi.where()),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PinnedBackend(allow_private),
        )


def guarded_client(allow_private: Callable[[], bool], **kwargs: typing.Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for URLs that users configured: no proxies from the environment, no
    redirects, and every connection pinned to a checked address (see the module docstring)."""
    kwargs.setdefault("follow_redirects", False)
    return httpx.AsyncClient(transport=GuardedTransport(allow_private), trust_env=False, **kwargs)
