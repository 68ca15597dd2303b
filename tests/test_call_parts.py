"""The call engine's parts, each alone: plain inputs (frames, transcript events, text), no socket."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from call.bargein import (
    Backchannel,
    BargeIn,
    BargeState,
    CommitInterruption,
    PauseAgent,
    ResumeAgent,
    TakeTurn,
    TurnSettings,
)
from call.clock import CallClock
from call.intents import Intent, detect_intent
from call.profile import AgentProfile
from call.reply_turn import ReplySource, ReplyTurn
from call.responder import GOODBYE_LINE, HOLD_LINE, Responder, may_preempt, state_after
from call.speaker import Speaker
from call.transcript import CallState, CallTranscript
from call.transport import BadMessage, Connected, Dtmf, Mark, Media, MediaStreamParser, StartMessage, Stop
from call.turns import CallerTurn, DtmfBuffer, EndOfTurn, TurnAssembler, VoiceCue
from call.watchdog import Watchdog, WatchdogAction
from providers.base import FRAME_BYTES, ChatMessage, LLMChunk, ToolCall, TranscriptEvent
from speech.audio import pcm16_to_mulaw
from speech.vad import FrameClassifier
from storage.call_store import TurnRecord

# ---------------------------------------------------------------------------------------------- transport


def test_parser_reads_each_media_streams_event() -> None:
    parse = MediaStreamParser().parse
    frame = bytes(range(160))
    payload = base64.b64encode(frame).decode()
    assert parse(json.dumps({"event": "media", "media": {"payload": payload}})) == Media(frame)
    assert parse('{"event":"mark","mark":{"name":"t1s0"}}') == Mark("t1s0")
    assert parse('{"event":"dtmf","dtmf":{"digit":"7"}}') == Dtmf("7")
    assert parse('{"event":"stop"}') == Stop()
    assert parse('{"event":"connected"}') == Connected()
    start = parse(
        '{"event":"start","streamSid":"MZ1","start":{"customParameters":{"token":"t","from":"+1"}}}'
    )
    assert start == StartMessage("MZ1", {"token": "t", "from": "+1"})


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (None, "binary message"),
        ("{not json", "malformed JSON"),
        ("[1, 2]", "message is not an object"),
        ('{"event":"media","media":{"payload":"***"}}', "bad base64"),
        ('{"event":"media","media":{}}', "media without payload"),
        ('{"event":"media","media":{"payload":""}}', "media of 0 bytes"),
        ('{"event":"dtmf","dtmf":{"digit":"x"}}', "bad dtmf digit"),
        ('{"event":"teleport"}', "unknown event 'teleport'"),
    ],
)
def test_parser_names_what_is_wrong(raw: str | None, problem: str) -> None:
    assert MediaStreamParser().parse(raw) == BadMessage(problem)


def test_parser_refuses_huge_media() -> None:
    payload = base64.b64encode(b"\xff" * (FRAME_BYTES * 51)).decode()
    event = MediaStreamParser().parse(json.dumps({"event": "media", "media": {"payload": payload}}))
    assert isinstance(event, BadMessage) and "bytes" in event.problem


# ---------------------------------------------------------------------------------------------- barge-in


def tone_frame(amplitude: float, hz: float = 220.0) -> bytes:
    """A voiced-sounding harmonic frame (a few partials) at ``amplitude`` (PCM16 peak)."""
    t = np.arange(FRAME_BYTES) / 8000
    wave = sum(np.sin(2 * np.pi * hz * k * t) / k for k in (1, 2, 3, 4))
    return pcm16_to_mulaw((wave / np.abs(wave).max() * amplitude).astype(np.int16))


class ScriptedClassifier(FrameClassifier):
    """Voicing decided by the test: frames louder than 1000 are voice."""

    def __init__(self) -> None:
        pass

    def classify(self, mulaw_frame: bytes, spectrum_above: float | None = None) -> tuple[float, bool]:
        energy = float(mulaw_frame[0]) * 100
        return energy, energy > 1000


def loud(level: int = 30) -> bytes:
    return bytes([level]) * FRAME_BYTES


def test_barge_in_pauses_on_voice_over_the_agent_then_resumes_without_words() -> None:
    barge: BargeIn[str] = BargeIn(TurnSettings(interrupt_min_energy=800), ScriptedClassifier())
    events = []
    now = 100.0
    for _ in range(5):  # 100 ms of voice while the agent talks
        energy, voiced = barge.classify(loud(), agent_speaking=True)
        events.append(barge.on_frame(energy, voiced, now, words_pending=False, quiet_s=0.0))
        now += 0.02
    pause = next(e for e in events if e is not None)
    assert isinstance(pause, PauseAgent) and 100.0 <= pause.onset < 100.1
    barge.did_pause(pause.onset, played_frame=42, turn="reply-1", now=now)
    assert barge.state is BargeState.PAUSED
    # words still pending: no resume, even after the deadline
    assert barge.on_frame(0, False, now + 2, words_pending=True, quiet_s=1.0) is None
    # no words, quiet, past the deadline: a false alarm
    assert barge.on_frame(0, False, now + 2, words_pending=False, quiet_s=1.0) == ResumeAgent("no words")
    assert barge.state is BargeState.LISTENING


def test_barge_in_ignores_voice_when_the_agent_is_silent_or_interruptions_are_off() -> None:
    for speaking, enabled in ((False, True), (True, False)):
        barge: BargeIn[str] = BargeIn(TurnSettings(interrupt_enabled=enabled), ScriptedClassifier())
        results = [
            barge.on_frame(*barge.classify(loud(), speaking), 1.0 + i * 0.02, words_pending=False, quiet_s=0)
            for i in range(10)
        ]
        assert results == [None] * 10


def test_barge_in_commits_on_two_words_not_on_a_backchannel() -> None:
    barge: BargeIn[str] = BargeIn(TurnSettings(), ScriptedClassifier())
    assert barge.on_partial("wait stop", is_backchannel=False) is None  # not paused: nothing to commit
    barge.did_pause(1.0, 10, "reply", now=1.0)
    assert barge.on_partial("uh huh", is_backchannel=True) is None
    assert barge.on_partial("wait", is_backchannel=False) is None
    assert barge.on_partial("wait stop", is_backchannel=False) == CommitInterruption()
    paused = barge.commit()
    assert paused is not None and paused.turn == "reply" and paused.played_frame == 10
    assert barge.commit() is None and barge.state is BargeState.LISTENING


# ---------------------------------------------------------------------------------------------- turn assembly


def assembler(silence_s: float = 0.3) -> tuple[TurnAssembler, CallClock]:
    clock = CallClock()
    return TurnAssembler(EndOfTurn(silence_s), clock.ms, clock.t0), clock


def test_turn_ends_after_the_final_and_the_silence() -> None:
    turns, clock = assembler()
    t = clock.t0
    for i in range(10):
        turns.on_voice(3000.0, True, t + i * 0.02)
    last_voice = t + 0.18
    assert turns.on_transcript(TranscriptEvent("partial", "I want"), last_voice, clock.t0) is False
    assert turns.words_pending
    final = TranscriptEvent("final", "I want a demo.", speech_final=False, start_s=0.0, end_s=0.2)
    assert turns.on_transcript(final, last_voice + 0.05, clock.t0) is True
    wait = turns.check(last_voice + 0.1)
    assert isinstance(wait, float) and wait == pytest.approx(0.2, abs=0.01)
    done = turns.check(last_voice + 0.31)
    assert isinstance(done, CallerTurn)
    assert done.text == "I want a demo." and done.peak_energy == 3000.0
    assert done.speech_end_ms == pytest.approx(200.0, abs=1) and done.speech_start_ms == pytest.approx(
        180.0, abs=1
    )  # the partial came first, no offset
    assert turns.check(last_voice + 1) is None and not turns.words_pending


def test_unfinished_words_hold_the_turn_longer() -> None:
    turns, clock = assembler()
    turns.on_transcript(
        TranscriptEvent("final", "I would like to talk about the", speech_final=True), clock.t0, clock.t0
    )
    held = turns.check(clock.t0 + 0.5)
    assert isinstance(held, float) and held > 0  # 1.2 s hold for an unfinished sentence
    assert isinstance(turns.check(clock.t0 + 1.3), CallerTurn)


def test_voice_cues_for_preemption_kept_talking_and_asking_for_the_final() -> None:
    turns, clock = assembler()
    t = clock.t0
    turns.on_voice(2000.0, True, t)
    turns.on_transcript(TranscriptEvent("partial", "hello there"), t, clock.t0)
    assert turns.on_voice(0.0, False, t + 0.05) == VoiceCue.NONE
    assert turns.on_voice(0.0, False, t + 0.13) == VoiceCue.QUIET_WITH_WORDS
    assert turns.on_voice(0.0, False, t + 0.6) == VoiceCue.QUIET_WITH_WORDS | VoiceCue.ASK_FINAL
    assert not turns.on_voice(0.0, False, t + 0.7) & VoiceCue.ASK_FINAL  # asked once
    cues = [turns.on_voice(2000.0, True, t + 0.8 + i * 0.02) for i in range(3)]
    assert cues[-1] == VoiceCue.KEPT_TALKING and not cues[0] & VoiceCue.KEPT_TALKING
    # The words heard at that pause are stale: the next pause must not guess a reply on them.
    assert turns.text_so_far == ""
    assert not turns.on_voice(0.0, False, t + 1.0) & VoiceCue.QUIET_WITH_WORDS


def test_dtmf_buffer_ends_on_hash_or_flush() -> None:
    buffer = DtmfBuffer()
    assert buffer.push("1") is None and buffer.push("2") is None
    assert buffer.push("#") == "12"
    assert buffer.push("#") is None
    buffer.push("9")
    assert buffer.flush() == "9" and buffer.flush() is None


# ---------------------------------------------------------------------------------------------- watchdog


def test_watchdog_prompts_then_hangs_up_on_silence_and_caps_duration() -> None:
    dog = Watchdog(started=0.0, max_duration_s=100.0, silence_timeout_s=10.0)
    assert dog.tick(5.0, last_media=4.9, last_voice=0.0, busy=False) == []
    assert dog.tick(11.0, last_media=10.9, last_voice=0.0, busy=False) == [WatchdogAction.ASK_STILL_THERE]
    assert dog.tick(15.0, last_media=14.9, last_voice=0.0, busy=False) == []
    assert dog.tick(22.0, last_media=18.0, last_voice=0.0, busy=False) == [
        WatchdogAction.KEEPALIVE,
        WatchdogAction.SILENCE_TIMEOUT,
    ]
    busy_dog = Watchdog(started=0.0, max_duration_s=100.0, silence_timeout_s=10.0)
    assert busy_dog.tick(50.0, last_media=49.9, last_voice=0.0, busy=True) == []
    assert busy_dog.tick(101.0, last_media=100.9, last_voice=99.0, busy=True) == [WatchdogAction.MAX_DURATION]


# ---------------------------------------------------------------------------------------------- transcript


class RecordingSink:
    def __init__(self) -> None:
        self.turns: list[TurnRecord] = []
        self.states: list[str] = []
        self.events: list[tuple[str, dict[str, Any]]] = []

    def save_turn(self, turn: TurnRecord) -> int:
        self.turns.append(turn)
        return len(self.turns) - 1

    def set_state(self, state: str) -> None:
        self.states.append(state)

    def emit(self, event_type: str, data: dict[str, Any]) -> None:
        self.events.append((event_type, data))


def test_transcript_records_state_changes_once_each_and_replies_with_their_source() -> None:
    sink = RecordingSink()
    transcript = CallTranscript(sink, CallClock().ms)
    transcript.set_state(CallState.DISCOVERY)
    transcript.set_state(CallState.DISCOVERY)
    transcript.set_state(CallState.ACTIVE)
    assert sink.states == ["DISCOVERY", "ACTIVE"]
    turn = ReplyTurn(1, "what does it cost?", 0, source=ReplySource.KNOWLEDGE, planned=["It is $49 a month."])
    turn.timings.update(knowledge_answer_ms=120.0, retrieval_dur_ms=30.0)
    assert transcript.save_reply(turn) and not transcript.save_reply(turn)
    record = sink.turns[-1]
    assert (record.source, record.knowledge_answer_ms, record.retrieval_ms) == ("knowledge", 120.0, 30.0)
    assert record.llm_first_token_ms is None
    assert [m.role for m in transcript.history] == ["user", "assistant"]


def test_transcript_stores_a_cut_reply_as_heard() -> None:
    sink = RecordingSink()
    transcript = CallTranscript(sink, CallClock().ms)
    turn = ReplyTurn(2, "hi", 0, planned=["We help teams sell more.", "Want a demo?"])
    transcript.save_cut_reply(turn, "We help teams")
    assert sink.turns[-1].interrupted and sink.turns[-1].text == "We help teams"
    assert transcript.history[-1] == ChatMessage("assistant", "We help teams —")


# ---------------------------------------------------------------------------------------------- speaker


class WireSink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    async def send_media(self, frame: bytes) -> None:
        self.sent.append(("media", frame))

    async def send_mark(self, name: str) -> None:
        self.sent.append(("mark", name))

    async def send_clear(self) -> None:
        self.sent.append(("clear", None))


class FrameTTS:
    """Each sentence → 10 frames of audio."""

    name = "frames"

    def __init__(self) -> None:
        self.spoken: list[str] = []

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[bytes]:
        self.spoken.append(text)
        yield b"\x7f" * FRAME_BYTES * 10


@pytest.mark.asyncio
async def test_speaker_plays_sentences_marks_them_and_knows_what_was_heard() -> None:
    sink, tts = WireSink(), FrameTTS()
    speaker = Speaker(sink, CallClock().ms)
    speaker.use(tts, None)
    speaker.start()
    try:
        turn = ReplyTurn(1, "", None)
        turn.timings["user_speech_end_ms"] = 0.0
        await speaker.say(turn, ["Hello there, this is Ava from **Acme**.", "How are you?"])
        assert tts.spoken == ["Hello there, this is Ava from Acme.", "How are you?"]  # markdown cleaned
        await asyncio.sleep(0.1)
        assert speaker.is_speaking and not speaker.idle
        deadline = asyncio.get_running_loop().time() + 3
        while len(marks := [name for kind, name in sink.sent if kind == "mark"]) < 2:
            assert asyncio.get_running_loop().time() < deadline, sink.sent
            await asyncio.sleep(0.02)
        assert marks == ["t1s0", "t1s1"] and [k for k, _ in sink.sent].count("media") == 20
        assert speaker.is_speaking  # until the caller's side confirms playback
        for name in marks:
            speaker.on_mark(name)
        await asyncio.wait_for(speaker.wait_played(turn), 2)
        assert speaker.idle and not speaker.is_speaking
        assert turn.planned == ["Hello there, this is Ava from **Acme**.", "How are you?"]
        assert (
            turn.audio_started and turn.timings["first_frame_sent_ms"] >= turn.timings["tts_first_audio_ms"]
        )
        assert speaker.heard(turn, 10) == "Hello there, this is Ava from **Acme**."
        assert speaker.heard(turn, 15) == "Hello there, this is Ava from **Acme**. How"
    finally:
        await speaker.stop()


@pytest.mark.asyncio
async def test_speaker_holds_a_preemptive_reply_until_it_may_be_heard() -> None:
    sink = WireSink()
    speaker = Speaker(sink, CallClock().ms)
    speaker.use(FrameTTS(), None)
    speaker.start()
    try:
        turn = ReplyTurn(1, "", None, go=asyncio.Event())
        task = asyncio.create_task(speaker.say(turn, ["Sure."]))
        await asyncio.sleep(0.2)
        assert "tts_first_audio_ms" in turn.timings and sink.sent == [] and not task.done()
        turn.go.set()
        await asyncio.wait_for(task, 1)
        await asyncio.sleep(0.1)
        assert sink.sent and sink.sent[0][0] == "media"
    finally:
        await speaker.stop()


class StreamingTTS:
    """A reply's sentence streams its audio and stalls half-way (its segment stays open); the last line
    comes in 200 ms chunks that yield to the loop between them (as the echo TTS and real ones do)."""

    name = "streaming"

    def __init__(self) -> None:
        self.stalled = asyncio.Event()

    async def synthesize(self, text: str, *, voice: str | None = None) -> AsyncIterator[bytes]:
        if text.startswith("A reply"):
            yield b"\x11" * FRAME_BYTES * 10
            self.stalled.set()
            await asyncio.Event().wait()  # the rest of the sentence never comes
        for _ in range(3):
            yield b"\x22" * FRAME_BYTES * 10
            await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_the_last_line_stops_the_reply_being_synthesized_and_owns_its_frames() -> None:
    """A voicemail message starting while a reply is still being synthesized: the reply's open sentence
    must close where its audio ends (its task ended before the line speaks) and what is left of it is
    cleared; otherwise its mark goes out after the line's first frames and claims them (the far end
    then counts part of the message as the reply's: the AMD bench's 94.8-99.7 % "heard" cases)."""
    from call.replies import Replies

    sink, tts = WireSink(), StreamingTTS()
    speaker = Speaker(sink, CallClock().ms)
    speaker.use(tts, None)
    speaker.start()
    replies = Replies(speaker, CallTranscript(RecordingSink(), CallClock().ms))

    async def echo_marks() -> None:  # the far end: every mark back as it arrives
        seen = 0
        while True:
            for kind, name in sink.sent[seen:]:
                if kind == "mark":
                    speaker.on_mark(name)
            seen = len(sink.sent)
            await asyncio.sleep(0.01)

    far_end = asyncio.create_task(echo_marks())
    try:
        replies.say("A reply to the greeting's words.", kind="speech")
        await asyncio.wait_for(tts.stalled.wait(), 1)
        await asyncio.sleep(0.05)  # some of the reply is on the wire
        await asyncio.wait_for(replies.say_last("The message.", "voicemail"), 5)
        sent = list(sink.sent)
    finally:
        far_end.cancel()
        await speaker.stop()
    first_line_frame = next(i for i, (kind, data) in enumerate(sent) if kind == "media" and data[0] == 0x22)
    line_turn = replies.current
    assert line_turn is not None and line_turn.hang_up_after == "voicemail"
    marks_after = [name for kind, name in sent[first_line_frame:] if kind == "mark"]
    assert marks_after and all(name.startswith(f"t{line_turn.turn_id}s") for name in marks_after), sent
    assert sum(kind == "media" and data[0] == 0x22 for kind, data in sent) == 30  # the whole line
    assert sum(kind == "clear" for kind, _ in sent) == 1  # the reply's queued rest is dropped


@pytest.mark.asyncio
async def test_silencing_the_agent_for_a_machine_does_not_open_the_call_again() -> None:
    """A caller's interruption opens a closing call again (they have more to say); the agent silenced
    because a machine answered does not: the machine's late words must get no answer before its message."""
    from call.replies import Replies

    speaker = Speaker(WireSink(), CallClock().ms)
    transcript = CallTranscript(RecordingSink(), CallClock().ms)
    replies = Replies(speaker, transcript)
    for reopen, state in ((True, CallState.ACTIVE), (False, CallState.COMPLETION)):
        transcript.set_state(CallState.COMPLETION)
        await replies.interrupted(None, 0, reopen=reopen)
        assert transcript.state == state


