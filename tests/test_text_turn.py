"""The turn-taking levers fitted on recorded speech (issue 26), at the text and frame level: filled pauses
and trailing words hold the turn, the text end-of-turn model (real SmolLM2) holds mid-phrase pauses and
lets finished sentences go, a caller's own pauses teach the assembler to wait for them."""

from __future__ import annotations

import pytest

from call.turns import (
    EAGERNESS,
    EndOfTurn,
    PauseHabit,
    TextTurnPolicy,
    TurnAssembler,
    WordDoubt,
    looks_incomplete,
)
from providers.base import TranscriptEvent
from speech.text_turn import TextTurnJudge, prompt_words

VOICED = b"\x10" * 160  # any mu-law frame: the judge here is the text model, not audio


@pytest.mark.parametrize(
    "text",
    [
        "I'd like to, um",
        "We looked at it and",
        "It's a bit pricey, so.",
        "Because",
        "so",
        "uh.",
        "I think it's",
    ],
)
def test_filled_pauses_and_trailing_words_hold_the_turn(text: str) -> None:
    assert looks_incomplete(text)


@pytest.mark.parametrize(
    "text", ["I think so.", "Yes, I can.", "We don't have any more.", "See you then.", "That's all."]
)
def test_words_that_may_end_a_sentence_end_it_when_the_stt_closed_it(text: str) -> None:
    assert not looks_incomplete(text)
    assert looks_incomplete(text.rstrip(".")) or text.rstrip(".").endswith(("so", "all"))


def test_policy_tiers() -> None:
    eot = EndOfTurn(0.3)
    policy = TextTurnPolicy(unlikely=0.01, likely=0.2, hold_s=1.6, mid_s=0.6)  # not the defaults: explicit
    assert policy.required(0.3, 0.001, eot) == 1.6  # mid-phrase
    assert policy.required(0.3, 0.05, eot) == 0.6
    assert policy.required(0.3, 0.5, eot) == 0.3
    assert policy.required(0.8, 0.5, eot) == 0.3  # an open/unsure final the model reads as finished
    assert policy.required(1.2, 0.9, eot) == 1.2  # unfinished words keep their hold


def test_pause_habit() -> None:
    habit = PauseHabit(margin_s=0.15, cap_s=1.6)
    assert habit.required(0.3) == 0.3
    habit.resumed_after(0.2)  # not a pause
    assert habit.required(0.3) == 0.3
    habit.resumed_after(0.9)
    assert habit.required(0.3) == pytest.approx(1.05)
    habit.resumed_after(5.0)  # the agent's whole reply in between: not a pause of theirs
    assert habit.required(0.3) == pytest.approx(1.05)


@pytest.fixture(scope="module")
def judge() -> TextTurnJudge:
    judge = TextTurnJudge(max_queued=4)
    judge.load()
    yield judge
    judge.close()


def test_text_model_reads_mid_phrase_and_finished_words(judge: TextTurnJudge) -> None:
    assert prompt_words("  We're ready to…  ") == "We're ready to"

    def p(text: str) -> float:
        future = judge.submit(text)
        assert future is not None
        return future.result(timeout=30)

    mid = [p("Okay, well I think we're ready to"), p("I'm interested, but"), p("They are not seeing")]
    done = [p("Oh, hello, I didn't know you were there."), p("Sounds good.")]
    assert max(mid) < 0.01 < 0.2 <= min(done)
    assert judge.submit("Sounds good!") is judge.submit("sounds good")  # cached by the words


def play(turns: TurnAssembler, now: float, seconds: float, voiced: bool) -> float:
    for _ in range(round(seconds / 0.02)):
        now += 0.02
        turns.on_voice(3000.0 if voiced else 0.0, voiced, now, VOICED)
    return now


def final(turns: TurnAssembler, text: str, now: float) -> None:
    # not the STT's endpoint (speech_final): the silence is counted from the caller's voice alone
    turns.on_transcript(TranscriptEvent("final", text, speech_final=False), now, 0.0)


def ended_after(turns: TurnAssembler, now: float, limit_s: float = 3.0) -> float | None:
    """Seconds of silence until ``check`` ends the turn (the model's answer awaited in real time)."""
    start = now
    future = turns._text_future
    if future is not None:
        future.result(timeout=30)
    while now - start < limit_s:
        result = turns.check(now)
        if result is not None and not isinstance(result, float):
            return now - start
        now = play(turns, now, 0.02, False)
    return None


def assembler(judge: TextTurnJudge | None, habit: PauseHabit | None = None) -> TurnAssembler:
    return TurnAssembler(
        EndOfTurn(0.3), lambda *a: 0.0, 0.0, text_judge=judge, text_policy=TextTurnPolicy(), habit=habit
    )


