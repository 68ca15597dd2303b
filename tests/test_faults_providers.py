"""Provider faults in the middle of a call, through the real service (uvicorn in the test's loop), the
real SDKs (``deepgram-sdk``, ``ollama``, httpx) and local stand-ins that speak the providers' protocols:

- the Deepgram listen socket drops mid-utterance: every caller byte reaches speech-to-text, no word lost;
- the LLM answers 500, hangs, or streams garbage (bad JSON, no words): a short spoken fallback, stored
  with source ``fallback``, and the next turn is answered normally;
- TTS fails on one sentence (HTTP 500 at the handshake, socket cut): retried once, else skipped, and
  the rest of the reply is spoken; one log line per failed sentence, no API key in any log line;
- the webhook receiver is down for an hour (the clock is moved, not waited for): every delivery is
  retried with backoff past the hour and delivered once when it is back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio
from sqlalchemy import select

from speech.audio import pcm16_to_mulaw
from tests.conftest import LiveServer, make_settings
from tests.deepgram_standin import DeepgramStandIn
from tests.ollama_standin import DEFAULT_MODEL, OllamaStandIn
from tests.phone_line import PhoneLine
from tests.test_telephony import NUMBER, conversation, make_agent
from utils import JsonLogFormatter

KEY = "dg-fault-key-7c1e94b2"
FALLBACKS = {"Sorry, could you say that again?", "Sorry, I missed that. Could you say it once more?"}


def speech(seconds: float, seed: int) -> bytes:
    """Loud noise shaped like a syllable train: above every speech threshold, and never repeating (so
    a stretch of it identifies where in the call it was sent)."""
    rng = np.random.default_rng(seed)
    n = int(8000 * seconds)
    envelope = 0.6 + 0.4 * np.abs(np.sin(np.arange(n) * np.pi * 4 / 8000))
    return pcm16_to_mulaw((rng.normal(0, 6000, n) * envelope).clip(-32000, 32000).astype(np.int16))


class Captured(logging.Handler):
    """Every log record of the service, formatted as it would be written (the app's JSON lines)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonLogFormatter())
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))

    def named(self, message: str) -> list[logging.LogRecord]:
        return [r for r in self.records if r.getMessage() == message]


@dataclass
class Rig:
    server: LiveServer
    client: httpx.AsyncClient
    http: httpx.AsyncClient
    deepgram: DeepgramStandIn
    ollama: OllamaStandIn
    logs: Captured