# ---------------------------------------------------------------------------------------------- responder


class ScriptedLLM:
    name = "scripted"

    def __init__(self, replies: list[list[LLMChunk]]) -> None:
        self.replies = replies
        self.seen: list[list[ChatMessage]] = []

    async def stream_chat(self, messages: list[ChatMessage], **_: Any) -> AsyncIterator[LLMChunk]:
        self.seen.append(messages)
        for chunk in self.replies.pop(0):
            yield chunk


class FakeSpeaker:
    def __init__(self) -> None:
        self.said: list[str] = []

    async def say(self, turn: ReplyTurn, lines: list[str]) -> None:
        turn.planned.extend(lines)
        self.said.extend(lines)

    async def speak(self, turn: ReplyTurn, sentences: asyncio.Queue[str | None]) -> None:
        while (s := await sentences.get()) is not None:
            turn.planned.append(s)
            self.said.append(s)

    async def wait_played(self, turn: ReplyTurn) -> None:
        return None


class FakeTools:
    def __init__(self) -> None:
        self.calls: list[ToolCall] = []

    def filler_for(self, name: str) -> str:
        return "One moment."

    def transfer_mode(self, agent: Any, call: ToolCall) -> str | None:
        return None  # no transfer tool here

    async def execute(self, agent: Any, call: ToolCall, ctx: Any) -> Any:
        self.calls.append(call)
        # What the runner gives for end_call: no line of its own (None: "the LLM words the result").
        return SimpleNamespace(success=True, duration_ms=1.0, say=None, result={}, error=None, ends_call=True)