def test_assembler_holds_a_mid_phrase_pause_and_ends_a_finished_turn(judge: TextTurnJudge) -> None:
    # "They are not seeing." reads finished to the words' rules (0.3 s) but not to the model
    without = assembler(None)
    now = play(without, 0.0, 1.0, True)
    final(without, "They are not seeing.", now)
    assert ended_after(without, now) == pytest.approx(0.3, abs=0.03)

    held = assembler(judge)
    now = play(held, 0.0, 1.0, True)
    final(held, "They are not seeing.", now)
    waited = ended_after(held, now)
    assert waited is not None and waited >= 1.5

    finished = assembler(judge)
    now = play(finished, 0.0, 1.0, True)
    final(finished, "Oh, hello, I didn't know you were there.", now)
    assert ended_after(finished, now) == pytest.approx(0.3, abs=0.03)


def test_a_caller_who_paused_and_went_on_gets_their_pause(judge: TextTurnJudge) -> None:
    turns = assembler(None, PauseHabit(0.15, 1.6))
    now = play(turns, 0.0, 1.0, True)
    turns.on_transcript(TranscriptEvent("partial", "Okay, let's take"), now, 0.0)
    now = play(turns, now, 0.9, False)  # a 0.9 s pause inside the turn, then they go on
    now = play(turns, now, 1.0, True)
    final(turns, "Okay, let's take them out today.", now)
    waited = ended_after(turns, now)
    assert waited == pytest.approx(0.92 + 0.15, abs=0.03)  # their pause (0.9 s and a frame) + the margin


def test_a_turn_ended_too_soon_teaches_the_pause(judge: TextTurnJudge) -> None:
    turns = assembler(None, PauseHabit(0.15, 1.6))
    now = play(turns, 0.0, 1.0, True)
    final(turns, "Right.", now)
    assert ended_after(turns, now) is not None  # ended after 0.3 s: too soon, as it turns out
    now = play(turns, now + 0.3, 0.4, False)  # they go on 0.7 s into the pause
    now = play(turns, now, 1.0, True)
    final(turns, "We have to look at the budget first.", now)
    assert ended_after(turns, now) == pytest.approx(0.85, abs=0.05)


def test_word_doubt_holds_only_below_its_threshold() -> None:
    doubt = WordDoubt(below=0.3, hold_s=1.0)
    assert doubt.required(0.3, 0.27) == 1.0
    assert doubt.required(0.3, 0.3) == 0.3 and doubt.required(0.3, None) == 0.3
    assert doubt.required(2.5, 0.1) == 2.5  # never shorter than what the words or text model asked
    assert WordDoubt(below=0.0).required(0.3, 0.01) == 0.3  # off


def test_the_stt_unsure_of_the_last_word_holds_a_finished_looking_turn(judge: TextTurnJudge) -> None:
    # Whisper completed a cut phrase ("Yeah go for a…" → "…it."): the words and the text model read it
    # finished; the last word's low probability is what says the caller may not be done.
    def waited(last_word_p: float | None, doubt: WordDoubt | None) -> float | None:
        turns = TurnAssembler(
            EndOfTurn(0.3), lambda *a: 0.0, 0.0, text_judge=judge, text_policy=TextTurnPolicy(), doubt=doubt
        )
        now = play(turns, 0.0, 1.0, True)
        text = "Oh, hello, I didn't know you were there."
        event = TranscriptEvent("final", text, speech_final=False, last_word_confidence=last_word_p)
        turns.on_transcript(event, now, 0.0)
        return ended_after(turns, now)

    assert waited(0.27, WordDoubt(0.3, 1.0)) == pytest.approx(1.0, abs=0.03)
    assert waited(0.9, WordDoubt(0.3, 1.0)) == pytest.approx(0.3, abs=0.03)
    assert waited(0.27, None) == pytest.approx(0.3, abs=0.03)  # without the lever: answered at 0.3 s


@pytest.mark.parametrize(
    ("eagerness", "waits"),
    [("eager", (0.45, 0.3, 0.3, 0.7)), ("normal", (0.6, 0.6, 0.3, 1.0)), ("patient", (1.2, 1.2, 1.2, 1.2))],
)
def test_turn_eagerness_sets_the_wait_after_finished_sounding_words(
    judge: TextTurnJudge, eagerness: str, waits: tuple[float, float, float, float]
) -> None:
    # The agent's turn_eagerness picks the tiers (call.turns.EAGERNESS), as call.parts wires them.
    preset = EAGERNESS[eagerness]

    def waited(text: str, last_word_p: float | None = None) -> float | None:
        turns = TurnAssembler(
            EndOfTurn(0.3), lambda *a: 0.0, 0.0, text_judge=judge,
            text_policy=preset.text_policy(TextTurnPolicy()), doubt=preset.word_doubt(WordDoubt(0.3, 1.0)),
        )  # fmt: skip
        now = play(turns, 0.0, 1.0, True)
        event = TranscriptEvent("final", text, speech_final=False, last_word_confidence=last_word_p)
        turns.on_transcript(event, now, 0.0)
        return ended_after(turns, now)

    heard = (
        waited("Send me an email."),  # finished words, text p ≈ 0.07
        waited("I'm in New Jersey now."),  # p ≈ 0.21
        waited("Oh, hello, I didn't know you were there."),  # p ≈ 0.74
        waited("Oh, hello, I didn't know you were there.", 0.1),  # Whisper unsure of "there"
    )
    assert heard == pytest.approx(waits, abs=0.03)
    waited_mid_phrase = waited("They are not seeing.")  # mid-phrase (p < 0.01): every preset holds 2.5 s
    assert waited_mid_phrase is not None and waited_mid_phrase >= 2.4


