"""The real labelled set: caller turns cut from recorded human speech that ships inside packages.

Sources (fetched with pip as sdists into the cache, nothing committed; licences below):

- ``pyannote-audio`` 4.0.7 sdist (MIT; the audio is AMI Meeting Corpus, CC BY 4.0): ``tests/data/*.wav``
  (15 × 30 s, 16 kHz, 4-person meetings) with speaker-turn labels in ``tests/data/debug.*.rttm``, and
  ``src/pyannote/audio/sample/sample.wav`` + ``sample.rttm`` (30 s, two speakers).
- ``silero-vad`` 6.2.3 sdist (MIT): ``examples/c++/aepyx_8k.wav`` (169 s, 8 kHz, several speakers,
  no labels). Its turns are labelled here by silence alone (a true end = ≥ ``AEPYX_END_S`` of
  silence, then the next voice), so they are a second, weaker source and reported apart.
- Debian's ``asterisk-core-sounds-en-wav`` 1.6.1 (CC BY-SA 3.0, recorded by Allison Smith; fetched with
  ``apt-get download``): the telephone prompts, 8 kHz, one read utterance a file, its true end the end of
  the file. Read, not conversational: one or two sentences, some with a pause between them (a turn-taker
  that answers there cuts in). Every ``ASTERISK_EVERY``-th prompt of ``ASTERISK_MIN_MS``–``MAX_TURN_MS``
  by name: the **held-out split** (``split: "held_out"``); the thresholds were fitted on the other two
  sources (``split: "fit"``).

A turn is one speaker's stretch of speech that nobody else talks over (RTTM), with a true end: the next
speaker starts, or a long silence follows. Its internal pauses (≥ ``MIN_PAUSE_MS`` of silence between
voiced runs, from the audio's own energy) are where a turn-taker may cut in. Each turn becomes 8 kHz
mu-law at a phone's level (active speech RMS ``TARGET_RMS`` on the PCM16 scale, 300–3400 Hz band),
written to ``bench/data/turns_real/<id>.ulaw`` with ``labels.json``: ``voice_ms`` (first voice),
``end_ms`` (the true end: last voice), ``pauses`` ([start, end] ms of each internal pause).

    python -m bench.turns_real.build        # downloads the two sdists (pip) and the .deb (apt-get), cuts, labels
"""

from __future__ import annotations

import itertools
import json
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np

from speech.audio import pcm16_to_mulaw

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "bench" / "data" / "turns_real"
PKGS = DATA / "pkgs"
SOURCES = {"pyannote-audio": "4.0.7", "silero-vad": "6.2.3"}
DEB = "asterisk-core-sounds-en-wav"
DEB_VERSION = "1.6.1-1"
SET_VERSION = 2
RATE = 8000
FRAME_MS = 20
MIN_PAUSE_MS = 300  # a silence this long inside one speaker's turn is a pause a turn-taker may act on
MIN_TURN_MS = 1200  # shorter turns ("yeah", "okay") test nothing about pauses or ends
MAX_TURN_MS = 14000
SAME_SPEAKER_GAP_S = 2.5  # one speaker's RTTM segments this close, nobody between: one turn
HANDOVER_S = 0.6  # the next speaker may come in this much before the end (a handover, cut there)
END_SILENCE_S = 0.8  # a true end without a next speaker: at least this much silence follows
AEPYX_END_S = 1.0
TARGET_RMS = 2000.0  # active speech on a phone line, PCM16 scale (the engine's barge-in floor is 800)
LEAD_MS = 200  # silence kept before the first voice
ASTERISK_MIN_MS = 1500  # voice from first to last frame
ASTERISK_EVERY = 6  # of the ~200 prompts that long, by name: ~33 turns, a bench run stays short


def download() -> dict[str, Path]:
    """The sdists, by pip (the package index as configured), once."""
    PKGS.mkdir(parents=True, exist_ok=True)
    found: dict[str, Path] = {}
    for name, version in SOURCES.items():
        stem = name.replace("-", "_") + f"-{version}"
        existing = list(PKGS.glob(f"{stem}.tar.gz"))
        if not existing:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--no-binary",
                    ":all:",
                    "-q",
                    "-d",
                    str(PKGS),
                    f"{name}=={version}",
                ],
                check=True,
            )
            existing = list(PKGS.glob(f"{stem}.tar.gz"))
        found[name] = existing[0]
    return found


