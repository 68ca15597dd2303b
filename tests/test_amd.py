"""Answering-machine detection: the detector on real synthesized audio, and outbound calls end to end."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from call.amd import AmdDecision, AnsweredBy, AnsweringMachineDetector, GreetingOver, is_voicemail_text
from providers.base import FRAME_BYTES, SAMPLE_RATE
from simulator.caller import SimulatedCaller, Utterance, frames_of
from speech.audio import pcm16_to_mulaw, silence
from speech.vad import FrameClassifier
from tests.conftest import QUICK_ECHO_VOICE, LiveServer, make_settings

NUMBER = "+15550100001"
LEAD = "+15550107777"


def beep(hz: float = 1000.0, seconds: float = 0.5) -> bytes:
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    return pcm16_to_mulaw((np.sin(2 * np.pi * hz * t) * 9000).astype(np.int16))


@pytest.fixture(scope="module")
def voices() -> dict[str, bytes]:
    from simulator.speech import synthesize_caller

    lines = {
        "hello": "Hello?",
        "dana": "Yeah, this is Dana.",
        "greeting": "Hi, you've reached Dana Smith at Northwind. I'm away from my desk right now, "
        "so please leave your name and number and I will call you back.",
        "short_vm": "Hi, it's Sam.",
    }
    return {key: synthesize_caller(text, steady=True) for key, text in lines.items()}


def detect(audio: bytes, words: list[tuple[float, str]] | None = None) -> AnsweringMachineDetector:
    detector = AnsweringMachineDetector()
    classifier = FrameClassifier(3)
    pending = list(words or [])
    for i in range(0, len(audio) - FRAME_BYTES + 1, FRAME_BYTES):
        now = (i + FRAME_BYTES) / SAMPLE_RATE
        while pending and pending[0][0] <= now:
            detector.on_text(pending.pop(0)[1])
        frame = audio[i : i + FRAME_BYTES]
        detector.on_frame(frame, *classifier.classify(frame))
    return detector


def test_a_person_saying_hello_is_a_human_soon_after(voices: dict[str, bytes]) -> None:
    for key in ("hello", "dana"):
        detector = detect(silence(400) + voices[key] + silence(3000))
        decision = detector.decision
        assert decision is not None and decision.answered_by is AnsweredBy.HUMAN, (key, decision)
        spoken = 0.4 + len(voices[key]) / SAMPLE_RATE
        assert spoken < decision.at_s < spoken + 1.2  # decided in the quiet after the words


def test_a_long_greeting_is_a_machine_and_its_beep_ends_it(voices: dict[str, bytes]) -> None:
    audio = silence(300) + voices["greeting"] + silence(400) + beep() + silence(2000)
    detector = detect(audio)
    assert detector.decision is not None
    assert detector.decision.answered_by is AnsweredBy.MACHINE
    assert detector.decision.method == "greeting_length" and detector.decision.at_s < 5.0
    beep_end = 0.3 + len(voices["greeting"]) / SAMPLE_RATE + 0.4 + 0.5
    over = detector.greeting_over
    assert over is not None and over.reason == "beep" and beep_end < over.at_s < beep_end + 0.5


def test_a_beep_alone_or_a_phrase_decides_machine(voices: dict[str, bytes]) -> None:
    tone_only = detect(silence(800) + beep(850, 0.4) + silence(2500))
    assert tone_only.decision == AmdDecision(AnsweredBy.MACHINE, "beep", tone_only.decision.at_s)  # type: ignore[union-attr]
    # a short recorded greeting sounds like a person, until its words say voicemail
    short = silence(300) + voices["short_vm"] + silence(700) + silence(3000)
    assert detect(short).decision.answered_by is AnsweredBy.HUMAN  # type: ignore[union-attr]
    revised = detect(short, words=[(2.5, "Hi, it's Sam. Please leave a message after the tone.")])
    assert revised.decision is not None and revised.decision.answered_by is AnsweredBy.MACHINE
    assert revised.decision.method == "phrase"


def test_a_pure_tone_in_speech_band_only_counts_when_steady() -> None:
    rng = np.random.default_rng(1)
    warble = np.concatenate(
        [np.sin(2 * np.pi * f * np.arange(160) / SAMPLE_RATE) * 9000 for f in rng.uniform(400, 2000, 40)]
    )
    detector = detect(pcm16_to_mulaw(warble.astype(np.int16)) + silence(500))
    assert detector.decision is None or detector.decision.method != "beep"


def test_background_voices_do_not_make_a_person_a_machine(voices: dict[str, bytes]) -> None:
    from simulator.speech import scale

    chatter = scale(voices["greeting"], -15) * 2  # ~14 s of other people talking in the room
    hello = silence(500) + voices["dana"] + silence(11000)  # then waits for the agent
    mixed = np.clip(_pcm(hello) + _pcm(chatter[: len(hello)]), -32768, 32767).astype(np.int16)
    decision = detect(pcm16_to_mulaw(mixed)).decision
    # never "machine"; a person at the latest when the room has talked on past the deadline
    assert decision is not None and decision.answered_by is AnsweredBy.HUMAN, decision
    assert decision.at_s <= 10.1


def _pcm(mulaw: bytes) -> np.ndarray:
    from speech.audio import MULAW_TO_PCM16

    return MULAW_TO_PCM16[np.frombuffer(mulaw, dtype=np.uint8)].astype(np.float32)


def test_nobody_speaking_is_unknown_and_a_talking_machine_still_gets_its_message() -> None:
    quiet = detect(silence(7000))
    assert quiet.decision is not None and quiet.decision.answered_by is AnsweredBy.UNKNOWN
    detector = AnsweringMachineDetector(greeting_max_wait_s=2.0)
    detector.on_text("you have reached the voicemail of Dana")
    events = [detector.on_frame(b"\xff" * FRAME_BYTES, 0.0, False) for _ in range(150)]
    assert GreetingOver("timeout", 2.0) in events or any(isinstance(e, GreetingOver) for e in events)


def watch(
    audio: bytes, agent_windows: list[tuple[float, float]], silent_s: float = 3.5
) -> tuple[AnsweringMachineDetector, list[AmdDecision | GreetingOver]]:
    """``detect`` with the agent's voice on the line during ``agent_windows`` (seconds, the call's clock)
    and the silent-after-greeting rule on; every event the detector returned."""
    detector = AnsweringMachineDetector(silent_after_greeting_s=silent_s)
    clock = {"t": 0.0}
    detector.agent_speaking = lambda: any(a <= clock["t"] < b for a, b in agent_windows)
    classifier = FrameClassifier(3)
    events = []
    for i in range(0, len(audio) - FRAME_BYTES + 1, FRAME_BYTES):
        clock["t"] = (i + FRAME_BYTES) / SAMPLE_RATE
        frame = audio[i : i + FRAME_BYTES]
        if (event := detector.on_frame(frame, *classifier.classify(frame))) is not None:
            events.append(event)
    return detector, events


def test_a_short_greeting_nobody_follows_after_the_agent_spoke_is_a_machine(voices: dict[str, bytes]) -> None:
    """ "Hi, it's Sam." and quiet: a person by its length; nothing said after the agent's greeting (2.5 s
    of it, from 2.5 s on) makes it a machine 3.5 s after the greeting ended, then the greeting is over."""
    hello_end = 0.3 + len(voices["short_vm"]) / SAMPLE_RATE
    audio = silence(300) + voices["short_vm"] + silence(12000)
    greeting = (hello_end + 0.8, hello_end + 3.3)
    _, events = watch(audio, [greeting])
    assert isinstance(events[0], AmdDecision) and events[0].answered_by is AnsweredBy.HUMAN
    revised = events[1]
    assert isinstance(revised, AmdDecision) and revised.answered_by is AnsweredBy.MACHINE
    assert revised.method == "silent_after_greeting"
    assert greeting[1] + 3.4 <= revised.at_s <= greeting[1] + 3.7, revised
    assert isinstance(events[2], GreetingOver) and events[2].at_s - revised.at_s < 0.1
    # the rule off (0 s), or no agent voice known: the hello stays a person
    assert watch(audio, [greeting], silent_s=0)[0].decision.answered_by is AnsweredBy.HUMAN  # type: ignore[union-attr]
    assert watch(audio, [])[0].decision.answered_by is AnsweredBy.HUMAN  # type: ignore[union-attr]


def test_a_person_who_answers_the_greeting_is_never_revised_by_later_silence(
    voices: dict[str, bytes],
) -> None:
    """ "Hello?" … the greeting … "Yeah, this is Dana." 0.6 s after it (and then a long silence while they
    think): a person for good. Their "Hello?" again over the greeting is no answer, the one after is."""
    hello = voices["hello"]
    hello_end = 0.3 + len(hello) / SAMPLE_RATE
    greeting = (hello_end + 0.8, hello_end + 3.3)
    gap_ms = int((greeting[1] + 0.6 - hello_end) * 1000)
    audio = silence(300) + hello + silence(gap_ms) + voices["dana"] + silence(10000)
    detector, events = watch(audio, [greeting])
    assert [(e.answered_by, e.method) for e in events] == [(AnsweredBy.HUMAN, "short_greeting")]  # type: ignore[union-attr]
    # said twice, the second over the greeting, then the answer after it
    over_ms = int((greeting[0] + 0.3 - hello_end) * 1000)
    twice = silence(300) + hello + silence(over_ms) + hello
    twice += silence(int((greeting[1] + 1.2) * 1000) - len(twice) // 8) + voices["dana"] + silence(8000)
    detector, events = watch(twice, [greeting])
    assert detector.decision is not None and detector.decision.answered_by is AnsweredBy.HUMAN, events


def test_a_greeting_that_talks_on_over_the_agent_is_still_a_machine_once_quiet(
    voices: dict[str, bytes],
) -> None:
    """The recording's next sentence plays over the agent's greeting (the agent is cut, and answers it):
    speech that started while the agent spoke answers nothing; quiet after the agent's reply decides."""
    hello_end = 0.3 + len(voices["short_vm"]) / SAMPLE_RATE
    greeting = (hello_end + 0.75, hello_end + 1.6)  # cut by the recording's next sentence
    reply = (hello_end + 3.6, hello_end + 5.6)  # the agent's answer to those words
    audio = silence(300) + voices["short_vm"] + silence(800) + voices["dana"] + silence(12000)
    detector, events = watch(audio, [greeting, reply])
    decision = detector.decision
    assert decision is not None and decision.method == "silent_after_greeting", events
    assert reply[1] + 3.4 <= decision.at_s <= reply[1] + 3.7


