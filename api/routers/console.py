"""The web console: a small static app served at ``/`` that talks to the same REST API with the same auth."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

CONSOLE_DIR = Path(__file__).resolve().parents[2] / "console"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def console_index() -> FileResponse:
    return FileResponse(CONSOLE_DIR / "index.html", headers={"Cache-Control": "no-cache"})


static_files = StaticFiles(directory=CONSOLE_DIR)