def responder_for(
    llm: ScriptedLLM,
    *,
    documents: list[Any] | None = None,
    profile: AgentProfile | None = None,
    tools: Any = None,
) -> tuple[Responder, FakeSpeaker, CallTranscript, Any]:
    agent = SimpleNamespace(id="a1", documents=documents or [], llm_model=None, temperature=0.2)
    profile = profile or AgentProfile(agent, "You are Ava.", "Hi!", TurnSettings(), [], {})
    speaker, tools = FakeSpeaker(), tools or FakeTools()
    transcript = CallTranscript(RecordingSink(), CallClock().ms)
    transcript.set_state(CallState.DISCOVERY)
    settings = SimpleNamespace(llm_timeout_sec=5.0, llm_first_token_timeout_sec=3.0, llm_max_tokens=100)
    responder = Responder(
        profile=profile, llm=llm, speaker=speaker, transcript=transcript, tool_runner=tools,  # type: ignore[arg-type]
        tool_context=None, knowledge=None, settings=settings, ms=CallClock().ms,  # type: ignore[arg-type]
    )  # fmt: skip
    return responder, speaker, transcript, tools


@pytest.mark.asyncio
async def test_responder_streams_the_llm_reply_sentence_by_sentence() -> None:
    llm = ScriptedLLM([[LLMChunk("We help SDR teams. "), LLMChunk("Want to see a demo?")]])
    responder, speaker, transcript, _ = responder_for(llm)
    turn = ReplyTurn(1, "What do you do?", 0)
    await responder.answer(turn, Intent.QUESTION)
    assert speaker.said == ["We help SDR teams.", "Want to see a demo?"]
    assert turn.source is ReplySource.LLM and "llm_first_token_ms" in turn.timings
    assert transcript.state is CallState.ACTIVE  # the first real question moves the call on
    assert llm.seen[0][-1] == ChatMessage("user", "What do you do?")


