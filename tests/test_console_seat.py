"""The supervisor seat in the console (issue 28 item 5), in Debian's Chromium driven by Playwright.

A simulated caller is on a call on one instance (Twilio's side played by ``tests.phone_line``; the
caller's words scripted by the Deepgram stand-in); the console is served by a second instance of the same
PostgreSQL database, so every socket and command crosses between them. The console lists the call with its stage and the caller's mood, opens it,
plays both tracks through Web Audio (the test reads what the audio graph rendered), shows the transcript
as it happens, whispers and says (the caller hears the say), takes the call over with the browser's
microphone (Chromium's fake capture device plays a WAV of the supervisor's words: the caller must hear
that much speech, as loud), releases it, transfers it (warm) and ends it. No page error, no console error.
The screenshots in docs/console.md's seat section are written here.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import wave
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from call.sentiment import estimate
from providers.instant import SPEECH_ENERGY
from speech.audio import mulaw_to_pcm16
from tests.conftest import API_KEY, ROOT, LiveServer, free_port, make_settings
from tests.test_multi_instance import eventually, make_agent
from tests.test_seat import speech, start_call

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
IMAGES = ROOT / "docs" / "img"
PHONE = {"width": 390, "height": 844}
ANGRY = "Too expensive, not interested."
SECOND = "What does it cost?"
SUPERVISOR_LINE = "Hi, this is Sam, the team lead. I can help with pricing."
LEAD_IN_S = 0.5  # the fake microphone's silence before the words (it opens once the agent has stopped)


def frame_levels(mulaw: bytes) -> np.ndarray:
    """RMS per 20 ms frame, on the PCM16 scale."""
    pcm = np.frombuffer(mulaw_to_pcm16(mulaw), dtype=np.int16).astype(np.float64)
    frames = pcm[: len(pcm) // 160 * 160].reshape(-1, 160)
    return np.sqrt((frames**2).mean(axis=1))


def voiced(levels: np.ndarray) -> tuple[float, float]:
    """(seconds from the first to the last voiced frame, RMS over the voiced frames)."""
    loud = np.flatnonzero(levels > SPEECH_ENERGY)
    if not len(loud):
        return 0.0, 0.0
    return (loud[-1] - loud[0] + 1) * 0.02, float(np.sqrt((levels[loud] ** 2).mean()))


def write_supervisor_wav(path: Path) -> bytes:
    """Silence, the supervisor's words, then a long silence (Chromium loops the file). The words, mu-law."""
    from simulator.speech import synthesize_caller

    words = synthesize_caller(SUPERVISOR_LINE)
    pcm = np.frombuffer(mulaw_to_pcm16(words), dtype=np.int16)
    samples = np.concatenate([np.zeros(int(8000 * LEAD_IN_S), np.int16), pcm, np.zeros(8000 * 30, np.int16)])
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(samples.tobytes())
    return words


async def shot(page: Any, name: str) -> None:
    """A screenshot for the docs, quantized to a 64-colour palette to stay small."""
    from PIL import Image

    IMAGES.mkdir(parents=True, exist_ok=True)
    image = Image.open(io.BytesIO(await page.screenshot(full_page=True))).convert("RGB")
    image = image.crop((0, 0, image.width, min(image.height, 2000)))
    image.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(IMAGES / name, optimize=True)


def test_the_caller_mood_estimate() -> None:
    assert estimate([]) == (None, None)
    assert estimate([ANGRY])[0] == "negative"
    assert estimate(["Yes, that sounds great, I'd love a demo."])[0] == "positive"
    assert estimate(["not bad at all, no problem"])[0] == "positive"  # negation flips
    assert estimate(["What does the annual plan cost?"]) == ("neutral", 0.0)
    assert estimate(["Sounds great, thanks.", ANGRY])[0] == "positive"  # the latest turn weighs most