def test_a_busy_or_missing_text_model_leaves_the_words_to_decide() -> None:
    turns = assembler(TextTurnJudge(max_queued=1))  # never loaded: submit says no
    now = play(turns, 0.0, 1.0, True)
    final(turns, "They are not seeing.", now)
    assert ended_after(turns, now) == pytest.approx(0.3, abs=0.03)


# ---------------------------------------------------------------------------------------------- recovery


@pytest.mark.asyncio
async def test_the_caller_going_on_early_in_our_reply_withdraws_it_and_merges_the_turn() -> None:
    import asyncio
    import time

    from call.clock import CallClock
    from call.recovery import Recovery
    from call.replies import Replies
    from call.speaker import Speaker
    from call.transcript import CallTranscript
    from tests.test_call_parts import FrameTTS, RecordingSink, WireSink

    clock, sink, wire = CallClock(), RecordingSink(), WireSink()
    speaker = Speaker(wire, clock.ms)
    speaker.use(FrameTTS(), None)
    speaker.start()
    replies = Replies(speaker, CallTranscript(sink, clock.ms))
    recovery = Recovery(500, clock.ms)
    try:
        reply = replies.new_turn("We looked at it", 3)

        async def play() -> None:  # as Replies._run: speak, then wait until it was heard
            await speaker.say(reply, ["Great, what did you think?", "Anything else?"])
            await speaker.wait_played(reply)

        reply.task = asyncio.create_task(play())
        replies.current = reply
        while not reply.audio_started:
            await asyncio.sleep(0.01)
        onset = time.monotonic()  # the caller goes on ~20 ms into our reply
        assert recovery.applies(reply, onset)
        assert not recovery.applies(reply, onset + 0.6)  # later: a barge-in over an answer they heard
        assert not Recovery(0, clock.ms).applies(reply, onset)  # off
        assert not recovery.applies(replies.new_turn(kind="greeting"), onset)  # not an answer to a turn
        reply.hang_up_after = "agent_goodbye"
        assert not recovery.applies(reply, onset)  # a goodbye is not taken back: the call is closing
        reply.hang_up_after = None
        await replies.withdraw(reply)
        assert reply.task.cancelled() and ("clear", None) in wire.sent and reply.saved
        assert await replies.take_unheard() == ("We looked at it", 3)  # the next words join turn 3
        assert await replies.take_unheard() is None
        assert not [t for t in sink.turns if t.role == "agent"]  # the withdrawn reply is not stored
    finally:
        await speaker.stop()


def test_an_agents_turn_eagerness_reaches_its_calls_else_the_service_default() -> None:
    from types import SimpleNamespace

    from call.bargein import TurnSettings
    from call.parts import turn_assembler
    from config import Settings

    def tiers(service_default: str, agent_turn_settings: dict) -> tuple[float, float, float]:
        settings = Settings(_env_file=None, turn_eagerness=service_default)  # type: ignore[call-arg]
        services = SimpleNamespace(settings=settings, turn_judge=None, text_judge=None)
        profile = SimpleNamespace(turn=TurnSettings.from_sources(settings, agent_turn_settings, True))
        turns = turn_assembler(services, profile, SimpleNamespace(ms=lambda *a: 0.0, t0=0.0))  # type: ignore[arg-type]
        assert turns.doubt is not None
        return turns.text_policy.likely, turns.text_policy.mid_s, turns.doubt.hold_s

    assert tiers("normal", {}) == (0.3, 0.6, 1.0)  # TURN_TEXT_LIKELY, TURN_TEXT_MID_SEC, ..._HOLD_SEC
    assert tiers("normal", {"turn_eagerness": "patient"}) == (1.0, 1.2, 1.2)
    assert tiers("patient", {"turn_eagerness": "eager"}) == (0.15, 0.45, 0.7)
    assert tiers("patient", {}) == (1.0, 1.2, 1.2)
