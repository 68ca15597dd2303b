"""The AI SDR service: FastAPI app factory, lifespan and route wiring.

Run with ``uvicorn main:app --host 0.0.0.0 --port 9001``.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from api.auth import require_auth
from api.middleware import BodySizeLimitMiddleware, RequestLogMiddleware
from api.rate_limit import SharedTokenBuckets, TokenBuckets
from api.routers import (
    agent_tests,
    agent_versions,
    agents,
    analytics,
    batch_calling,
    browser_calls,
    calls,
    console,
    conversations,
    dnc,
    elevenlabs,
    experiments,
    health,
    knowledge,
    metrics,
    outbound,
    phone_numbers,
    playbooks,
    recordings,
    seat,
    telephony,
    tools,
    webhook_deliveries,
    webhooks,
)
from app_runtime import Runtime
from config import ConfigError, Settings, get_settings
from utils import setup_logging

log = logging.getLogger("ai_sdr")

ERROR_RESPONSES = {
    400: {"description": "Malformed request (a body that cannot be parsed, an invalid cursor)"},
    401: {"description": "Missing or invalid credentials"},
    404: {"description": "Unknown id"},
    422: {"description": "Invalid request body or parameters"},
    429: {"description": "Too many requests for this API key (see Retry-After)"},
}


UNREADABLE_BODY = "the request body could not be read: send UTF-8 JSON with Content-Type: application/json"


def _message(error: dict) -> str:
    """A validation error's message; for a body that is not JSON, with where and why it broke."""
    msg = str(error.get("msg", ""))
    reason = (error.get("ctx") or {}).get("error")
    if error.get("type") == "json_invalid" and isinstance(reason, str):
        msg = f"{msg}: {reason}"
    return msg


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    setup_logging(settings.log_level, settings.log_file)
    try:
        settings.check_shared_config()
        settings.check_bench_providers()
    except ConfigError as exc:
        log.error(exc.message)
        raise

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings)
        app.state.runtime = runtime
        await runtime.start()
        # What start-up loaded (models, modules) lives as long as the process: moved out of the cyclic
        # collector's reach, so a full collection during a call scans only what calls allocated. Over
        # the start-up heap one took ~200 ms: a stall of the event loop that every live call hears.
        gc.collect()
        gc.freeze()
        if settings.is_multi_instance:  # every instance counts a key against the same limit
            app.state.rate_limiter = SharedTokenBuckets(
                runtime.db, settings.api_rate_limit_per_min, settings.api_rate_limit_burst
            )
        runtime.install_sigterm_drain()
        log.info("service started", extra={"fields": {"public_url": settings.public_url}})
        try:
            yield
        finally:
            await runtime.stop()
            log.info("service stopped")

    app = FastAPI(
        title="AI SDR voice agent",
        version="1.0.0",
        description="Self-hosted voice agent: Twilio calls, streaming STT/TTS, LLM with RAG and tools.",
        lifespan=lifespan,
    )
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_request_bytes,
        upload_max_bytes=settings.max_upload_bytes,
    )
    app.add_middleware(RequestLogMiddleware)
    # Outermost: everything inside sees the client a trusted proxy names, and only a trusted proxy.
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.forwarded_allow_ips)
    app.state.rate_limiter = TokenBuckets(settings.api_rate_limit_per_min, settings.api_rate_limit_burst)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": _message(e), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": errors})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            # FastAPI's words for a body it could not decode (bytes that are not UTF-8, say).
            exc = StarletteHTTPException(400, detail=UNREADABLE_BODY)
        return await http_exception_handler(request, exc)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.error(
            "unhandled error",
            extra={"fields": {"path": request.url.path, "error": type(exc).__name__}},
        )
        return JSONResponse(status_code=500, content={"detail": "internal server error"})

    api = [Depends(require_auth)]
    app.include_router(health.router)
    app.include_router(telephony.router)
    app.include_router(metrics.router)
    app.include_router(console.router)
    app.mount("/console", console.static_files, name="console")
    api_modules = (
        agents,
        agent_tests,
        browser_calls,
        conversations,
        tools,
        phone_numbers,
        webhooks,
        webhook_deliveries,
        knowledge,
        outbound,
        calls,
        recordings,
        elevenlabs,
        batch_calling,
        dnc,
        playbooks,
        seat,
        agent_versions,
        analytics,
        experiments,
    )
    for module in api_modules:
        app.include_router(module.router, prefix="/v1", dependencies=api, responses=ERROR_RESPONSES)
    app.include_router(seat.ws_router, prefix="/v1")  # the seat's WebSockets check credentials themselves
    return app


app = create_app()
