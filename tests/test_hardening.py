"""Smaller hardening items of the security review: a lead CSV is parsed off the event loop; Media
Streams upgrades are checked before they are accepted and the sockets waiting for their start are
capped; logs carry exception types, not their text; the generated API key is never printed; an Ollama
started after the service is used (LLM_PROVIDER=auto asks again); no package mirror or registry host
is named in the build and deploy files (the machine's own apt and pip configuration decide).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from api.auth import KeyRing
from storage.db import Database
from tests.conftest import ROOT, SQLITE_ONLY, LiveServer, free_port, make_settings
from tests.ollama_standin import DEFAULT_MODEL, OllamaStandIn
from utils import JsonLogFormatter

NUMBER = "+15550100001"


def logged(records: list[logging.LogRecord]) -> str:
    """The records as the service writes them (one JSON line each, structured fields included)."""
    formatter = JsonLogFormatter()
    return "\n".join(formatter.format(r) for r in records)


async def make_agent(client: httpx.AsyncClient, number: str | None = None) -> str:
    agent = await client.post(
        "/v1/convai/agents",
        json={"name": "Ava", "system_prompt": "Hello.", "first_message": "Hi, this is Ava."},
    )
    assert agent.status_code == 201, agent.text
    agent_id = agent.json()["agent_id"]
    if number:
        created = await client.post(
            "/v1/convai/phone-numbers", json={"phone_number": number, "agent_id": agent_id}
        )
        assert created.status_code == 201, created.text
    return agent_id


# ---------------------------------------------------------------- a lead CSV, parsed off the loop


@SQLITE_ONLY
@pytest.mark.asyncio
async def test_a_lead_csv_is_parsed_and_its_numbers_read_off_the_event_loop(
    app_client: httpx.AsyncClient,
) -> None:
    from core import phone_numbers as numbers
    from telephony import campaigns

    agent_id = await make_agent(app_client)
    rows = "".join(f"+1 212 555 {i:04d},Lead {i}\n" for i in range(2000))
    watched = {campaigns.parse_leads_csv.__code__: "parse_leads_csv", numbers.describe.__code__: "describe"}
    on_loop: Counter[str] = Counter()

    def profile(frame: Any, event: str, arg: Any) -> None:  # set for this thread only: the loop's
        if event == "call" and frame.f_code in watched:
            on_loop[watched[frame.f_code]] += 1

    loop_thread = threading.get_ident()
    sys.setprofile(profile)
    try:
        response = await app_client.post(
            "/v1/convai/batch-calling/upload",
            data={"call_name": "CSV", "agent_id": agent_id, "scheduled_time_unix": "4102444800"},
            files={"file": ("leads.csv", ("phone_number,first_name\n" + rows).encode(), "text/csv")},
        )
    finally:
        sys.setprofile(None)
    assert threading.get_ident() == loop_thread
    assert response.status_code == 200, response.text
    assert response.json()["total_calls_scheduled"] == 2000  # parsed, and every number read
    assert not on_loop, f"ran on the event loop: {dict(on_loop)}"


# ---------------------------------------------------------------- /ws/voice: checks before the upgrade


@pytest.mark.asyncio
async def test_sockets_waiting_for_their_start_are_capped_and_a_real_call_still_works(tmp_path: Path) -> None:
    from simulator.caller import SimulatedCaller, Utterance, frames_of
    from simulator.speech import synthesize_caller

    speech = frames_of(synthesize_caller("Hi, is this Ava?"))
    settings = make_settings(tmp_path, max_pending_streams=3)
    async with LiveServer(settings) as server, server.client() as client:
        await make_agent(client, NUMBER)
        with pytest.raises(websockets.InvalidStatus) as bad_sid:
            await websockets.connect(f"{server.ws_url}/ws/voice/not%20a%20sid")
        assert bad_sid.value.response.status_code == 403  # refused before the upgrade
        idle = [await websockets.connect(f"{server.ws_url}/ws/voice/CA{i:032d}") for i in range(3)]
        assert server.runtime.calls.pending == 3
        for i in range(3, 5):  # more than the cap: refused, not accepted and left waiting
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(f"{server.ws_url}/ws/voice/CA{i:032d}")
            assert refused.value.response.status_code == 503
            assert b"too many streams" in refused.value.response.body
        await idle.pop().close()
        for _ in range(100):
            if server.runtime.calls.pending == 2:
                break
            await asyncio.sleep(0.02)
        assert server.runtime.calls.pending == 2
        caller = SimulatedCaller(server.base_url, "CA" + "6" * 32, NUMBER, [Utterance(speech)])
        async with httpx.AsyncClient() as http:
            result = await caller.run(http)
        assert result.error is None and result.voice_to_voice_s, result.error
        # (the idle sockets may have been cut meanwhile: no start within 10 s)
        for socket in idle:
            await socket.close()
        for _ in range(100):
            if server.runtime.calls.pending == 0:
                break
            await asyncio.sleep(0.02)
        assert server.runtime.calls.pending == 0  # the call's place too: freed once it was a live call


# ---------------------------------------------------------------- logs: exception types, not text


@pytest.mark.asyncio
async def test_a_provider_error_is_logged_by_its_type_without_its_text(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from providers.ollama_llm import OllamaLLMProvider

    secret = "sk-live-" + "7f3a" * 8
    async with OllamaStandIn(fail=f"invalid credentials {secret}") as standin:
        llm = OllamaLLMProvider(make_settings(tmp_path, ollama_host=standin.url, ollama_model=DEFAULT_MODEL))
        with caplog.at_level(logging.DEBUG):
            await llm.warm()
        assert standin.chats  # the failing request was made
    lines = logged(caplog.records)
    assert "ollama warm-up failed" in lines and "ResponseError" in lines
    assert secret not in lines and "invalid credentials" not in lines


# ---------------------------------------------------------------- the generated API key


async def first_start(settings: Any) -> KeyRing:
    db = Database(settings.database_url)
    try:
        await db.upgrade()
        keyring = KeyRing(settings)
        await keyring.load(db)
        return keyring
    finally:
        await db.dispose()


def test_the_generated_key_is_never_printed_or_logged_only_where_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, api_keys="")
    with caplog.at_level(logging.DEBUG):
        keyring = asyncio.run(first_start(settings))
    key = Path(settings.api_key_file).read_text().strip()
    assert key.startswith("sk_") and keyring.accepts(key)
    output = capsys.readouterr()
    lines = logged(caplog.records)
    assert key not in output.out and key not in output.err and key not in lines
    assert settings.api_key_file in lines  # says where it is instead


def test_a_key_that_cannot_be_saved_is_not_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, api_keys="", api_key_file=str(tmp_path / "missing" / ".api_key"))
    with caplog.at_level(logging.DEBUG):
        keyring = asyncio.run(first_start(settings))
    output = capsys.readouterr()
    assert "sk_" not in output.out + output.err + logged(caplog.records)
    assert "API_KEYS" in logged(caplog.records) and not keyring._digests  # nobody could read it back


# ---------------------------------------------------------------- LLM_PROVIDER=auto asks Ollama again


@pytest.mark.asyncio
async def test_an_ollama_started_after_the_service_is_used_and_readyz_says_when_it_is_not(
    tmp_path: Path,
) -> None:
    from simulator.caller import SimulatedCaller, Utterance, frames_of
    from simulator.speech import synthesize_caller

    port = free_port()
    settings = make_settings(
        tmp_path,
        llm_provider="auto",
        ollama_host=f"http://127.0.0.1:{port}",
        ollama_model=DEFAULT_MODEL,
        llm_auto_reprobe_sec=0.3,
    )
    async with LiveServer(settings) as server, server.client() as client:
        await make_agent(client, NUMBER)
        down = (await client.get("/readyz")).json()
        assert down["llm"]["provider"] == "local" and down["llm"]["fallback"] is True, down
        async with OllamaStandIn(port=port) as standin:
            for _ in range(100):  # /readyz asks again in the background once the answer is 0.3 s old
                await asyncio.sleep(0.1)
                llm = (await client.get("/readyz")).json()["llm"]
                if llm["provider"] == "ollama":
                    break
            assert llm == {"provider": "ollama", "fallback": False, "checked_s_ago": llm["checked_s_ago"]}
            caller = SimulatedCaller(
                server.base_url,
                "CA" + "5" * 32,
                NUMBER,
                [Utterance(frames_of(synthesize_caller("Hi there.")))],
            )
            async with httpx.AsyncClient() as http:
                result = await caller.run(http)
            assert result.error is None, result.error
            replies = [c for c in standin.chats if c.get("messages")]
            assert replies, "the call's reply did not come from Ollama"
            detail = (await client.get(f"/v1/convai/conversations/{result.conversation_id}")).json()
            agent_lines = [t["text"] for t in detail["transcript"] if t["role"] == "agent"]
            assert any(line.startswith("You said:") for line in agent_lines), agent_lines


# ---------------------------------------------------------------- no mirror or registry named


def test_the_debian_mirror_comes_from_the_machines_apt_sources(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "apt_mirror.sh"

    def mirror(files: dict[str, str], suite: str = "bookworm") -> subprocess.CompletedProcess[str]:
        etc = tmp_path / f"apt{len(list(tmp_path.iterdir()))}"
        (etc / "sources.list.d").mkdir(parents=True)
        for name, text in files.items():
            (etc / name).write_text(text)
        env = {**os.environ, "APT_ETC": str(etc)}
        return subprocess.run([str(script), suite], env=env, capture_output=True, text=True, timeout=10)

    deb822 = (
        "Types: deb\nURIs: http://apt.one.invalid/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb-src\nURIs: http://src.invalid/debian\nSuites: bookworm\n\n"
        "Types: deb\n# a comment\nURIs: http://apt.one.invalid/debian/\nSuites: bookworm bookworm-updates\n"
    )
    assert mirror({"sources.list.d/debian.sources": deb822}).stdout == "http://apt.one.invalid/debian\n"
    one_line = "# deb http://old.invalid/debian bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] http://apt.two.invalid/d bookworm main\n"
    assert mirror({"sources.list": one_line}).stdout == "http://apt.two.invalid/d\n"
    (tmp_path / "mirrors.list").write_text("# first\nhttp://apt.three.invalid/debian priority:1\n")
    listed = f"Types: deb\nURIs: mirror+file:{tmp_path / 'mirrors.list'}\nSuites: bookworm\n"
    assert mirror({"sources.list.d/d.sources": listed}).stdout == "http://apt.three.invalid/debian\n"
    disabled = "Types: deb\nURIs: http://apt.four.invalid/debian\nSuites: bookworm\nEnabled: no\n"
    none = mirror({"sources.list.d/d.sources": disabled})
    assert none.returncode == 1 and none.stdout == ""
    assert mirror({"sources.list.d/debian.sources": deb822}, "trixie").returncode == 1
    check = (ROOT / "scripts" / "container_check.sh").read_text()
    assert "scripts/apt_mirror.sh" in check


def test_no_package_mirror_or_registry_host_is_named_in_build_and_deploy_files() -> None:
    files = [ROOT / "Dockerfile", ROOT / "Makefile", *ROOT.glob("requirements*.txt"), ROOT / "pyproject.toml"]
    files += [p for d in ("scripts", "deploy") for p in (ROOT / d).rglob("*") if p.is_file()]
    url_host = re.compile(r"[a-z][a-z0-9+.-]*://([^/\s\"'`:;}]+)", re.IGNORECASE)
    # A domain name with a public top-level domain, with or without a scheme (a bare mirror host too).
    domain = re.compile(r"\b(?:[a-z0-9-]+\.)+(?:org|com|net|io|dev)\b", re.IGNORECASE)
    local = {"localhost", "127.0.0.1", "0.0.0.0"}
    named: list[str] = []
    for path in files:
        text = path.read_text(errors="replace")
        for host in url_host.findall(text):
            # compose service names (app, ollama) have no dot; example.com is for examples
            if host not in local and "." in host and not host.endswith("example.com") and "$" not in host:
                named.append(f"{path.relative_to(ROOT)}: {host}")
        for match in domain.finditer(text):
            if not match.group(0).lower().endswith("example.com"):
                named.append(f"{path.relative_to(ROOT)}: {match.group(0)}")
    assert not named, named
