"""One dependency enforces access on every route: `require(action)`.

Each route carries exactly one rule (`dependencies=[READ]`, or on its router); `check_routes`
makes `create_app` refuse to start when a route has none or two, and tests/app/test_roles.py
checks every route of the app against its own route x role table.

A rule authenticates the caller (a bearer key, the review page's signed session, or nobody
when no key exists at all), checks that the caller's role allows the route's action, and that
the dataset the path names (directly, or through a prompt / completion / ranking / run id) is
one the key was granted. A dataset outside the grants answers 404, as if it did not exist.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Annotated

from fastapi import Depends, FastAPI, Request, Security
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth import repository as repo
from app.auth import service
from app.auth.access import Action, Principal
from app.auth.guard import IMPORT_BODIES, JSON_BODIES, media_type
from app.db import SessionDep
from app.errors import Forbidden, NotFound, Unauthorized, UnsupportedMediaType
from app.models import Role
from app.schemas import ID_MAX

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
SESSION_KEY = "key"  # the signed session cookie holds the key's hash and the CSRF token, nothing else
SESSION_CSRF = "csrf"


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


# declared for the OpenAPI document (the docs page's "Authorize" button); the header is read below
_bearer = HTTPBearer(auto_error=False, description="An API key (`rlhf-forge keys create`), or one of FORGE_API_KEYS.")


async def bearer_credentials(request: Request) -> HTTPAuthorizationCredentials | None:
    """The bearer key as `authenticate` takes it, for callers outside a route (middleware)."""
    return await _bearer(request)


async def authenticate(
    request: Request, session: SessionDep, bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]
) -> Principal:
    """The caller: a bearer key, else the signed-in session of the review page, else (only when
    no key is configured at all, and only from this machine) the X-Actor header's name."""
    settings = request.app.state.settings
    if bearer is not None and bearer.credentials.strip():
        return await service.principal(session, settings, service.hash_key(bearer.credentials.strip()))
    if request.headers.get("authorization") is not None:
        raise Unauthorized("send the key as 'Authorization: Bearer <key>'")
    cookie = request.session if "session" in request.scope else {}
    if cookie.get(SESSION_KEY):
        try:
            caller = await service.principal(session, settings, cookie[SESSION_KEY], via="session")
        except Unauthorized:
            cookie.clear()  # a revoked or expired key ends its sessions; the response drops the cookie
            raise
        if request.method not in SAFE_METHODS:
            sent, expected = request.headers.get(CSRF_HEADER, ""), cookie.get(SESSION_CSRF, "")
            if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
                raise Forbidden(f"a write from a signed-in page needs its {CSRF_HEADER} header: reload the page")
        return caller
    if settings.environment != "local" or await request.app.state.open_mode.keys_configured(session, settings):
        raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>' (or sign in on /ui/)")
    if not _loopback(request):
        raise Forbidden("no API key is configured, so only requests from this machine are served")
    actor = (request.headers.get("x-actor") or "local").strip()[:200] or "local"
    return Principal(actor=actor, role=Role.admin, datasets=None, via="open")


PrincipalDep = Annotated[Principal, Depends(authenticate)]


_PRINCIPAL = "forge.principal"  # the scope key the access rule leaves the caller under


async def get_actor(request: Request) -> str:
    """The caller's name, as the route's access rule authenticated them: a route's own
    dependencies (its rule) are solved before its parameters, and the rule leaves the caller in
    the scope. Not `Depends(authenticate)`: FastAPI walks a dependency's whole sub-tree again
    before it looks in its cache (authenticate, the session, the bearer scheme: ~25 us each, a
    quarter of the review routes' dependency solving). `check_routes` refuses ActorDep on a
    route whose rule does not authenticate (PUBLIC)."""
    # async: FastAPI runs a plain `def` dependency in its thread pool, a hop per request
    caller = request.scope.get(_PRINCIPAL)
    if caller is None:  # pragma: no cover - check_routes refuses such a route
        raise RuntimeError(f"{request.url.path}: ActorDep needs an access rule that authenticates the caller")
    return caller.actor


ActorDep = Annotated[str, Depends(get_actor)]


