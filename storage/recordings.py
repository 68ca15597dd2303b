"""Two-channel call recording: the caller on the left, the agent on the right, on the call's own timeline.

Frames are appended as they pass (a bytearray extend per 20 ms frame); the WAV is written once, off the
event loop, when the stream ends. A call that goes on on a new Media Stream (keys pressed through a phone
menu: Twilio redirects the call, on this instance or another sharing the recordings volume) is recorded
leg by leg: each leg is appended to what the earlier ones wrote, never written over it.
"""

from __future__ import annotations

import asyncio
import logging
import wave
from pathlib import Path

import numpy as np

from providers.base import SAMPLE_RATE
from speech.audio import MULAW_SILENCE, MULAW_TO_PCM16

MAX_RECORDING_SEC = 4 * 3600


log = logging.getLogger(__name__)


class CallRecorder:
    def __init__(self, directory: str | Path, conversation_id: str, *, append_legs: bool = True) -> None:
        self.conversation_id = conversation_id
        self.append_legs = append_legs  # False: a file already there is written over (the simulator's)
        self.path = Path(directory) / f"{conversation_id}.wav"
        self._caller = bytearray()
        self._agent = bytearray()
        self._limit = MAX_RECORDING_SEC * SAMPLE_RATE

    def caller_audio(self, mulaw: bytes, at_sample: int | None = None) -> None:
        """Caller frames arrive continuously from Twilio; ``at_sample`` re-aligns after a gap."""
        self._append(self._caller, mulaw, at_sample)

    def agent_audio(self, mulaw: bytes, at_sample: int) -> None:
        """Agent frames are placed at the moment they were sent (silence fills the pauses)."""
        self._append(self._agent, mulaw, at_sample)

    def truncate_agent(self, at_sample: int) -> None:
        """Drop agent audio queued past ``at_sample``: a barge-in cleared it before it was played."""
        del self._agent[max(0, at_sample) :]

    def _append(self, track: bytearray, mulaw: bytes, at_sample: int | None) -> None:
        if at_sample is not None and at_sample > len(track):
            track.extend(bytes([MULAW_SILENCE]) * min(at_sample - len(track), self._limit))
        if len(track) < self._limit:
            track.extend(mulaw)

    @property
    def duration_sec(self) -> float:
        return max(len(self._caller), len(self._agent)) / SAMPLE_RATE

    async def save_url(self) -> str | None:
        """Save the recording; its API path, or None (nothing recorded, or the disk refused)."""
        try:
            path = await self.save()
        except OSError as exc:
            log.error(
                "could not save recording",
                extra={"fields": {"conversation_id": self.conversation_id, "error": type(exc).__name__}},
            )
            return None
        return f"/v1/convai/conversations/{self.conversation_id}/recording" if path else None

    async def save(self) -> Path | None:
        if not self._caller and not self._agent:
            return None
        caller, agent = bytes(self._caller), bytes(self._agent)
        return await asyncio.to_thread(self._write, caller, agent)

    def _write(self, caller: bytes, agent: bytes) -> Path:
        length = max(len(caller), len(agent))
        stereo = np.zeros((length, 2), dtype=np.int16)
        stereo[: len(caller), 0] = MULAW_TO_PCM16[np.frombuffer(caller, dtype=np.uint8)]
        stereo[: len(agent), 1] = MULAW_TO_PCM16[np.frombuffer(agent, dtype=np.uint8)]
        if self.append_legs and (earlier := self._earlier_legs()) is not None:
            stereo = np.concatenate([earlier, stereo])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".wav.part")
        with wave.open(str(partial), "wb") as out:
            out.setnchannels(2)
            out.setsampwidth(2)
            out.setframerate(SAMPLE_RATE)
            out.writeframes(stereo.tobytes())
        partial.replace(self.path)
        return self.path

    def _earlier_legs(self) -> np.ndarray | None:
        """What the call's earlier streams recorded (the file is named by the conversation), or None."""
        try:
            with wave.open(str(self.path), "rb") as earlier:
                shape = earlier.getnchannels(), earlier.getsampwidth(), earlier.getframerate()
                if shape != (2, 2, SAMPLE_RATE):
                    return None
                frames = earlier.readframes(earlier.getnframes())
        except (FileNotFoundError, wave.Error, EOFError):
            return None
        return np.frombuffer(frames, dtype=np.int16).reshape(-1, 2)
