"""The long-lived services of one running process, created at start-up and shared by routes and calls."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from typing import Any

from api.auth import KeyRing
from call.live_calls import LiveCallDirectory
from call.registry import ConnectionManager, LiveCall
from call.seat import SeatHub
from config import Settings
from core.metrics import TURN_MODEL, LoopLagMonitor
from core.sandbox import Sandbox
from events.post_call import run_post_call
from events.webhooks import WebhookDispatcher
from knowledge.store import KnowledgeStore
from providers.registry import ProviderRegistry
from speech.turn_model import TurnJudge
from storage.batch_writer import BatchWriter
from storage.commands import CommandChannel
from storage.db import Database
from storage.recovery import Recovery, recover
from telephony.dialer import Dialer
from telephony.twilio_gateway import TwilioGateway
from telephony.warm_transfer import Transfers
from tools.runner import ToolRunner

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database_url)
        self.keyring = KeyRing(settings)
        self.providers = ProviderRegistry(settings)
        self.knowledge = KnowledgeStore(settings)
        self.sandbox = Sandbox()  # scenario-test calls: what they would send is recorded, not sent
        self.webhooks = WebhookDispatcher(self.db, settings, self.sandbox)
        self.writer = BatchWriter(self.db, after_commit=self.webhooks_notify)  # the call path's writes
        self.twilio = TwilioGateway(settings, self.sandbox)
        self.instance_id = settings.this_instance
        self.live_calls = LiveCallDirectory(
            self.db,
            self.writer,
            self.instance_id,
            settings.live_call_heartbeat_sec,
            close_lost=settings.is_multi_instance,
            instance_url=settings.this_instance_url,
        )
        self.seats = SeatHub(settings.seat_listener_queue)  # the supervisor seat: listeners, take-over
        self.calls = ConnectionManager(
            lambda: settings.max_concurrent_calls, post_call=self.post_call, on_change=self._call_changed
        )
        self.commands = CommandChannel(self.db, self.instance_id, settings.call_command_poll_sec)
        self.draining = False
        self.recovery = Recovery()  # what start() found left open by an unclean stop
        self._drain_task: asyncio.Task[None] | None = None
        self._previous_sigterm: Any = None
        # transfers to a person: a warm one settles on Twilio's callbacks, on any instance
        self.transfers = Transfers(settings, self.db, self.twilio, on_ended=self.calls.schedule_post_call)
        self.tool_runner = ToolRunner(
            settings, self.db, self.twilio, self.webhooks, self.sandbox, transfers=self.transfers
        )
        self.loop_lag = LoopLagMonitor()
        self.dialer = Dialer(self, self.webhooks)  # campaigns: places calls through telephony.outbound
        self._background: set[asyncio.Task[None]] = set()  # greetings being prepared
        self.test_run_lock = asyncio.Lock()  # scenario test runs share the process's models: one at a time
        self.turn_judge: TurnJudge | None = None  # the turn-end model, shared by calls (TURN_MODEL)
        if settings.turn_model != "off":
            self.turn_judge = TurnJudge(
                settings.turn_model_path or None,
                max_queued=settings.turn_model_max_queued,
                on_decision=TURN_MODEL.observe,
            )

    def _call_changed(self, change: str, call: LiveCall) -> None:
        self.live_calls.changed(change, call)
        self.seats.changed(change, call)

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
        await self.commands.start()
        self.dialer.start()
        self.knowledge.start_indexer(self.db, live_calls=lambda: self.calls.active)
        self.providers.warm_in_background()
        if self.settings.warm_embeddings:
            self._warm_knowledge = asyncio.create_task(self.knowledge.warm(), name="warm-embeddings")
        if self.turn_judge is not None:
            self._warm_turn_model = asyncio.create_task(self._warm_judge(), name="warm-turn-model")
        self._warm_greetings = asyncio.create_task(self._prepare_greetings(), name="warm-greetings")
        await self.wait_warm(self.settings.warm_start_wait_sec)

    async def wait_warm(self, timeout_s: float) -> bool:
        """Wait (at most ``timeout_s``) for every model to be warm; True when they are.

        Start-up waits here, so the port opens once a call would find its models warm. Past the timeout
        the service starts anyway: a call that comes meanwhile is served (slower), and /readyz says 503.
        """
        warming = (self.providers.warm_task, getattr(self, "_warm_knowledge", None))
        extra = (getattr(self, "_warm_turn_model", None), getattr(self, "_warm_greetings", None))
        tasks = [t for t in (*warming, *extra) if t is not None]
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
        if self.turn_judge is not None:
            checks["turn_model_loaded"] = self.turn_judge.ready
        return checks

    def prepare_greeting(self, agent_id: str | None) -> None:
        """A call is being accepted: synthesize its agent's greeting meanwhile, when the greeting is
        fixed (no {{variables}}) and its TTS keeps a phrase cache (the embedded Piper does), so the
        stream finds it ready. Never delays the webhook: runs after it."""
        if agent_id:
            task = asyncio.get_running_loop().create_task(self._prepare_greeting(agent_id))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _prepare_greetings(self, limit: int = 20) -> None:
        """At start, after the speech models are warm: the fixed greetings of the most recently updated
        agents, so the first call after boot greets from memory too."""
        from sqlalchemy import select

        from models import Agent

        if self.providers.warm_task is not None:
            await asyncio.wait([self.providers.warm_task])
        try:
            async with self.db.session() as session:
                ids = list(
                    await session.scalars(select(Agent.id).order_by(Agent.updated_at.desc()).limit(limit))
                )
        except Exception as exc:
            log.warning("greetings not prepared", extra={"fields": {"error": type(exc).__name__}})
            return
        for agent_id in ids:
            await self._prepare_greeting(agent_id)

    async def _prepare_greeting(self, agent_id: str) -> None:
        from call.speaker import spoken_pieces
        from models import Agent

        try:
            async with self.db.session() as session:
                agent = await session.get(Agent, agent_id)
            text = (agent.first_message or "").strip() if agent is not None else ""
            if agent is None or not text or "{{" in text:
                return
            tts = self.providers.tts((agent.providers or {}).get("tts"))
            prepare = getattr(tts, "prepare", None)
            if prepare is not None:
                for piece in spoken_pieces(text):
                    await prepare(piece, agent.voice_id)
        except Exception as exc:  # a nicety: the call synthesizes it itself
            log.warning("greeting not prepared", extra={"fields": {"error": type(exc).__name__}})

    async def _warm_judge(self) -> None:
        """Load the turn-end model and run it once; a call meanwhile (or if it fails) uses the words alone."""
        assert self.turn_judge is not None
        started = time.perf_counter()
        try:
            await self.turn_judge.warm()
        except Exception as exc:
            self.turn_judge = None  # no model: silence and the words decide, as with TURN_MODEL=off
            log.error("turn model failed to load", extra={"fields": {"error": type(exc).__name__}})
            return
        log.info("turn model warm", extra={"fields": {"seconds": round(time.perf_counter() - started, 2)}})

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
        for name in ("_warm_knowledge", "_warm_greetings"):
            warm = getattr(self, name, None)
            if warm is not None and not warm.done():
                warm.cancel()
        await self.dialer.stop()
        await self.knowledge.stop_indexer()
        await self.calls.drain()
        await self.commands.stop()
        await self.live_calls.stop()
        await self.writer.stop()
        await self.webhooks.stop()
        await self.tool_runner.aclose()
        await self.transfers.aclose()
        await self.twilio.aclose()
        await self.providers.aclose()
        if self.turn_judge is not None:
            self.turn_judge.close()
        self.knowledge.close()
        await self.db.dispose()
        await self.loop_lag.stop()
