"""Tools an agent runs during a call: built-ins and per-agent tools, each execution stored and announced.

Built-ins: ``end_call``, ``transfer_call`` (Twilio redirect to a number), ``send_sms`` (to the caller;
``config.message`` is a fixed body, else the model's message), ``book_meeting`` (a Meeting row),
``add_to_dnc`` (the other party's number onto the do-not-call list, then the call ends). Per-agent tools
are HTTP webhooks (``kind="webhook"``) or configured
instances of a built-in (e.g. a ``transfer_call`` to a specific number). Arguments are validated
against the tool's JSON schema before anything runs; every execution becomes a ``ToolCallRecord`` and
a ``tool.executed`` event in one transaction. A scenario-test call (``core.sandbox``) records the
requests its tools would have made (webhook tools here, texts and transfers in the Twilio gateway).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.exceptions import NoSuchResource, Unresolvable
from sqlalchemy import func, select

from core.http import read_capped
from core.net_guard import UnsafeURLError, ensure_public_url, guarded_client
from core.phone_numbers import InvalidPhoneNumber, normalize
from models import Conversation, Meeting, ToolCallRecord
from providers.base import ToolCall, ToolSpec
from speech.text import fill_template
from telephony import dnc
from telephony.stream_auth import hand_over_stream
from telephony.stream_twiml import stream_connect
from telephony.twilio_gateway import TelephonyError, TwilioNotConfigured
from telephony.warm_transfer import MODES, TransferError, TransferRequest, Transfers
from tools.transfer_summary import build_summary

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from config import Settings
    from core.sandbox import Sandbox
    from storage.db import Database
    from telephony.twilio_gateway import TwilioGateway

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 64 * 1024
RETRY_DELAYS_S = (0.2, 0.6)  # webhook tools: retried on connection errors and 5xx (with an idempotency key)
MAX_MENU_PRESSES = 3  # send_dtmf per call: a menu that only repeats itself is not navigated forever


def _never_retrieve(uri: str) -> Any:
    raise NoSuchResource(ref=uri)


# Argument schemas resolve references only inside themselves: jsonschema's default would fetch any other
# URI with urllib (blocking the loop, past the outbound URL guard). The API refuses such schemas; this
# keeps a row stored before that check from reaching out.
NO_REMOTE_REFS: Registry[Any] = Registry(retrieve=_never_retrieve)

BUILTIN_SPECS: dict[str, ToolSpec] = {
    "end_call": ToolSpec(
        "end_call",
        "End the phone call politely when the conversation is over.",
        {"type": "object", "properties": {"reason": {"type": "string"}}, "required": []},
    ),
    "book_meeting": ToolSpec(
        "book_meeting",
        "Book a meeting with the caller at an agreed date and time.",
        {
            "type": "object",
            "properties": {
                "start_time": {"type": "string", "description": "ISO 8601 start time"},
                "attendee_name": {"type": "string"},
                "attendee_contact": {"type": "string"},
                "notes": {"type": "string"},
            },
            "required": ["start_time"],
        },
    ),
    "transfer_call": ToolSpec(
        "transfer_call",
        "Transfer the caller to a human colleague when they ask for one.",
        {
            "type": "object",
            "properties": {
                "reason": {"type": "string", "description": "what the caller wants, for the colleague"},
                "mode": {
                    "type": "string",
                    "enum": ["warm", "cold"],
                    "description": "warm: the colleague hears a summary first; cold: connect at once",
                },
                "number": {"type": "string", "description": "one of the configured transfer numbers"},
            },
            "required": [],
        },
    ),
    "add_to_dnc": ToolSpec(
        "add_to_dnc",
        "The person asks not to be called again (take me off your list, stop calling, do not call me): "
        "put their number on the do-not-call list and end the call.",
        {"type": "object", "properties": {"reason": {"type": "string"}}, "required": []},
    ),
    "send_sms": ToolSpec(
        "send_sms",
        "Send the caller a text message (a link, a confirmation, details they asked for).",
        {
            "type": "object",
            "properties": {"message": {"type": "string", "maxLength": 600}},
            "required": ["message"],
        },
    ),
}
# Offered only to a phone menu, and only by an agent with ``dtmf_navigation`` on (``call.menu``).
SEND_DTMF_SPEC = ToolSpec(
    "send_dtmf",
    "Press keys on the phone's keypad to choose in a phone menu (the call goes on with what answers).",
    {
        "type": "object",
        "properties": {
            "digits": {
                "type": "string",
                "pattern": "^[0-9*#w]{1,32}$",
                "description": "Keys to press: 0-9, * and #; w waits half a second",
            }
        },
        "required": ["digits"],
        "additionalProperties": False,
    },
)
FILLERS = {
    "book_meeting": "One moment, let me book that.",
    "send_sms": "One moment, I'm sending that text.",
    "transfer_call": "One moment.",
}


@dataclass(slots=True)
class ToolContext:
    conversation_id: str
    call_sid: str
    caller_number: str | None
    agent_number: str | None
    dynamic_variables: dict[str, Any] = field(default_factory=dict)
    # the call so far, (role, text) oldest first: a warm transfer's summary for the rep is built from it
    history: Callable[[], list[tuple[str, str]]] | None = None


@dataclass(slots=True)
class ToolOutcome:
    success: bool
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    duration_ms: float = 0.0
    say: str | None = None  # spoken as is; None: the LLM words the result
    ends_call: bool = False
    transferred: bool = False
    redirected: bool = False  # keys pressed: this Media Stream ends, the call goes on on a new one
    handed_over: bool = False  # a warm transfer runs: this Media Stream ends, the call is not over


class ToolError(Exception):
    """A tool failed in a way worth telling the LLM (the message is safe to store and show)."""


def _argument_problems(schema: dict[str, Any], arguments: Any) -> list[Any]:
    try:
        validator = Draft202012Validator(schema, registry=NO_REMOTE_REFS)
        return sorted(validator.iter_errors(arguments), key=str)
    except Unresolvable:
        raise ToolError("the tool's parameters schema refers to a definition it does not contain") from None


@dataclass(slots=True)
class ResolvedTool:
    kind: str
    spec: ToolSpec
    config: dict[str, Any]


def fill_configured(value: Any, variables: dict[str, Any]) -> Any:
    """``{{name}}`` placeholders (at any depth) take the call's dynamic variables.

    Only for what the agent's owner configured (a tool's URL, headers, a fixed SMS body). Never for the
    model's arguments: a caller could talk the model into writing ``{{crm_token}}`` into a text message
    to their own phone. Model output is passed on exactly as written.
    """
    if isinstance(value, str):
        return fill_template(value, variables) if "{{" in value else value
    if isinstance(value, dict):
        return {k: fill_configured(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [fill_configured(v, variables) for v in value]
    return value


class EventEmitter(Protocol):
    """Where a ``tool.executed`` event goes (``events.webhooks.WebhookDispatcher`` in the service)."""

    async def emit(
        self,
        session: AsyncSession,
        event_type: str,
        data: dict[str, Any],
        *,
        agent_id: str | None,
        conversation_id: str | None,
    ) -> str | None: ...


class ToolRunner:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        twilio: TwilioGateway,
        webhooks: EventEmitter,
        sandbox: Sandbox | None = None,
        transfers: Transfers | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.twilio = twilio
        self.webhooks = webhooks
        self.transfers = transfers or Transfers(settings, db, twilio)
        self.sandbox = sandbox  # a scenario-test call's webhook tools are recorded there, never called
        self._http: httpx.AsyncClient | None = None

    # ------------------------------------------------------------ what the model sees

    def tools_for(self, agent: Any) -> dict[str, ResolvedTool]:
        tools = {
            name: ResolvedTool(name, BUILTIN_SPECS[name], {})
            for name in (agent.builtin_tools or [])
            if name in BUILTIN_SPECS
        }
        for tool in agent.tools or []:
            if not tool.enabled:
                continue
            if tool.kind in BUILTIN_SPECS:
                base = BUILTIN_SPECS[tool.kind]
                parameters = tool.parameters if (tool.parameters or {}).get("properties") else base.parameters
                spec = ToolSpec(tool.name, tool.description or base.description, parameters)
            else:
                spec = ToolSpec(tool.name, tool.description, tool.parameters or {"type": "object"})
            tools[tool.name] = ResolvedTool(tool.kind, spec, dict(tool.config or {}))
        return tools

    def specs_for(self, agent: Any) -> list[ToolSpec]:
        return [tool.spec for tool in self.tools_for(agent).values()]

    def filler_for(self, name: str) -> str:
        return FILLERS.get(name, "One moment while I check that.")

    # ------------------------------------------------------------ running

    async def execute(self, agent: Any, call: ToolCall, ctx: ToolContext) -> ToolOutcome:
        """Run ``call`` as the agent's tool of that name."""
        started = time.perf_counter()
        tool = self.tools_for(agent).get(call.name)
        if tool is None and call.name == "add_to_dnc":
            # Honouring "do not call me" is a legal duty, not a feature an agent may lack.
            tool = ResolvedTool("add_to_dnc", BUILTIN_SPECS["add_to_dnc"], {})
        if tool is None and call.name == "send_dtmf" and getattr(agent, "dtmf_navigation", False):
            tool = ResolvedTool("send_dtmf", SEND_DTMF_SPEC, {})
        try:
            if tool is None:
                raise ToolError(f"unknown tool {call.name!r}")
            problems = _argument_problems(tool.spec.parameters, call.arguments)
            if problems:
                where = "/".join(str(p) for p in problems[0].absolute_path) or "arguments"
                raise ToolError(f"invalid arguments ({where}): {problems[0].message[:200]}")
            outcome = await self._run(agent, tool, call, ctx)
        except ToolError as exc:
            outcome = ToolOutcome(False, error=str(exc))
        except Exception as exc:
            log.warning("tool failed", extra={"fields": {"tool": call.name, "error": type(exc).__name__}})
            outcome = ToolOutcome(
                False, error=f"the tool failed ({type(exc).__name__})"
            )  # details stay in the log
        outcome.duration_ms = (time.perf_counter() - started) * 1000
        await self._record(agent, call, ctx, outcome)
        return outcome

    async def _run(self, agent: Any, tool: ResolvedTool, call: ToolCall, ctx: ToolContext) -> ToolOutcome:
        match tool.kind:
            case "end_call":
                return ToolOutcome(True, {"ended": True}, ends_call=True)
            case "add_to_dnc":
                return await self._add_to_dnc(call.arguments, ctx)
            case "book_meeting":
                return await self._book_meeting(agent, call.arguments, ctx)
            case "transfer_call":
                return await self._transfer(agent, tool, call.arguments, ctx)
            case "send_sms":
                return await self._send_sms(tool, call.arguments, ctx)
            case "send_dtmf":
                return await self._send_dtmf(call.arguments, ctx)
            case "webhook":
                return await self._webhook(tool, call, ctx)
        raise ToolError(f"tool kind {tool.kind!r} is not supported")

    async def _book_meeting(self, agent: Any, args: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
        try:
            start = datetime.fromisoformat(str(args["start_time"]))
        except ValueError:
            raise ToolError("start_time must be an ISO 8601 date and time") from None
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)  # models rarely give an offset; times are stored in UTC
        async with self.db.session() as session:
            meeting = Meeting(
                conversation_id=ctx.conversation_id,
                agent_id=agent.id,
                attendee_name=str(args.get("attendee_name") or ""),
                attendee_contact=str(args.get("attendee_contact") or ctx.caller_number or ""),
                start_time=start,
                notes=str(args.get("notes") or ""),
            )
            session.add(meeting)
            await session.flush()
            meeting_id = meeting.id
        when = start.strftime("%A, %B %-d at %-I:%M %p").replace(":00 ", " ")
        return ToolOutcome(
            True,
            {"meeting_id": meeting_id, "start_time": start.isoformat()},
            say=f"You're booked for {when}. You'll get a confirmation shortly.",
        )

    async def _add_to_dnc(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
        async with self.db.session() as session:
            conversation = await session.get(Conversation, ctx.conversation_id)
            # The other party: the callee of an outbound call, the caller of an inbound one.
            if conversation is not None:
                raw = (
                    conversation.to_number
                    if conversation.direction == "outbound"
                    else conversation.from_number
                )
            else:
                raw = ctx.caller_number
            try:
                number = normalize(raw or "")
            except InvalidPhoneNumber:
                raise ToolError("this call has no phone number to put on the do-not-call list") from None
            reason = str(args.get("reason") or "asked not to be called again")[:500]
            await dnc.add(
                session, [number], reason=reason, source="tool", conversation_id=ctx.conversation_id
            )
        return ToolOutcome(
            True,
            {"phone_number": number, "do_not_call": True},
            say="Understood. I've taken your number off our list, and you won't hear from us again. Goodbye.",
            ends_call=True,
        )

    def transfer_mode(self, agent: Any, call: ToolCall) -> str | None:
        """``warm`` or ``cold`` for a call of a transfer tool (before it runs: the engine says the line and
        reads the stream's end as a hand-over), None for any other tool."""
        tool = self.tools_for(agent).get(call.name)
        if tool is None or tool.kind != "transfer_call":
            return None
        mode = (
            (call.arguments or {}).get("mode")
            or tool.config.get("mode")
            or self.settings.transfer_default_mode
        )
        return mode if mode in MODES else None

    async def _transfer(
        self, agent: Any, tool: ResolvedTool, args: dict[str, Any], ctx: ToolContext
    ) -> ToolOutcome:
        """The tool: the configured number (or one of the configured ``numbers`` the model names), the
        mode from the model, the tool's config or ``TRANSFER_DEFAULT_MODE``."""
        configured = tool.config.get("number") or agent.transfer_number
        allowed = {n for n in [configured, *(tool.config.get("numbers") or [])] if n}
        number = configured
        if asked := str(args.get("number") or "").strip():
            try:
                asked = normalize(asked)
            except InvalidPhoneNumber:
                raise ToolError("number must be a phone number in E.164 form") from None
            if asked not in allowed:  # a caller must not talk the model into dialling anywhere
                raise ToolError("that number is not one this agent may transfer to")
            number = asked
        mode = self.transfer_mode(agent, ToolCall(tool.spec.name, args)) or "warm"
        ring = str(tool.config.get("ring_timeout_sec") or "")
        return await self.transfer(
            agent, ctx, number=number, mode=mode, reason=str(args.get("reason") or ""),
            ring_timeout_sec=min(600, max(5, int(ring))) if ring.isdigit() else None,
        )  # fmt: skip

    async def transfer(
        self,
        agent: Any,
        ctx: ToolContext,
        *,
        number: str | None,
        mode: str,
        reason: str = "",
        requested_by: str = "agent",
        ring_timeout_sec: int | None = None,
    ) -> ToolOutcome:
        """Transfer the live call to ``number`` (None: the agent's ``transfer_number``), ``warm`` or
        ``cold``. The one entry point: the ``transfer_call`` tool and a supervisor's transfer command.

        Cold: the call ends for the agent (``transferred``). Warm: this Media Stream ends and the call
        goes on in a conference (``handed_over``); ``telephony.warm_transfer`` takes it from there."""
        number = number or agent.transfer_number
        if not number:
            raise ToolError("no transfer number is configured for this agent")
        if mode not in MODES:
            raise ToolError(f"mode must be one of {', '.join(MODES)}")
        if not ctx.call_sid.startswith("CA"):
            raise ToolError("only phone calls can be transferred")
        if self.twilio.sandbox is not None and self.twilio.sandbox.of_call(ctx.call_sid) is not None:
            await self.twilio.transfer(ctx.call_sid, number)  # a scenario test: recorded, never dialled
            return ToolOutcome(True, {"transferred_to": number, "mode": mode}, say="", transferred=True)
        summary = ""
        if mode == "warm":
            summary = build_summary(
                turns=ctx.history() if ctx.history is not None else [],
                variables=ctx.dynamic_variables,
                caller_number=ctx.caller_number,
                data_fields=list(getattr(agent, "data_collection", None) or []),
                reason=reason,
                agent_name=str(getattr(agent, "name", "") or ""),
            )
        request = TransferRequest(
            ctx.conversation_id, ctx.call_sid, number, ctx.agent_number or self.settings.twilio_phone_number,
            mode=mode, summary=summary, reason=reason, requested_by=requested_by,
            ring_timeout_sec=ring_timeout_sec or self.settings.transfer_ring_timeout_sec,
        )  # fmt: skip
        try:
            row = await self.transfers.start(request)
        except TransferError as exc:
            raise ToolError(str(exc)) from None
        result = {"transferred_to": number, "mode": mode, "transfer_id": row.id}
        if mode == "cold":
            return ToolOutcome(True, result, say="", transferred=True)
        return ToolOutcome(True, result, say="", handed_over=True)

    async def _send_dtmf(self, args: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
        """Twilio plays the keys on the call, then connects a new Media Stream to the same conversation."""
        if not ctx.call_sid.startswith("CA"):
            raise ToolError("keys can only be pressed on a phone call")
        digits = str(args["digits"])
        async with self.db.session() as session:
            pressed = await session.scalar(
                select(func.count()).where(
                    ToolCallRecord.conversation_id == ctx.conversation_id,
                    ToolCallRecord.name == "send_dtmf",
                    ToolCallRecord.success.is_(True),
                )
            )
        if (pressed or 0) >= MAX_MENU_PRESSES:
            raise ToolError(f"keys were pressed {MAX_MENU_PRESSES} times on this call already")
        token = await hand_over_stream(self.db, self.settings, ctx.call_sid, ctx.conversation_id)
        # the stream's from/to as the call's answer TwiML gives them (we called: from is the agent's number)
        then = stream_connect(
            self.settings,
            ctx.call_sid,
            ctx.conversation_id,
            token,
            ctx.agent_number or "",
            ctx.caller_number or "",
        )
        try:
            await self.twilio.send_digits(ctx.call_sid, digits, then)
        except (TelephonyError, TwilioNotConfigured) as exc:
            raise ToolError(str(exc)) from None
        return ToolOutcome(True, {"digits": digits}, say="", redirected=True)

    async def _send_sms(self, tool: ResolvedTool, args: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
        to = tool.config.get("to") or ctx.caller_number
        sender = tool.config.get("number") or ctx.agent_number or self.settings.twilio_phone_number
        if not to or not sender:
            raise ToolError("no number to text from or to")
        # A fixed body the owner configured may use variables; the model's message goes out as written.
        fixed = tool.config.get("message")
        body = fill_configured(str(fixed), ctx.dynamic_variables) if fixed else str(args["message"])
        try:
            sid = await self.twilio.send_sms(to=to, from_=sender, body=body, call_sid=ctx.call_sid)
        except (TelephonyError, TwilioNotConfigured) as exc:
            raise ToolError(str(exc)) from None
        return ToolOutcome(True, {"message_sid": sid, "to": to}, say="Done, I've sent you a text.")

    async def _webhook(self, tool: ResolvedTool, call: ToolCall, ctx: ToolContext) -> ToolOutcome:
        config = tool.config
        url = fill_configured(str(config["url"]), ctx.dynamic_variables)
        try:
            await ensure_public_url(url, self.settings.webhook_allow_private)
        except UnsafeURLError as exc:
            raise ToolError(f"refused: {exc}") from None
        method = str(config.get("method", "POST")).upper()
        headers = {
            k: fill_configured(str(v), ctx.dynamic_variables)
            for k, v in (config.get("headers") or {}).items()
        }
        # The same key on every retry of this call, so a receiver can tell a retry from a second request.
        fingerprint = hashlib.sha256(json.dumps(call.arguments, sort_keys=True).encode()).hexdigest()[:16]
        headers["idempotency-key"] = f"{ctx.conversation_id}:{call.id or call.name}:{fingerprint}"
        payload = {
            "tool": call.name,
            "arguments": call.arguments,
            "conversation_id": ctx.conversation_id,
            "call_sid": ctx.call_sid,
        }
        request: dict[str, Any] = (
            {"params": {k: v if isinstance(v, str) else json.dumps(v) for k, v in call.arguments.items()}}
            if method in ("GET", "DELETE")
            else {"json": payload}
        )
        if self.sandbox is not None and (sandboxed := self.sandbox.of_conversation(ctx.conversation_id)):
            body = request.get("json") or {}
            url_sent = str(httpx.URL(url, params=request["params"])) if "params" in request else url
            sandboxed.record("tool", call.name, [{"method": method, "url": url_sent, "body": body}])
            return ToolOutcome(True, {"sandboxed": True, "note": "a scenario test: the request was not sent"})
        timeout = float(config.get("timeout_sec", 5.0))
        last_error = "no attempt"
        for attempt in range(len(RETRY_DELAYS_S) + 1):
            if attempt:
                await asyncio.sleep(RETRY_DELAYS_S[attempt - 1])
            try:
                status, body = await self._http_call(method, url, headers, timeout, request)
            except UnsafeURLError as exc:  # checked again at connect time: the name now points elsewhere
                raise ToolError(f"refused: {exc}") from None
            except httpx.TimeoutException:
                raise ToolError(
                    f"the tool did not answer within {timeout:g} s"
                ) from None  # not retried: it may be running
            except httpx.TransportError as exc:
                last_error = f"could not reach the tool ({type(exc).__name__})"
                continue
            if status >= 500:
                last_error = f"the tool answered HTTP {status}"
                continue
            if status >= 400:
                raise ToolError(f"the tool answered HTTP {status}: {body[:200]}")
            try:
                parsed = json.loads(body) if body else {}
            except json.JSONDecodeError:
                parsed = {"text": body[:2000]}
            result = parsed if isinstance(parsed, dict) else {"result": parsed}
            return ToolOutcome(True, result)
        raise ToolError(last_error)

    async def _http_call(
        self, method: str, url: str, headers: dict[str, str], timeout: float, request: dict[str, Any]
    ) -> tuple[int, str]:
        if self._http is None:
            self._http = guarded_client(
                lambda: self.settings.webhook_allow_private, headers={"user-agent": "ai-sdr-tools/1.0"}
            )
        async with self._http.stream(method, url, headers=headers, timeout=timeout, **request) as response:
            body = await read_capped(response, MAX_RESPONSE_BYTES)
            if body.truncated:
                raise ToolError(f"the tool's response is larger than {MAX_RESPONSE_BYTES // 1024} KB")
            return response.status_code, body.data.decode("utf-8", errors="replace")

    async def _record(self, agent: Any, call: ToolCall, ctx: ToolContext, outcome: ToolOutcome) -> None:
        async with self.db.session() as session:
            session.add(
                ToolCallRecord(
                    conversation_id=ctx.conversation_id,
                    name=call.name,
                    arguments=call.arguments,
                    result=outcome.result,
                    success=outcome.success,
                    error=outcome.error,
                    duration_ms=outcome.duration_ms,
                )
            )
            await self.webhooks.emit(
                session,
                "tool.executed",
                {
                    "conversation_id": ctx.conversation_id,
                    "name": call.name,
                    "arguments": call.arguments,
                    "result": outcome.result,
                    "success": outcome.success,
                    "error": outcome.error,
                    "duration_ms": round(outcome.duration_ms, 1),
                },
                agent_id=getattr(agent, "id", None),
                conversation_id=ctx.conversation_id,
            )

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
