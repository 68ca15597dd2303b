"""Twilio's REST API and request signatures, through the official ``twilio`` SDK.

Calls go through the SDK's asyncio HTTP client so nothing blocks the event loop. ``TWILIO_API_BASE``
points the SDK at another host (the tests' local stand-in that answers like api.twilio.com).
"""

from __future__ import annotations

import logging
from typing import Any

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.voice_response import Connect, VoiceResponse

from config import Settings
from core.sandbox import Sandbox, SandboxedCall

log = logging.getLogger(__name__)


class TwilioNotConfigured(RuntimeError):
    """TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN are not set."""


class TelephonyError(RuntimeError):
    """Twilio refused or could not be reached; the message is safe to show (no credentials)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TwilioGateway:
    def __init__(self, settings: Settings, sandbox: Sandbox | None = None) -> None:
        self.settings = settings
        self.sandbox = sandbox  # a scenario-test call's requests are recorded there, never sent
        self._client: Client | None = None

    @property
    def configured(self) -> bool:
        return self.settings.twilio_configured

    def validate_request(self, url: str, params: dict[str, Any], signature: str) -> bool:
        token = self.settings.twilio_auth_token.get_secret_value()
        if not token:
            return True  # no token configured: nothing to check against (local simulator use)
        return RequestValidator(token).validate(url, params, signature)

    # ------------------------------------------------------------ REST

    def _rest(self) -> Client:
        if not self.configured:
            raise TwilioNotConfigured(
                "Twilio is not configured: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
            )
        if self._client is None:
            client = Client(
                self.settings.twilio_account_sid,
                self.settings.twilio_auth_token.get_secret_value(),
                http_client=AsyncTwilioHttpClient(timeout=10),
            )
            if self.settings.twilio_api_base:
                client.api.base_url = self.settings.twilio_api_base.rstrip("/")
            self._client = client
        return self._client

    async def create_call(
        self,
        *,
        to: str,
        from_: str,
        url: str,
        status_callback: str,
        amd_callback: str | None = None,
        ringing_timeout_sec: int | None = None,
    ) -> str:
        """Place an outbound call; Twilio fetches ``url`` for TwiML once the callee answers.

        With ``amd_callback`` Twilio also runs answering-machine detection asynchronously (the call
        connects at once; the verdict, after the greeting's end, is posted to ``amd_callback``).
        """
        options: dict[str, Any] = {}
        if amd_callback:
            options.update(
                machine_detection="DetectMessageEnd",
                async_amd="true",
                async_amd_status_callback=amd_callback,
                async_amd_status_callback_method="POST",
            )
        if ringing_timeout_sec:
            options["timeout"] = ringing_timeout_sec
        call = await self._call(
            self._rest().calls.create_async(
                to=to,
                from_=from_,
                url=url,
                method="POST",
                status_callback=status_callback,
                status_callback_method="POST",
                status_callback_event=["initiated", "ringing", "answered", "completed"],
                **options,
            )
        )
        return str(call.sid)

    async def hangup(self, call_sid: str) -> None:
        await self._call(self._rest().calls(call_sid).update_async(status="completed"))

    async def fetch_call(self, call_sid: str) -> tuple[str, str | None]:
        """Twilio's view of a call: its status (``no-answer``, ``completed``, …) and duration in seconds."""
        call = await self._call(self._rest().calls(call_sid).fetch_async())
        return str(call.status), (str(call.duration) if call.duration is not None else None)

    async def end_call(self, call_sid: str) -> None:
        """Hang up a live Twilio call if there is one (simulator calls have no CA… SID); never raises."""
        if sandboxed := self._sandboxed(call_sid):
            self._would_send(sandboxed, "hang_up", f"Calls/{call_sid}.json", {"Status": "completed"})
            return
        if not self.configured or not call_sid.startswith("CA"):
            return
        try:
            await self.hangup(call_sid)
        except Exception as exc:
            log.warning(
                "twilio hangup failed", extra={"fields": {"call_sid": call_sid, "error": type(exc).__name__}}
            )

    async def transfer(self, call_sid: str, number: str, announce: str | None = None) -> None:
        """Replace the call's TwiML: the Media Stream ends and Twilio dials ``number``."""
        twiml = VoiceResponse()
        if announce:
            twiml.say(announce)
        twiml.dial(number)
        if sandboxed := self._sandboxed(call_sid):
            self._would_send(sandboxed, "transfer", f"Calls/{call_sid}.json", {"Twiml": str(twiml)})
            return
        await self._call(self._rest().calls(call_sid).update_async(twiml=str(twiml)))

    async def send_digits(self, call_sid: str, digits: str, then: Connect) -> None:
        """Replace the call's TwiML: Twilio ends the Media Stream, plays ``digits`` as keypad tones (``w``:
        half a second's pause) and runs ``then`` (the call's next Media Stream)."""
        twiml = VoiceResponse()
        twiml.play(digits=digits)
        twiml.append(then)
        if sandboxed := self._sandboxed(call_sid):
            self._would_send(sandboxed, "send_dtmf", f"Calls/{call_sid}.json", {"Twiml": str(twiml)})
            return
        await self._call(self._rest().calls(call_sid).update_async(twiml=str(twiml)))

    async def redirect(self, call_sid: str, twiml: VoiceResponse, name: str = "redirect") -> None:
        """Replace a live call's TwiML (its Media Stream ends): into a conference, back to a stream."""
        if sandboxed := self._sandboxed(call_sid):
            self._would_send(sandboxed, name, f"Calls/{call_sid}.json", {"Twiml": str(twiml)})
            return
        await self._call(self._rest().calls(call_sid).update_async(twiml=str(twiml)))

    async def add_participant(
        self, conference: str, *, to: str, from_: str, status_callback: str, timeout_sec: int, label: str
    ) -> tuple[str, str]:
        """Dial ``to`` into the conference named ``conference`` (Participants API): (call SID, conf SID).

        The participant starts the conference and ends it on leaving; its call's progress (ringing,
        answered, completed with no-answer/busy/failed) is posted to ``status_callback``."""
        participant = await self._call(
            self._rest()
            .conferences(conference)
            .participants.create_async(
                from_=from_,
                to=to,
                label=label,
                timeout=timeout_sec,
                beep="false",
                early_media=False,
                start_conference_on_enter=True,
                end_conference_on_exit=True,
                status_callback=status_callback,
                status_callback_method="POST",
                status_callback_event=["initiated", "ringing", "answered", "completed"],
            )
        )
        return str(participant.call_sid), str(participant.conference_sid)

    async def update_participant(self, conference_sid: str, call_sid: str, **fields: Any) -> None:
        """Hold / unhold (``hold``, ``hold_url``) or announce to one participant alone (``announce_url``)."""
        participant = self._rest().conferences(conference_sid).participants(call_sid)
        await self._call(participant.update_async(**fields))

    async def list_participants(self, conference_sid: str) -> list[dict[str, Any]]:
        rows = await self._call(self._rest().conferences(conference_sid).participants.list_async())
        return [{"call_sid": p.call_sid, "label": p.label, "hold": p.hold, "status": p.status} for p in rows]

    async def send_sms(self, *, to: str, from_: str, body: str, call_sid: str | None = None) -> str:
        """Text ``to``; ``call_sid``: the call it is sent from (a scenario test's text is not sent)."""
        if sandboxed := self._sandboxed(call_sid):
            self._would_send(sandboxed, "send_sms", "Messages.json", {"To": to, "From": from_, "Body": body})
            return "SMsandbox" + call_sid[-23:] if call_sid else "SMsandbox"
        message = await self._call(self._rest().messages.create_async(to=to, from_=from_, body=body))
        return str(message.sid)

    def _sandboxed(self, call_sid: str | None) -> SandboxedCall | None:
        return self.sandbox.of_call(call_sid) if self.sandbox is not None else None

    def _would_send(self, call: SandboxedCall, name: str, resource: str, form: dict[str, str]) -> None:
        base = (self.settings.twilio_api_base or "https://api.twilio.com").rstrip("/")
        account = self.settings.twilio_account_sid or "AC-not-configured"
        url = f"{base}/2010-04-01/Accounts/{account}/{resource}"
        call.record("twilio", name, [{"method": "POST", "url": url, "body": form}])

    async def _call(self, request: Any) -> Any:
        try:
            return await request
        except TwilioRestException as exc:
            raise TelephonyError(
                f"Twilio refused the request: {exc.msg} (code {exc.code})", exc.status
            ) from None
        except (TwilioException, OSError) as exc:
            raise TelephonyError(f"Twilio could not be reached ({type(exc).__name__})") from None

    async def aclose(self) -> None:
        if self._client is not None:
            http = self._client.http_client
            close = getattr(http, "close", None)
            if close is not None:
                await close()