@pytest.mark.parametrize(
    ("text", "voicemail"),
    [
        ("Please leave a message after the tone.", True),
        ("I can't take your call right now.", True),
        ("You've reached the mailbox of", True),
        ("Hello, who's this?", False),
        ("Yeah, I got your message, thanks.", False),
        ("Leave it with me, I'll check.", False),
    ],
)
def test_voicemail_phrases(text: str, voicemail: bool) -> None:
    assert is_voicemail_text(text) is voicemail


# ---------------------------------------------------------------------------------------------- calls


async def outbound_call(
    tmp_path: Path,
    audio_frames: list[bytes],
    *,
    script: list[Utterance] | None = None,
    settings: dict[str, Any] | None = None,
    variables: dict[str, Any] | None = None,
    **agent: Any,
) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """An outbound call answered by ``audio_frames`` (or a ``script`` of turns): (conversation detail,
    caller result, answered_by row)."""
    from models import Conversation

    log_level = os.environ.get("AMD_TEST_LOG", "WARNING")
    # the agent's echo voice at QUICK_ECHO_VOICE's pace (what the far end hears of it is measured against
    # ``synthesized_s`` at the same pace)
    overrides = {**QUICK_ECHO_VOICE, **(settings or {})}
    async with (
        LiveServer(make_settings(tmp_path, log_level=log_level, **overrides)) as server,
        server.client() as client,
    ):
        body = {
            "name": "Ava",
            "system_prompt": "You are Ava from Orbit CRM.",
            "first_message": "Hi {{customer_name}}, this is Ava from Orbit CRM.",
            **agent,
        }
        created = await client.post("/v1/convai/agents", json=body)
        assert created.status_code == 201, created.text
        async with server.runtime.db.session() as session:
            conversation = Conversation(
                agent_id=created.json()["agent_id"],
                direction="outbound",
                from_number=NUMBER,
                to_number=LEAD,
                dynamic_variables=variables or {"customer_name": "Dana"},
            )
            session.add(conversation)
        caller = SimulatedCaller(
            server.base_url,
            "CA" + "a7" * 16,
            LEAD,
            script or [Utterance(audio_frames)],
            from_number=NUMBER,
            webhook_path=f"/twiml/voice_outbound?conversation_id={conversation.id}",
            answers_first=True,
        )
        import httpx

        async with httpx.AsyncClient() as http:
            result = await caller.run(http)
        assert result.error is None, result.error
        for _ in range(100):
            detail = (await client.get(f"/v1/convai/conversations/{conversation.id}")).json()
            if detail.get("call_state") == "ENDED":
                break
            await asyncio.sleep(0.1)
        async with server.runtime.db.session() as session:
            row = await session.get(Conversation, conversation.id)
            assert row is not None
            answered = {"by": row.answered_by, "method": row.answered_by_method, "outcome": row.outcome}
        return detail, result, answered


