"""Small helpers shared across the service: ids, time, logging, phone numbers."""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
from datetime import UTC, datetime


def new_id(prefix: str) -> str:
    """An opaque id such as ``agent_3f9c…`` (96 random bits)."""
    return f"{prefix}_{secrets.token_hex(12)}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line; ``extra={"fields": {...}}`` adds structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            # The exception type only: tracebacks can carry secrets and request data.
            entry["error"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str)


_TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&\s\"]+")


class RedactQueryTokens(logging.Filter):
    """uvicorn logs a WebSocket's path with its query: a listen token (``?token=``) is not written."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_IN_QUERY.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in record.args
            )
        return True


def setup_logging(level: str = "INFO", log_file: str = "") -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file))
    formatter = JsonLogFormatter()
    for handler in handlers:
        handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn's access log is replaced by our own one-line-per-request middleware.
    logging.getLogger("uvicorn.access").disabled = True
    if not any(isinstance(f, RedactQueryTokens) for f in logging.getLogger("uvicorn.error").filters):
        logging.getLogger("uvicorn.error").addFilter(RedactQueryTokens())
    for noisy in ("httpx", "httpcore", "chromadb", "sentence_transformers", "faster_whisper", "websockets"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
