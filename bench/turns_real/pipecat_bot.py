"""A Pipecat bot on the same turns, the same way: Twilio Media Streams over a WebSocket.

Runs in its own venv (``bench/.pipecat_venv``, git-ignored; bench/turns_real/pipecat_requirements.txt):
Pipecat's FastAPI WebSocket transport with its Twilio serializer, Silero VAD, and its default turn stop
strategy (Smart Turn v3 analyser, ``LocalSmartTurnAnalyzerV3``, the model our engine also uses), local
Whisper (faster-whisper, the same packaged base model as our embedded STT), and instant echo LLM/TTS
stand-ins like our bench profile's: what is timed is Pipecat's turn-taking, as shipped (defaults).

It serves ``POST /twiml/voice`` (TwiML with the stream URL) and the stream, so bench.turns_real.run's
client plays the turns to it unchanged. Started by ``python -m bench.turns_real.run --pipecat``:

    bench/.pipecat_venv/bin/python bench/turns_real/pipecat_bot.py PORT WHISPER_MODEL_DIR
"""

from __future__ import annotations

import json
import sys

import numpy as np
import uvicorn
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import Response
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.services.tts_service import TTSService
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 8766
WHISPER = sys.argv[2] if len(sys.argv) > 2 else "base"
GREETING = "Hi, this is Alex."
app = FastAPI()


class EchoLLM(FrameProcessor):
    """Answers every (confirmed) context at once with the caller's last words, like our echo LLM."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            if getattr(frame, "speculation", False):
                return  # a provisional context: never spoken
            messages = frame.context.get_messages()
            said = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
            await self.push_frame(LLMFullResponseStartFrame())
            await self.push_frame(LLMTextFrame(f"You said: {str(said)[:80]}."))
            await self.push_frame(LLMFullResponseEndFrame())
        else:
            await self.push_frame(frame, direction)


class ToneTTS(TTSService):
    """Instant speech: a steady tone, 50 ms per character (at most 3 s), like our echo TTS."""

    def __init__(self) -> None:
        super().__init__(sample_rate=8000)

    async def run_tts(self, text: str, context_id: str):  # type: ignore[no-untyped-def]
        n = int(8000 * min(3.0, 0.05 * len(text)))
        tone = (np.sin(2 * np.pi * 220 * np.arange(n) / 8000) * 6000).astype(np.int16).tobytes()
        yield TTSAudioRawFrame(audio=tone, sample_rate=8000, num_channels=1, context_id=context_id)


@app.post("/twiml/voice")
async def twiml(request: Request) -> Response:
    form = await request.form()
    body = (
        f'<Response><Connect><Stream url="ws://127.0.0.1:{PORT}/ws">'
        f'<Parameter name="conversation_id" value="{form.get("CallSid", "")}"/>'
        "</Stream></Connect></Response>"
    )
    return Response(body, media_type="text/xml")


@app.websocket("/ws")
async def stream(websocket: WebSocket) -> None:
    await websocket.accept()
    start: dict = {}
    async for raw in websocket.iter_text():  # "connected", then "start" with the stream's ids
        msg = json.loads(raw)
        if msg.get("event") == "start":
            start = msg["start"]
            break
    serializer = TwilioFrameSerializer(
        stream_sid=start.get("streamSid", ""),
        call_sid=start.get("callSid"),
        params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
    )
    transport = FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=serializer,
        ),
    )
    stt = WhisperSTTService(
        settings=WhisperSTTService.Settings(model=WHISPER), device="cpu", compute_type="int8"
    )
    context = LLMContext([{"role": "system", "content": "You are Alex."}])
    # VAD before the segmented STT (it transcribes each VAD segment); the user aggregator's default
    # stop strategy (Smart Turn v3) ends the turn.
    aggregators = LLMContextAggregatorPair(context, user_params=LLMUserAggregatorParams())
    pipeline = Pipeline(
        [
            transport.input(),
            VADProcessor(vad_analyzer=SileroVADAnalyzer()),
            stt,
            aggregators.user(),
            EchoLLM(),
            ToneTTS(),
            transport.output(),
            aggregators.assistant(),
        ]
    )
    task = PipelineTask(
        pipeline, params=PipelineParams(audio_in_sample_rate=16000, audio_out_sample_rate=8000)
    )

    @transport.event_handler("on_client_connected")
    async def greet(_transport, _ws) -> None:  # type: ignore[no-untyped-def]
        await task.queue_frames([TTSSpeakFrame(GREETING)])

    @transport.event_handler("on_client_disconnected")
    async def bye(_transport, _ws) -> None:  # type: ignore[no-untyped-def]
        await task.cancel()

    await PipelineRunner(handle_sigint=False).run(task)


@app.get("/readyz")
async def readyz() -> dict:
    return {"ok": True}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="warning")
