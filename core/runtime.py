"""The long-lived services of one running process, created at start-up and shared by routes and calls."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from typing import Any

from api.auth import KeyRing
from call.registry import ConnectionManager
from config import Settings
from core.live_calls import LiveCallDirectory
from core.metrics import LoopLagMonitor
from events.post_call import run_post_call
from events.webhooks import WebhookDispatcher
from knowledge.store import KnowledgeStore
from providers.registry import ProviderRegistry
from storage.batch_writer import BatchWriter
from storage.db import Database
from storage.recovery import Recovery, recover
from telephony.dialer import Dialer
from telephony.twilio_gateway import TwilioGateway
from tools.runner import ToolRunner

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database_url)
        self.keyring = KeyRing(settings)
        self.providers = ProviderRegistry(settings)
        self.knowledge = KnowledgeStore(settings)
        self.webhooks = WebhookDispatcher(self.db, settings)
        self.writer = BatchWriter(self.db, after_commit=self.webhooks_notify)  # the call path's writes
        self.twilio = TwilioGateway(settings)
        self.instance_id = settings.this_instance
        self.live_calls = LiveCallDirectory(
            self.db, self.writer, self.instance_id, settings.live_call_heartbeat_sec
        )
        self.calls = ConnectionManager(
            lambda: settings.max_concurrent_calls, post_call=self.post_call, on_change=self.live_calls.changed
        )
        self.draining = False
        self.recovery = Recovery()  # what start() found left open by an unclean stop
        self._drain_task: asyncio.Task[None] | None = None
        self._previous_sigterm: Any = None
        self.tool_runner = ToolRunner(settings, self.db, self.twilio, self.webhooks)
        self.loop_lag = LoopLagMonitor()
        self.dialer = Dialer(self, self.webhooks)  # campaigns: places calls through telephony.outbound

    async def start(self) -> None:
        self.loop_lag.start()
        await self.db.upgrade()
        await self.keyring.load(self.db)
        # Before live_calls.start() forgets this instance's old rows: they name the calls a crash cut off.
        self.recovery = await recover(
            self.db,
            multi_instance=self.settings.is_multi_instance,
            instance_id=self.instance_id,
            heartbeat_sec=self.settings.live_call_heartbeat_sec,
        )
        await self.webhooks.start()
        self.writer.start()
        for conversation_id in self.recovery.closed:  # their call.completed, in the background
            self.calls.schedule_post_call(conversation_id)
        await self.live_calls.start(self.calls)
        self.dialer.start()
        self.knowledge.start_indexer(self.db, live_calls=lambda: self.calls.active)
        self.providers.warm_in_background()
        if self.settings.warm_embeddings:
            self._warm_knowledge = asyncio.create_task(self.knowledge.warm(), name="warm-embeddings")
        await self.wait_warm(self.settings.warm_start_wait_sec)

    async def wait_warm(self, timeout_s: float) -> bool:
        """Wait (at most ``timeout_s``) for every model to be warm; True when they are.

        Start-up waits here, so the port opens once a call would find its models warm. Past the timeout
        the service starts anyway: a call that comes meanwhile is served (slower), and /readyz says 503.
        """
        tasks = [
            t for t in (self.providers.warm_task, getattr(self, "_warm_knowledge", None)) if t is not None
        ]
        started = time.perf_counter()
        if tasks and timeout_s > 0:
            await asyncio.wait(tasks, timeout=timeout_s)
        ready = all(t.done() for t in tasks)
        log.info(
            "warm start" if ready else "starting before the models are warm",
            extra={"fields": {"waited_s": round(time.perf_counter() - started, 2)}},
        )
        return ready

    def readiness(self) -> dict[str, bool]:
        """Loading the embedding model imports torch, which holds the GIL for seconds: a call served
        meanwhile stutters, so the process is not ready until it is done. Draining, it takes no calls."""
        checks = {"accepting_calls": not self.draining}
        if self.settings.warm_embeddings:
            warm = getattr(self, "_warm_knowledge", None)
            checks["embeddings_loaded"] = warm is not None and warm.done() and warm.exception() is None
        return checks

    # ------------------------------------------------------------ SIGTERM: drain, then exit

    def install_sigterm_drain(self) -> None:
        """On SIGTERM, drain (``drain()``) before handing the signal to whoever handled it before us
        (uvicorn's graceful shutdown). A second SIGTERM skips the wait."""
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        self._previous_sigterm = signal.getsignal(signal.SIGTERM)
        try:
            loop.add_signal_handler(signal.SIGTERM, self._on_sigterm)
        except (NotImplementedError, RuntimeError, ValueError):
            self._previous_sigterm = None

    def _restore_sigterm(self) -> None:
        if self._previous_sigterm is None:
            return
        previous, self._previous_sigterm = self._previous_sigterm, None
        try:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
        except RuntimeError:
            pass
        signal.signal(signal.SIGTERM, previous)

    def _on_sigterm(self) -> None:
        if self._drain_task is None:
            self._drain_task = asyncio.create_task(self._drain_then_exit(), name="sigterm-drain")
        else:
            log.warning("second SIGTERM: ending live calls now")
            self._pass_sigterm_on()

    async def _drain_then_exit(self) -> None:
        try:
            await self.drain(self.settings.drain_timeout_sec)
        finally:
            self._pass_sigterm_on()

    def _pass_sigterm_on(self) -> None:
        previous = self._previous_sigterm
        self._restore_sigterm()
        if callable(previous):
            previous(signal.SIGTERM, None)
        elif previous == signal.SIG_DFL:
            signal.raise_signal(signal.SIGTERM)

    async def drain(self, timeout: float) -> None:
        """Take no new calls (``/readyz`` answers 503 at once, so the balancer sends them elsewhere),
        let live calls finish for up to ``timeout`` seconds, end the rest, flush the write-behind."""
        self.draining = True
        log.info("draining", extra={"fields": {"live_calls": self.calls.active, "timeout_s": timeout}})
        idle = await self.calls.wait_idle(timeout)
        if not idle:
            log.warning("drain time is up: ending live calls", extra={"fields": {"live": self.calls.active}})
            await self.calls.drain()
        await self.writer.flush()
        log.info("drained")

    def webhooks_notify(self) -> None:
        """Wake the webhook worker after a transaction that emitted events has committed."""
        self.webhooks.notify()

    async def post_call(self, conversation_id: str) -> None:
        """After hang-up: summary, outcome and collected data, then `call.completed`."""
        await run_post_call(self, conversation_id)
        self.webhooks_notify()
        self.dialer.notify()  # a campaign call's outcome may now be known

    async def stop(self) -> None:
        self._restore_sigterm()
        warm = getattr(self, "_warm_knowledge", None)
        if warm is not None and not warm.done():
            warm.cancel()
        await self.dialer.stop()
        await self.knowledge.stop_indexer()
        await self.calls.drain()
        await self.live_calls.stop()
        await self.writer.stop()
        await self.webhooks.stop()
        await self.tool_runner.aclose()
        await self.twilio.aclose()
        await self.providers.aclose()
        self.knowledge.close()
        await self.db.dispose()
        await self.loop_lag.stop()
