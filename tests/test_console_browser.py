"""The web console in a real browser: Debian's headless Chromium, driven by Playwright.

The browser's "microphone" is a WAV of synthesized caller speech (Chromium's fake capture device), so the
test call goes through getUserMedia → the console's mu-law encoder → the Media Streams WebSocket → the
same engine a phone call uses, with the caller's words transcribed by the local STT.
Screenshots of the main pages land in ``artifacts/console/``.
"""

from __future__ import annotations

import asyncio
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

from speech.audio import mulaw_to_pcm16
from tests.conftest import API_KEY, ROOT, LiveServer, make_settings

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = ROOT / "artifacts" / "console"
CALLER_LINE = "Hello, I would like to book a demo for my sales team."


def write_caller_wav(path: Path) -> None:
    """1.5 s of silence (the greeting plays), the caller's sentence, then silence: 8 kHz 16-bit mono."""
    from simulator.speech import synthesize_caller

    speech = mulaw_to_pcm16(synthesize_caller(CALLER_LINE))
    silence = np.zeros(8000 * 3 // 2, dtype=np.int16)
    tail = np.zeros(8000 * 20, dtype=np.int16)  # Chromium loops the file: keep the repeat far away
    samples = np.concatenate([silence, np.frombuffer(speech, dtype=np.int16), tail])
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(samples.tobytes())


@pytest.mark.asyncio
async def test_console_browser_call(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    caller_wav = tmp_path / "caller.wav"
    write_caller_wav(caller_wav)
    settings = make_settings(tmp_path, stt_provider="local", tts_provider="echo", llm_provider="echo")

    async with LiveServer(settings) as server, async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={caller_wav}",
                "--autoplay-policy=no-user-gesture-required",
                "--no-sandbox",
            ],
        )
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        # Sign in with an API key.
        await page.goto(server.base_url + "/")
        await page.fill("#api-key", "wrong-key")
        await page.click("#sign-in")
        await page.wait_for_selector("#toast:not([hidden])")
        await page.screenshot(path=str(SCREENSHOTS / "sign-in.png"))
        await page.fill("#api-key", API_KEY)
        await page.click("#sign-in")

        # Create an agent.
        await page.click("#new-agent")
        await page.fill("#agent-name", "Browser Bot")
        await page.fill("#agent-system_prompt", "You are Alex, an SDR for Acme Analytics. Be brief.")
        await page.fill("#agent-first_message", "Hi, this is Alex from Acme.")
        await page.fill("#agent-stt_keywords", "Acme, Acme Analytics, Acme")
        await page.select_option("#agent-turn_eagerness", "patient")
        await page.click("#save-agent")
        await page.wait_for_selector("#call-button")
        agent_id = page.url.rsplit("/", 1)[-1]
        assert agent_id.startswith("agent_")
        assert await page.input_value("#agent-stt_keywords") == "Acme, Acme Analytics"
        assert await page.input_value("#agent-turn_eagerness") == "patient"  # stored, shown back
        await page.screenshot(path=str(SCREENSHOTS / "agent.png"), full_page=True)

        # Place a test call: the fake microphone speaks CALLER_LINE after the greeting.
        await page.click("#call-button")
        await page.wait_for_function(
            "window.__call && window.__call.stats.framesReceived > 25", timeout=20_000
        )
        async with server.client() as api:
            conversation_id = await page.evaluate("window.__call.conversationId")
            user_text = ""
            for _ in range(120):  # up to 60 s: the caller speaks at ~1.5 s, then the local STT and a reply
                detail = (await api.get(f"/v1/convai/conversations/{conversation_id}")).json()
                user_turns = [t for t in detail["transcript"] if t["role"] == "user" and t["text"]]
                agent_replies = [t for t in detail["transcript"] if t["role"] == "agent" and t["seq"] > 1]
                user_text = " ".join(t["text"] for t in user_turns).lower()
                # The line may arrive as two turns ("Hello." then the rest) when the caller pauses.
                if agent_replies and "demo" in user_text:
                    break
                await asyncio.sleep(0.5)
            assert "demo" in user_text, detail["transcript"]
            await page.wait_for_selector("#live-transcript .turn.user")
            await page.screenshot(path=str(SCREENSHOTS / "test-call.png"), full_page=True)
            stats = await page.evaluate("window.__call.stats")
            assert stats["framesSent"] > 100 and stats["marksEchoed"] > 0

            # Live view, in a second tab (its own session sign-in) while the call is up.
            live = await browser.new_page(viewport={"width": 1280, "height": 600})
            await live.goto(server.base_url + "/")
            await live.fill("#api-key", API_KEY)
            await live.click("#sign-in")
            await live.wait_for_selector("#new-agent")
            await live.click("nav a[data-page=live]")
            await live.wait_for_function("document.querySelector('#live-count')?.textContent === '1'")
            await live.screenshot(path=str(SCREENSHOTS / "live-calls.png"))
            await live.close()

            # Leaving the agent page hangs up: the call ends within a few seconds.
            await page.goto(server.base_url + "/#/conversations")
            deadline = asyncio.get_running_loop().time() + 10
            while True:
                status = (await api.get(f"/v1/convai/conversations/{conversation_id}")).json()["status"]
                live_calls = (await api.get("/v1/convai/calls/live")).json()["calls"]
                ended = status == "completed" and live_calls == []
                if ended or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.25)
            assert ended, (status, live_calls)

        # The conversation is listed and its detail shows the words.
        await page.wait_for_selector("#conversations tr.clickable")
        await page.screenshot(path=str(SCREENSHOTS / "conversations.png"), full_page=True)
        await page.click("#conversations tr.clickable")
        await page.wait_for_selector("#transcript .turn.user")
        transcript_text = (await page.inner_text("#transcript")).lower()
        assert "demo" in transcript_text
        await page.screenshot(path=str(SCREENSHOTS / "conversation.png"), full_page=True)
        assert not errors, errors
        await browser.close()
