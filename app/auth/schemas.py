from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field

from app.models import Role
from app.schemas import ID_MAX, ORMModel


class KeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200, description="Who holds the key: recorded as the actor of their changes.")
    role: Role
    datasets: list[Annotated[int, Field(ge=1, le=ID_MAX)]] = Field(
        default_factory=list, max_length=1000, description="Dataset ids an annotator or viewer key may see (admin keys see all)."
    )
    expires_in_days: float | None = Field(default=None, gt=0, le=3650, description="None: never expires.")


class KeyPublic(ORMModel):
    id: int
    name: str
    role: Role
    prefix: str = Field(description="The key's first characters, to tell keys apart.")
    datasets: list[int] = Field(default_factory=list)
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None


class KeyCreated(KeyPublic):
    key: str = Field(description="The key itself: shown this once; only its hash is stored.")


class SignIn(BaseModel):
    key: str = Field(min_length=1, max_length=200)


class Me(BaseModel):
    actor: str
    role: Role
    datasets: list[int] | None = Field(description="The datasets granted; null: every dataset.")
    csrf_token: str | None = Field(default=None, description="For a signed-in page: send it as X-CSRF-Token on writes.")
