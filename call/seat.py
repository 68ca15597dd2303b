"""The supervisor seat's view of live calls: who listens to which call, and what they are sent.

``SeatHub`` (one per process) holds a ``CallFeed`` for each call this instance serves. A feed sends its
listeners the call in Twilio's style as it happens: the caller's audio (``inbound``) as it arrives, the
agent's (``outbound``) as it is sent, and the call's events (transcript, stage, tool, control, end).
Each listener has a bounded queue: one that falls behind is dropped (its socket is closed), never the
call. Per frame, the message is built once for every listener, and only while someone listens.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from call.transcript import CallTranscript
from call.transport import listen_event, listen_media
from providers.base import STTSession

log = logging.getLogger("ai_sdr.call")


class Seated(Protocol):
    """What the seat needs of a call's supervisor part (``call.supervisor.Supervisor``)."""

    async def take_audio(self, frame: bytes) -> None: ...

    async def close(self) -> None: ...


class Listener:
    """One listening socket's queue of messages; None closes it."""

    __slots__ = ("dropped", "queue")

    def __init__(self, limit: int) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(limit)
        self.dropped = False  # fell behind: its socket is closed

    def _end(self, last: str | None = None) -> None:
        """Close it after ``last``: whatever it has not read is dropped with it."""
        while not self.queue.empty():
            self.queue.get_nowait()
        if last is not None:
            self.queue.put_nowait(last)
        self.queue.put_nowait(None)


class CallFeed:
    """One live call's listeners."""

    def __init__(self, conversation_id: str, owner: object, queue_limit: int) -> None:
        self.conversation_id = conversation_id
        self.owner = owner  # the call (``voice_pipeline.WSConn``) this feed belongs to
        self.queue_limit = queue_limit
        self.listeners: list[Listener] = []
        self.supervisor: Seated | None = None  # the call's supervisor part: take-over audio goes there
        self.ended = False
        self.closed = asyncio.Event()  # set with ``ended``: the take-over socket closes then
        self.dropped = 0  # listeners dropped for falling behind
        self.stage = ""  # the call's stage now: a new listener is told it first

    def listen(self) -> Listener | None:
        if self.ended:
            return None
        listener = Listener(self.queue_limit)
        if self.stage:
            listener.queue.put_nowait(listen_event("stage", stage=self.stage))
        self.listeners.append(listener)
        return listener

    def leave(self, listener: Listener) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)

    def publish(self, message: str) -> None:
        slow: list[Listener] = []
        for listener in self.listeners:
            try:
                listener.queue.put_nowait(message)
            except asyncio.QueueFull:
                slow.append(listener)
        for listener in slow:  # dropped, never waited for
            self.listeners.remove(listener)
            listener.dropped = True
            listener._end()
            self.dropped += 1
            fields = {"conversation_id": self.conversation_id}
            log.info("seat listener dropped: too slow", extra={"fields": fields})

    # ------------------------------------------------------------ what the call hands over (cheap)

    def inbound(self, chunk: bytes) -> None:
        if self.listeners:
            self.publish(listen_media("inbound", chunk))

    def outbound(self, frame: bytes, _at: float) -> None:
        if self.listeners:
            self.publish(listen_media("outbound", frame))

    def event(self, kind: str, fields: dict[str, Any]) -> None:
        if kind == "stage":
            self.stage = fields["stage"]
        if self.listeners:
            self.publish(listen_event(kind, **fields))

    def close(self, reason: str) -> None:
        """The call is over: every listener gets the ``end`` event, then its socket closes."""
        if self.ended:
            return
        self.ended = True
        self.closed.set()
        end = listen_event("end", reason=reason)
        for listener in self.listeners:
            if listener.queue.qsize() <= self.queue_limit - 2:  # it keeps up: it reads all, then the end
                listener.queue.put_nowait(end)
                listener.queue.put_nowait(None)
            else:
                listener._end(end)
        self.listeners.clear()


class SeatHub:
    """This instance's live calls as the supervisor seat sees them (by conversation id)."""

    def __init__(self, queue_limit: int = 100) -> None:
        self.queue_limit = queue_limit
        self._feeds: dict[str, CallFeed] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def open(self, conversation_id: str, owner: object) -> CallFeed:
        feed = self._feeds[conversation_id] = CallFeed(conversation_id, owner, self.queue_limit)
        return feed

    def feed(self, conversation_id: str) -> CallFeed | None:
        return self._feeds.get(conversation_id)

    def changed(self, change: str, call: Any) -> None:
        """The call registry's hook: a call let go closes its feed (``end``) and its supervisor part."""
        if change != "unregister":
            return
        conversation_id = getattr(call, "conversation_id", "")
        feed = self._feeds.get(conversation_id)
        if feed is None or feed.owner is not call:
            return
        del self._feeds[conversation_id]
        feed.close(call.end_reason)
        if feed.supervisor is not None:
            task = asyncio.get_running_loop().create_task(feed.supervisor.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)


class HeardSTT:
    """The call's STT session, with its interim words shown to listeners as they come."""

    def __init__(self, inner: STTSession, transcript: CallTranscript) -> None:
        self._inner = inner
        self._transcript = transcript
        self.send_audio = inner.send_audio  # per frame: no lookup through __getattr__

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def events(self) -> Any:
        async for event in self._inner.events():
            if event.kind == "partial" and event.text and self._transcript.observer is not None:
                self._transcript.partial("user", event.text)
            yield event
