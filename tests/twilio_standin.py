"""A local stand-in for api.twilio.com: the REST calls the product makes, answered like Twilio does.

The real ``twilio`` SDK is pointed at it (``TWILIO_API_BASE``). It checks HTTP Basic auth with the
account SID and auth token, answers ``Calls.json`` / ``Calls/{sid}.json`` / ``Messages.json`` with
Twilio-shaped JSON (and Twilio's error body on bad input), and, like Twilio, then "answers" a created
call: it posts signed status callbacks and fetches the call's TwiML URL with ``X-Twilio-Signature``.

With a ``scenario`` (a function of the placed call) it plays what the callee does instead: a human or
an answering machine picks up (TwiML fetched; the asynchronous AMD verdict posted to
``AsyncAmdStatusCallback`` when the call asked for it; ``completed`` after the talk time), or the line
rings out (``no-answer``), is ``busy`` or ``failed``. It keeps what a test checks a dialer against: calls
per number, the most calls live at once, when each was created and ended. Callbacks that cannot reach
the service (it is restarting) are retried for a while, so a restart loses none.

Conferences (``<Dial><Conference>`` in a call's TwiML, the Conferences and Participants resources, hold,
announcements, a dialled rep who answers or rings out) are in ``tests/twilio_conferences.py``; a call
that came in to the service is registered with ``incoming()`` so REST updates of it act.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from aiohttp import web
from twilio.request_validator import RequestValidator

from tests.twilio_conferences import ConferenceStandIn

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_PLAY_DIGITS = re.compile(r'<Play digits="([0-9*#w]+)"')


@dataclass
class PlacedCall:
    sid: str
    params: dict[str, Any]
    status: str = "queued"
    twiml: str | None = None
    updates: list[dict[str, str]] = field(default_factory=list)
    callbacks: list[tuple[str, int]] = field(default_factory=list)
    created_at: float = field(default_factory=time.monotonic)
    ended_at: float | None = None
    answered_by: str | None = None
    digits: list[str] = field(default_factory=list)  # keys played by ``<Play digits>`` on a TwiML update
    scenario: Scenario | None = None


@dataclass
class Scenario:
    """What the callee does: who answers (or why nobody does), and for how long."""

    kind: Literal["human", "machine", "no_answer", "busy", "failed"]
    ring_sec: float = 0.05
    talk_sec: float = 0.1
    # Called once the call is answered (after the AMD verdict): a test emulates the engine here.
    on_answer: Callable[[PlacedCall], Awaitable[None]] | None = None
    # The final status callback never reaches the service (it was down past Twilio's retries); the
    # call's status is still there for a REST lookup.
    lose_final_callback: bool = False
    # Twilio cannot reach the TwiML URL (the service is down for this call): an application error ends it.
    twiml_unreachable: bool = False
    # The AMD verdict posted (default: human for a human, machine_end_beep for a machine), and when:
    # None: before ``on_answer``; seconds: that long after ``on_answer`` started, while the call is live
    # (as DetectMessageEnd's verdict comes once the greeting has ended).
    answered_by: str | None = None
    amd_after_sec: float | None = None
    # The call's TwiML is replaced (Calls/{sid}.json with ``Twiml=``) by one that names a new Media Stream
    # or a conference: called with the call and that TwiML once the digits it plays are recorded. Twilio has ended the
    # stream that was open (a test sends its ``stop``) and opens the new one (the test plays on it).
    on_redirect: Callable[[PlacedCall, str], Awaitable[None]] | None = None


FINAL_STATUS = {"no_answer": "no-answer", "busy": "busy", "failed": "failed"}
TWIML_CONNECT_SEC = 10.0  # how long Twilio keeps trying to reach the TwiML URL (error 11205)


class TwilioStandIn(ConferenceStandIn):
    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        answer: bool = True,
        scenario: Callable[[PlacedCall], Scenario] | None = None,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.answer = answer  # fetch the TwiML and post status callbacks after Calls.create
        self.scenario = scenario
        self.live = 0  # calls created and not yet ended (scenario mode)
        self.max_live = 0
        self.per_number: Counter[str] = Counter()
        self.calls: dict[str, PlacedCall] = {}
        self.messages: list[dict[str, str]] = []
        self.unauthorized = 0
        self.rest_requests = 0  # REST API requests received (calls, updates, fetches, messages)
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
        self.add_conference_routes(app, base)  # tests/twilio_conferences.py
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

    def incoming(self, call_sid: str, from_number: str, to_number: str, scenario: Scenario) -> PlacedCall:
        """A call that came in to the service (a test posts the voice webhook itself), now in progress:
        REST updates of it (a transfer, a redirect) act on it and call ``scenario.on_redirect``."""
        params = {"From": from_number, "To": to_number}
        call = PlacedCall(sid=call_sid, params=params, status="in-progress", scenario=scenario)
        self.calls[call_sid] = call
        return call

    async def settled(self, timeout: float = 10.0) -> None:
        """Wait until the simulated answering (TwiML fetch, callbacks) of every call is done."""
        if self._tasks:
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), timeout)

    # ------------------------------------------------------------ helpers

    def _authorized(self, request: web.Request, account: str) -> bool:
        self.rest_requests += 1  # every REST handler asks this first
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
        self.per_number[str(params["To"])] += 1
        if self.scenario is not None:
            self.live += 1
            self.max_live = max(self.max_live, self.live)
            call.scenario = self.scenario(call)
            task = asyncio.create_task(self._play(call, call.scenario))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif self.answer:
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
            self.leave_by_twiml(call.sid)
        if twiml := form.get("Twiml"):
            call.digits += _PLAY_DIGITS.findall(twiml)
            self.leave_by_twiml(call.sid)  # new TwiML: out of any conference it was in
            if "<Conference" in twiml:
                self.join_by_twiml(call, twiml)
            redirect = call.scenario.on_redirect if call.scenario is not None else None
            streams = "<Stream" in twiml or "<Conference" in twiml  # the open Media Stream ends
            if streams and redirect is not None and call.status == "in-progress":
                task = asyncio.create_task(redirect(call, twiml))  # after answering, as Twilio does
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
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

    # ------------------------------------------------------------ scenarios

    async def _post_retrying(self, client: httpx.AsyncClient, url: str, params: dict[str, str]) -> int:
        """Like Twilio's retries on connection failures: the service may be restarting."""
        for _ in range(150):
            try:
                return (await self._signed_post(client, url, params)).status_code
            except httpx.TransportError:
                await asyncio.sleep(0.1)
        return 0

    async def _fetch_twiml(
        self, client: httpx.AsyncClient, url: str, params: dict[str, str]
    ) -> httpx.Response | None:
        """Twilio tries for 10 s to connect to the TwiML URL (error 11205), then gives up on the call."""
        deadline = time.monotonic() + TWIML_CONNECT_SEC
        while True:
            try:
                return await self._signed_post(client, url, params)
            except httpx.TransportError:
                if time.monotonic() >= deadline:
                    return None
                await asyncio.sleep(0.1)

    async def _play(self, call: PlacedCall, scenario: Scenario) -> None:
        base = {
            "CallSid": call.sid,
            "AccountSid": self.account_sid,
            "From": str(call.params["From"]),
            "To": str(call.params["To"]),
            "Direction": "outbound-api",
            "ApiVersion": "2010-04-01",
        }
        callback = str(call.params.get("StatusCallback", ""))

        async def status(client: httpx.AsyncClient, value: str, **extra: str) -> None:
            call.status = value
            final = value in ("completed", *FINAL_STATUS.values())
            if final and scenario.lose_final_callback:
                call.callbacks.append((value, 0))
                return
            if callback:
                code = await self._post_retrying(client, callback, {**base, "CallStatus": value, **extra})
                call.callbacks.append((value, code))

        try:
            async with httpx.AsyncClient(timeout=10) as client:
                await status(client, "initiated")
                await status(client, "ringing")
                await asyncio.sleep(scenario.ring_sec)
                if scenario.kind in FINAL_STATUS:
                    call.ended_at = time.monotonic()
                    self.live -= 1
                    await status(client, FINAL_STATUS[scenario.kind])
                    return
                await status(client, "in-progress")
                url = str(call.params.get("Url", ""))
                if url:
                    r = None
                    if not scenario.twiml_unreachable:
                        r = await self._fetch_twiml(client, url, {**base, "CallStatus": "in-progress"})
                    if r is None:  # Twilio says "an application error has occurred" and hangs up
                        call.twiml = "application error"
                        call.ended_at = time.monotonic()
                        self.live -= 1
                        await status(client, "completed", CallDuration="1")
                        return
                    call.twiml = r.text if r.status_code == 200 else f"HTTP {r.status_code}"
                answering = None
                if scenario.on_answer is not None and scenario.amd_after_sec is not None:
                    answering = asyncio.create_task(scenario.on_answer(call))
                    await asyncio.sleep(scenario.amd_after_sec)
                amd_url = str(call.params.get("AsyncAmdStatusCallback", ""))
                if amd_url and call.params.get("AsyncAmd") == "true":
                    default = "human" if scenario.kind == "human" else "machine_end_beep"
                    call.answered_by = scenario.answered_by or default
                    code = await self._post_retrying(
                        client,
                        amd_url,
                        {**base, "AnsweredBy": call.answered_by, "MachineDetectionDuration": "1800"},
                    )
                    call.callbacks.append(("amd", code))
                if answering is not None:
                    await answering
                elif scenario.on_answer is not None:
                    await scenario.on_answer(call)
                await asyncio.sleep(scenario.talk_sec)
                call.ended_at = time.monotonic()
                self.live -= 1
                await status(client, "completed", CallDuration=str(max(1, round(scenario.talk_sec))))
        finally:
            if call.ended_at is None:
                call.ended_at = time.monotonic()
                self.live -= 1
