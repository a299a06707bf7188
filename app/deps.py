"""Short Annotated aliases so route signatures stay one line."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from app.config import Settings
from app.errors import Forbidden, Unauthorized


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_actor(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_actor: Annotated[str | None, Header()] = None,
) -> str:
    """Who is acting. With api_keys configured a bearer key is required and names the actor;
    without, the X-Actor header does (default 'local'), for a single-user local service."""
    settings: Settings = request.app.state.settings
    if settings.api_keys:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>'")
        actor = settings.api_keys.get(authorization[7:].strip())
        if actor is None:
            raise Unauthorized("unknown API key")
        return actor
    return (x_actor or "local").strip()[:200] or "local"


ActorDep = Annotated[str, Depends(get_actor)]


def is_admin(request: Request) -> bool:
    """Whether the caller may choose LLM endpoints, budgets and judge templates and read a
    dataset's audit trail. Roles come with the API keys of issue 10 (deliverable 1); until the
    role dependency is wired in here, every caller that passed `get_actor` counts as an admin."""
    return True


def require_admin(request: Request, what: str) -> None:
    """The one call site for "admin only" on a part of a request (e.g. a dataset's settings)."""
    if not is_admin(request):
        raise Forbidden(f"only an admin may {what}")


def admin_only(request: Request) -> None:
    require_admin(request, f"{request.method} {request.url.path}")


AdminDep = Depends(admin_only)
