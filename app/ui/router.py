"""The web console: server-rendered page shells plus small scripts that call the JSON API.

Every page is one template and one script; the scripts share `forge.js` (the one fetch wrapper,
the signed-in role, markdown rendering). Model output is untrusted: it reaches the page either as
text (`textContent`) or as markdown rendered by markdown-it with raw HTML off and then sanitised
by DOMPurify, and the Content-Security-Policy allows no inline script, so even a slip in either
could not run injected code. The libraries are vendored under static/vendor/ (no CDN: the
service may run without internet).
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
DATASET_TABS = (("overview", "Overview"), ("review", "Review"), ("runs", "Runs"), ("exports", "Exports"), ("agreement", "Agreement"))

router = APIRouter(prefix="/ui", include_in_schema=False, dependencies=[PUBLIC])  # shells: the data comes from the API


async def _page(request: Request, session, name: str, **context):
    # without any key (the local single-user mode) the page asks for a name instead of a key
    keyed = await auth.keys_configured(session, request.app.state.settings) or request.app.state.settings.environment != "local"
    auth_mode = "key" if keyed else "name"
    return templates.TemplateResponse(request, name, {"auth_mode": auth_mode, "tabs": DATASET_TABS, **context}, headers=HEADERS)


@router.get("")
async def ui_root():
    return RedirectResponse("/ui/", status_code=307)


@router.get("/")
async def index(request: Request, session: SessionDep):
    """Sign in, then the datasets with their review progress, and a form to create one."""
    return await _page(request, session, "index.html")


@router.get("/datasets/{dataset_id}")
async def dataset_page(request: Request, session: SessionDep, dataset_id: IdPath):
    """One dataset: progress, settings (guidelines, overlap), import by drag and drop."""
    return await _page(request, session, "dataset.html", dataset_id=dataset_id, tab="overview")


@router.get("/datasets/{dataset_id}/review")
async def review_page(request: Request, session: SessionDep, dataset_id: IdPath):
    """The review screen; the script leases items from the queue."""
    return await _page(request, session, "review.html", dataset_id=dataset_id, prompt_id="", tab="review")


@router.get("/datasets/{dataset_id}/items/{prompt_id}")
async def item_page(request: Request, session: SessionDep, dataset_id: IdPath, prompt_id: IdPath):
    """The review screen on one item (a link to share, or where the queue put you)."""
    return await _page(request, session, "review.html", dataset_id=dataset_id, prompt_id=prompt_id, tab="review")


@router.get("/datasets/{dataset_id}/runs")
@router.get("/datasets/{dataset_id}/runs/{run_id}")
async def runs_page(request: Request, session: SessionDep, dataset_id: IdPath, run_id: IdPath | None = None):
    """Start generate / judge / synth runs; watch one live, cancel or resume it."""
    return await _page(request, session, "runs.html", dataset_id=dataset_id, run_id=run_id or "", tab="runs")


@router.get("/datasets/{dataset_id}/exports")
async def exports_page(request: Request, session: SessionDep, dataset_id: IdPath):
    """Freeze a version, see the history and manifests, download the files."""
    return await _page(request, session, "exports.html", dataset_id=dataset_id, tab="exports")


@router.get("/datasets/{dataset_id}/agreement")
async def agreement_page(request: Request, session: SessionDep, dataset_id: IdPath):
    """Judge-vs-human agreement per judge model and template, and between reviewers."""
    return await _page(request, session, "agreement.html", dataset_id=dataset_id, tab="agreement")


@router.get("/keys")
async def keys_page(request: Request, session: SessionDep):
    """API keys and their grants, for admins, where the service has a keys API."""
    return await _page(request, session, "keys.html")


def _file(path: FsPath, name: str) -> FileResponse:
    if not path.is_file():
        raise NotFound(f"no static file {name!r}")
    return FileResponse(path, media_type=STATIC_TYPES[path.suffix], headers={**HEADERS, "Cache-Control": "no-cache"})


@router.get("/static/{name}")
async def static(name: Annotated[str, Path(pattern=r"^[a-z0-9_-]+\.(js|css|svg)$")]):
    return _file(STATIC / name, name)


@router.get("/static/vendor/{name}")
async def vendored(name: Annotated[str, Path(pattern=r"^[a-z0-9_-]+(\.min)?\.(js|css)$")]):
    """The vendored libraries (see static/vendor/README.md)."""
    return _file(STATIC / "vendor" / name, name)
