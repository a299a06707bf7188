"""HTTP only: who am I, signing the review page in and out, and the admin's key routes."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request, status

from app.auth import repository as repo
from app.auth import service
from app.auth.dependencies import ADMIN, PUBLIC, READ, SESSION_CSRF, SESSION_KEY, ActorDep, PrincipalDep
from app.auth.schemas import KeyCreate, KeyCreated, KeyPublic, Me, SignIn
from app.db import SessionDep
from app.deps import SettingsDep
from app.pagination import KeysetDep, next_cursor
from app.schemas import IdPath, Page

router = APIRouter(tags=["auth"])
keys = APIRouter(prefix="/keys", tags=["keys"], dependencies=[ADMIN])


def _me(caller, request: Request) -> Me:
    csrf = request.session.get(SESSION_CSRF) if caller.via == "session" else None
    datasets = None if caller.datasets is None else sorted(caller.datasets)
    return Me(actor=caller.actor, role=caller.role, datasets=datasets, csrf_token=csrf)


@router.get("/me", response_model=Me, dependencies=[READ], summary="Who the service takes you for")
async def whoami(caller: PrincipalDep, request: Request):
    return _me(caller, request)


@router.post("/session", response_model=Me, dependencies=[PUBLIC], summary="Sign the review page in with a key")
async def sign_in(body: SignIn, request: Request, session: SessionDep, settings: SettingsDep):
    """Sets an HttpOnly, SameSite=Strict signed session cookie; writes then need the returned
    csrf_token in an X-CSRF-Token header."""
    key_hash = service.hash_key(body.key.strip())
    caller = await service.principal(session, settings, key_hash, via="session")
    request.session.clear()
    request.session.update({SESSION_KEY: key_hash, SESSION_CSRF: secrets.token_urlsafe(32)})
    return _me(caller, request)


@router.delete("/session", status_code=status.HTTP_204_NO_CONTENT, dependencies=[PUBLIC], summary="Sign out")
async def sign_out(request: Request) -> None:
    request.session.clear()


async def _public(session, rows) -> list[KeyPublic]:
    grants = await repo.grants(session, [k.id for k in rows])
    return [KeyPublic.model_validate(k).model_copy(update={"datasets": grants[k.id]}) for k in rows]


@keys.post("", status_code=status.HTTP_201_CREATED, response_model=KeyCreated, summary="Make a key (shown this once)")
async def create_key(body: KeyCreate, request: Request, session: SessionDep, actor: ActorDep):
    row, datasets, key = await service.create(
        session, name=body.name, role=body.role, dataset_ids=body.datasets, expires_in_days=body.expires_in_days, created_by=actor
    )
    request.app.state.open_mode.key_made()  # the single-user mode ends with this request
    return KeyCreated(**KeyPublic.model_validate(row).model_dump(exclude={"datasets"}), datasets=datasets, key=key)


@keys.get("", response_model=Page[KeyPublic])
async def list_keys(session: SessionDep, page: KeysetDep):
    rows = await repo.list_all(session, after_id=page.after_id, limit=page.limit)
    return Page[KeyPublic](data=await _public(session, rows), next_cursor=next_cursor(rows, page))


@keys.post("/{key_id}/revoke", response_model=KeyPublic, summary="Revoke a key at once (the record stays)")
async def revoke_key(key_id: IdPath, session: SessionDep, actor: ActorDep):
    return (await _public(session, [await service.revoke(session, key_id, actor)]))[0]
