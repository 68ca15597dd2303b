"""A local stand-in for api.twilio.com: the REST calls the product makes, answered like Twilio does.

The real ``twilio`` SDK is pointed at it (``TWILIO_API_BASE``). It checks HTTP Basic auth with the
account SID and auth token, answers ``Calls.json`` / ``Calls/{sid}.json`` / ``Messages.json`` with
Twilio-shaped JSON (and Twilio's error body on bad input), and, like Twilio, then "answers" a created
call: it posts signed status callbacks and fetches the call's TwiML URL with ``X-Twilio-Signature``.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import re
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiohttp import web
from twilio.request_validator import RequestValidator

E164 = re.compile(r"^\+[1-9]\d{6,14}$")


@dataclass
class PlacedCall:
    sid: str
    params: dict[str, Any]
    status: str = "queued"
    twiml: str | None = None
    updates: list[dict[str, str]] = field(default_factory=list)
    callbacks: list[tuple[str, int]] = field(default_factory=list)


class TwilioStandIn:
    def __init__(self, account_sid: str, auth_token: str, *, answer: bool = True) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.answer = answer  # fetch the TwiML and post status callbacks after Calls.create
        self.calls: dict[str, PlacedCall] = {}
        self.messages: list[dict[str, str]] = []
        self.unauthorized = 0
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> TwilioStandIn:
        app = web.Application()
        base = "/2010-04-01/Accounts/{account}"
        app.router.add_post(base + "/Calls.json", self._create_call)
        app.router.add_post(base + "/Calls/{sid}.json", self._update_call)
        app.router.add_get(base + "/Calls/{sid}.json", self._fetch_call)
        app.router.add_post(base + "/Messages.json", self._create_message)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    async def settled(self, timeout: float = 10.0) -> None:
        """Wait until the simulated answering (TwiML fetch, callbacks) of every call is done."""
        if self._tasks:
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), timeout)

    # ------------------------------------------------------------ helpers

    def _authorized(self, request: web.Request, account: str) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        ok = request.headers.get("Authorization") == f"Basic {expected}" and account == self.account_sid
        self.unauthorized += not ok
        return ok

    @staticmethod
    def _error(status: int, code: int, message: str) -> web.Response:
        return web.json_response(
            {
                "code": code,
                "message": message,
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status,
            },
            status=status,
        )

    def _call_json(self, call: PlacedCall) -> dict[str, Any]:
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Calls/{call.sid}.json"
        return {
            "sid": call.sid,
            "account_sid": self.account_sid,
            "to": call.params.get("To"),
            "from": call.params.get("From"),
            "status": call.status,
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "date_created": None,
            "duration": None,
            "price": None,
            "uri": uri,
            "subresource_uris": {},
        }

    # ------------------------------------------------------------ routes

    async def _create_call(self, request: web.Request) -> web.Response:
        if not self._authorized(request, request.match_info["account"]):
            return self._error(401, 20003, "Authentication Error - invalid username")
        form = await request.post()
        params: dict[str, Any] = {k: form.getall(k) if k == "StatusCallbackEvent" else form[k] for k in form}
        if not E164.match(str(params.get("To", ""))):
            return self._error(400, 21211, f"The 'To' number {params.get('To')} is not a valid phone number.")
        if not (params.get("Url") or params.get("Twiml")):
            return self._error(400, 21205, "Url parameter is required.")
        call = PlacedCall(sid=f"CA{next(self._ids):032x}", params=params)
        self.calls[call.sid] = call
        if self.answer:
            task = asyncio.create_task(self._ring_and_answer(call))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return web.json_response(self._call_json(call), status=201)

    async def _update_call(self, request: web.Request) -> web.Response:
        if not self._authorized(request, request.match_info["account"]):
            return self._error(401, 20003, "Authentication Error - invalid username")
        call = self.calls.get(request.match_info["sid"])
        if call is None:
            return self._error(404, 20404, "The requested resource was not found")
        form = {k: str(v) for k, v in (await request.post()).items()}
        call.updates.append(form)
        if form.get("Status") == "completed":
            call.status = "completed"
        return web.json_response(self._call_json(call))

    async def _fetch_call(self, request: web.Request) -> web.Response:
        if not self._authorized(request, request.match_info["account"]):
            return self._error(401, 20003, "Authentication Error - invalid username")
        call = self.calls.get(request.match_info["sid"])
        if call is None:
            return self._error(404, 20404, "The requested resource was not found")
        return web.json_response(self._call_json(call))

    async def _create_message(self, request: web.Request) -> web.Response:
        if not self._authorized(request, request.match_info["account"]):
            return self._error(401, 20003, "Authentication Error - invalid username")
        form = {k: str(v) for k, v in (await request.post()).items()}
        if not E164.match(form.get("To", "")):
            return self._error(400, 21211, f"The 'To' number {form.get('To')} is not a valid phone number.")
        sid = f"SM{next(self._ids):032x}"
        self.messages.append({**form, "sid": sid})
        return web.json_response(
            {
                "sid": sid,
                "account_sid": self.account_sid,
                "to": form["To"],
                "from": form.get("From"),
                "body": form.get("Body"),
                "status": "queued",
                "direction": "outbound-api",
                "num_segments": "1",
                "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
                "subresource_uris": {},
            },
            status=201,
        )

    # ------------------------------------------------------------ what Twilio does after Calls.create

    async def _signed_post(
        self, client: httpx.AsyncClient, url: str, params: dict[str, str]
    ) -> httpx.Response:
        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        return await client.post(url, data=params, headers={"X-Twilio-Signature": signature})

    async def _ring_and_answer(self, call: PlacedCall) -> None:
        base = {
            "CallSid": call.sid,
            "AccountSid": self.account_sid,
            "From": str(call.params["From"]),
            "To": str(call.params["To"]),
            "Direction": "outbound-api",
            "ApiVersion": "2010-04-01",
        }
        callback = str(call.params.get("StatusCallback", ""))
        async with httpx.AsyncClient(timeout=10) as client:
            for status in ("initiated", "ringing"):
                call.status = status
                if callback:
                    r = await self._signed_post(client, callback, {**base, "CallStatus": status})
                    call.callbacks.append((status, r.status_code))
            call.status = "in-progress"
            if callback:
                r = await self._signed_post(client, callback, {**base, "CallStatus": "in-progress"})
                call.callbacks.append(("in-progress", r.status_code))
            url = str(call.params.get("Url", ""))
            if url:
                r = await self._signed_post(client, url, {**base, "CallStatus": "in-progress"})
                call.twiml = r.text if r.status_code == 200 else f"HTTP {r.status_code}"
