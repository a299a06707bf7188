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

router = APIRouter(prefix="/ui", include_in_schema=False)


def _page(request: Request, name: str, **context):
    auth_mode = "key" if request.app.state.settings.api_keys else "name"
    return templates.TemplateResponse(request, name, {"auth_mode": auth_mode, **context}, headers=HEADERS)


@router.get("")
async def ui_root():
    return RedirectResponse("/ui/", status_code=307)


@router.get("/")
async def index(request: Request):
    """Sign in, then the datasets with their review progress."""
    return _page(request, "index.html")


@router.get("/datasets/{dataset_id}")
async def review_page(request: Request, dataset_id: IdPath):
    """The review screen for one dataset; the script leases items from the queue."""
    return _page(request, "review.html", dataset_id=dataset_id)


@router.get("/static/{name}")
async def static(name: Annotated[str, Path(pattern=r"^[a-z0-9_-]+\.(js|css|svg)$")]):
    path = STATIC / name
    if not path.is_file():
        raise NotFound(f"no static file {name!r}")
    return FileResponse(path, media_type=STATIC_TYPES[path.suffix], headers={**HEADERS, "Cache-Control": "no-cache"})