@pytest_asyncio.fixture
async def rig(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    transcripts: list[str] = request.param
    async with DeepgramStandIn(KEY, transcripts=transcripts) as deepgram, OllamaStandIn() as ollama:
        settings = make_settings(
            tmp_path,
            stt_provider="deepgram",
            tts_provider="deepgram",
            llm_provider="ollama",
            deepgram_api_key=KEY,
            deepgram_url=deepgram.url,
            deepgram_endpointing_ms=300,
            deepgram_utterance_end_ms=1000,
            ollama_host=ollama.url,
            ollama_model=DEFAULT_MODEL,
            llm_first_token_timeout_sec=1.0,
            preemptive_replies=False,  # one LLM request per caller turn: each fault hits the turn meant
        )
        async with LiveServer(settings) as server, server.client() as client:
            logs = Captured()
            logging.getLogger().addHandler(logs)  # after start-up: the app's logging set-up is done
            try:
                async with httpx.AsyncClient(timeout=30) as http:
                    await make_agent(client)
                    yield Rig(server, client, http, deepgram, ollama, logs)
            finally:
                logging.getLogger().removeHandler(logs)


async def turns(rig: Rig, line: PhoneLine) -> list[dict[str, Any]]:
    await line.hang_up()
    return (await conversation(rig.client, line.conversation_id))["transcript"]


def no_secret_logged(rig: Rig) -> None:
    assert rig.logs.lines and not [line for line in rig.logs.lines if KEY in line]


# ---------------------------------------------------------------- speech-to-text


STT_SCRIPT = ["Hello there", "Tell me what the starter plan costs per month", "Thanks, that helps"]


@pytest.mark.asyncio
@pytest.mark.parametrize("rig", [STT_SCRIPT], indirect=True)
async def test_deepgram_listen_socket_dropping_mid_utterance_loses_no_caller_words(rig: Rig) -> None:
    line = await PhoneLine(rig.server.base_url, "CA" + "f1" * 16, NUMBER).start(rig.http)
    await line.wait_reply(1)  # the greeting
    line.say(speech(0.8, seed=1))
    await line.wait_reply(2)
    second = speech(1.6, seed=2)
    # Cut the socket halfway through the second utterance: its words are not final yet.
    rig.deepgram.drop_after_bytes = len(line.sent) + len(second) // 2
    line.say(second)
    await line.wait_reply(3)
    line.say(speech(0.8, seed=3))
    await line.wait_reply(4)
    transcript = await turns(rig, line)

    # Every caller byte reached Deepgram: the first socket got the call up to the drop, the second one
    # everything from what Deepgram had not yet confirmed (a replay) to the end; no gap between them.
    first, second_socket = rig.deepgram.listens
    assert first.dropped and not second_socket.dropped
    sent = bytes(line.sent)
    assert bytes(first.audio) == sent[: len(first.audio)]
    replay_from = len(sent) - len(second_socket.audio)
    assert bytes(second_socket.audio) == sent[replay_from:]
    lost_ms = max(0, replay_from - len(first.audio)) // 8
    assert lost_ms == 0, f"{lost_ms} ms of caller audio never reached speech-to-text"
    assert replay_from > 0  # the replay starts where Deepgram had confirmed, not at the call's start
    print(
        f"\nlisten socket dropped: {(len(first.audio) - replay_from) // 8} ms replayed, {lost_ms} ms lost, "
        f"{len(sent) // 8} ms of caller audio in all"
    )

    said = [t["text"] for t in transcript if t["role"] == "user"]
    assert said == STT_SCRIPT  # each utterance once, whole
    replies = [t for t in transcript if t["role"] == "agent" and t["kind"] != "greeting"]
    assert [t["text"] for t in replies] == [f"You said: {s}." for s in STT_SCRIPT]
    [reconnected] = rig.logs.named("deepgram stt reconnected")
    assert reconnected.levelno == logging.WARNING
    assert reconnected.fields["call_sid"] == line.call_sid  # type: ignore[attr-defined]
    no_secret_logged(rig)


# ---------------------------------------------------------------- LLM


LLM_SCRIPT = ["Hello there", "Who are you", "What do you offer", "Is it expensive", "How does it work"]


@pytest.mark.asyncio
@pytest.mark.parametrize("rig", [LLM_SCRIPT], indirect=True)
async def test_llm_500_hang_and_garbage_get_a_spoken_fallback_and_the_next_turn_works(rig: Rig) -> None:
    ollama = rig.ollama
    faults: list[tuple[str, Any]] = [
        ("http_500", lambda: setattr(ollama, "fail", "model runner crashed")),
        ("hang", lambda: setattr(ollama, "first_token_delay", 3.0)),  # > the 1 s deadline
        ("invalid_json", lambda: setattr(ollama, "garbage", "invalid_json")),
        ("empty", lambda: setattr(ollama, "garbage", "empty")),
        ("recovered", lambda: None),
    ]
    line = await PhoneLine(rig.server.base_url, "CA" + "f2" * 16, NUMBER).start(rig.http)
    await line.wait_reply(1)
    gaps: dict[str, float] = {}
    for n, (name, inject) in enumerate(faults, start=1):
        ollama.fail, ollama.first_token_delay, ollama.garbage = None, 0.0, None
        inject()
        line.say(speech(0.8, seed=10 + n))
        await line.wait_speech_sent()
        spoke_at = asyncio.get_running_loop().time()
        reply = await line.wait_reply(n + 1, timeout=15)
        gaps[name] = reply.first_frame_at - spoke_at
    transcript = await turns(rig, line)

    # Every caller turn was answered, and the hang did not cost more than the first-token deadline.
    assert gaps["hang"] < 1.0 + 1.5, gaps  # deadline 1 s + endpointing + TTS first audio
    replies = [t for t in transcript if t["role"] == "agent" and t["kind"] != "greeting"]
    assert [(t["kind"], t["source"]) for t in replies] == [("fallback", "fallback")] * 4 + [("speech", "llm")]
    assert {t["text"] for t in replies[:4]} <= FALLBACKS
    assert all(a["text"] != b["text"] for a, b in itertools.pairwise(replies[:4]))  # not twice alike
    assert replies[4]["text"] == f"You said: {LLM_SCRIPT[4]}."
    assert [t["text"] for t in transcript if t["role"] == "user"] == LLM_SCRIPT
    errors = [r.fields["error"] for r in rig.logs.named("llm turn failed")]  # type: ignore[attr-defined]
    assert errors == ["LLMError", "first token deadline", "LLMError", "EmptyReply"]
    assert ollama.hangups >= 1  # the hung request was abandoned, not left open
    no_secret_logged(rig)


# ---------------------------------------------------------------- TTS


TTS_SCRIPT = ["Hello there. Tell me about pricing", "Tell me about onboarding. And support please"]


@pytest.mark.asyncio
@pytest.mark.parametrize("rig", [TTS_SCRIPT], indirect=True)
async def test_tts_failing_on_one_sentence_skips_or_retries_it_and_speaks_the_rest(rig: Rig) -> None:
    dg = rig.deepgram
    line = await PhoneLine(rig.server.base_url, "CA" + "f3" * 16, NUMBER).start(rig.http)
    await line.wait_reply(1)
    # Turn 1: the sentence about pricing has its socket cut, and again on the retry: it is skipped.
    dg.speak_fail_text, dg.speak_fail_times = "pricing", 2
    line.say(speech(0.8, seed=21))
    first = await line.wait_reply(2)
    # Turn 2: the first sentence's handshake gets HTTP 500 once: the retry speaks it.
    dg.speak_fail_text, dg.speak_fail_times = None, 0
    dg.speak_reject_next = 1
    line.say(speech(0.8, seed=22))
    second = await line.wait_reply(3)
    transcript = await turns(rig, line)

    replies = [t for t in transcript if t["role"] == "agent" and t["kind"] != "greeting"]
    assert [t["text"] for t in replies] == ["You said: Hello there.", "You said: " + TTS_SCRIPT[1] + "."]
    assert [t["full_text"] for t in replies] == [t["text"] for t in replies]  # what was planned was said
    assert dg.speak_faults == 3
    # What the caller heard: the spoken sentences' audio, in full.
    frame = 160
    assert first.frames == DeepgramStandIn.expected_tts_bytes("You said: Hello there.") // frame
    expected = sum(
        DeepgramStandIn.expected_tts_bytes(s) // frame
        for s in ("You said: Tell me about onboarding.", "And support please.")
    )
    assert second.frames == expected
    failed = rig.logs.named("tts sentence failed")
    outcomes = [(r.fields["outcome"], r.fields["call_sid"]) for r in failed]  # type: ignore[attr-defined]
    assert outcomes == [("skipped", line.call_sid), ("retried", line.call_sid)]
    assert all(r.levelno == logging.WARNING for r in failed)
    no_secret_logged(rig)


# ---------------------------------------------------------------- webhooks


@pytest.mark.asyncio
async def test_webhook_receiver_down_for_an_hour_gets_everything_later_exactly_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default retry settings; the dispatcher's clock is moved to each next attempt, so an hour of
    outage takes a second."""
    import events.webhooks as webhooks
    from models import WebhookConfig, WebhookDelivery
    from storage.db import Database
    from tests.webhook_receiver import WebhookReceiver
    from utils import utcnow

    settings = make_settings(tmp_path)
    db = Database(settings.database_url)
    await db.upgrade()
    clock = {"now": utcnow()}
    monkeypatch.setattr(webhooks, "utcnow", lambda: clock["now"])
    dispatcher = webhooks.WebhookDispatcher(db, settings)
    secret = "whsec_outage_0123456789"
    async with WebhookReceiver(secret) as receiver:
        async with db.session() as session:
            session.add(WebhookConfig(url=receiver.url, secret=secret))
        await dispatcher.start(worker=False)
        try:
            receiver.down = True
            down_from = clock["now"]
            back_at = down_from + timedelta(hours=1)
            event_ids = []
            for i in range(20):
                async with db.session() as session:
                    event_ids.append(
                        await dispatcher.emit(
                            session, "call.completed", {"n": i}, agent_id=None, conversation_id=f"conv_{i}"
                        )
                    )
            attempts: dict[str, list[Any]] = {}  # delivery id -> when each attempt was made
            while True:
                async with db.session() as session:
                    before = dict(
                        (await session.execute(select(WebhookDelivery.id, WebhookDelivery.attempts))).all()
                    )
                await dispatcher.deliver_due()
                async with db.session() as session:
                    rows = (await session.execute(select(WebhookDelivery))).scalars().all()
                for row in rows:
                    if row.attempts > before[row.id]:
                        attempts.setdefault(row.id, []).append(clock["now"])
                pending = [r for r in rows if r.status == "pending"]
                if not pending:
                    break
                clock["now"] = max(clock["now"], min(r.next_attempt_at for r in pending))
                if receiver.down and clock["now"] >= back_at:
                    receiver.down = False
        finally:
            await dispatcher.stop()
            await db.dispose()

    assert {r.status for r in rows} == {"delivered"}  # none given up on during the hour
    assert sorted(receiver.deliveries) == sorted(event_ids)
    assert set(receiver.deliveries.values()) == {1}  # each exactly once
    cap = webhooks.BACKOFF_CAP_S * 1.25
    for times in attempts.values():
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        assert times[-2] < back_at <= times[-1]  # tried through the hour, delivered after it
        assert (times[-1] - back_at).total_seconds() <= cap  # and soon after it came back
        assert all(b > a for a, b in itertools.pairwise(gaps[:8]))  # backing off …
        assert max(gaps) <= cap  # … up to the cap
    print(
        f"\nwebhook outage 1 h: {len(receiver.deliveries)}/{len(event_ids)} delivered, "
        f"duplicates {sum(receiver.deliveries.values()) - len(receiver.deliveries)}, "
        f"{receiver.refused} refused attempts, attempts per delivery "
        f"{min(map(len, attempts.values()))}-{max(map(len, attempts.values()))}, last delivered "
        f"{max((t[-1] - back_at).total_seconds() for t in attempts.values()):.0f} s after the receiver was back"
    )