@pytest.mark.asyncio
async def test_a_supervisor_listens_steers_takes_over_and_releases_in_the_browser(
    tmp_path: Path, postgres: Any
) -> None:
    from playwright.async_api import async_playwright

    from tests.deepgram_standin import DeepgramStandIn

    supervisor_wav = tmp_path / "supervisor.wav"
    supervisor_words = write_supervisor_wav(supervisor_wav)
    # The stand-in scripts one line per utterance: the supervisor's words may come as a few utterances.
    script = [
        ANGRY,
        SECOND,
        "Hi, this is Sam,",
        "the team lead.",
        "I can help with pricing.",
    ]
    async with DeepgramStandIn("dg-key", transcripts=script) as deepgram:
        database = await postgres.create_database()
        ports = free_port(), free_port()

        def settings(name: str, port: int) -> Any:
            return make_settings(
                tmp_path / name,
                database_url=database,
                multi_instance=True,
                chroma_host="127.0.0.1",  # required with several instances; no knowledge base is used
                instance_id=f"app-{name}",
                instance_url=f"http://127.0.0.1:{port}",
                call_command_poll_sec=30.0,  # commands cross by LISTEN/NOTIFY
                stt_provider="deepgram",
                deepgram_api_key="dg-key",
                deepgram_url=deepgram.url,
            )

        async with (
            LiveServer(settings("a", ports[0]), port=ports[0]) as a,
            LiveServer(settings("b", ports[1]), port=ports[1]) as server,
            server.client() as client,
            httpx.AsyncClient() as http,
            async_playwright() as pw,
        ):
            # The call is on instance A; the console is served by B (listen and take-over are relayed).
            await make_agent(client)
            line = await start_call(a, http)
            cid = line.conversation_id
            line.say(speech(1.0, seed=1))  # ANGRY
            await line.wait_reply(2, quiet_s=0.3)

            browser = await pw.chromium.launch(
                executable_path=CHROMIUM,
                headless=True,
                args=[
                    "--use-fake-ui-for-media-stream",
                    "--use-fake-device-for-media-stream",
                    f"--use-file-for-fake-audio-capture={supervisor_wav}",
                    "--autoplay-policy=no-user-gesture-required",
                    "--no-sandbox",
                ],
            )
            page = await browser.new_page(viewport={"width": 1200, "height": 860})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            await page.goto(server.base_url + "/#/live")
            await page.fill("#api-key", API_KEY)
            await page.click("#sign-in")

            # The live list: the call, its stage and the caller's mood (from what they said).
            row = page.locator(f"#live-calls tr[data-conversation='{cid}']")
            await row.locator(".pill.mood-negative").wait_for(timeout=10_000)
            await row.locator(".pill.ACTIVE").wait_for(timeout=10_000)  # A's row: refreshed each heartbeat
            assert "app-a" in await row.inner_text()
            await shot(page, "console-live.png")
            await row.click()

            # Opened: both tracks play through Web Audio, the transcript so far and as it happens.
            await page.wait_for_selector("#seat-status:text('listening')")
            assert ANGRY in await page.inner_text("#seat-transcript")
            line.say(speech(1.0, seed=2))  # SECOND
            await line.wait_reply(3, quiet_s=0.3)
            await page.wait_for_function(
                f"document.querySelector('#seat-transcript').innerText.includes({SECOND!r})"
            )
            await page.wait_for_function("window.__seat.stats.frames.outbound > 20")
            await page.wait_for_function("window.__seat.stats.audibleReads > 5")
            stats = await page.evaluate("window.__seat.stats")
            assert stats["frames"]["inbound"] > 100 and stats["slots"] > 100
            assert stats["peakRms"] > 0.02  # the speech and the agent's voice were rendered, not silence

            # Whisper: reaches the call, never heard.
            replies = len(line.replies)
            await page.fill("#seat-whisper-text", "They are price-sensitive: mention the annual discount.")
            await page.click("#seat-whisper")
            await page.wait_for_selector("#seat-events li:has-text('whisper')")
            # Say: the caller hears it next, in the agent's voice, and it is in the transcript.
            await page.fill("#seat-say-text", "Quick note from my colleague.")
            await page.click("#seat-say")
            said = await line.wait_reply(replies + 1, quiet_s=0.3)
            assert said.frames > 50  # the echo voice: ~55 ms a character
            await page.wait_for_function(
                "document.querySelector('#seat-transcript').innerText.includes('Quick note from my colleague.')"
            )

            # Take over: the fake microphone's words are what the caller hears.
            heard_before = len(line.heard)
            await page.click("#seat-takeover")
            await page.wait_for_selector("#seat-release:not([hidden])")
            spoken_frames = int(
                (LEAD_IN_S + len(supervisor_words) / 8000 + 0.5) / 0.02
            )  # the words, then quiet
            await page.wait_for_function(f"window.__seat.micFramesSent > {spoken_frames}", timeout=15_000)
            await asyncio.sleep(0.3)  # the last frames on their way to the caller
            await shot(page, "console-seat.png")
            await page.set_viewport_size(PHONE)
            await shot(page, "console-seat-phone.png")
            overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"the seat is {overflow}px wider than a phone"
            await page.click("#seat-release")
            await page.wait_for_selector("#seat-takeover:not([hidden])")
            heard_until = len(line.heard)
            sent = await page.evaluate("window.__seat.micFramesSent")
            await asyncio.sleep(0.5)
            assert await page.evaluate("window.__seat.micFramesSent") == sent  # the microphone is off

            actions = (await client.get(f"/v1/convai/conversations/{cid}/control")).json()["actions"]
            assert [a["type"] for a in actions] == ["whisper", "say", "takeover", "release"]
            assert actions[0]["payload"]["text"].startswith("They are price-sensitive")

            async def supervisor_turn() -> Any:
                turns = (await client.get(f"/v1/convai/conversations/{cid}")).json()["transcript"]
                return [t for t in turns if t["kind"] == "supervisor"]

            spoken = await eventually(supervisor_turn)
            assert spoken[0]["text"] == script[2]

            # Transfer (the mode passed through) and end, each confirmed first.
            page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
            await page.fill("#seat-transfer-to", "+14155550123")
            await page.select_option("#seat-transfer-mode", "warm")
            await page.click("#seat-transfer")
            await page.wait_for_selector("#seat-events li:has-text('+14155550123 (warm)')")
            await page.click("#seat-end")
            await page.wait_for_selector("#seat-status:text('supervisor_ended_call')", timeout=15_000)
            await line.closed_by_server.wait()
            actions = (await client.get(f"/v1/convai/conversations/{cid}/control")).json()["actions"]
            assert actions[-2]["type"] == "transfer"
            assert actions[-2]["payload"] == {"to": "+14155550123", "mode": "warm"}
            assert actions[-1]["type"] == "end_call"
            assert {x["delivered_to"] for x in actions} == {"app-a"}  # sent to B, carried out on A
            for track in ("inbound", "outbound"):
                delays = sorted((await page.evaluate("window.__seat.stats.delayMs"))[track])
                print(
                    f"seat {track} delay ms: p50 {delays[len(delays) // 2]} p95 {delays[len(delays) * 95 // 100]}"
                )
            await browser.close()

    # What the caller heard during the take-over is the microphone's words: as long, about as loud.
    heard_s, heard_rms = voiced(frame_levels(b"".join(line.heard[heard_before:heard_until])))
    words_s, words_rms = voiced(frame_levels(supervisor_words))
    print(
        f"take-over: heard {heard_s:.2f} s at RMS {heard_rms:.0f}; the microphone's words {words_s:.2f} s, {words_rms:.0f}"
    )
    assert abs(heard_s - words_s) < 0.5, (heard_s, words_s)
    assert 0.3 < heard_rms / words_rms < 3.0, (heard_rms, words_rms)
    assert not errors, errors