def _frames(audio: bytes) -> list[bytes]:
    padded = audio + b"\xff" * (-len(audio) % FRAME_BYTES)
    return [padded[i : i + FRAME_BYTES] for i in range(0, len(padded), FRAME_BYTES)]


@pytest.mark.asyncio
async def test_a_machine_gets_the_message_after_the_beep_and_no_pitch(
    tmp_path: Path, voices: dict[str, bytes]
) -> None:
    machine = voices["greeting"] + silence(400) + beep() + silence(6000)
    detail, result, answered = await outbound_call(
        tmp_path,
        _frames(machine),
        voicemail_action="leave_message",
        voicemail_message="Hi {{customer_name}}, it's Ava from Orbit CRM. I'll email you. Bye!",
    )
    assert answered == {"by": "machine", "method": "greeting_length", "outcome": "voicemail"}
    agent_turns = [t for t in detail["transcript"] if t["role"] == "agent"]
    # no greeting, no answer to the machine's words: the message, once
    assert [t["text"] for t in agent_turns] == ["Hi Dana, it's Ava from Orbit CRM. I'll email you. Bye!"]
    beep_end_ms = (len(voices["greeting"]) / SAMPLE_RATE + 0.9) * 1000
    assert agent_turns[0]["start_ms"] > beep_end_ms  # left after the beep, not over the greeting
    assert detail["metadata"]["termination_reason"] == "voicemail" and result.hung_up_by_agent


