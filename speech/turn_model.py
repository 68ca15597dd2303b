"""Turn-end model: the caller's last 8 s of audio → the probability that their turn is complete.

Smart Turn v3.2 (Daily, BSD-2-Clause): an ~8 MB ONNX classifier on a Whisper-tiny-sized encoder, shipped
inside the ``pipecat-ai`` wheel (``pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx``). It is
loaded here with onnxruntime alone: nothing of the framework is imported (``pip install --no-deps
pipecat-ai==1.14.0`` is enough to have the file; or pass its path).

Input, as the model was trained: 16 kHz mono, the last 8 s (zero-padded at the start when shorter),
normalised to zero mean and unit variance, as 80 × 800 Whisper log-mel features (faster-whisper's
extractor computes them; no torch, no transformers). Output: one probability, > 0.5 meaning "complete".

Pure and blocking (~tens of ms a decision on one core): run it off the event loop.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 16000
WINDOW_S = 8
MODEL_FILE = "smart-turn-v3.2-cpu.onnx"


def packaged_model_path() -> Path | None:
    """The ONNX file of an installed ``pipecat-ai`` (located, not imported), or None."""
    spec = importlib.util.find_spec("pipecat")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "audio/turn/smart_turn/data" / MODEL_FILE
    return path if path.is_file() else None


def last_window(audio16k: np.ndarray) -> np.ndarray:
    """The last 8 s, zero-padded at the start (the turn's end sits at the window's end)."""
    samples = WINDOW_S * SAMPLE_RATE
    audio = np.asarray(audio16k, dtype=np.float32)[-samples:]
    return np.pad(audio, (samples - len(audio), 0)) if len(audio) < samples else audio


_extractor: Any = None


def features(audio16k: np.ndarray) -> np.ndarray:
    """80 × 800 Whisper log-mel features of the last 8 s, normalised as Smart Turn expects."""
    global _extractor
    if _extractor is None:
        from faster_whisper.feature_extractor import FeatureExtractor

        _extractor = FeatureExtractor(feature_size=80, sampling_rate=SAMPLE_RATE, chunk_length=WINDOW_S)
    audio = last_window(audio16k)
    audio = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
    mel = _extractor(audio, padding=0)
    frames = WINDOW_S * SAMPLE_RATE // 160
    if mel.shape[1] < frames:
        mel = np.pad(mel, ((0, 0), (0, frames - mel.shape[1])))
    return np.ascontiguousarray(mel[:, :frames], dtype=np.float32)


def to_16k(pcm16: np.ndarray, rate: int) -> np.ndarray:
    """int16 (or float) samples at ``rate`` → float32 at 16 kHz in [-1, 1]."""
    audio = np.asarray(pcm16)
    audio = audio.astype(np.float32) / 32768.0 if audio.dtype == np.int16 else audio.astype(np.float32)
    if rate == SAMPLE_RATE:
        return audio
    import soxr

    return soxr.resample(audio, rate, SAMPLE_RATE)


class TurnModel:
    """One ONNX session (thread-safe to run); ``complete_probability`` is the whole API."""

    def __init__(self, path: str | Path | None = None, threads: int = 1) -> None:
        import onnxruntime as ort

        model = Path(path) if path else packaged_model_path()
        if model is None or not model.is_file():
            raise FileNotFoundError(
                f"{MODEL_FILE} not found: install pipecat-ai (--no-deps) or pass its path"
            )
        options = ort.SessionOptions()
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(model), sess_options=options)
        self._input = self._session.get_inputs()[0].name
        self._lock = threading.Lock()  # one decision at a time per session: they are ~tens of ms

    def complete_probability(self, pcm: np.ndarray, rate: int = 8000) -> float:
        """Probability (0..1) that the caller's turn, ending at the audio's end, is complete."""
        batch = features(to_16k(pcm, rate))[None]
        with self._lock:
            out = self._session.run(None, {self._input: batch})
        return float(np.asarray(out[0]).reshape(-1)[0])


class TurnJudge:
    """The process's turn-end model, shared by every call, with a bounded amount of queued work.

    One inference thread (a decision is ~90 ms of one core): calls queue for it, and at most
    ``max_queued`` decisions may wait or run at once; past that ``submit`` says no (None) and the call
    falls back to the lexical rule, so many calls cannot pile up CPU work nobody will wait for.
    ``submit`` is non-blocking and returns a ``concurrent.futures.Future``; the caller polls it.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        threads: int = 1,
        max_queued: int = 2,
        on_decision: Callable[[float], None] | None = None,  # CPU seconds of each decision (metrics)
    ) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._on_decision = on_decision
        self._path = path
        self._threads = threads
        self.max_queued = max(1, max_queued)
        self._model: TurnModel | None = None
        self._queued = 0
        self._count_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="turn-model")
        self.seconds: list[float] = []  # CPU time of recent decisions (bench and logs read it)

    @property
    def ready(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Blocking: load the ONNX session and run it once (kernels are chosen on the first run)."""
        if self._model is None:
            model = TurnModel(self._path, self._threads)
            model.complete_probability(np.zeros(SAMPLE_RATE // 2, dtype=np.int16), SAMPLE_RATE)
            self._model = model

    async def warm(self) -> None:
        import asyncio

        await asyncio.get_running_loop().run_in_executor(self._executor, self.load)

    def submit(self, pcm: np.ndarray, rate: int = 8000) -> Any:
        """A Future of the complete-probability, or None (not loaded yet, or too much work queued)."""
        model = self._model
        if model is None:
            return None
        with self._count_lock:
            if self._queued >= self.max_queued:
                return None
            self._queued += 1

        def run() -> float:
            import time

            started = time.thread_time()
            try:
                return model.complete_probability(pcm, rate)
            finally:
                spent = time.thread_time() - started
                self.seconds = [*self.seconds[-999:], spent]
                if self._on_decision is not None:
                    self._on_decision(spent)
                with self._count_lock:
                    self._queued -= 1

        try:
            return self._executor.submit(run)
        except RuntimeError:  # shut down
            with self._count_lock:
                self._queued -= 1
            return None

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
