"""The registry of this process's live calls: capacity, the live view, post-call work, draining."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from core.metrics import CALLS_ACTIVE, CALLS_TOTAL


class LiveCall(Protocol):
    """What the registry needs of a call (``voice_pipeline.WSConn`` is one)."""

    call_sid: str

    @property
    def end_reason(self) -> str: ...

    def snapshot(self) -> dict[str, Any]: ...

    async def hang_up(self, reason: str, *, heard_first: bool = True) -> None: ...

    async def wait_closed(self) -> None: ...


PostCallHook = Callable[[str], Awaitable[None]]
# Told of every call taken and let go ("register" / "unregister"): the cross-instance live-calls table.
ChangeHook = Callable[[str, LiveCall], None]
# Several instances: whether another one still holds a stream of this call (``call.live_calls``).
HeldElsewhere = Callable[[str], Awaitable[bool]]


class ConnectionManager:
    """Live calls of this process: MAX_CONCURRENT_CALLS, the live list, post-call tasks, drain."""

    def __init__(
        self,
        max_calls: Callable[[], int],
        post_call: PostCallHook | None = None,
        on_change: ChangeHook | None = None,
        held_elsewhere: HeldElsewhere | None = None,
    ) -> None:
        self._held_elsewhere = held_elsewhere
        self._max_calls = max_calls  # read per call: tests and operators may change the setting live
        self._post_call_hook = post_call
        self._on_change = on_change
        self.calls: dict[str, LiveCall] = {}
        self._post_call: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.accepting = True
        # Media Streams sockets accepted but not yet a live call (no valid start yet): capped, so idle
        # sockets cannot pile up. The route holds a place before the upgrade; ``register`` frees it.
        self._pending: set[LiveCall] = set()

    @property
    def active(self) -> int:
        return len(self.calls)

    def has_capacity(self) -> bool:
        return self.accepting and self.active < self._max_calls()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def hold_pending(self, call: LiveCall, limit: int) -> bool:
        if len(self._pending) >= limit:
            return False
        self._pending.add(call)
        return True

    def release_pending(self, call: LiveCall) -> None:
        self._pending.discard(call)

    def register(self, call: LiveCall) -> bool:
        if not self.has_capacity() or call.call_sid in self.calls:
            return False
        self.calls[call.call_sid] = call
        self._pending.discard(call)
        self._idle.clear()
        CALLS_ACTIVE.set(len(self.calls))
        if self._on_change is not None:
            self._on_change("register", call)
        return True

    async def wait_gone(self, call_sid: str, timeout_s: float) -> None:
        """Until the call's previous stream is over (a call redirected to a new Media Stream), at most
        ``timeout_s``: one call, one live stream. With several instances, also when the previous stream
        is on another one (the balancer sent the new stream elsewhere): it has written the leg's turns
        by the time it lets go, so the turn numbers go on from them."""
        deadline = time.monotonic() + timeout_s
        while call_sid in self.calls and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if self._held_elsewhere is None:
            return
        while time.monotonic() < deadline and await self._held_elsewhere(call_sid):  # noqa: ASYNC110  (another process)
            await asyncio.sleep(0.05)

    def unregister(self, call: LiveCall) -> None:
        if self.calls.get(call.call_sid) is call:
            del self.calls[call.call_sid]
            if not self.calls:
                self._idle.set()
            CALLS_ACTIVE.set(len(self.calls))
            CALLS_TOTAL.labels(call.end_reason).inc()
            if self._on_change is not None:
                self._on_change("unregister", call)

    def snapshot(self) -> list[dict[str, Any]]:
        return [call.snapshot() for call in list(self.calls.values())]

    def schedule_post_call(self, conversation_id: str) -> None:
        if self._post_call_hook is None:
            return
        task = asyncio.create_task(self._post_call_hook(conversation_id), name=f"post-call-{conversation_id}")
        self._post_call.add(task)
        task.add_done_callback(self._post_call.discard)

    async def wait_idle(self, timeout: float) -> bool:
        """Stop taking calls and wait (up to ``timeout``) for the live ones to end on their own, and for
        their post-call work. True if none is left."""
        self.accepting = False
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        if self._post_call:
            await asyncio.wait(self._post_call, timeout=max(1.0, timeout))
        return not self.calls

    async def drain(self, timeout: float = 10.0) -> None:
        """Stop taking calls, end live ones (their state is saved), finish post-call work."""
        self.accepting = False
        for call in list(self.calls.values()):
            await call.hang_up("server_shutdown", heard_first=False)  # now, not after the reply
        waits = [asyncio.create_task(c.wait_closed()) for c in list(self.calls.values())]
        if waits:
            await asyncio.wait(waits, timeout=timeout)
        if self._post_call:
            await asyncio.wait(self._post_call, timeout=timeout)