@pytest.mark.asyncio
async def test_a_machine_is_hung_up_on_when_the_agent_says_so(
    tmp_path: Path, voices: dict[str, bytes]
) -> None:
    machine = voices["greeting"] + silence(400) + beep() + silence(3000)
    detail, result, answered = await outbound_call(tmp_path, _frames(machine), voicemail_action="hang_up")
    assert answered["by"] == "machine" and answered["outcome"] == "voicemail"
    assert [t for t in detail["transcript"] if t["role"] == "agent"] == []
    assert detail["metadata"]["termination_reason"] == "voicemail" and result.hung_up_by_agent


@pytest.mark.asyncio
async def test_a_person_is_greeted_after_their_hello(tmp_path: Path, voices: dict[str, bytes]) -> None:
    # This person never answers the greeting, so the quiet-after-greeting revision (tested below) is
    # off here: whether the caller hangs up before it decides would be a matter of machine load.
    detail, _, answered = await outbound_call(
        tmp_path,
        frames_of(voices["hello"]),
        settings={"amd_silent_after_greeting_sec": 0},
        voicemail_action="leave_message",
    )
    assert answered == {"by": "human", "method": "short_greeting", "outcome": answered["outcome"]}
    assert answered["outcome"] != "voicemail"
    turns = detail["transcript"]
    # the greeting answers the hello: no second reply to it
    assert [(t["role"], t["kind"]) for t in turns] == [("user", "speech"), ("agent", "greeting")], turns
    assert turns[1]["text"] == "Hi Dana, this is Ava from Orbit CRM."
    assert turns[1]["start_ms"] > turns[0]["end_ms"]  # greeted after the hello, not over it


