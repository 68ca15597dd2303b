"""Twilio's side of one call, lean enough for the load benchmark to run hundreds per process.

Each call posts the inbound webhook, opens the Media Stream from the TwiML, and then runs on one 20 ms
clock: send a caller frame (speech from a script, else line silence), play out the agent's audio like
Twilio does (real-time buffer, `mark` echoed when its audio has played, everything dropped on `clear`),
and time-stamp what matters:

- voice-to-voice: the caller's last speech frame sent → the first agent frame received after it;
- pacing: inter-arrival times of the agent's frames within a reply (jitter, underruns);
- barge-in: the caller's speech onset while the agent talks → `clear` received.

Frames are pre-encoded JSON strings and incoming messages are classified by a substring test, so the
client spends its time waiting, not parsing. The simulator CLI adds what a person trying the product
wants (a signed webhook, DTMF, a stereo recording of what each side heard) through optional arguments
that cost nothing when unused.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from dataclasses import dataclass, field

import httpx
import websockets

from storage.recordings import CallRecorder

FRAME_S = 0.02
FRAME_BYTES = 160
LEAD_FRAMES = 3  # frames the server sends ahead of real time at the start of each segment
SILENCE = b"\xff" * FRAME_BYTES
_STREAM_URL = re.compile(r'<Stream url="([^"]+)"')
_PARAMETER = re.compile(r'<Parameter name="([^"]+)" value="([^"]*)"')


@dataclass
class Utterance:
    frames: list[bytes]
    barge_in_after_s: float | None = None  # speak this long after the agent's reply starts, over it
    dtmf: str = ""  # keypad digits pressed (as Twilio `dtmf` events) instead of speaking


@dataclass
class CallResult:
    call_sid: str
    conversation_id: str = ""
    voice_to_voice_s: list[float] = field(default_factory=list)
    barge_in_s: list[float] = field(default_factory=list)
    interarrival_s: list[float] = field(default_factory=list)
    underruns: int = 0
    barges_missed: int = 0
    hung_up_by_agent: bool = False
    frames_received: int = 0
    frames_sent: int = 0
    turns_sent: int = 0
    # The agent's audio as the far end played it: frames heard whole before a `clear` or the hang-up.
    agent_heard_s: float = 0.0
    last_reply_heard_s: float = 0.0  # …of which the agent's last turn (by the marks that close its frames)
    error: str | None = None


class SimulatedCaller:
    """One call over the real protocol; ``run()`` returns its measurements."""

    REPLY_QUIET_S = 0.8  # the agent has finished its reply after this much quiet
    HANGUP_QUIET_S = 2.0  # before hanging up, wait longer: a slow next sentence is not the reply's end
    TURN_TIMEOUT_S = 20.0

    def __init__(
        self,
        base_url: str,
        call_sid: str,
        to_number: str,
        script: list[Utterance],
        *,
        from_number: str = "+15550001111",
        auth_token: str = "",
        recorder: CallRecorder | None = None,
        public_url: str | None = None,
        webhook_path: str = "/twiml/voice",
        answers_first: bool = False,
        marks_on_receipt: bool = False,
        room: list[bytes] | None = None,
    ) -> None:
        self.base_url = base_url
        self.call_sid = call_sid
        self.to_number = to_number
        self.from_number = from_number
        self.script = script
        self.auth_token = auth_token  # sign the webhook like Twilio (the server checks when it has a token)
        self.public_url = public_url or base_url  # the URL the server believes Twilio called
        self.recorder = recorder
        # An outbound call: Twilio fetches TwiML from /twiml/voice_outbound?conversation_id=…, and the
        # person (or machine) who picks up speaks first.
        self.webhook_path = webhook_path
        self.answers_first = answers_first
        # Echo each mark as it arrives, not once its audio played (what tests/phone_line.py does; a
        # network leg after Twilio also leaves the listener behind the echoed mark).
        self.marks_on_receipt = marks_on_receipt
        # What the line carries while the caller says nothing (looped): a noisy room, an office; None:
        # line silence.
        self.room = room or None
        self._t0 = 0.0
        self.result = CallResult(call_sid)
        self.stream_sid = "MZ" + call_sid[2:]
        self._last_agent_frame = 0.0
        self._reply_started: float | None = None
        self._playhead = 0.0
        self._pending_marks: list[tuple[float, str]] = []
        self._cleared_at: float | None = None
        self._awaiting_reply_since: float | None = None
        self._in_reply = False
        self._seq = 0
        self._replies: list[list[float]] = []
        self._plays_at: list[float] = []  # when each agent frame received plays (dropped on `clear`)
        self._ended_at: float | None = None  # the agent hung up (the stream closed) or we did
        # The agent turn of each frame received: the turn of the mark that closed its segment ("t3s1":
        # turn 3), None when a `clear` dropped it first; frames after the last mark: _last_turn's.
        self._frame_turns: list[int | None] = []
        self._last_turn: int | None = None

    async def run(self, http: httpx.AsyncClient) -> CallResult:
        try:
            self._t0 = time.perf_counter()
            ws_url, params = await self._webhook(http)
            self.result.conversation_id = params.get("conversation_id", "")
            async with websockets.connect(ws_url, max_size=2**20, compression=None) as ws:
                await self._send_json(ws, {"event": "connected", "protocol": "Call", "version": "1.0.0"})
                await self._send_json(
                    ws,
                    {
                        "event": "start",
                        "streamSid": self.stream_sid,
                        "start": {
                            "streamSid": self.stream_sid,
                            "accountSid": "ACbench",
                            "callSid": self.call_sid,
                            "tracks": ["inbound"],
                            "customParameters": params,
                            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                        },
                    },
                )
                receiver = asyncio.create_task(self._receive(ws))
                try:
                    await self._talk(ws)
                    await self._send_json(
                        ws,
                        {"event": "stop", "streamSid": self.stream_sid, "stop": {"callSid": self.call_sid}},
                    )
                finally:
                    receiver.cancel()
        except websockets.ConnectionClosedOK:
            self.result.hung_up_by_agent = True  # the agent ended the call: a normal ending
        except Exception as exc:
            self.result.error = f"{type(exc).__name__}: {str(exc)[:120]}"
        self._pacing()
        ended = self._ended_at or time.perf_counter()
        heard = [t + FRAME_S <= ended for t in self._plays_at]
        self.result.agent_heard_s = round(sum(heard) * FRAME_S, 3)
        turns = self._frame_turns + [self._last_turn] * (len(heard) - len(self._frame_turns))
        last = max((t for t in turns if t is not None), default=None)
        self.result.last_reply_heard_s = round(
            sum(h for h, t in zip(heard, turns, strict=True) if t == last and t is not None) * FRAME_S, 3
        )
        return self.result

    def _pacing(self) -> None:
        """Jitter and underruns of each reply's frames as a Twilio playout buffer would see them.

        The server sends a few frames ahead (its lead) and then one per 20 ms; a frame underruns when it
        arrives after the moment its predecessor finished playing.
        """
        for arrivals in self._replies:
            start = arrivals[0]
            burst = 0
            for k in range(1, len(arrivals)):
                gap = arrivals[k] - arrivals[k - 1]
                burst = burst + 1 if gap < 0.002 else 0
                if not 0 < burst <= LEAD_FRAMES:  # a segment's lead frames come at once, by design
                    self.result.interarrival_s.append(gap)
                if arrivals[k] > start + k * FRAME_S + 0.005:
                    self.result.underruns += 1
                    start = arrivals[k] - k * FRAME_S  # playback resumes from the late frame

    async def _webhook(self, http: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
        params = {
            "CallSid": self.call_sid,
            "From": self.from_number,
            "To": self.to_number,
            "AccountSid": "ACsimulator",
            "Direction": "outbound-api" if self.answers_first else "inbound",
            "CallStatus": "ringing",
        }
        headers = {}
        if self.auth_token:
            from twilio.request_validator import RequestValidator

            signed_url = self.public_url.rstrip("/") + self.webhook_path
            headers["X-Twilio-Signature"] = RequestValidator(self.auth_token).compute_signature(
                signed_url, params
            )
        response = await http.post(f"{self.base_url}{self.webhook_path}", data=params, headers=headers)
        response.raise_for_status()
        match = _STREAM_URL.search(response.text)
        if match is None:
            raise RuntimeError("no <Stream> in TwiML (call refused?)")
        return match.group(1), dict(_PARAMETER.findall(response.text))

    async def _send_json(self, ws: websockets.ClientConnection, message: dict) -> None:
        self._seq += 1
        message["sequenceNumber"] = str(self._seq)
        await ws.send(json.dumps(message))

    def _media(self, payload: bytes) -> str:
        self._seq += 1
        payload_b64 = base64.b64encode(payload).decode()
        return (
            f'{{"event":"media","sequenceNumber":"{self._seq}","streamSid":"{self.stream_sid}",'
            f'"media":{{"track":"inbound","payload":"{payload_b64}"}}}}'
        )

    async def _receive(self, ws: websockets.ClientConnection) -> None:
        try:
            await self._receive_messages(ws)
        finally:
            self._ended_at = self._ended_at or time.perf_counter()  # the line is dead: nothing more plays

    async def _receive_messages(self, ws: websockets.ClientConnection) -> None:
        async for raw in ws:
            now = time.perf_counter()
            if '"media"' in raw[:40]:
                self.result.frames_received += 1
                if not self._in_reply:
                    self._in_reply = True
                    self._reply_started = now
                    self._replies.append([])
                    if self._awaiting_reply_since is not None:
                        self.result.voice_to_voice_s.append(now - self._awaiting_reply_since)
                        self._awaiting_reply_since = None
                if self._replies:
                    self._replies[-1].append(now)
                self._last_agent_frame = now
                if self.recorder is not None:
                    payload = base64.b64decode(json.loads(raw)["media"]["payload"])
                    self.recorder.agent_audio(payload, self._sample_at(max(self._playhead, now)))
                self._plays_at.append(max(self._playhead, now))
                self._playhead = max(self._playhead, now) + FRAME_S
            elif '"mark"' in raw[:40]:
                name = json.loads(raw)["mark"]["name"]
                turn = int(name[1:].split("s", 1)[0]) if re.match(r"^t\d+s\d+$", name) else None
                self._frame_turns += [turn] * (len(self._plays_at) - len(self._frame_turns))
                self._last_turn = turn
                self._pending_marks.append((now if self.marks_on_receipt else max(self._playhead, now), name))
            elif '"clear"' in raw[:40]:
                self._cleared_at = now
                self._frame_turns += [None] * (len(self._plays_at) - len(self._frame_turns))
                if self.recorder is not None:
                    self.recorder.truncate_agent(self._sample_at(now))  # what was buffered is never heard
                # what was buffered is never heard
                self._plays_at = [t if t + FRAME_S <= now else float("inf") for t in self._plays_at]
                self._playhead = now
                for _, name in self._pending_marks:
                    await self._send_json(
                        ws, {"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}}
                    )
                self._pending_marks.clear()

    def _sample_at(self, t: float) -> int:
        return int((t - self._t0) * 8000)

    async def _press(self, ws: websockets.ClientConnection, digits: str) -> None:
        for digit in digits:
            await self._send_json(
                ws,
                {
                    "event": "dtmf",
                    "streamSid": self.stream_sid,
                    "dtmf": {"track": "inbound_track", "digit": digit},
                },
            )

    async def _echo_played_marks(self, ws: websockets.ClientConnection, now: float) -> None:
        while self._pending_marks and self._pending_marks[0][0] <= now:
            _, name = self._pending_marks.pop(0)
            await self._send_json(ws, {"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    def _agent_quiet(self, now: float) -> bool:
        quiet = now - self._last_agent_frame > self.REPLY_QUIET_S
        if quiet:
            self._in_reply = False
        return quiet

    async def _talk(self, ws: websockets.ClientConnection) -> None:
        """One 20 ms clock: caller frames out, marks echoed when played, the script advanced."""
        silence = self._media(SILENCE)
        next_tick = time.perf_counter()
        queue: list[bytes] = []
        script = list(self.script)
        # greeting → speaking → waiting → (next utterance) … → hanging_up; an answered outbound call: next
        phase = "next" if self.answers_first else "greeting"
        phase_since = next_tick
        barge: Utterance | None = None
        barge_onset: float | None = None
        quiet_ticks = 0
        while True:
            now = time.perf_counter()
            await self._echo_played_marks(ws, now)
            if phase == "greeting" and (
                (self.result.frames_received and self._agent_quiet(now))
                or now - phase_since > self.TURN_TIMEOUT_S
            ):
                phase, phase_since = "next", now
            elif phase == "waiting":
                if (
                    barge is not None
                    and self._awaiting_reply_since is None
                    and self._in_reply
                    and self._reply_started
                    and now - self._reply_started >= (barge.barge_in_after_s or 0)
                ):
                    queue = list(barge.frames)
                    self._cleared_at = None
                    barge_onset = now
                    barge = None
                    phase = "barging"
                elif (
                    self._awaiting_reply_since is None and self._agent_quiet(now)
                ) or now - phase_since > self.TURN_TIMEOUT_S:
                    barge = None
                    phase, phase_since = "next", now
            if barge_onset is not None and self._cleared_at is not None and self._cleared_at >= barge_onset:
                self.result.barge_in_s.append(self._cleared_at - barge_onset)
                barge_onset = None
            if phase == "barging":
                if not queue:
                    self._awaiting_reply_since = now
                    self._in_reply = False
                    phase, phase_since = "waiting", now
            if phase == "next":
                if barge_onset is not None:
                    self.result.barges_missed += 1
                    barge_onset = None
                if not script:
                    phase, phase_since = "hanging_up", now
                else:
                    utterance = script.pop(0)
                    if utterance.dtmf:
                        await self._press(ws, utterance.dtmf)
                    queue = list(utterance.frames) or [SILENCE]
                    phase, phase_since = "speaking", now
                    self.result.turns_sent += 1
            if phase == "hanging_up":
                # Quiet must hold across ticks: after a stall of this loop, frames already received are
                # only counted once the receiver task has run.
                if not self._pending_marks and now - self._last_agent_frame > self.HANGUP_QUIET_S:
                    quiet_ticks += 1
                else:
                    quiet_ticks = 0
                if quiet_ticks >= 5 or now - phase_since > self.TURN_TIMEOUT_S:
                    return
            if queue:
                frame = queue.pop(0)
                await ws.send(self._media(frame))
                if self.recorder is not None:
                    self.recorder.caller_audio(frame, self._sample_at(time.perf_counter()))
                if not queue and phase == "speaking":
                    self._awaiting_reply_since = time.perf_counter()
                    self._in_reply = False
                    phase, phase_since = "waiting", now
                    if script and script[0].barge_in_after_s is not None:
                        barge = script.pop(0)  # spoken over the reply to what was just said
                        self.result.turns_sent += 1
            else:
                quiet = self.room[self.result.frames_sent % len(self.room)] if self.room else SILENCE
                await ws.send(self._media(quiet) if self.room else silence)
                if self.recorder is not None:
                    self.recorder.caller_audio(quiet, self._sample_at(time.perf_counter()))
            self.result.frames_sent += 1
            next_tick += FRAME_S
            delay = next_tick - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_tick = time.perf_counter()  # the client fell behind: do not burst to catch up


def frames_of(mulaw: bytes, speech_rms: float = 200.0) -> list[bytes]:
    """20 ms frames of an utterance, leading and trailing silence trimmed: the last frame sent is speech."""
    from speech.audio import frame_energy

    padded = mulaw + b"\xff" * (-len(mulaw) % FRAME_BYTES)
    frames = [padded[i : i + FRAME_BYTES] for i in range(0, len(padded), FRAME_BYTES)]
    voiced = [i for i, frame in enumerate(frames) if frame_energy(frame) > speech_rms]
    return frames[voiced[0] : voiced[-1] + 1] if voiced else frames
