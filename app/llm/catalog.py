"""The models an endpoint serves (`GET {base_url}/models`), asked when a run is created so that a
wrong model name is a 422 now instead of a failed run later. Each named endpoint
(FORGE_LLM_ENDPOINTS) is asked for its own list; messages and logs name the endpoint, never its
URL (which may carry credentials).

An endpoint without that route, or one that does not answer, is let through with a warning:
the check is a help, not a gate (some gateways serve chat completions only)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import httpx

from app.errors import InvalidInput
from app.llm.endpoints import Endpoint

log = logging.getLogger(__name__)


async def served_models(endpoint: Endpoint, timeout_s: float = 5.0) -> list[str] | None:
    """The model ids the endpoint lists, or None when it lists none we can read."""
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.get(f"{endpoint.base_url}/models", headers=headers)
        if response.status_code != 200:
            log.warning("endpoint %s: /models answered %s; the model names are not checked", endpoint.name, response.status_code)
            return None
        return [str(m["id"]) for m in response.json()["data"]]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        log.warning("endpoint %s: /models could not be read (%s); the model names are not checked", endpoint.name, type(exc).__name__)
        return None


async def check_models(endpoint: Endpoint, models: Iterable[str], role: str) -> None:
    """422 naming what the endpoint serves when it does not serve one of `models`."""
    wanted = sorted(set(models))
    served = await served_models(endpoint)
    if served is None:
        return
    missing = [m for m in wanted if m not in served]
    if missing:
        listed = ", ".join(served[:50]) or "none"
        raise InvalidInput(
            f"the {role}'s endpoint {endpoint.name!r} does not serve {', '.join(map(repr, missing))}; it serves: {listed}. "
            "Set FORGE_LLM_MODEL (or the endpoint's or role's model, or llm.<role>.model in the run) to one of these.",
            details={"field": "model", "endpoint": endpoint.name, "missing": missing, "served": served[:200]},
        )
