"""API keys: when configured, every API request needs one, and it names the actor."""

import httpx
import pytest
from pydantic import ValidationError

from app.config import Settings

KEY = "k" * 32


@pytest.fixture
async def keyed(base_settings, clean_db):
    from app.main import create_app

    app = create_app(base_settings.model_copy(update={"api_keys": {KEY: "alice"}}))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            yield c


async def test_missing_and_unknown_keys_are_401(keyed):
    r = await keyed.post("/api/v1/datasets", json={"name": "x"})
    assert r.status_code == 401 and "Authorization: Bearer" in r.json()["error"]["message"]
    r = await keyed.post("/api/v1/datasets/1/prompts", json={"text": "x"}, headers={"authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["error"]["message"] == "unknown API key"


async def test_key_names_the_actor(keyed, session):
    from sqlalchemy import select

    from app.models import ReviewEvent

    h = {"authorization": f"Bearer {KEY}", "x-actor": "mallory"}
    ds = (await keyed.post("/api/v1/datasets", json={"name": "x"}, headers=h)).json()
    r = await keyed.post(f"/api/v1/datasets/{ds['id']}/prompts", json={"text": "q"}, headers=h)
    assert r.status_code == 201
    actors = (await session.execute(select(ReviewEvent.actor))).scalars().all()
    assert actors == ["alice"]


def test_production_refuses_missing_or_placeholder_keys():
    with pytest.raises(ValidationError, match="FORGE_API_KEYS must be set"):
        Settings(environment="production")
    with pytest.raises(ValidationError, match="placeholder"):
        Settings(environment="production", api_keys={"changeme": "a"})
    assert Settings(environment="production", api_keys={KEY: "a"}).api_keys == {KEY: "a"}
    assert "api_keys" not in Settings(api_keys={KEY: "a"}).public()


async def test_metrics_need_a_key_when_keys_are_configured(keyed):
    assert (await keyed.get("/metrics")).status_code == 401
    r = await keyed.get("/metrics", headers={"authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and "forge_http_request_duration_seconds" in r.text
