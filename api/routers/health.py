"""Liveness and readiness probes (no auth)."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Database reachable and providers loaded")
async def readyz(request: Request) -> JSONResponse:
    runtime = request.app.state.runtime
    checks = {"database": await runtime.db.ping(), **runtime.providers.readiness(), **runtime.readiness()}
    ready = all(checks.values())
    content: dict[str, Any] = {"ready": ready, "checks": checks}
    # LLM_PROVIDER=auto: whether a call now gets Ollama or falls back to the embedded model. Not a
    # readiness check: the embedded model answers calls too.
    if (llm := runtime.providers.llm_choice()) is not None:
        content["llm"] = llm
    return JSONResponse(status_code=200 if ready else 503, content=content)
