"""API authentication: ``xi-api-key`` (ElevenLabs style) or ``Authorization: Bearer <JWT>``."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

import jwt
from fastapi import HTTPException, Request, status
from sqlalchemy import select

from config import Settings
from models import ApiKey
from storage.db import Database

log = logging.getLogger(__name__)


def write_private_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only, from the first byte on.

    The file is created with mode 600 (``os.open``; never world-readable, not even for an instant) under a
    temporary name and moved into place, so an existing file with a wider mode is replaced, not reused.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """The accepted API keys, held as SHA-256 digests and compared in constant time."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._digests: list[str] = [hash_key(k) for k in settings.api_key_list()]

    async def load(self, db: Database) -> None:
        """Add the keys stored in the database; generate one if there is none at all.

        The generated key is written to API_KEY_FILE (mode 600) and never printed or logged: container
        output is collected by log drivers and shared, so the log says only where the key is. A key
        that cannot be saved is not kept (nobody could read it back): the service then has no key."""
        async with db.session() as session:
            stored = list((await session.scalars(select(ApiKey.key_hash))).all())
            self._digests.extend(stored)
            if self._digests:
                return
            key = "sk_" + secrets.token_urlsafe(32)
            path = Path(self._settings.api_key_file)
            try:
                write_private_file(path, key + "\n")
            except OSError as exc:
                log.error(
                    "no API_KEYS configured and the generated key could not be saved: set API_KEYS, or make "
                    "API_KEY_FILE writable",
                    extra={"fields": {"api_key_file": str(path), "error": type(exc).__name__}},
                )
                return
            session.add(ApiKey(key_hash=hash_key(key), label="generated at first start"))
            self._digests.append(hash_key(key))
        log.warning(
            "no API_KEYS configured: generated an API key and saved it to API_KEY_FILE (mode 600)",
            extra={"fields": {"api_key_file": str(path)}},
        )

    def accepts(self, key: str) -> bool:
        digest = hash_key(key)
        ok = False
        for known in self._digests:
            ok |= hmac.compare_digest(digest, known)
        return ok


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def verify_jwt(token: str, settings: Settings) -> dict:
    secret = settings.jwt_secret.get_secret_value()
    if not secret:
        raise _unauthorized("bearer tokens are not enabled (JWT_SECRET is not set)")
    try:
        return jwt.decode(token, secret, algorithms=[settings.jwt_algorithm], options={"require": ["exp"]})
    except jwt.ExpiredSignatureError:
        raise _unauthorized("bearer token has expired") from None
    except jwt.PyJWTError:
        raise _unauthorized("invalid bearer token") from None


async def require_auth(request: Request) -> None:
    """FastAPI dependency guarding every ``/v1`` route (and ``/metrics``); then the caller's rate limit."""
    runtime = request.app.state.runtime
    key = request.headers.get("xi-api-key")
    if key is not None:
        if not runtime.keyring.accepts(key):
            raise _unauthorized("invalid API key")
        caller = "key:" + hash_key(key)
    else:
        authorization = request.headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("missing credentials: send the xi-api-key header or a Bearer token")
        claims = verify_jwt(token, runtime.settings)
        caller = "sub:" + str(claims["sub"]) if claims.get("sub") else "jwt:" + hash_key(token)
    limiter = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        await limiter.check(caller)
