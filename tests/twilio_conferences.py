"""Twilio conferences in the stand-in (``tests/twilio_standin.py``): what a warm transfer uses.

- A call whose TwiML is replaced by ``<Dial><Conference …>name</Conference></Dial>`` joins the conference
  ``name`` (created on first use, ``CF…``): it waits, hearing ``waitUrl`` (fetched, signed), until a
  participant with ``startConferenceOnEnter`` joins; ``statusCallback`` gets ``participant-join`` /
  ``participant-leave`` / ``announcement-end`` / ``conference-start`` / ``conference-end`` as its
  ``statusCallbackEvent`` asks. Replacing the call's TwiML again takes it out of the conference.
- ``Conferences/{sid or friendly name}/Participants.json`` (POST): dials ``To`` into the conference (a new
  ``CA…`` call), posting its status callbacks (``initiated``, ``ringing``, ``answered`` as ``in-progress``,
  ``completed`` with ``no-answer`` when it rings out after ``Timeout`` s). What the rep does is
  ``TwilioStandIn.rep`` (answers or not, how long it rings).
- ``…/Participants/{CallSid}.json`` (POST): ``Hold`` / ``HoldUrl`` and ``AnnounceUrl`` (its TwiML fetched,
  the ``<Say>`` text recorded as what that participant alone heard, then ``announcement-end``); GET lists.
- ``Conferences.json`` / ``Conferences/{sid}.json`` (GET).

Each participant keeps what it heard, in order (``heard``: ``wait``, ``hold``, ``announce: <text>``,
``bridged``); the conference keeps a timeline a test reads (who was bridged with whom, and when).
"""

from __future__ import annotations

import asyncio
import re
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from aiohttp import web

if TYPE_CHECKING:
    from tests.twilio_standin import PlacedCall, TwilioStandIn

_EVENTS = {
    "participant-join": "join",
    "participant-leave": "leave",
    "participant-hold": "hold",
    "participant-unhold": "hold",
    "announcement-end": "announcement",
    "conference-start": "start",
    "conference-end": "end",
}


@dataclass
class RepBehaviour:
    """What the dialled rep does."""

    answers: bool = True
    ring_sec: float = 0.3  # before answering (ignored when they do not answer: the Timeout rings out)


@dataclass
class Participant:
    call_sid: str
    label: str | None = None
    hold: bool = False
    start_on_enter: bool = True
    end_on_exit: bool = False
    status: str = "connected"  # queued | ringing | connected | complete
    heard: list[str] = field(default_factory=list)


@dataclass
class Conference:
    sid: str
    name: str
    status: str = "init"  # init (waiting) | in-progress | completed
    participants: dict[str, Participant] = field(default_factory=dict)
    status_callback: str = ""
    events: set[str] = field(default_factory=set)
    timeline: list[tuple[float, str]] = field(default_factory=list)
    bridged: list[set[str]] = field(default_factory=list)  # each bridge: the call SIDs that heard each other

    def log(self, what: str) -> None:
        self.timeline.append((time.monotonic(), what))


def _bool(value: Any, default: bool) -> bool:
    return default if value in (None, "") else str(value).lower() == "true"


