"""The web page for people: `GET /` and its static files, shipped in the package (no CDN, no build step).

The page is a client of the public API (`GET /models`, `POST /predict/{disease}`), like any other.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(__file__).resolve().parent.parent.parent / "web"
STATIC_PATH = "/static"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    # no-cache: the page is small and must change with the service it talks to
    return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def static_files() -> StaticFiles:
    return StaticFiles(directory=WEB_DIR, check_dir=True)
