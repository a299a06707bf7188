"""The review web page: server-rendered shells plus small scripts that call the JSON API.

Model output is untrusted: the scripts put it on the page with `textContent` only, and the
Content-Security-Policy allows no inline script, so even a slip could not run injected code.
"""

from __future__ import annotations

from pathlib import Path as FsPath
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from app.auth import service as auth
from app.auth.dependencies import PUBLIC
from app.db import SessionDep
from app.errors import NotFound
from app.schemas import IdPath

HERE = FsPath(__file__).parent
STATIC = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}

router = APIRouter(prefix="/ui", include_in_schema=False, dependencies=[PUBLIC])  # shells: the data comes from the API


async def _page(request: Request, session, name: str, **context):
    # without any key (the local single-user mode) the page asks for a name instead of a key
    keyed = await auth.keys_configured(session, request.app.state.settings) or request.app.state.settings.environment != "local"
    auth_mode = "key" if keyed else "name"
    return templates.TemplateResponse(request, name, {"auth_mode": auth_mode, **context}, headers=HEADERS)


@router.get("")
async def ui_root():
    return RedirectResponse("/ui/", status_code=307)


@router.get("/")
async def index(request: Request, session: SessionDep):
    """Sign in, then the datasets with their review progress."""
    return await _page(request, session, "index.html")


@router.get("/datasets/{dataset_id}")
async def review_page(request: Request, dataset_id: IdPath, session: SessionDep):
    """The review screen for one dataset; the script leases items from the queue."""
    return await _page(request, session, "review.html", dataset_id=dataset_id)


@router.get("/static/{name}")
async def static(name: Annotated[str, Path(pattern=r"^[a-z0-9_-]+\.(js|css|svg)$")]):
    path = STATIC / name
    if not path.is_file():
        raise NotFound(f"no static file {name!r}")
    return FileResponse(path, media_type=STATIC_TYPES[path.suffix], headers={**HEADERS, "Cache-Control": "no-cache"})
