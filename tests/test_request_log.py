"""The log file: one JSON line per request, without credentials."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.api_helpers import AGENTS, JWT_SECRET, bare_client, bearer, running_app
from tests.conftest import API_KEY

# ---------------------------------------------------------------- logging


@pytest_asyncio.fixture
async def restore_logging() -> AsyncIterator[None]:
    """create_app() reconfigures the root logger; put it back (and close the log file) afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


def request_lines(log_file: Path) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in log_file.read_text().splitlines()]  # every line is JSON
    return [e for e in entries if e["msg"] == "request"]


@pytest.mark.asyncio
@pytest.mark.usefixtures("restore_logging")
async def test_each_request_is_one_json_log_line_without_credentials(tmp_path: Path) -> None:
    log_file = tmp_path / "server.log"
    async with running_app(tmp_path, log_file=str(log_file), log_level="INFO") as client:
        start = len(request_lines(log_file))
        assert start == 0
        r = await client.get(AGENTS, params={"page_size": 5})
        assert r.status_code == 200
        lines = request_lines(log_file)
        assert len(lines) == 1
        line = lines[0]
        assert (line["method"], line["path"], line["status"], line["level"]) == ("GET", AGENTS, 200, "INFO")
        assert line["logger"] == "ai_sdr.http" and line["ms"] >= 0

        token = bearer()["Authorization"].removeprefix("Bearer ")
        async with bare_client(client) as anonymous:
            assert (await anonymous.get(AGENTS, headers={"xi-api-key": "wrong-key-xyz"})).status_code == 401
            assert (await anonymous.post(AGENTS, json={"name": "x"}, headers=bearer())).status_code == 201
        lines = request_lines(log_file)
        assert [(e["method"], e["path"], e["status"]) for e in lines] == [
            ("GET", AGENTS, 200),
            ("GET", AGENTS, 401),
            ("POST", AGENTS, 201),
        ]
    content = log_file.read_text()
    for secret in (API_KEY, "wrong-key-xyz", token, JWT_SECRET):
        assert secret not in content