class ConferenceStandIn:
    """Mixed into ``TwilioStandIn``: the conference routes and their simulated effects."""

    conferences: dict[str, Conference]
    rep: RepBehaviour
    announce_s_per_word: float

    def add_conference_routes(self: TwilioStandIn, app: web.Application, base: str) -> None:
        self.conferences = {}
        self.rep = RepBehaviour()
        self.announce_s_per_word = 0.05  # how long an announcement plays, per word (a benchmark: 0)
        app.router.add_get(base + "/Conferences.json", self._list_conferences)
        app.router.add_get(base + "/Conferences/{conf}.json", self._fetch_conference)
        app.router.add_post(base + "/Conferences/{conf}/Participants.json", self._create_participant)
        app.router.add_get(base + "/Conferences/{conf}/Participants.json", self._list_participants)
        app.router.add_post(base + "/Conferences/{conf}/Participants/{sid}.json", self._update_participant)

    # ------------------------------------------------------------ lookups and shapes

    def conference(self, key: str) -> Conference | None:
        """By SID or friendly name (Twilio takes either in a Participants URL)."""
        return self.conferences.get(key) or next(
            (c for c in self.conferences.values() if c.name == key), None
        )

    def _conference_named(self: TwilioStandIn, name: str) -> Conference:
        found = self.conference(name)
        if found is None or found.status == "completed":
            found = Conference(sid=f"CF{next(self._ids):032x}", name=name)
            self.conferences[found.sid] = found
        return found

    def _conference_json(self: TwilioStandIn, conf: Conference) -> dict[str, Any]:
        return {
            "sid": conf.sid,
            "account_sid": self.account_sid,
            "friendly_name": conf.name,
            "status": conf.status,
            "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Conferences/{conf.sid}.json",
            "subresource_uris": {},
        }

    def _participant_json(self: TwilioStandIn, conf: Conference, p: Participant) -> dict[str, Any]:
        return {
            "account_sid": self.account_sid,
            "call_sid": p.call_sid,
            "conference_sid": conf.sid,
            "label": p.label,
            "hold": p.hold,
            "muted": False,
            "coaching": False,
            "call_sid_to_coach": None,
            "end_conference_on_exit": p.end_on_exit,
            "start_conference_on_enter": p.start_on_enter,
            "status": p.status,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Conferences/{conf.sid}/Participants/{p.call_sid}.json",
        }

    # ------------------------------------------------------------ REST

    async def _list_conferences(self: TwilioStandIn, request: web.Request) -> web.Response:
        if not self._authorized(request, request.match_info["account"]):
            return self._error(401, 20003, "Authentication Error - invalid username")
        name = request.query.get("FriendlyName")
        found = [c for c in self.conferences.values() if name is None or c.name == name]
        return web.json_response({"conferences": [self._conference_json(c) for c in found]})

    async def _fetch_conference(self: TwilioStandIn, request: web.Request) -> web.Response:
        if not self._authorized(request, request.match_info["account"]):
            return self._error(401, 20003, "Authentication Error - invalid username")
        conf = self.conference(request.match_info["conf"])
        if conf is None:
            return self._error(404, 20404, "The requested resource was not found")
        return web.json_response(self._conference_json(conf))

    async def _list_participants(self: TwilioStandIn, request: web.Request) -> web.Response:
        if not self._authorized(request, request.match_info["account"]):
            return self._error(401, 20003, "Authentication Error - invalid username")
        conf = self.conference(request.match_info["conf"])
        if conf is None:
            return self._error(404, 20404, "The requested resource was not found")
        live = [p for p in conf.participants.values() if p.status != "complete"]
        return web.json_response({"participants": [self._participant_json(conf, p) for p in live]})

    async def _create_participant(self: TwilioStandIn, request: web.Request) -> web.Response:
        """Dial ``To`` into the conference (created by name if it does not exist yet)."""
        from tests.twilio_standin import E164, PlacedCall

        if not self._authorized(request, request.match_info["account"]):
            return self._error(401, 20003, "Authentication Error - invalid username")
        form = await request.post()
        params: dict[str, Any] = {k: form.getall(k) if k == "StatusCallbackEvent" else form[k] for k in form}
        for key in ("To", "From"):
            if not E164.match(str(params.get(key, ""))):
                return self._error(
                    400, 21211, f"The '{key}' number {params.get(key)} is not a valid phone number."
                )
        key = request.match_info["conf"]
        conf = self.conference(key) if key.startswith("CF") else self._conference_named(key)
        if conf is None:
            return self._error(404, 20404, "The requested resource was not found")
        call = PlacedCall(sid=f"CA{next(self._ids):032x}", params=params, status="queued")
        self.calls[call.sid] = call
        self.per_number[str(params["To"])] += 1
        participant = Participant(
            call.sid,
            label=str(params.get("Label") or "") or None,
            start_on_enter=_bool(params.get("StartConferenceOnEnter"), True),
            end_on_exit=_bool(params.get("EndConferenceOnExit"), False),
            status="queued",
        )
        conf.participants[call.sid] = participant
        self._spawn(self._ring_participant(conf, participant, call))
        return web.json_response(self._participant_json(conf, participant), status=201)

    async def _update_participant(self: TwilioStandIn, request: web.Request) -> web.Response:
        if not self._authorized(request, request.match_info["account"]):
            return self._error(401, 20003, "Authentication Error - invalid username")
        conf = self.conference(request.match_info["conf"])
        p = conf.participants.get(request.match_info["sid"]) if conf is not None else None
        if conf is None or p is None or p.status == "complete":
            return self._error(404, 20404, "The requested resource was not found")
        form = {k: str(v) for k, v in (await request.post()).items()}
        if "Hold" in form:
            hold = form["Hold"].lower() == "true"
            if hold != p.hold:
                p.hold = hold
                conf.log(f"{'hold' if hold else 'unhold'} {p.call_sid}")
                if hold:
                    twiml = await self._fetch(form.get("HoldUrl", ""))
                    p.heard.append("hold" + (f": {twiml}" if twiml else ""))
                self._spawn(
                    self._conference_event(conf, "participant-hold" if hold else "participant-unhold", p)
                )
                self._check_bridge(conf)
        if url := form.get("AnnounceUrl"):
            self._spawn(self._announce(conf, p, url))
        return web.json_response(self._participant_json(conf, p))

    # ------------------------------------------------------------ what Twilio does

    def _spawn(self: TwilioStandIn, job: Any) -> None:
        task = asyncio.create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch(self: TwilioStandIn, url: str) -> str:
        if not url:
            return ""
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                r = await self._signed_post(client, url, {"AccountSid": self.account_sid})
        except httpx.TransportError as exc:  # the service is gone (a test's end)
            return f"unreachable ({type(exc).__name__})"
        return r.text if r.status_code == 200 else f"HTTP {r.status_code}"

    async def _conference_event(
        self: TwilioStandIn, conf: Conference, event: str, p: Participant | None
    ) -> None:
        if not conf.status_callback or _EVENTS[event] not in conf.events:
            return
        params = {
            "AccountSid": self.account_sid,
            "ConferenceSid": conf.sid,
            "FriendlyName": conf.name,
            "StatusCallbackEvent": event,
            "Timestamp": str(time.time()),
        }
        if p is not None:
            params.update(CallSid=p.call_sid, Hold=str(p.hold).lower(), Muted="false")
        async with httpx.AsyncClient(timeout=10) as client:
            await self._post_retrying(client, conf.status_callback, params)

    def join_by_twiml(self: TwilioStandIn, call: PlacedCall, twiml: str) -> None:
        """The call's TwiML now says ``<Dial><Conference>``: it joins that conference."""
        node = ET.fromstring(twiml).find("./Dial/Conference")
        assert node is not None and node.text
        conf = self._conference_named(node.text.strip())
        if callback := node.get("statusCallback"):
            conf.status_callback = callback
            conf.events = set((node.get("statusCallbackEvent") or "").split())
        p = Participant(
            call.sid,
            start_on_enter=_bool(node.get("startConferenceOnEnter"), True),
            end_on_exit=_bool(node.get("endConferenceOnExit"), False),
        )
        conf.participants[call.sid] = p
        self._spawn(self._enter(conf, p, node.get("waitUrl", "")))

    def leave_by_twiml(self: TwilioStandIn, call_sid: str) -> None:
        """The call's TwiML was replaced again: it leaves whatever conference it is in."""
        for conf in self.conferences.values():
            p = conf.participants.get(call_sid)
            if p is not None and p.status == "connected" and conf.status != "completed":
                self._spawn(self._leave(conf, p))

    async def _enter(self: TwilioStandIn, conf: Conference, p: Participant, wait_url: str = "") -> None:
        p.status = "connected"
        conf.log(f"join {p.call_sid}")
        if conf.status == "init" and p.start_on_enter:
            conf.status = "in-progress"
            conf.log("start")
            self._check_bridge(conf)
            await self._conference_event(conf, "conference-start", None)
        elif conf.status == "init":
            twiml = await self._fetch(wait_url)
            p.heard.append("wait" + (f": {twiml}" if twiml else ""))
        else:
            self._check_bridge(conf)
        await self._conference_event(conf, "participant-join", p)

    async def _leave(self: TwilioStandIn, conf: Conference, p: Participant) -> None:
        p.status = "complete"
        conf.log(f"leave {p.call_sid}")
        await self._conference_event(conf, "participant-leave", p)
        if p.end_on_exit and conf.status != "completed":
            conf.status = "completed"
            conf.log("end")
            for other in conf.participants.values():
                if other.status != "complete":
                    other.status = "complete"
                    if (call := self.calls.get(other.call_sid)) is not None and call.status != "completed":
                        call.status = "completed"  # Twilio hangs up a participant dialled in by REST
            await self._conference_event(conf, "conference-end", None)

    def _check_bridge(self, conf: Conference) -> None:
        """Participants that hear each other now: connected, not on hold, in a conference that started."""
        if conf.status != "in-progress":
            return
        talking = {p.call_sid for p in conf.participants.values() if p.status == "connected" and not p.hold}
        if len(talking) >= 2 and (not conf.bridged or conf.bridged[-1] != talking):
            conf.bridged.append(talking)
            conf.log("bridged " + " ".join(sorted(talking)))
            for sid in talking:
                conf.participants[sid].heard.append("bridged")

    async def _announce(self: TwilioStandIn, conf: Conference, p: Participant, url: str) -> None:
        """Play ``url``'s TwiML to ``p`` alone: its ``<Say>`` text is what they heard; then announcement-end."""
        twiml = await self._fetch(url)
        said = " ".join(m.strip() for m in re.findall(r"<Say[^>]*>(.*?)</Say>", twiml, re.S))
        others = [o.call_sid for o in conf.participants.values() if o is not p and o.status == "connected"]
        listening = [sid for sid in others if not conf.participants[sid].hold]
        p.heard.append(f"announce: {said}")
        conf.log(f"announce to {p.call_sid} (also heard by: {','.join(listening) or 'nobody'})")
        await asyncio.sleep(self.announce_s_per_word * min(40, len(said.split())))  # spoken, quickly
        await self._conference_event(conf, "announcement-end", p)

    async def _ring_participant(
        self: TwilioStandIn, conf: Conference, p: Participant, call: PlacedCall
    ) -> None:
        callback = str(call.params.get("StatusCallback", ""))
        wanted = set(call.params.get("StatusCallbackEvent") or ["completed"])
        base = {
            "CallSid": call.sid,
            "AccountSid": self.account_sid,
            "From": str(call.params["From"]),
            "To": str(call.params["To"]),
            "Direction": "outbound-api",
            "ConferenceSid": conf.sid,
        }
        rep = self.rep

        async with httpx.AsyncClient(timeout=10) as client:

            async def status(value: str, event: str) -> None:
                call.status = value
                if callback and event in wanted:
                    code = await self._post_retrying(
                        client,
                        callback,
                        {**base, "CallStatus": value, "StatusCallbackEvent": f"participant-{event}"},
                    )
                    call.callbacks.append((value, code))

            await status("initiated", "initiated")
            p.status = "ringing"
            await status("ringing", "ringing")
            if not rep.answers:
                await asyncio.sleep(float(call.params.get("Timeout") or 60))
                p.status = "complete"
                call.ended_at = time.monotonic()
                await status("no-answer", "completed")
                return
            await asyncio.sleep(rep.ring_sec)
            if conf.status == "completed":  # everyone left while it rang
                p.status = "complete"
                await status("canceled", "completed")
                return
            await self._enter(conf, p)  # connected (the conference starts), then the answered callback
            await status("in-progress", "answered")