async def _check_grant(request: Request, session, caller: Principal) -> None:
    """404 unless every dataset the path names is granted to the caller."""
    for param, raw in request.path_params.items():
        if param != "dataset_id" and param not in repo.SCOPED:
            continue
        if not (isinstance(raw, str) and raw.isdigit() and 1 <= int(raw) <= ID_MAX):
            continue  # the route's own validation answers 422
        row_id = int(raw)
        dataset_id = row_id if param == "dataset_id" else await repo.dataset_of(session, param, row_id)
        if dataset_id is None or not caller.sees(dataset_id):
            raise NotFound(f"{param.removesuffix('_id')} {row_id} does not exist")


class AccessRule:
    """The rule of one route: its action, and the body types its writes take."""

    def __init__(self, action: Action, bodies: frozenset[str]):
        self.action = action
        self.bodies = bodies

    def _check_body(self, request: Request) -> None:
        # the WriteGuard middleware already refused anything but JSON and the import's types
        ctype = media_type(request.headers)
        if request.method in ("POST", "PUT", "PATCH") and ctype is not None and ctype not in self.bodies:
            raise UnsupportedMediaType(
                f"this route takes {' or '.join(sorted(self.bodies))}, not {ctype}", details={"accepted": sorted(self.bodies)}
            )

    def __repr__(self) -> str:
        return f"require({self.action.value})"


class _Public(AccessRule):
    async def __call__(self, request: Request) -> None:
        self._check_body(request)


class _Rule(AccessRule):
    async def __call__(self, request: Request, caller: PrincipalDep, session: SessionDep) -> Principal:
        self._check_body(request)
        if not caller.may(self.action):
            raise Forbidden(
                f"{request.method} {request.url.path} needs {self.action.value} rights, which a {caller.role} key lacks",
                details={"role": caller.role, "needs": self.action.value},
            )
        if caller.datasets is not None:
            await _check_grant(request, session, caller)
        request.scope[_PRINCIPAL] = caller  # for ActorDep (get_actor)
        return caller


def require(action: Action, *, bodies: frozenset[str] = JSON_BODIES) -> AccessRule:
    return _Public(action, bodies) if action == Action.public else _Rule(action, bodies)


# what routers attach: `@router.get(..., dependencies=[READ])`, or `APIRouter(dependencies=[ADMIN])`
PUBLIC = Depends(require(Action.public))
READ = Depends(require(Action.read))
REVIEW = Depends(require(Action.review))
EXPORT = Depends(require(Action.export))
ADMIN = Depends(require(Action.admin))
ADMIN_IMPORT = Depends(require(Action.admin, bodies=IMPORT_BODIES))


def rules_of(route) -> list[AccessRule]:
    """The access rules on a route of `fastapi.routing.iter_route_contexts(app.routes)`."""
    return [d.dependency for d in getattr(route, "dependencies", None) or [] if isinstance(d.dependency, AccessRule)]


def _needs(dependant, call) -> bool:
    return dependant.call is call or any(_needs(d, call) for d in dependant.dependencies)


def check_routes(app: FastAPI) -> None:
    """Refuse to build an app with a route that has no access rule (or two), or whose path names
    an id the grant check cannot place in a dataset."""
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute):
            continue  # FastAPI's own /openapi.json and /docs pages
        rules = rules_of(route)
        if len(rules) != 1:
            raise RuntimeError(
                f"route {sorted(route.methods)} {route.path} has {len(rules)} access rules; give it exactly one "
                "(dependencies=[PUBLIC | READ | REVIEW | EXPORT | ADMIN] from app.auth.dependencies)"
            )
        if rules[0].action == Action.public and _needs(route.original_route.dependant, get_actor):
            raise RuntimeError(f"route {route.path} takes the actor (ActorDep) but its rule (PUBLIC) authenticates nobody")
        if rules[0].action in (Action.public, Action.admin):
            continue
        unplaced = [p for p in route.param_convertors if p.endswith("_id") and p != "dataset_id" and p not in repo.SCOPED]
        if unplaced:
            raise RuntimeError(f"route {route.path}: the grant check cannot tell the dataset of {unplaced}")