def download_deb() -> Path:
    """The Debian package, by apt-get (the archive as configured), once."""
    PKGS.mkdir(parents=True, exist_ok=True)
    found = list(PKGS.glob(f"{DEB}_*.deb"))
    if not found:
        subprocess.run(["apt-get", "download", f"{DEB}={DEB_VERSION}"], cwd=PKGS, check=True)
        found = list(PKGS.glob(f"{DEB}_*.deb"))
    return found[0]


def extract(archive: Path, wanted: tuple[str, ...]) -> dict[str, bytes]:
    """Members whose path contains one of ``wanted`` (path inside the sdist, without its top folder)."""
    out: dict[str, bytes] = {}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            inner = member.name.split("/", 1)[-1]
            if member.isfile() and any(w in inner for w in wanted):
                handle = tar.extractfile(member)
                if handle is not None:
                    out[inner] = handle.read()
    return out


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Mono float32 samples and rate of a RIFF WAV (PCM16 or float32; the first channel)."""
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            fmt = struct.unpack("<HHIIHH", body[:16])
        elif cid == b"data" and fmt is not None:
            tag, channels, rate, _, _, bits = fmt
            if tag == 3 and bits == 32:
                x = np.frombuffer(body, "<f4").astype(np.float32)
            elif bits == 16:
                x = np.frombuffer(body, "<i2").astype(np.float32) / 32768.0
            else:
                raise ValueError(f"unsupported WAV format {fmt}")
            return x[: len(x) // channels * channels].reshape(-1, channels)[:, 0], rate
        pos += 8 + size + (size & 1)
    raise ValueError("no data chunk")


def phone_band(x: np.ndarray, rate: int) -> np.ndarray:
    """To 8 kHz through a 300–3400 Hz band (FFT mask: offline, exact, no filter state to carry)."""
    import soxr

    y = soxr.resample(x.astype(np.float32), rate, RATE) if rate != RATE else x.astype(np.float32)
    spec = np.fft.rfft(y)
    freqs = np.fft.rfftfreq(len(y), 1 / RATE)
    spec[(freqs < 300) | (freqs > 3400)] = 0
    return np.fft.irfft(spec, len(y)).astype(np.float32)


def frame_rms(y: np.ndarray) -> np.ndarray:
    n = RATE * FRAME_MS // 1000
    frames = y[: len(y) // n * n].reshape(-1, n)
    return np.sqrt(np.mean(frames**2, axis=1))


def voiced_frames(rms: np.ndarray) -> np.ndarray:
    """Voice by energy relative to the clip: above 1/12 of its loud frames' level (-21.6 dB) and 4× its floor."""
    loud = float(np.percentile(rms, 90))
    floor = float(np.percentile(rms, 10))
    return rms > max(loud / 12.0, floor * 4.0)


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) frame runs of True, with voiced runs shorter than 60 ms dropped (clicks)."""
    out, start = [], None
    for k, v in enumerate([*mask.tolist(), False]):
        if v and start is None:
            start = k
        elif not v and start is not None:
            if k - start >= 3:
                out.append((start, k))
            start = None
    return out


def parse_rttm(text: str) -> dict[str, list[tuple[float, float, str]]]:
    by_uri: dict[str, list[tuple[float, float, str]]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 8 and parts[0] == "SPEAKER":
            start, dur = float(parts[3]), float(parts[4])
            by_uri.setdefault(parts[1], []).append((start, start + dur, parts[7]))
    return {uri: sorted(segs) for uri, segs in by_uri.items()}


def rttm_turns(segs: list[tuple[float, float, str]], length_s: float) -> list[tuple[float, float, str]]:
    """One speaker's stretches nobody else talks over, with a true end (next speaker, or silence)."""
    turns: list[tuple[float, float, str]] = []
    merged: list[list] = []
    for start, end, spk in segs:
        if merged and merged[-1][2] == spk and start - merged[-1][1] <= SAME_SPEAKER_GAP_S:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end, spk])
    for start, end, spk in merged:
        others = [(s, e) for s, e, p in segs if p != spk and s < end and e > start - 0.3]
        # A handover: the next speaker comes in over the last ``HANDOVER_S`` (the true end is there).
        handover = [s for s, _ in others if end - HANDOVER_S < s and s > start]
        if handover:
            end = min(handover)
        # Anyone else talking inside: the turn starts after the last of them (one voice only).
        inside = [e for s, e in others if s < end]
        if inside:
            start = max(start, max(inside) + 0.1)
        if end - start < MIN_TURN_MS / 1000:
            continue
        after = [s for s, _, p in segs if p != spk and s >= end - HANDOVER_S]
        if not after and length_s - end < END_SILENCE_S:
            continue  # the clip stops: no true end
        turns.append((start, end, spk))
    return turns


