"""Scenario-test calls run sandboxed: what they would have sent to the world is recorded, never sent.

A scenario run opens a ``SandboxedCall`` for its call SID before the call starts; the inbound webhook
binds the conversation it creates to it. The places where a call reaches outside the service ask the
sandbox first, by call SID or conversation id: the webhook outbox (``call.*``, ``tool.executed``…
events), the Twilio gateway (texts, transfers, hang-ups) and the tool runner (webhook tools). For a
sandboxed call they append the request they would have made (URL, method, body) to
``would_have_sent`` and return as if it had been done.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

REMEMBERED = 1000  # finished sandboxed calls still recognised (a late event of theirs is dropped, not sent)


@dataclass(slots=True)
class SandboxedCall:
    call_sid: str
    agent_id: str
    conversation_id: str | None = None
    version_id: str | None = None  # the agent version the call runs (None: the agent's latest)
    # {"kind": "webhook_event" | "twilio" | "tool", "name": ..., "requests": [{"method", "url", "body"}, ...]}
    would_have_sent: list[dict[str, Any]] = field(default_factory=list)

    _more: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def record(self, kind: str, name: str, requests: list[dict[str, Any]]) -> None:
        self.would_have_sent.append({"kind": kind, "name": name, "requests": requests})
        self._more.set()

    def recorded(self, kind: str, name: str) -> bool:
        return any(r["kind"] == kind and r["name"] == name for r in self.would_have_sent)

    async def wait_recorded(self, kind: str, name: str, timeout_s: float) -> bool:
        """Wait (at most ``timeout_s``) until such a request is recorded; whether it was."""
        try:
            async with asyncio.timeout(timeout_s):
                while not self.recorded(kind, name):
                    self._more.clear()
                    await self._more.wait()
        except TimeoutError:
            return False
        return True


class Sandbox:
    """This process's sandboxed calls. In-process is enough: a scenario run calls its own socket."""

    def __init__(self) -> None:
        self._by_sid: OrderedDict[str, SandboxedCall] = OrderedDict()
        self._by_conversation: OrderedDict[str, SandboxedCall] = OrderedDict()

    def open(self, call_sid: str, agent_id: str, version_id: str | None = None) -> SandboxedCall:
        call = SandboxedCall(call_sid, agent_id, version_id=version_id)
        _remember(self._by_sid, call_sid, call)
        return call

    def bind(self, call: SandboxedCall, conversation_id: str) -> None:
        call.conversation_id = conversation_id
        _remember(self._by_conversation, conversation_id, call)

    def of_call(self, call_sid: str | None) -> SandboxedCall | None:
        return self._by_sid.get(call_sid) if call_sid else None

    def of_conversation(self, conversation_id: str | None) -> SandboxedCall | None:
        return self._by_conversation.get(conversation_id) if conversation_id else None


def _remember(table: OrderedDict[str, SandboxedCall], key: str, call: SandboxedCall) -> None:
    table[key] = call
    while len(table) > REMEMBERED:
        table.popitem(last=False)
