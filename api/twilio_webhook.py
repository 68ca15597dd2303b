"""The gate in front of every Twilio webhook: content type, size and signature before anything else.

A webhook is accepted only as ``application/x-www-form-urlencoded`` (415 otherwise), of at most
``MAX_WEBHOOK_BYTES`` (413), and, with TWILIO_AUTH_TOKEN set, only with a valid ``X-Twilio-Signature``
(403). Without a token only clients on this machine are served (the simulator, tests); the client
address is the one uvicorn's ProxyHeadersMiddleware gives, which believes X-Forwarded-For only from the
proxies in FORWARDED_ALLOW_IPS. Nothing else of the request is read, and no database is touched, until
these checks pass. Refusals are logged at most once a minute per reason, with the number left out.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from urllib.parse import parse_qsl

from fastapi import HTTPException, Request
from starlette.datastructures import FormData

log = logging.getLogger("ai_sdr.telephony")

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_WEBHOOK_BYTES = 64 * 1024  # Twilio's callbacks are a few KB; the signature is checked over all of it
NO_TOKEN_REFUSAL = (
    "Twilio webhooks are refused: TWILIO_AUTH_TOKEN is not set, so requests cannot be verified. "
    "Set TWILIO_AUTH_TOKEN (requests are then checked against X-Twilio-Signature); "
    "without it only loopback clients (the simulator) are served."
)


class RefusalLog:
    """One warning per reason per ``every_s`` at most: a flood of forged webhooks must not flood the
    log. The line after a quiet spell says how many refusals it stands for (``suppressed``)."""

    def __init__(self, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def refused(self, reason: str, path: str) -> None:
        now = self._clock()
        last = self._last.get(reason)
        if last is not None and now - last < self.every_s:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return
        self._last[reason] = now
        suppressed = self._suppressed.pop(reason, 0)
        log.warning(
            f"twilio webhook refused: {reason}", extra={"fields": {"path": path, "suppressed": suppressed}}
        )


REFUSALS = RefusalLog()


def _refuse(request: Request, status: int, reason: str, detail: str) -> HTTPException:
    REFUSALS.refused(reason, request.url.path)
    return HTTPException(status, detail=detail)


def is_loopback(host: str | None) -> bool:
    try:
        ip = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


async def _read_capped(request: Request) -> bytes | None:
    """The body, or None once it is over MAX_WEBHOOK_BYTES (declared or actually sent)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_WEBHOOK_BYTES:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_WEBHOOK_BYTES:
            return None
    return bytes(body)


async def twilio_params(request: Request) -> dict[str, str]:
    """The webhook's form parameters, once the request has passed every check above."""
    runtime = request.app.state.runtime
    token = runtime.settings.twilio_auth_token.get_secret_value()
    # Without a token: the client must be on this machine. An RFC 7239 ``Forwarded`` header (which
    # uvicorn does not read) means a proxy relayed it from an address we cannot vouch for.
    if not token and (
        "forwarded" in request.headers or not is_loopback(request.client.host if request.client else None)
    ):
        raise _refuse(request, 403, "no TWILIO_AUTH_TOKEN", NO_TOKEN_REFUSAL)
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != FORM_TYPE:
        raise _refuse(request, 415, "wrong content type", f"Twilio webhooks must be sent as {FORM_TYPE}")
    body = await _read_capped(request)
    if body is None:
        raise _refuse(
            request, 413, "body too large", f"request body too large (limit {MAX_WEBHOOK_BYTES} bytes)"
        )
    # Every pair, repeated names included: the signature covers them all.
    form = FormData(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    if token:
        url = runtime.settings.public_url.rstrip("/") + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        signature = request.headers.get("x-twilio-signature", "")
        if not signature or not runtime.twilio.validate_request(url, form, signature):
            raise _refuse(request, 403, "bad signature", "invalid Twilio signature")
    return {key: str(value) for key, value in form.items()}