def label_turn(y: np.ndarray, start_s: float, end_s: float) -> dict | None:
    """Cut [start, end] (plus a lead), level it, find the voice, its pauses and its end."""
    a = max(0, int((start_s - LEAD_MS / 1000) * RATE))
    b = min(len(y), int((end_s + 0.1) * RATE))
    clip = y[a:b]
    rms = frame_rms(clip)
    if len(rms) < MIN_TURN_MS // FRAME_MS:
        return None
    voiced = runs(voiced_frames(rms))
    if not voiced:
        return None
    first, last = voiced[0][0], voiced[-1][1]
    speech = np.concatenate([rms[s:e] for s, e in voiced])
    gain = TARGET_RMS / 32768.0 / max(float(np.sqrt(np.mean(speech**2))), 1e-6)
    n = RATE * FRAME_MS // 1000
    lead = max(0, first - LEAD_MS // FRAME_MS)
    clip = np.clip(clip[lead * n : last * n] * gain, -1.0, 1.0)
    pauses = [
        [(e1 - lead) * FRAME_MS, (s2 - lead) * FRAME_MS]
        for (_, e1), (s2, _) in itertools.pairwise(voiced)
        if (s2 - e1) * FRAME_MS >= MIN_PAUSE_MS
    ]
    duration = (last - first) * FRAME_MS
    if not MIN_TURN_MS <= duration <= MAX_TURN_MS:
        return None
    return {
        "audio": pcm16_to_mulaw(clip),
        "voice_ms": (first - lead) * FRAME_MS,
        "end_ms": (last - lead) * FRAME_MS,
        "pauses": pauses,
    }


def ami_cases(archive: Path) -> list[dict]:
    files = extract(archive, ("tests/data/", "src/pyannote/audio/sample/sample."))
    rttm: dict[str, list[tuple[float, float, str]]] = {}
    for name, body in files.items():
        if name.endswith(".rttm"):
            rttm.update(parse_rttm(body.decode()))
    cases = []
    for name, body in sorted(files.items()):
        if not name.endswith(".wav"):
            continue
        uri = Path(name).stem.replace("ñ", "n")  # the sdist spells one file "trñ00.wav"
        if uri not in rttm:
            continue
        x, rate = read_wav(body)
        y = phone_band(x, rate)
        for k, (start, end, spk) in enumerate(rttm_turns(rttm[uri], len(x) / rate)):
            turn = label_turn(y, start, end)
            if turn is None:
                continue
            cases.append(
                {
                    "id": f"ami_{uri}_{k}",
                    "source": "pyannote-audio sdist (AMI, CC BY 4.0)",
                    "speaker": spk,
                    "from_s": round(start, 2),
                    **turn,
                }
            )
    return cases


def aepyx_cases(archive: Path) -> list[dict]:
    """No speaker labels: a turn is voice between two silences of ≥ AEPYX_END_S (its true end)."""
    files = extract(archive, ("examples/c++/aepyx_8k.wav",))
    x, rate = read_wav(next(iter(files.values())))
    y = phone_band(x, rate)
    voiced = runs(voiced_frames(frame_rms(y)))
    groups: list[list[tuple[int, int]]] = []
    for run in voiced:
        if groups and (run[0] - groups[-1][-1][1]) * FRAME_MS < AEPYX_END_S * 1000:
            groups[-1].append(run)
        else:
            groups.append([run])
    cases = []
    for k, group in enumerate(groups[:-1]):  # the last one runs into the clip's end
        start, end = group[0][0] * FRAME_MS / 1000, group[-1][1] * FRAME_MS / 1000
        turn = label_turn(y, start, end)
        if turn is not None:
            cases.append(
                {
                    "id": f"aepyx_{k}",
                    "source": "silero-vad sdist (aepyx_8k.wav, MIT)",
                    "speaker": "",
                    "from_s": round(start, 2),
                    **turn,
                }
            )
    return cases


def asterisk_cases(deb: Path) -> list[dict]:
    """Each prompt one turn: voice from its first to its last voiced frame, the end of the file its end."""
    import io

    tar_bytes = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True
    ).stdout
    prompts: list[tuple[str, np.ndarray, int]] = []
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            if member.isfile() and member.name.endswith(".wav") and "/en_US_f_Allison/" in member.name:
                handle = tar.extractfile(member)
                if handle is not None:
                    x, rate = read_wav(handle.read())
                    name = member.name.split("/en_US_f_Allison/", 1)[1][:-4].replace("/", "_")
                    prompts.append((name, x, rate))
    cases = []
    long_enough = []
    for name, x, rate in prompts:
        y = phone_band(x, rate)
        voiced = runs(voiced_frames(frame_rms(y)))
        if voiced and ASTERISK_MIN_MS <= (voiced[-1][1] - voiced[0][0]) * FRAME_MS <= MAX_TURN_MS:
            long_enough.append((name, y, voiced))
    for name, y, voiced in long_enough[::ASTERISK_EVERY]:
        # a true end: the file ends; pad a second of silence so that the label's end is voice's end
        padded = np.concatenate([y, np.zeros(RATE, dtype=np.float32)])
        turn = label_turn(padded, voiced[0][0] * FRAME_MS / 1000, voiced[-1][1] * FRAME_MS / 1000)
        if turn is not None:
            cases.append(
                {
                    "id": f"ast_{name}",
                    "source": f"Debian {DEB} {DEB_VERSION} (Allison Smith, CC BY-SA 3.0)",
                    "speaker": "allison",
                    "from_s": round(voiced[0][0] * FRAME_MS / 1000, 2),
                    "split": "held_out",
                    **turn,
                }
            )
    return cases


