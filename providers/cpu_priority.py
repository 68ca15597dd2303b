"""Who gets the CPU first when the embedded models share two cores.

A caller waits on speech-to-text's final decode and on the first audio of each sentence; the LLM's
tokens after the first clause run ~10x faster than they are spoken, so they can wait. Measured on
2 cores: Piper's time to first audio for a clause goes from ~190 ms to ~390 ms while llama.cpp
generates alongside. So STT finals and TTS synthesis are *urgent*, and the LLM's generation thread
steps aside between tokens while any urgent job runs (bounded, so it is never starved).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class CpuPriority:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._urgent = 0

    @property
    def busy(self) -> bool:
        return self._urgent > 0

    @contextmanager
    def urgent(self) -> Iterator[None]:
        """Mark latency-critical inference running on the calling thread."""
        with self._cond:
            self._urgent += 1
        try:
            yield
        finally:
            with self._cond:
                self._urgent -= 1
                if self._urgent == 0:
                    self._cond.notify_all()

    def yield_to_urgent(self, max_wait_s: float = 0.5) -> None:
        """Called by background inference between steps: wait while urgent work runs (bounded)."""
        if self._urgent == 0:  # the common case, without taking the lock
            return
        with self._cond:
            self._cond.wait_for(lambda: self._urgent == 0, timeout=max_wait_s)


CPU = CpuPriority()  # one per process: the models it arbitrates are per process too
