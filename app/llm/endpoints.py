"""Which endpoint, model and parameters a role uses: settings < dataset < run.

Endpoints are configuration (`FORGE_LLM_ENDPOINTS`, plus "default" from FORGE_LLM_BASE_URL and
FORGE_LLM_API_KEY). A dataset (`settings.llm.<role>`) or a run (`llm.<role>`) chooses one by
NAME, with a model and parameters; it never names a URL or a key, so nobody who can change a
dataset can send our keys or its prompts to a host of their choice. Provenance records the
endpoint's name, never its URL (which may carry credentials)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.config import ENDPOINT_NAME, EndpointConfig, ModelPrice, Settings
from app.errors import InvalidInput
from app.llm.prices import price_of
from app.schemas import JSONObject

Role = Literal["generator", "judge", "synthesizer"]
ROLES: tuple[Role, ...] = ("generator", "judge", "synthesizer")
ROLE_DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "generator": {"temperature": 0.8, "max_tokens": 512},
    "judge": {"temperature": 0.0, "max_tokens": 1024},
    "synthesizer": {"temperature": 1.0, "max_tokens": 1024},
}
NOT_HERE = ("base_url", "api_key", "api_key_env")
USE_A_NAME = (
    "{keys}: a dataset or run chooses an LLM endpoint by name; configure a named endpoint in "
    "FORGE_LLM_ENDPOINTS on the server and choose it with \"endpoint\": \"<name>\""
)


class RoleOverride(BaseModel):
    """Per-dataset (`settings.llm.<role>`) or per-run (`llm.<role>`) choice for a role."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str | None = Field(default=None, pattern=ENDPOINT_NAME.pattern, description="A configured endpoint's name.")
    model: str | None = Field(default=None, min_length=1, max_length=200)
    params: JSONObject = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _names_only(cls, data: Any) -> Any:
        if isinstance(data, dict):
            given = [k for k in NOT_HERE if k in data]
            if given:
                raise ValueError(USE_A_NAME.format(keys=", ".join(given)))
        return data


@dataclass(frozen=True)
class Endpoint:
    name: str
    base_url: str
    model: str
    params: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    api_key: str | None = field(default=None, repr=False)
    concurrency: int = 64
    rpm: int | None = None
    tpm: int | None = None
    config: EndpointConfig | None = field(default=None, repr=False, hash=False, compare=False)

    @property
    def supports_n(self) -> bool:
        """Whether one call may ask for several choices (`n`): only where configured (EndpointConfig)."""
        return bool(self.config and self.config.supports_n)

    def public(self) -> dict[str, Any]:
        """What provenance may record: the endpoint's name, never its URL or key."""
        return {"endpoint": self.name, "model": self.model, "params": self.params}


def configured(settings: Settings) -> dict[str, EndpointConfig]:
    """Every endpoint by name; "default" from llm_base_url / llm_api_key unless FORGE_LLM_ENDPOINTS
    gives those itself."""
    default = settings.llm_endpoints.get("default") or EndpointConfig()
    default = default.model_copy(
        update={"base_url": default.base_url or settings.llm_base_url, "api_key": default.api_key or settings.llm_api_key}
    )
    return {**settings.llm_endpoints, "default": default}


def endpoint_config(settings: Settings, name: str) -> EndpointConfig:
    found = configured(settings).get(name)
    if found is None:
        known = ", ".join(sorted(configured(settings)))
        raise InvalidInput(f"no LLM endpoint named {name!r}; the configured ones are: {known}", details={"field": "endpoint"})
    return found


def check_overrides(raw: Any, source: str) -> dict[str, RoleOverride]:
    """`settings.llm` or a run's `llm`: {role: RoleOverride}, validated (422 with the reason)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidInput(f"{source}.llm must be an object of roles ({', '.join(ROLES)})")
    out = {}
    for role, value in raw.items():
        if role not in ROLES:
            raise InvalidInput(f"{source}.llm.{role}: not a role; the roles are {', '.join(ROLES)}")
        if value is None:
            continue
        try:
            out[role] = RoleOverride.model_validate(value)
        except ValueError as exc:
            reason = exc.errors()[0]["msg"] if hasattr(exc, "errors") else str(exc)
            reason = reason.removeprefix("Value error, ")
            raise InvalidInput(f"{source}.llm.{role}: {reason}", details={"field": f"llm.{role}"}) from None
    return out


def resolve_endpoint(
    settings: Settings, role: Role, dataset_settings: dict[str, Any] | None = None, run_llm: dict[str, Any] | None = None
) -> Endpoint:
    base = getattr(settings, f"llm_{role}")
    name, model, params = base.endpoint, base.model, {**ROLE_DEFAULT_PARAMS[role]}
    config = endpoint_config(settings, name)
    params.update(config.params)
    params.update(base.params)
    for source, layer in (("dataset settings", (dataset_settings or {}).get("llm")), ("run", run_llm)):
        override = check_overrides(layer, source).get(role)
        if override is None:
            continue
        if override.endpoint and override.endpoint != name:
            # another endpoint: its own model and parameters, under what this override says
            name, model = override.endpoint, None
            config = endpoint_config(settings, name)
            params = {**ROLE_DEFAULT_PARAMS[role], **config.params}
        model = override.model or model
        params.update(override.params)
    limits = base if name == base.endpoint else None  # the role's limits are for its own endpoint
    return Endpoint(
        name=name, base_url=config.base_url.rstrip("/"), model=model or config.model or settings.llm_model, params=params,
        api_key=config.api_key.get_secret_value() if config.api_key else None,
        concurrency=(limits and limits.concurrency) or config.concurrency,
        rpm=(limits and limits.rpm) or config.rpm, tpm=(limits and limits.tpm) or config.tpm,
        config=config,
    )


def price(settings: Settings, endpoint: Endpoint, model: str | None = None) -> ModelPrice | None:
    return price_of(settings, endpoint.config, model or endpoint.model)