SHORT_MESSAGE = "Hi {{customer_name}}, it's Ava from Orbit CRM. Please call me back. Bye!"


@pytest.mark.asyncio
async def test_a_plain_greeting_with_no_beep_gets_the_message_whole_once_it_stays_quiet(
    tmp_path: Path, voices: dict[str, bytes]
) -> None:
    """ "Hi, it's Sam." and a mailbox recording in silence: no stock phrase, no beep, as short as a
    person's hello. Nobody answers the agent's greeting: a machine after all, and the message is left,
    heard whole."""
    machine = silence(300) + voices["short_vm"] + silence(25000)
    detail, result, answered = await outbound_call(
        tmp_path, _frames(machine), voicemail_action="leave_message", voicemail_message=SHORT_MESSAGE
    )
    assert answered == {"by": "machine", "method": "silent_after_greeting", "outcome": "voicemail"}
    agent_turns = [(t["kind"], t["text"]) for t in detail["transcript"] if t["role"] == "agent"]
    message = SHORT_MESSAGE.replace("{{customer_name}}", "Dana")
    assert agent_turns == [("greeting", "Hi Dana, this is Ava from Orbit CRM."), ("closing", message)]
    greeting_end = next(t["end_ms"] for t in detail["transcript"] if t["kind"] == "greeting")
    closing_start = next(t["start_ms"] for t in detail["transcript"] if t["kind"] == "closing")
    assert closing_start - greeting_end >= 3500  # the quiet after the greeting decided it
    assert detail["metadata"]["termination_reason"] == "voicemail" and result.hung_up_by_agent
    message_s = await synthesized_s(make_settings(tmp_path, **QUICK_ECHO_VOICE), message)
    assert result.last_reply_heard_s >= 0.99 * message_s, (result.last_reply_heard_s, message_s)
    # the facts after the revision: words were said, but by a machine — the outcome is voicemail
    from events.analysis import rule_outcome

    turns = [(t["role"], t["text"]) for t in detail["transcript"]]
    assert any(role == "user" for role, _ in turns)  # the recorded greeting's words are there
    assert rule_outcome(turns, [], "voicemail", answered["by"]) == "voicemail"


@pytest.mark.asyncio
async def test_a_person_who_answers_the_greeting_is_never_taken_for_a_machine(
    tmp_path: Path, voices: dict[str, bytes]
) -> None:
    """ "Hello?" … the greeting … "Yeah, this is Dana." … the agent's answer, then quiet until they hang
    up (2 s, longer than the 1.5 s the rule waits here): their answer made them a person for good."""
    detail, result, answered = await outbound_call(
        tmp_path,
        [],
        script=[Utterance(frames_of(voices["hello"])), Utterance(frames_of(voices["dana"]))],
        settings={"amd_silent_after_greeting_sec": 1.5},
        voicemail_action="leave_message",
        voicemail_message=SHORT_MESSAGE,
    )
    assert (answered["by"], answered["method"]) == ("human", "short_greeting"), answered
    assert answered["outcome"] != "voicemail"
    kinds = [t["kind"] for t in detail["transcript"] if t["role"] == "agent"]
    assert kinds[0] == "greeting" and "closing" not in kinds, detail["transcript"]
    assert len([t for t in detail["transcript"] if t["role"] == "user"]) >= 2
    assert detail["metadata"]["termination_reason"] == "caller_hung_up" and not result.hung_up_by_agent


