"""What the suite shares across tests to stay fast, and that it proves the same as doing it each time:
the caller-speech cache (``CALLER_SPEECH_CACHE``: a line is synthesized once per session, then read back
whole; another voice, speed or steadiness is other audio; unset, nothing is kept) and the migrated SQLite
file fresh databases are copied from (the schema the migrations build, at their head)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import simulator.speech as speech


def test_a_line_is_synthesized_once_then_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[tuple[str, str, float, bool]] = []
    real = speech._synthesize

    def counted(text: str, voice: str, speed: float, steady: bool) -> bytes:
        runs.append((text, voice, speed, steady))
        return real(text, voice, speed, steady)

    monkeypatch.setattr(speech, "_synthesize", counted)
    monkeypatch.setenv(speech.CACHE_ENV, str(tmp_path / "cache"))
    first = speech.synthesize_caller("Hi there.", voice="espeak:en-us")
    again = speech.synthesize_caller("Hi there.", voice="espeak:en-us")
    assert len(first) > 4000 and again == first and len(runs) == 1  # real audio, synthesized once
    assert len(list((tmp_path / "cache").glob("*.ulaw"))) == 1
    louder = speech.synthesize_caller("Hi there.", voice="espeak:en-us", gain_db=6)
    assert len(runs) == 1 and louder != first and len(louder) == len(first)  # gain is applied after
    speech.synthesize_caller("Hi there.", voice="espeak:en-us+f3")
    speech.synthesize_caller("Hi there.", voice="espeak:en-us", speed=1.3)
    speech.synthesize_caller("Hi there.", voice="espeak:en-us", steady=True)
    assert len(runs) == 4 and len(list((tmp_path / "cache").glob("*"))) == 4

    monkeypatch.delenv(speech.CACHE_ENV)
    speech.synthesize_caller("Hi there.", voice="espeak:en-us")
    assert len(runs) == 5  # no cache configured: synthesized every time


def test_the_suite_caches_caller_speech_for_the_session(caller_speech_cache: Path) -> None:
    import os

    assert os.environ[speech.CACHE_ENV] == str(caller_speech_cache) and caller_speech_cache.is_dir()


def _schema(path: Path) -> tuple[list[tuple[str, str]], list[str]]:
    db = sqlite3.connect(path)
    try:
        tables = db.execute(
            "SELECT name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
        )
        versions = db.execute("SELECT version_num FROM alembic_version")
        return list(tables), [v for (v,) in versions]
    finally:
        db.close()


def test_a_fresh_sqlite_database_is_the_migrations_schema_at_head(
    tmp_path: Path, sqlite_template_dir: Path
) -> None:
    from alembic.script import ScriptDirectory

    from storage.db import alembic_config, upgrade_schema
    from tests.conftest import fresh_sqlite, make_settings

    migrated = tmp_path / "migrated-here.db"
    upgrade_schema(f"sqlite+aiosqlite:///{migrated}")
    make_settings(tmp_path)  # the default database of a test's service: a copy
    copied = tmp_path / "agents.db"
    head = ScriptDirectory.from_config(alembic_config(f"sqlite:///{copied}")).get_current_head()
    tables, versions = _schema(copied)
    assert versions == [head] and len(tables) > 10
    assert (tables, versions) == _schema(migrated)
    assert (sqlite_template_dir / "migrated.db").exists()
    # an existing database is never replaced (a restart of the service keeps its data)
    db = sqlite3.connect(copied)
    db.execute("CREATE TABLE kept (x)")
    db.commit()
    db.close()
    fresh_sqlite(copied)
    make_settings(tmp_path)
    assert "kept" in [name for name, _ in _schema(copied)[0]]


def test_the_embedding_model_is_loaded_once_per_process_and_shared() -> None:
    """Every app (and knowledge store) of a process embeds with one loaded MiniLM: a second store does not
    load it again, and encodes from two stores at once give the vectors each gives alone."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from knowledge.embeddings import Embedder

    first, second = Embedder(), Embedder("all-MiniLM-L6-v2")
    try:
        alone = first.embed_sync(["Orbit CRM costs 49 dollars per seat."])
        assert alone.shape == (1, 384)
        assert second._load() is first._load()  # the same model object: loaded once
        texts = [f"Sentence number {i} about pricing and seats." for i in range(40)]
        expected = first.embed_sync(texts)
        with ThreadPoolExecutor(2) as pool:
            together = list(pool.map(lambda e: e.embed_sync(texts), [first, second]))
        for vectors in together:
            assert np.allclose(vectors, expected, atol=1e-5)
    finally:
        first.close()
        second.close()
