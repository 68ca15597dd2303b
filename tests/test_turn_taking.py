"""Decisions on fixed input: the barge-in detector on real audio (speech vs noise, clicks, quiet lines),
backchannels, end of turn on unfinished sentences, the sentence chunker, intents and templates."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from datetime import datetime

import numpy as np
import pytest

from call.bargein import InterruptionDetector, TurnSettings
from call.intents import Intent, detect_intent, extract_meeting_request, is_backchannel
from call.turns import CallerTurn, EndOfTurn, TurnAssembler, TurnModelPolicy, VoiceCue, looks_incomplete
from providers.base import TranscriptEvent
from speech.audio import pcm16_to_mulaw
from speech.sentences import SentenceChunker
from speech.text import MissingVariableError, clean_markdown_for_tts, fill_template
from speech.vad import FrameClassifier


def frames(mulaw: bytes) -> list[bytes]:
    return [mulaw[i : i + 160] for i in range(0, len(mulaw) - 159, 160)]


def triggers(
    audio: bytes, settings: TurnSettings | None = None, lead_silence_frames: int = 25
) -> list[float]:
    """Onset times (ms) at which the detector fires on ``audio`` played after some line silence."""
    cfg = settings or TurnSettings()
    classifier, detector = FrameClassifier(cfg.vad_aggressiveness), InterruptionDetector(cfg)
    fired = []
    for k, frame in enumerate([b"\xff" * 160] * lead_silence_frames + frames(audio)):
        energy, voiced = classifier.classify(frame, spectrum_above=detector.threshold())
        if detector.process(energy, voiced, k * 20.0):
            fired.append(detector.onset_ms - lead_silence_frames * 20)
    return fired


@pytest.fixture(scope="module")
def speech() -> bytes:
    from simulator.speech import synthesize_caller

    return synthesize_caller("Wait, I have a question about the price.")


def level(pcm: np.ndarray, rms: float) -> bytes:
    scaled = pcm / max(1e-6, float(np.sqrt(np.mean(pcm**2)))) * rms
    return pcm16_to_mulaw(np.clip(scaled, -32768, 32767).astype(np.int16))


def test_detector_fires_once_near_the_onset_of_speech(speech: bytes) -> None:
    fired = triggers(speech)
    assert len(fired) >= 1
    assert 0 <= fired[0] <= 300  # within the first syllable (the clip starts with a little silence)


def test_detector_ignores_noise_clicks_hum_and_quiet_speech(speech: bytes) -> None:
    rng = np.random.default_rng(0)
    n = 8000 * 2
    t = np.arange(n) / 8000
    clicks = np.zeros(n)
    for start in rng.integers(0, n - 40, 12):
        clicks[start : start + 40] = rng.standard_normal(40) * 3000
    from simulator.speech import scale

    assert triggers(level(np.sin(2 * np.pi * 60 * t) + 0.5 * np.sin(2 * np.pi * 180 * t), 600)) == []
    assert triggers(pcm16_to_mulaw(np.clip(clicks, -32768, 32767).astype(np.int16))) == []
    assert triggers(level(rng.standard_normal(n), 300)) == []  # line noise below INTERRUPT_MIN_ENERGY
    assert triggers(scale(speech, -30)) == []  # far too quiet to be the caller
    # Loud noise and tones that WebRTC VAD calls voice are kept out by the spectral-flatness band.
    assert triggers(level(rng.standard_normal(n), 2000)) == []  # hiss
    chord = sum(np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0))
    assert triggers(level(chord, 2000)) == []  # music-like tones
    assert triggers(level(np.sin(2 * np.pi * 60 * t) + 0.5 * np.sin(2 * np.pi * 180 * t), 2000)) == []


def test_detector_hears_speech_under_background_noise(speech: bytes) -> None:
    from simulator.speech import under_noise_bed

    rng = np.random.default_rng(1)
    for kind in ("pink", "white"):
        fired = triggers(under_noise_bed(speech, 15, kind, rng, lead_ms=1000))
        assert fired and 1000 <= fired[0] <= 1300, (kind, fired)  # not on the noise, soon after the words


SILENCE_FRAME = b"\xff" * 160  # mu-law zero


@pytest.fixture(scope="module")
def burst(speech: bytes) -> bytes:
    """100 ms of voiced speech from inside the first word ("Wait"): it starts 40 ms after the onset the
    detector finds (the synthesized voice varies a little from run to run, so the onset is looked up)."""
    onset = int(triggers(speech)[0] // 20)
    return b"".join(frames(speech)[onset + 2 : onset + 7])


def test_detector_thresholds_come_from_settings(speech: bytes, burst: bytes) -> None:
    assert triggers(speech) and triggers(speech, TurnSettings(interrupt_min_energy=30_000)) == []
    alone = SILENCE_FRAME * 10 + burst + SILENCE_FRAME * 10
    assert len(triggers(alone, TurnSettings(interrupt_min_speech_ms=60))) == 1  # 100 ms is enough
    assert triggers(alone, TurnSettings(interrupt_min_speech_ms=120)) == []  # … but not 120 ms of speech


def test_debounce_limits_repeated_triggers(burst: bytes) -> None:
    # Two bursts 200 ms apart: their triggers are about 300 ms apart.
    twice = SILENCE_FRAME * 10 + burst + SILENCE_FRAME * 10 + burst + SILENCE_FRAME * 10
    assert len(triggers(twice, TurnSettings(interrupt_debounce_ms=150))) == 2
    assert len(triggers(twice, TurnSettings(interrupt_debounce_ms=450))) == 1


def test_adaptive_baseline_raises_the_threshold_in_a_noisy_line() -> None:
    detector = InterruptionDetector(TurnSettings())
    quiet = detector.threshold()
    for _ in range(200):
        detector.update_baseline(1200.0)
    assert detector.threshold() > quiet and detector.threshold() == pytest.approx(1200 * 2.8, rel=0.05)


@pytest.mark.parametrize(
    "text", ["uh-huh", "Yeah.", "right", "mm-hmm", "Okay.", "sure", "Yes, yes.", "M-M-ZM", "Hmm."]
)
def test_backchannels(text: str) -> None:
    assert is_backchannel(text)


def test_a_whisper_loop_on_a_hesitant_uh_huh_is_still_a_backchannel() -> None:
    from providers.local_stt import drop_repeats

    heard = drop_repeats("Uh " + "uh " * 43 + "uh")
    assert heard.lower() == "uh uh" and is_backchannel(heard)
    assert drop_repeats("No, no, no, I said Tuesday.") == "No, no, no, I said Tuesday."
    assert drop_repeats("Yeah. Yeah.") == "Yeah. Yeah."


@pytest.mark.parametrize(
    "text",
    ["Wait, how much is it?", "No, that's not what I meant.", "Yeah but who are you?", "CRM?", "TV", "Why?"],
)
def test_not_backchannels(text: str) -> None:
    assert not is_backchannel(text)


def test_end_of_turn_waits_longer_on_unfinished_sentences() -> None:
    eot = EndOfTurn(silence_s=0.3)
    assert looks_incomplete("I'd like to, um") and looks_incomplete("We were thinking about")
    assert not looks_incomplete("Can we book a demo?") and not looks_incomplete("We use HubSpot today.")
    assert eot.remaining("We use HubSpot today.", 0.3) <= 0
    assert eot.remaining("I'd like to, um", 0.3) > 0.5


@pytest.mark.parametrize(
    ("text", "unfinished"),
    [
        ("Can you send the pricing to?", True),  # the STT's question mark does not finish the sentence
        ("Could you tell me if?", True),
        ("Our main problem is that.", True),
        ("So what we really want is", True),
        ("Let me think of...", True),
        ("Who is this for?", False),  # a wh-question may end on its preposition
        ("Sure. Where are you calling from?", False),
        ("I'm interested in that.", False),
        ("Tell me about it.", False),
        ("What does it cost for a team of 10?", False),
        ("Actually, wait.", True),  # a "wait" is followed by what the caller wanted to say
        ("Sorry, hold on a second.", True),
        ("Wait, how much is it?", False),
        ("I can wait.", False),
    ],
)
def test_unfinished_sentences(text: str, unfinished: bool) -> None:
    assert looks_incomplete(text) is unfinished


def test_end_of_turn_waits_a_little_longer_when_the_stt_was_unsure() -> None:
    eot = EndOfTurn(silence_s=0.3, uncertain_hold_s=0.8, min_confidence=0.5)
    assert eot.required_silence("We use HubSpot today.", confidence=0.9) == 0.3
    assert eot.required_silence("We use them for today.", confidence=0.3) == 0.8
    assert eot.required_silence("We use HubSpot today.", confidence=None) == 0.3  # the STT gave none
    assert eot.required_silence("I'd like to, um", confidence=0.3) == eot.incomplete_hold_s
    # …or when it left a sentence of a few words open (no stop, no question mark)
    assert eot.required_silence("So what we really wanted", confidence=0.9) == 0.8
    assert eot.required_silence("Sounds good", confidence=0.9) == 0.3


def test_sentence_chunker_streams_the_first_clause_then_sentences() -> None:
    chunker = SentenceChunker(first_clause_chars=30)
    out: list[str] = []
    for (
        token
    ) in "Orbit CRM is a subscription service, billed yearly. Dr. Lee can show you. Want a demo?".split(" "):
        out += chunker.push(token + " ")
    assert out[0] == "Orbit CRM is a subscription service,"
    assert "Dr. Lee can show you." in out  # no cut after an abbreviation
    assert chunker.flush() is None or out[-1].endswith("?")
    plain = SentenceChunker()
    assert plain.push("Sure, that works. And") == ["Sure, that works."] and plain.flush() == "And"


def test_a_short_first_clause_is_spoken_early_but_words_are_not_cut_short() -> None:
    """The engine's 12-character first clause: "You said: Hi," goes to TTS at once; a reply with no clause
    mark is not cut into a few-word fragment (spoken with a final tone) before 24 characters."""
    from call.speaker import FIRST_CLAUSE_CHARS

    chunker = SentenceChunker(first_clause_chars=FIRST_CLAUSE_CHARS)
    out: list[str] = []
    for token in "You said: Hi, I got your message. Anything else?".split(" "):
        out += chunker.push(token + " ")
    assert out[0] == "You said: Hi,"
    words = SentenceChunker(first_clause_chars=FIRST_CLAUSE_CHARS)
    spoken: list[str] = []
    for token in "I can definitely help you with that today if you".split(" "):
        spoken += words.push(token + " ")
        if spoken:
            break
    assert spoken == ["I can definitely help you"]


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("Hello?", Intent.HELLO),
        ("Okay, thanks, bye!", Intent.GOODBYE),
        ("How much does it cost?", Intent.QUESTION),
        ("Can we book a demo next Tuesday at three?", Intent.BOOK_MEETING),
        ("We're not interested, thanks.", Intent.NOT_INTERESTED),
        ("Can you call me back later?", Intent.CALLBACK_LATER),
        ("Can I talk to a real person?", Intent.TRANSFER_REQUEST),
    ],
)
def test_intents(text: str, intent: Intent) -> None:
    assert detect_intent(text) == intent


def test_meeting_request_is_parsed_to_a_start_time() -> None:
    now = datetime(2026, 11, 27, 10, 0)  # a Friday
    request = extract_meeting_request("Can we book a demo next Tuesday at three in the afternoon?", now)
    assert request is not None and request["start_time"].startswith("2026-12-01T15:00")
    assert extract_meeting_request("Sounds good.", now) is None


def test_templates_and_speech_cleanup() -> None:
    assert fill_template("Hi {{name}}, this is Ava.", {"name": "Sam"}) == "Hi Sam, this is Ava."
    assert fill_template("Hi {{name}}, this is Ava.", {}) == "Hi, this is Ava."
    with pytest.raises(MissingVariableError):
        fill_template("Hi {{name}}", {}, strict=True)
    spoken = clean_markdown_for_tts("**Great!** It's $49/month — see https://x.io 🙂")
    assert "*" not in spoken and "https" not in spoken and "🙂" not in spoken and "49 dollars" in spoken


def test_first_piece_without_punctuation_starts_at_a_word_boundary() -> None:
    chunker = SentenceChunker(first_clause_chars=40)
    out: list[str] = []
    for (
        token
    ) in "The Orbit platform helps teams track every deal from first contact to signature. Great.".split():
        out += chunker.push(token + " ")
    assert out[0] == "The Orbit platform helps teams track every"  # spoken while the rest streams
    assert out[1:] == ["deal from first contact to signature.", "Great."]


# ---------------------------------------------------------------- the turn-end model in TurnAssembler


class FakeJudge:
    """A turn-end model that answers ``probability`` at once (or fails, or never answers)."""

    def __init__(self, probability: float | None = None, *, fails: bool = False, ready: bool = True) -> None:
        self.probability, self.fails, self.ready = probability, fails, ready
        self.asked: list[int] = []  # samples of audio per decision

    def submit(self, pcm: np.ndarray, rate: int = 8000) -> Future[float]:
        self.asked.append(len(pcm))
        future: Future[float] = Future()
        if self.fails:
            future.set_exception(RuntimeError("onnx failed"))
        elif self.probability is not None:
            future.set_result(self.probability)
        return future  # no probability: still running (a busy or hung model)


VOICED = b"\x10" * 160  # a loud mu-law frame
QUIET = b"\xff" * 160


def finished_turn(
    judge: FakeJudge | None,
    text: str,
    *,
    confidence: float = 0.9,
    override: float = 1.0,
    early: bool = False,
) -> tuple[TurnAssembler, float]:
    """One second of voice, 200 ms of quiet (an early model is asked 160 ms in), the STT's final (no
    endpoint: with Deepgram a final may come before it), 40 ms more quiet. Returns (turns, now)."""
    policy = TurnModelPolicy(override=override, early=early)
    turns = TurnAssembler(EndOfTurn(0.3), lambda t=None: 0.0, 0.0, judge=judge, policy=policy)
    now, cues = 0.0, 0
    for _ in range(50):
        now += 0.02
        turns.on_voice(3000.0, True, now, VOICED)
    for _ in range(10):
        now += 0.02
        cues |= turns.on_voice(0.0, False, now, QUIET)
    event = TranscriptEvent("final", text=text, confidence=confidence, start_s=0.0, end_s=1.0)
    turns.on_transcript(event, now, 0.0)
    for _ in range(2):
        now += 0.02
        cues |= turns.on_voice(0.0, False, now, QUIET)
    if judge is not None and judge.asked and judge.probability is not None and not judge.fails:
        assert cues & VoiceCue.CHECK_TURN  # the engine is told to check once the answer is in
    return turns, now


def ends_after(turns: TurnAssembler, now: float) -> float:
    """Silence (s, after the 240 ms already passed) until ``check`` gives the turn."""
    waited = 0.0
    while not isinstance(result := turns.check(now + waited), CallerTurn):
        assert isinstance(result, float) and waited < 5
        waited += result
    return round(waited, 3)


def test_a_confident_complete_ends_a_turn_the_words_hold() -> None:
    words_only = ends_after(*finished_turn(None, "We use HubSpot today.", confidence=0.3))
    assert words_only == pytest.approx(0.56)  # the STT was unsure: 0.8 s of silence
    judge = FakeJudge(0.9)
    turns, now = finished_turn(judge, "We use HubSpot today.", confidence=0.3)
    assert judge.asked == [61 * 160]  # once, after the final, on the caller's audio so far
    assert ends_after(turns, now) == 0.0
    # a sentence the STT left open keeps its hold; words that read unfinished end only on a very sure
    # model, and only when overriding them is allowed (TURN_MODEL_OVERRIDE < 1)
    assert ends_after(*finished_turn(FakeJudge(0.9), "So what we really wanted")) == pytest.approx(0.56)
    assert ends_after(*finished_turn(FakeJudge(0.99), "I'd like to, um")) == pytest.approx(0.96)
    assert ends_after(*finished_turn(FakeJudge(0.9), "I'd like to, um", override=0.97)) == pytest.approx(0.96)
    assert ends_after(*finished_turn(FakeJudge(0.99), "I'd like to, um", override=0.97)) == 0.0


def test_a_turn_the_words_end_costs_no_decision_unless_asked_early() -> None:
    judge = FakeJudge(0.95)
    turns, now = finished_turn(judge, "We use HubSpot today.")
    assert judge.asked == [] and ends_after(turns, now) == pytest.approx(0.06)  # the plain 300 ms
    turns, now = finished_turn(judge, "We use HubSpot today.", early=True)
    assert judge.asked == [58 * 160]  # 160 ms into the pause, before the final
    assert ends_after(turns, now) == 0.0  # complete: ends on the final, without the rest of the 300 ms


def test_an_incomplete_verdict_holds_the_turn_longer() -> None:
    turns, now = finished_turn(FakeJudge(0.15), "We use HubSpot today.", confidence=0.3)
    assert ends_after(turns, now) == pytest.approx(0.96)  # TURN_MODEL_HOLD_SEC (1.2 s), not 0.8 s
    assert turns.model_held == 1
    turns, now = finished_turn(FakeJudge(0.15), "We use HubSpot today.", early=True)
    assert ends_after(turns, now) == pytest.approx(0.96)  # early: even a turn the words would end
    # the safety net: the hold is bounded, and voice again makes the verdict stale
    turns, now = finished_turn(FakeJudge(0.15), "We use HubSpot today.", early=True)
    turns.on_voice(3000.0, True, now + 0.1, VOICED)
    assert turns.model_probability() is None


def test_without_an_answer_the_words_decide_after_a_short_wait() -> None:
    unsure = {"text": "We use HubSpot today.", "confidence": 0.3}
    words_only = ends_after(*finished_turn(None, **unsure))  # type: ignore[arg-type]
    assert ends_after(*finished_turn(FakeJudge(fails=True), **unsure)) == words_only  # type: ignore[arg-type]
    assert ends_after(*finished_turn(FakeJudge(ready=False), **unsure)) == words_only  # type: ignore[arg-type]
    hung = FakeJudge(None)  # asked, never answers: waits at most wait_s more, then the words decide
    turns, now = finished_turn(hung, **unsure)  # type: ignore[arg-type]
    assert ends_after(turns, now) == pytest.approx(words_only + turns.policy.wait_s)
    # one decision at a time per call: a second pause while the first is unanswered asks nothing
    for k in range(20):
        turns.on_voice(3000.0, True, now + 1 + k * 0.02, VOICED)
    for k in range(20):
        turns.on_voice(0.0, False, now + 1.4 + k * 0.02, QUIET)
    assert len(hung.asked) == 1


def test_the_judge_bounds_the_work_queued_over_all_calls() -> None:
    from speech.turn_model import TurnJudge

    judge = TurnJudge.__new__(TurnJudge)
    gate = threading.Event()

    class SlowModel:
        def complete_probability(self, pcm: np.ndarray, rate: int = 8000) -> float:
            gate.wait(5)
            return 0.5

    TurnJudge.__init__(judge, max_queued=2)
    judge._model = SlowModel()  # type: ignore[assignment]
    pcm = np.zeros(800, dtype=np.int16)
    first, second = judge.submit(pcm), judge.submit(pcm)
    assert first is not None and second is not None
    assert judge.submit(pcm) is None  # a third call falls back to the words
    gate.set()
    assert first.result(5) == 0.5 and second.result(5) == 0.5
    assert judge.submit(pcm) is not None
    judge.close()


def test_an_unsure_fragment_the_caller_then_finished_does_not_hold_the_turn() -> None:
    """The hold for an unsure STT is about the words the caller stopped on, not an earlier fragment."""
    turns = TurnAssembler(EndOfTurn(0.3), lambda t=None: 0.0, 0.0)
    now = 0.0
    for text, confidence in (("way.", 0.3), ("Can we book a demo next Tuesday?", 0.9)):
        for _ in range(25):
            now += 0.02
            turns.on_voice(3000.0, True, now, VOICED)
        turns.on_transcript(TranscriptEvent("final", text=text, confidence=confidence), now, 0.0)
        if text == "way.":  # the next words, first as interim text: the fragment's doubt is not theirs
            turns.on_transcript(TranscriptEvent("partial", text="Can we book a demo"), now, 0.0)
            assert turns.sounds_finished()
    assert turns.check(now + 0.31) == CallerTurn(
        "way. Can we book a demo next Tuesday?", 0.0, 0.0, 0.0, 3000.0
    )

    turns = TurnAssembler(EndOfTurn(0.3), lambda t=None: 0.0, 0.0)
    turns.on_voice(3000.0, True, 0.02, VOICED)
    turns.on_transcript(TranscriptEvent("final", text="We use them for today.", confidence=0.3), 0.02, 0.0)
    assert turns.check(0.35) == pytest.approx(0.47)  # an unsure last final still holds: 0.8 s in all


def test_words_the_caller_has_talked_past_do_not_ask_the_model() -> None:
    """An unsure fragment ("way.") and the caller goes on: at the next pause, before that speech's words
    are in, the fragment's doubt does not ask the model (on the speech bench it said "incomplete" about
    a finished question and held the turn 1.2 s); once the new words are in, they decide."""
    judge = FakeJudge(0.07)
    turns = TurnAssembler(EndOfTurn(0.3), lambda t=None: 0.0, 0.0, judge=judge, policy=TurnModelPolicy())
    now = 0.0
    for _ in range(20):
        now += 0.02
        turns.on_voice(3000.0, True, now, VOICED)
    for _ in range(15):  # the STT's endpoint: the fragment's final
        now += 0.02
        turns.on_voice(0.0, False, now, QUIET)
    turns.on_transcript(TranscriptEvent("final", text="way.", confidence=0.49), now, 0.0)
    now += 0.02
    turns.on_voice(0.0, False, now, QUIET)
    assert len(judge.asked) == 1  # unsure words hold the turn: the model is asked about this pause
    judge.asked.clear()
    for _ in range(60):  # the caller goes on: "Can we book a demo next Tuesday?"
        now += 0.02
        turns.on_voice(3000.0, True, now, VOICED)
    for _ in range(12):  # 240 ms of pause, the new words not in yet
        now += 0.02
        turns.on_voice(0.0, False, now, QUIET)
    assert judge.asked == []
    turns.on_transcript(TranscriptEvent("partial", text="Can we book a demo next Tuesday?"), now, 0.0)
    for _ in range(3):
        now += 0.02
        turns.on_voice(0.0, False, now, QUIET)
    assert judge.asked == []  # the words the caller stopped on sound finished
    final = TranscriptEvent("final", text="Can we book a demo next Tuesday?", confidence=0.93)
    turns.on_transcript(final, now, 0.0)
    turn = turns.check(now)
    assert isinstance(turn, CallerTurn) and turn.text == "way. Can we book a demo next Tuesday?"