# ------------------------------------------------------------------------- voicemails heard whole


def tones(count: int, seconds: float, gap_s: float, hz: float = 1000.0) -> bytes:
    """A beep of several short tones ("beep-beep-beep"), as many carrier mailboxes play."""
    return (beep(hz, seconds) + silence(int(gap_s * 1000))) * count


async def synthesized_s(settings: Any, text: str) -> float:
    """How long the agent's TTS speaks ``text``, cut in the pieces the speaker hands it."""
    from call.speaker import spoken_pieces
    from providers.registry import ProviderRegistry

    registry = ProviderRegistry(settings)
    tts = registry.tts()
    total = 0
    for piece in spoken_pieces(text):
        async for chunk in tts.synthesize(piece):
            total += len(chunk)
    return total / SAMPLE_RATE


MESSAGE = (
    "Hi {{customer_name}}, it's Ava from Orbit CRM. I'm calling about your team's weekly reporting. "
    "Call me back at five five five, zero one two three. Talk soon!"
)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "after_greeting",
    [
        pytest.param(lambda: beep(), id="one-tone"),
        pytest.param(lambda: tones(3, 0.25, 0.12), id="three-tones"),
        pytest.param(lambda: tones(3, 0.12, 0.1), id="three-short-tones"),
    ],
)
async def test_a_voicemail_message_reaches_the_mailbox_whole(
    tmp_path: Path, voices: dict[str, bytes], after_greeting: Any
) -> None:
    """What the far end played of the message before the hang-up, against the message's own length."""
    machine = voices["greeting"] + silence(400) + after_greeting() + silence(15000)
    detail, result, answered = await outbound_call(
        tmp_path, _frames(machine), voicemail_action="leave_message", voicemail_message=MESSAGE
    )
    assert answered["by"] == "machine" and answered["outcome"] == "voicemail"
    assert detail["metadata"]["termination_reason"] == "voicemail" and result.hung_up_by_agent
    message_s = await synthesized_s(
        make_settings(tmp_path, **QUICK_ECHO_VOICE), MESSAGE.replace("{{customer_name}}", "Dana")
    )
    assert result.agent_heard_s >= 0.99 * message_s, (result.agent_heard_s, message_s)


# ------------------------------------------------------------------------- call screeners

SCREENER_PROMPT = (
    "Hi, the person you're calling is using a screening service from Google, "
    "go ahead and say your name and why you're calling"
)
SCREENED_AGENT = {
    "voicemail_action": "leave_message",
    "voicemail_message": "Hi {{customer_name}}, it's Ava from Orbit CRM. Bye!",
}
SCREENED_VARIABLES = {
    "customer_name": "Dana",
    "company": "Orbit CRM",
    "call_reason": "your team's weekly reports",
}
SCREENER_LINE = "Hi, this is Ava from Orbit CRM, calling for Dana about your team's weekly reports."


@pytest.fixture(scope="module")
def screener_voices() -> dict[str, bytes]:
    from simulator.speech import synthesize_caller

    lines = {"prompt": SCREENER_PROMPT, "dana": "Hello, this is Dana."}
    return {key: synthesize_caller(text, steady=True) for key, text in lines.items()}


def screener_words(*transcripts: str) -> Any:
    """The Deepgram stand-in scripted with what each utterance says (the echo STT has no words)."""
    from tests.deepgram_standin import DeepgramStandIn

    return DeepgramStandIn("dg-key", transcripts=list(transcripts))


