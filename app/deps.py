"""Short Annotated aliases so route signatures stay one line."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

# who is acting: the caller's key name, or X-Actor only while no key exists (app.auth.dependencies)
from app.auth.dependencies import ActorDep
from app.config import Settings


async def get_settings_dep(request: Request) -> Settings:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a hop per request
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]

__all__ = ["ActorDep", "SettingsDep", "get_settings_dep"]