@pytest.mark.asyncio
async def test_responder_falls_back_when_the_llm_fails() -> None:
    from providers.base import LLMError

    class Failing(ScriptedLLM):
        async def stream_chat(self, messages: list[ChatMessage], **_: Any) -> AsyncIterator[LLMChunk]:
            raise LLMError("down")
            yield LLMChunk()

    responder, speaker, _, _ = responder_for(Failing([]))
    turn = ReplyTurn(1, "hello?", 0)
    await responder.answer(turn, Intent.OTHER)
    assert speaker.said == ["Sorry, could you say that again?"] and turn.source is ReplySource.FALLBACK


@pytest.mark.asyncio
async def test_responder_says_goodbye_on_a_second_no_and_runs_the_tools_the_llm_calls() -> None:
    responder, speaker, transcript, _ = responder_for(ScriptedLLM([]))
    transcript.history.append(ChatMessage("user", "I'm not interested."))
    turn = ReplyTurn(2, "Really, not interested.", 1)
    await responder.answer(turn, Intent.NOT_INTERESTED)
    assert speaker.said == [GOODBYE_LINE] and turn.hang_up_after == "agent_goodbye"
    assert turn.source is ReplySource.FIXED_LINE and transcript.state is CallState.COMPLETION

    llm = ScriptedLLM([[LLMChunk("Okay, bye.", tool_calls=[ToolCall("end_call", {"reason": "done"})])]])
    responder, speaker, transcript, tools = responder_for(llm)
    turn = ReplyTurn(3, "That's all, thanks.", 2)
    await responder.llm_reply(turn, Intent.OTHER)
    assert tools.calls == [ToolCall("end_call", {"reason": "done"})]
    assert turn.hang_up_after == "agent_ended_call" and turn.source is ReplySource.TOOL
    assert "tool_result_ms" in turn.timings
    assert speaker.said == ["Okay, bye."]  # its own goodbye, not a second one
    assert len(llm.seen) == 1  # the model is not asked to word "the call ended"

    # Ended without a word: the agent still says goodbye, once.
    llm = ScriptedLLM([[LLMChunk("", tool_calls=[ToolCall("end_call", {})])]])
    responder, speaker, _, _ = responder_for(llm)
    turn = ReplyTurn(4, "We're done.", 3)
    await responder.llm_reply(turn, Intent.OTHER)
    assert speaker.said == [GOODBYE_LINE] and turn.hang_up_after == "agent_ended_call"