@pytest.mark.asyncio
async def test_a_screener_is_told_who_calls_and_the_person_who_picks_up_is_greeted(
    tmp_path: Path, screener_voices: dict[str, bytes]
) -> None:
    async with screener_words(SCREENER_PROMPT, "Hello, this is Dana.") as deepgram:
        detail, _, answered = await outbound_call(
            tmp_path,
            [],
            script=[
                Utterance(frames_of(silence(300) + screener_voices["prompt"])),
                Utterance(frames_of(screener_voices["dana"])),  # once the agent has said who it is
            ],
            settings={"stt_provider": "deepgram", "deepgram_api_key": "dg-key", "deepgram_url": deepgram.url},
            variables=SCREENED_VARIABLES,
            **SCREENED_AGENT,
        )
    assert answered == {"by": "human", "method": "after_screener", "outcome": answered["outcome"]}
    assert answered["outcome"] not in ("screened", "voicemail")
    agent_turns = [(t["kind"], t["text"]) for t in detail["transcript"] if t["role"] == "agent"]
    # one sentence to the screener, then the greeting for the person; never the voicemail message
    assert agent_turns[:2] == [
        ("screener", SCREENER_LINE),
        ("greeting", "Hi Dana, this is Ava from Orbit CRM."),
    ]
    assert all("Bye!" not in text for _, text in agent_turns)
    assert detail["metadata"]["termination_reason"] not in ("screened", "voicemail"), detail["metadata"]


@pytest.mark.asyncio
async def test_a_screener_nobody_picks_up_after_ends_the_call_as_screened(
    tmp_path: Path, screener_voices: dict[str, bytes]
) -> None:
    async with screener_words(SCREENER_PROMPT) as deepgram:
        detail, result, answered = await outbound_call(
            tmp_path,
            [],
            script=[Utterance(frames_of(silence(300) + screener_voices["prompt"]) + [silence(20)] * 600)],
            settings={
                "stt_provider": "deepgram",
                "deepgram_api_key": "dg-key",
                "deepgram_url": deepgram.url,
                "screener_wait_sec": 2.0,
            },
            variables=SCREENED_VARIABLES,
            **SCREENED_AGENT,
        )
    assert answered == {"by": "screener", "method": "phrase", "outcome": "screened"}
    assert [t["text"] for t in detail["transcript"] if t["role"] == "agent"] == [SCREENER_LINE]
    assert detail["metadata"]["termination_reason"] == "screened" and result.hung_up_by_agent


def test_a_carrier_greeting_that_ends_on_a_menu_option_stays_a_voicemail() -> None:
    """The words come turn by turn (each turn's text grows, then the next starts afresh): a carrier
    greeting's last sentence offers a key ("…hang up or press 1 for more options") and is still a
    voicemail's; a menu that opens like a voicemail ("You have reached Orbit Dental.") is a menu."""
    detector = AnsweringMachineDetector()
    for turn in (
        "The number you have dialed, 5 5 5, 0 1 2 3, is not available.",
        "At the tone, please record your message.",
        "When you have finished recording, you may hang up or press 1 for more options.",
    ):
        words = turn.split()
        for n in range(2, len(words) + 1, 3):  # interim words, then the final
            detector.on_text(" ".join(words[:n]))
        detector.on_text(turn)
    assert detector.decision is not None and detector.decision.answered_by is AnsweredBy.MACHINE
    for opening in ("Thank you for calling Northwind.", "You have reached Orbit Dental."):
        menu = AnsweringMachineDetector()
        for turn in (opening, "Para español, oprima el dos.", "To schedule an appointment, press 1."):
            menu.on_text(turn)
        assert menu.decision is not None and menu.decision.answered_by is AnsweredBy.IVR, opening


