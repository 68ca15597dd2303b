"""A webhook receiver on 127.0.0.1 that checks signatures, can fail on purpose, and counts what it got."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from aiohttp import web

from events.webhooks import verify


class WebhookReceiver:
    def __init__(self, secret: str = "", fail_first: int = 0) -> None:
        self.secret = secret
        self.fail_first = fail_first  # answer 500 to this many requests first
        self.down = False  # while set, answer every request 503 (a receiver that is down)
        self.refused = 0  # requests answered 503 while down
        self.attempts = 0
        self.events: dict[str, dict[str, Any]] = {}  # by event id: exactly-once after dedupe
        self.deliveries = Counter[str]()  # successful (2xx) deliveries per event id
        self.bad_signatures = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        attempt = self.attempts  # taken before awaiting: concurrent deliveries each get their own number
        body = await request.read()
        if self.secret and not verify(self.secret, body, request.headers.get("x-signature", "")):
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.down:
            self.refused += 1
            return web.Response(status=503, text="down for maintenance")
        if attempt <= self.fail_first:
            return web.Response(status=500, text="try again")
        event = json.loads(body)
        self.deliveries[event["id"]] += 1
        self.events.setdefault(event["id"], event)
        return web.json_response({"ok": True})

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.events.values() if e["type"] == event_type]