@pytest.mark.asyncio
async def test_asked_to_wait_the_agent_says_so_without_an_llm_turn() -> None:
    llm = ScriptedLLM([[LLMChunk("Waiting is a great idea because our product...")]])
    responder, speaker, _, _ = responder_for(llm)
    turn = ReplyTurn(1, "Actually, wait.", 0)
    intent = detect_intent(turn.user_text)
    assert intent == Intent.HOLD and not may_preempt(intent, sounds_finished=True)
    await responder.answer(turn, intent)
    assert speaker.said == [HOLD_LINE] and llm.seen == [] and turn.source is ReplySource.FIXED_LINE


@pytest.mark.asyncio
async def test_a_preemptive_reply_dropped_while_the_llm_streams_stops_its_held_speech() -> None:
    """A guess on a pause is cancelled mid-stream: its speech (waiting for ``go``, which never comes)
    ends with it instead of waiting forever (and being destroyed pending)."""

    class SlowLLM(ScriptedLLM):
        async def stream_chat(self, messages: list[ChatMessage], **_: Any) -> AsyncIterator[LLMChunk]:
            yield LLMChunk("Sure, we can do that. ")
            await asyncio.sleep(10)
            yield LLMChunk("More.")

    class HoldingSpeaker(FakeSpeaker):
        speaking: asyncio.Task[None] | None = None

        async def speak(self, turn: ReplyTurn, sentences: asyncio.Queue[str | None]) -> None:
            self.speaking = asyncio.current_task()
            await sentences.get()
            await turn.go.wait()  # as Speaker.speak holds a preemptive reply's first audio

    responder, _, _, _ = responder_for(SlowLLM([]))
    speaker = responder.speaker = HoldingSpeaker()  # type: ignore[assignment]
    turn = ReplyTurn(1, "Can we talk", None, go=asyncio.Event())
    reply = asyncio.create_task(responder.llm_reply(turn, Intent.OTHER))
    await asyncio.sleep(0.05)
    assert speaker.speaking is not None and not speaker.speaking.done()
    reply.cancel()
    await asyncio.wait_for(asyncio.gather(reply, return_exceptions=True), 1)
    assert reply.cancelled() and speaker.speaking.cancelled()