def transcribe(mulaw: bytes) -> list[tuple[float, float, str]]:
    """Words with times (s) by the packaged Whisper base: what the caller said, for reading the results."""
    global _whisper
    import soxr
    from faster_whisper import WhisperModel

    from providers.local_stt import packaged_model_dir
    from speech.audio import MULAW_TO_PCM16

    if _whisper is None:
        _whisper = WhisperModel(
            str(packaged_model_dir()), device="cpu", compute_type="int8", cpu_threads=1, local_files_only=True
        )
    pcm = MULAW_TO_PCM16[np.frombuffer(mulaw, dtype=np.uint8)] / 32768.0
    audio = soxr.resample(pcm, RATE, 16000).astype(np.float32)
    segments, _ = _whisper.transcribe(audio, language="en", word_timestamps=True, beam_size=1)
    return [(w.start, w.end, w.word.strip()) for seg in segments for w in (seg.words or [])]


_whisper = None


def build() -> list[dict]:
    archives = download()
    cases = [
        {"split": "fit", **c}
        for c in ami_cases(archives["pyannote-audio"]) + aepyx_cases(archives["silero-vad"])
    ]
    cases += asterisk_cases(download_deb())
    DATA.mkdir(parents=True, exist_ok=True)
    labels = []
    for case in cases:
        words = transcribe(case["audio"])
        while case["pauses"] and words and words[0][1] * 1000 > case["pauses"][0][0] + 60:
            # voice before the first pause that holds no words (a breath, a cough, someone far off):
            # the turn starts after that pause
            shift = case["pauses"][0][1] - LEAD_MS
            case["audio"] = case["audio"][shift * RATE // 1000 :]
            case["voice_ms"], case["end_ms"] = LEAD_MS, case["end_ms"] - shift
            case["pauses"] = [[a - shift, b - shift] for a, b in case["pauses"][1:]]
            words = [(a - shift / 1000, b - shift / 1000, w) for a, b, w in words]
        if not words or case["end_ms"] - case["voice_ms"] < MIN_TURN_MS // 2:
            continue
        case["text"] = " ".join(w for _, _, w in words)
        # the words before each pause: what a text end-of-turn signal sees there
        case["text_at_pauses"] = [
            " ".join(w for _, e, w in words if e * 1000 <= a + 60) for a, _ in case["pauses"]
        ]
        (DATA / f"{case['id']}.ulaw").write_bytes(case.pop("audio"))
        labels.append({**case, "set_version": SET_VERSION})
    (DATA / "labels.json").write_text(json.dumps(labels, indent=1))
    return labels


def main() -> None:
    labels = build()
    paused = [c for c in labels if c["pauses"]]
    for c in labels:
        print(
            f"{c['id']:<16} {c['end_ms'] - c['voice_ms']:>6} ms  pauses "
            + ", ".join(f"{b - a}" for a, b in c["pauses"])
        )
        for at in c["text_at_pauses"]:
            print(f"    … {at[-70:]!r}")
        print(f"    = {c['text'][-90:]!r}")
    print(f"{len(labels)} turns, {len(paused)} with internal pauses ≥ {MIN_PAUSE_MS} ms → {DATA}")


if __name__ == "__main__":
    main()
