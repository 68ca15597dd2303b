"""Voicing of one 20 ms caller frame: energy, WebRTC VAD and a spectral-flatness band.

Shared by the barge-in detector (while the agent talks) and the local STT's segmentation.
"""

from __future__ import annotations

import webrtcvad

from speech.audio import SAMPLE_RATE, frame_energy, mulaw_to_pcm16_bytes, spectral_flatness

frame_rms = frame_energy  # the detector's energy measure: RMS on the PCM16 scale


class FrameClassifier:
    """Energy and voicing of one 20 ms mu-law frame (VAD and FFT consulted only on loud frames).

    WebRTC VAD alone calls loud hiss, pink noise, hum and synth chords "voice". For the barge-in
    detector a frame louder than its threshold counts as voiced only if its spectral flatness is also
    in speech's band (chosen on the labelled barge-in set in bench/bargein and checked on speech
    under pink/white noise at 10-20 dB SNR, where detection held). The spectrum is looked at only
    when asked (the agent is talking) and only for frames that could trigger: it costs ~25 us.
    """

    FLATNESS_MIN = 0.001  # below: a few pure tones (mains hum, chords, dial tones)
    FLATNESS_MAX = 0.3  # above: noise-like (hiss, clicks, breath, wind)

    def __init__(self, vad_aggressiveness: int = 3, vad_floor: float = 300.0) -> None:
        self._vad = webrtcvad.Vad(vad_aggressiveness)
        self._vad_floor = vad_floor

    def classify(self, mulaw_frame: bytes, spectrum_above: float | None = None) -> tuple[float, bool]:
        """``spectrum_above``: frames louder than this must also have a speech-like spectrum."""
        energy = frame_rms(mulaw_frame)
        if energy < self._vad_floor or len(mulaw_frame) * 1000 // SAMPLE_RATE not in (10, 20, 30):
            return energy, False
        if not self._vad.is_speech(mulaw_to_pcm16_bytes(mulaw_frame), SAMPLE_RATE):
            return energy, False
        if spectrum_above is None or energy <= spectrum_above:
            return energy, True
        return energy, self.FLATNESS_MIN < spectral_flatness(mulaw_frame) < self.FLATNESS_MAX
