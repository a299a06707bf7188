"""Money rules a run must meet before it starts: every model it may call has a known price when
anything is to be kept to a budget, a run that costs money has a budget or its dataset a cap,
and the dataset's cap is not spent yet. Prices: `app/llm/prices.py`."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.errors import Conflict, InvalidInput
from app.llm.endpoints import Endpoint, price
from app.llm.prices import is_free
from app.models import Dataset
from app.runs import repository as repo


def dataset_cap(dataset_settings: dict[str, Any] | None) -> Decimal | None:
    """settings.budget: USD that all the dataset's runs together may spend (None: no cap)."""
    raw = (dataset_settings or {}).get("budget")
    if raw is None:
        return None
    try:
        cap = Decimal(str(raw))
    except InvalidOperation:
        raise InvalidInput(f"settings.budget: {raw!r} is not an amount of USD", details={"field": "settings.budget"}) from None
    if not cap.is_finite() or cap < 0:
        raise InvalidInput("settings.budget: must be a number of USD, 0 or more", details={"field": "settings.budget"})
    return cap


async def check(
    session: AsyncSession, settings: Settings, dataset: Dataset, endpoint: Endpoint, models: set[str], budget: Decimal | None
) -> None:
    cap = dataset_cap(dataset.settings)
    prices = {m: price(settings, endpoint, m) for m in sorted(models)}
    unpriced = [m for m, p in prices.items() if p is None]
    if unpriced and (budget is not None or cap is not None):
        kept = "a budget" if budget is not None else "the dataset's spend cap (settings.budget)"
        raise InvalidInput(
            f"model {unpriced[0]!r} on endpoint {endpoint.name!r} has no price, so {kept} cannot be kept: "
            "give it one in FORGE_LLM_PRICES or the endpoint's prices (a local model declares 0)",
            details={"field": "budget", "unpriced": unpriced},
        )
    paid = [m for m, p in prices.items() if p is not None and not is_free(p)]
    if paid and budget is None and cap is None:
        raise InvalidInput(
            f"model {paid[0]!r} on endpoint {endpoint.name!r} costs money: give the run a budget (USD), "
            "or set the dataset's spend cap (settings.budget)",
            details={"field": "budget", "priced": paid},
        )
    if cap is not None:
        await check_cap(session, dataset, cap)


async def check_cap(session: AsyncSession, dataset: Dataset, cap: Decimal | None = None) -> None:
    cap = dataset_cap(dataset.settings) if cap is None else cap
    if cap is None:
        return
    spent = await repo.dataset_spend(session, dataset.id)
    if spent >= cap:
        raise Conflict(
            f"dataset {dataset.id} has spent {spent} USD of its spend cap {cap}: raise settings.budget to run more",
            details={"spent": str(spent), "cap": str(cap)},
        )


def bound_prompts(settings: Settings, params: dict[str, Any]) -> None:
    """Every run covers at most settings.run_max_prompts prompts: `prompts.limit` up to it, and
    the limit is written into the run when the request gives none."""
    most = settings.run_max_prompts
    if params.get("num_prompts", 0) > most:  # a run that makes prompts (synth)
        raise InvalidInput(f"num_prompts: at most {most} prompts per run (FORGE_RUN_MAX_PROMPTS)", details={"field": "num_prompts"})
    flt = params.get("prompts")
    if flt is None:
        return
    limit = flt.get("limit")
    if limit is not None and limit > most:
        raise InvalidInput(f"prompts.limit: at most {most} prompts per run (FORGE_RUN_MAX_PROMPTS)", details={"field": "prompts.limit"})
    flt["limit"] = limit or most
