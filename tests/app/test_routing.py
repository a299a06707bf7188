"""The order the routers are included in (`app.main._routers`: review's first, as the routes people
wait on) changes no answer: no route is shadowed by one matched before it."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import compile_path

from app.auth.dependencies import PUBLIC, READ, ActorDep, check_routes
from app.config import Settings
from app.main import create_app


def _sample(path: str) -> str:
    """A concrete path of a route template: every parameter a plausible value (an id, a format)."""
    return re.sub(r"\{[^}]+\}", lambda m: "sft" if m[0].startswith("{fmt") else "7", path)


def test_no_route_is_shadowed_by_an_earlier_one():
    app = create_app(Settings(database_url="postgresql://nobody@127.0.0.1:1/none"))
    routes = [r for r in iter_route_contexts(app.routes) if isinstance(r.original_route, APIRoute)]
    assert any(r.path.endswith("/review/next") for r in routes) and len(routes) > 40
    for i, route in enumerate(routes):
        sample = _sample(route.path)
        assert compile_path(route.path)[0].fullmatch(sample), route.path
        for earlier in routes[:i]:
            if earlier.path == route.path or not (earlier.methods & route.methods):
                continue
            assert not compile_path(earlier.path)[0].fullmatch(sample), f"{route.path} is shadowed by {earlier.path}"


def test_a_public_route_cannot_take_the_actor():
    """ActorDep reads the caller the route's rule authenticated; PUBLIC authenticates nobody."""
    app = FastAPI()

    @app.get("/fine", dependencies=[READ])
    async def fine(actor: ActorDep) -> str:
        return actor

    check_routes(app)

    @app.get("/nobody", dependencies=[PUBLIC])
    async def nobody(actor: ActorDep) -> str:
        return actor

    with pytest.raises(RuntimeError, match="authenticates nobody"):
        check_routes(app)