def test_state_and_preemption_rules() -> None:
    assert state_after(CallState.DISCOVERY, Intent.QUESTION) is CallState.ACTIVE
    assert state_after(CallState.DISCOVERY, Intent.HELLO) is CallState.DISCOVERY
    assert state_after(CallState.COMPLETION, Intent.QUESTION) is CallState.COMPLETION
    assert may_preempt(Intent.QUESTION, sounds_finished=True)
    assert not may_preempt(Intent.QUESTION, sounds_finished=False)
    assert not may_preempt(Intent.BOOK_MEETING, sounds_finished=True)


# ---------------------------------------------------------------------------------------------- registry


@pytest.mark.asyncio
async def test_registry_enforces_capacity_and_drains() -> None:
    from call.registry import ConnectionManager

    class Call:
        def __init__(self, sid: str) -> None:
            self.call_sid, self.end_reason = sid, "caller_hung_up"
            self.closed = asyncio.Event()

        def snapshot(self) -> dict[str, Any]:
            return {"call_sid": self.call_sid}

        async def hang_up(self, reason: str, *, heard_first: bool = True) -> None:
            assert not heard_first  # a shutdown does not wait for replies to play out
            self.end_reason = reason
            self.closed.set()

        async def wait_closed(self) -> None:
            await self.closed.wait()

    post_calls: list[str] = []

    async def post_call(conversation_id: str) -> None:
        post_calls.append(conversation_id)

    registry = ConnectionManager(lambda: 2, post_call=post_call)
    a, b, c = Call("CA1"), Call("CA2"), Call("CA3")
    assert registry.register(a) and registry.register(b) and not registry.register(c)
    assert not registry.register(Call("CA1"))  # a call sid is live once
    registry.unregister(b)
    assert registry.register(c) and registry.snapshot() == [{"call_sid": "CA1"}, {"call_sid": "CA3"}]
    registry.schedule_post_call("conv1")
    await registry.drain(timeout=1)
    assert a.end_reason == c.end_reason == "server_shutdown" and post_calls == ["conv1"]
    assert not registry.has_capacity()


