"""Which endpoint, key, model and parameters a role uses: settings < dataset < run."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.config import LLMRole, Settings
from app.errors import InvalidInput

Role = Literal["generator", "judge", "synthesizer"]
ROLES: tuple[Role, ...] = ("generator", "judge", "synthesizer")
ROLE_DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "generator": {"temperature": 0.8, "max_tokens": 512},
    "judge": {"temperature": 0.0, "max_tokens": 1024},
    "synthesizer": {"temperature": 1.0, "max_tokens": 1024},
}
# Overrides may name a key only through an environment variable with this prefix, so an API
# caller can neither store a key in the database nor send one of ours to a URL of its choice.
KEY_ENV_PREFIX = "FORGE_LLM_KEY_"


class RoleOverride(BaseModel):
    """Per-dataset (`settings.llm.<role>`) or per-run (`llm.<role>`) changes to a role."""

    model_config = {"extra": "forbid"}

    base_url: str | None = Field(default=None, max_length=2000, pattern=r"^https?://")
    model: str | None = Field(default=None, min_length=1, max_length=200)
    params: dict[str, Any] = Field(default_factory=dict)
    api_key_env: str | None = Field(
        default=None, pattern=rf"^{KEY_ENV_PREFIX}[A-Z0-9_]+$", description="Environment variable holding the key."
    )


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    model: str
    params: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    api_key: str | None = field(default=None, repr=False)
    concurrency: int = 64
    rpm: int | None = None
    tpm: int | None = None

    def public(self) -> dict[str, Any]:
        """What provenance may record: never the key."""
        return {"base_url": self.base_url, "model": self.model, "params": self.params}


def _role(settings: Settings, role: Role) -> LLMRole:
    return getattr(settings, f"llm_{role}")


def resolve_endpoint(
    settings: Settings, role: Role, dataset_settings: dict[str, Any] | None = None, run_llm: dict[str, Any] | None = None
) -> Endpoint:
    base = _role(settings, role)
    configured_url = (base.base_url or settings.llm_base_url).rstrip("/")
    key = base.api_key or settings.llm_api_key
    url, model, params, key_env = configured_url, base.model or settings.llm_model, {**ROLE_DEFAULT_PARAMS[role], **base.params}, None
    for source, layer in (("dataset settings", (dataset_settings or {}).get("llm", {})), ("run", run_llm or {})):
        raw = layer.get(role) if isinstance(layer, dict) else None
        if raw is None:
            continue
        try:
            override = RoleOverride.model_validate(raw)
        except ValueError as exc:
            raise InvalidInput(f"invalid {role} override in {source}", details=str(exc)) from None
        url = (override.base_url or url).rstrip("/")
        model = override.model or model
        params.update(override.params)
        key_env = override.api_key_env or key_env
    if key_env:
        api_key = os.environ.get(key_env)
    elif url == configured_url:
        api_key = key.get_secret_value() if key else None
    else:
        api_key = None  # a URL given at run time never receives the configured key
    return Endpoint(
        base_url=url, model=model, params=params, api_key=api_key,
        concurrency=base.concurrency, rpm=base.rpm, tpm=base.tpm,
    )