def test_screener_and_menu_words() -> None:
    from call.amd import answered_by_words, screener_line

    assert answered_by_words(SCREENER_PROMPT) is AnsweredBy.SCREENER
    ios = "Hi, if you record your name and reason for calling, I'll see if this person is available."
    assert answered_by_words(ios) is AnsweredBy.SCREENER
    # a voicemail that asks for the reason of the call is still a voicemail
    vm = "Please leave your name, number and the reason for your call after the tone."
    assert answered_by_words(vm) is AnsweredBy.MACHINE
    menu = "Thank you for calling Acme. For sales, press 1. For support, press 2."
    assert answered_by_words(menu) is AnsweredBy.IVR
    carrier = "Please record your message at the tone. When you are finished, hang up or press pound."
    assert answered_by_words(carrier) is AnsweredBy.MACHINE
    assert answered_by_words("Hello, this is Dana.") is None
    assert screener_line(SCREENED_VARIABLES | {"agent_name": "Ava"}) == SCREENER_LINE
    assert screener_line({"agent_name": "Ava"}) == "Hi, this is Ava."


# ------------------------------------------------------------------------- phone menus

MENU = "Thank you for calling Northwind, for sales press 1, for support press 2"


@pytest.mark.asyncio
async def test_a_phone_menu_is_an_ivr_and_the_call_ends_politely(tmp_path: Path) -> None:
    from simulator.speech import synthesize_caller

    async with screener_words(MENU) as deepgram:
        detail, result, answered = await outbound_call(
            tmp_path,
            [],
            script=[
                Utterance(
                    frames_of(silence(300) + synthesize_caller(MENU, steady=True)) + [silence(20)] * 400
                )
            ],
            settings={"stt_provider": "deepgram", "deepgram_api_key": "dg-key", "deepgram_url": deepgram.url},
            **SCREENED_AGENT,
        )
    assert answered == {"by": "ivr", "method": "phrase", "outcome": "ivr"}
    agent_turns = [t["text"] for t in detail["transcript"] if t["role"] == "agent"]
    assert agent_turns == ["Sorry, I'll try again another time. Goodbye."]  # no pitch, no voicemail message
    assert detail["metadata"]["termination_reason"] == "ivr" and result.hung_up_by_agent


def test_screened_and_ivr_are_outcomes_a_campaign_can_retry() -> None:
    from events.analysis import rule_outcome
    from schemas import RetryPolicy

    assert RetryPolicy(outcomes=["screened", "ivr", "voicemail"]).outcomes == ["screened", "ivr", "voicemail"]
    # the screener's words are no conversation with the lead: who answered is the outcome
    turns = [("user", SCREENER_PROMPT), ("agent", SCREENER_LINE)]
    assert rule_outcome(turns, [], "screened", "screener") == "screened"
    assert rule_outcome([("user", MENU)], [], "ivr", "ivr") == "ivr"
    # the person picked up after the screener: a conversation, never "screened"
    picked_up = [*turns, ("user", "Hi, this is Dana. What is this about?")]
    assert rule_outcome(picked_up, [], "caller_hung_up", "human") != "screened"


def test_a_beep_of_several_short_tones_ends_the_greeting_after_its_last_tone(
    voices: dict[str, bytes],
) -> None:
    audio = silence(300) + voices["greeting"] + silence(400) + tones(3, 0.12, 0.1) + silence(2500)
    detector = detect(audio)
    last_tone_end = 0.3 + len(voices["greeting"]) / SAMPLE_RATE + 0.4 + 3 * 0.22 - 0.1
    over = detector.greeting_over
    assert over is not None and over.reason == "beep" and last_tone_end < over.at_s < last_tone_end + 0.6, (
        over
    )


def test_a_screeners_words_win_over_a_machine_decided_by_the_greetings_length(
    voices: dict[str, bytes],
) -> None:
    # a screener's prompt is as long as a voicemail greeting: the length says machine first
    detector = detect(silence(300) + voices["greeting"] + silence(2000), words=[(6.5, SCREENER_PROMPT)])
    assert detector.decision is not None and detector.decision.answered_by is AnsweredBy.SCREENER
    assert detector.greeting_over is None  # no voicemail moment for a screener
    # and once a person took the call from the screener, no later words make it a machine
    detector.person_after_screener()
    assert detector.on_text("sorry, I can't take your call right now") is None