def test_barge_in_judges_a_finished_caller_turn() -> None:
    barge: BargeIn[str] = BargeIn(TurnSettings(interrupt_min_energy=800), ScriptedClassifier())
    judge = barge.on_caller_turn
    # "uh-huh" while the agent talks is not a turn; when it had paused the agent, the agent plays on
    assert judge(speech=True, backchannel=True, agent_speaking=True, peak_energy=2000) == Backchannel(
        resumed=False
    )
    barge.did_pause(1.0, 5, "reply", now=1.0)
    assert judge(speech=True, backchannel=True, agent_speaking=False, peak_energy=2000) == Backchannel(
        resumed=True
    )
    assert barge.state is BargeState.LISTENING
    # words while paused: the interruption is real
    barge.did_pause(2.0, 9, "reply", now=2.0)
    assert (
        judge(speech=True, backchannel=False, agent_speaking=False, peak_energy=2000) == CommitInterruption()
    )
    barge.commit()
    # loud words over the agent that the detector let pass take the turn; a far-off voice does not
    assert judge(speech=True, backchannel=False, agent_speaking=True, peak_energy=2000) == TakeTurn()
    assert judge(speech=True, backchannel=False, agent_speaking=True, peak_energy=300) is None
    assert judge(speech=False, backchannel=False, agent_speaking=True, peak_energy=2000) is None  # keypad
    assert judge(speech=True, backchannel=False, agent_speaking=False, peak_energy=2000) is None
    off: BargeIn[str] = BargeIn(TurnSettings(interrupt_enabled=False), ScriptedClassifier())
    assert off.on_caller_turn(speech=True, backchannel=False, agent_speaking=True, peak_energy=9000) is None


@pytest.mark.asyncio
async def test_take_me_off_your_list_goes_on_the_list_even_after_a_no() -> None:
    """A compliance duty: the do-not-call request wins over the second-"no" goodbye, tools or not."""
    from call.intents import detect_intent

    for text in ("Take me off your list.", "Please stop calling me.", "Don't call me again, ever."):
        assert detect_intent(text) is Intent.DO_NOT_CALL, text
    assert detect_intent("We're not interested, thanks.") is Intent.NOT_INTERESTED
    responder, speaker, transcript, tools = responder_for(ScriptedLLM([]))
    transcript.history.append(ChatMessage("user", "I'm not interested."))
    turn = ReplyTurn(2, "Take me off your list.", 1)
    await responder.answer(turn, detect_intent(turn.user_text))
    assert tools.calls == [ToolCall("add_to_dnc", {"reason": "Take me off your list."})]
    assert turn.hang_up_after == "agent_ended_call" and GOODBYE_LINE in speaker.said
