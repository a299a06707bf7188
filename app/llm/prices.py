"""What a model costs: its endpoint's own prices, then FORGE_LLM_PRICES, then a built-in table of
well-known models. A model priced nowhere has an unknown price (None), never zero: a budget
cannot be kept on it, and its calls' cost shows as unknown.

The table holds the vendors' list prices (USD per million prompt / completion tokens, standard
tier, no cache or batch discounts) as of PRICES_AS_OF. Prices change: override any of them with
FORGE_LLM_PRICES or an endpoint's `prices` (docs/guide.md, "Money")."""

from __future__ import annotations

import re
from decimal import Decimal

from app.config import EndpointConfig, ModelPrice, Settings

PRICES_AS_OF = "2025-08"

_TABLE: dict[str, tuple[str, str]] = {
    # OpenAI
    "gpt-4o": ("2.50", "10.00"),
    "gpt-4o-mini": ("0.15", "0.60"),
    "gpt-4.1": ("2.00", "8.00"),
    "gpt-4.1-mini": ("0.40", "1.60"),
    "gpt-4.1-nano": ("0.10", "0.40"),
    "gpt-5": ("1.25", "10.00"),
    "gpt-5-mini": ("0.25", "2.00"),
    "gpt-5-nano": ("0.05", "0.40"),
    "o1": ("15.00", "60.00"),
    "o3": ("2.00", "8.00"),
    "o3-mini": ("1.10", "4.40"),
    "o4-mini": ("1.10", "4.40"),
    # Anthropic
    "claude-opus-4-1": ("15.00", "75.00"),
    "claude-opus-4-0": ("15.00", "75.00"),
    "claude-opus-4": ("15.00", "75.00"),
    "claude-sonnet-4-0": ("3.00", "15.00"),
    "claude-sonnet-4": ("3.00", "15.00"),
    "claude-3-7-sonnet": ("3.00", "15.00"),
    "claude-3-5-sonnet": ("3.00", "15.00"),
    "claude-3-5-haiku": ("0.80", "4.00"),
    "claude-3-haiku": ("0.25", "1.25"),
    "claude-3-opus": ("15.00", "75.00"),
}
BUILTIN_PRICES: dict[str, ModelPrice] = {m: ModelPrice(prompt=Decimal(p), completion=Decimal(c)) for m, (p, c) in _TABLE.items()}

# a dated snapshot or alias of a listed model costs what the model does:
# gpt-4o-2024-08-06, claude-3-5-sonnet-20241022, claude-3-7-sonnet-latest, openai/gpt-4o-mini
_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|latest)$")


def builtin_price(model: str) -> ModelPrice | None:
    name = model.rsplit("/", 1)[-1].lower()
    return BUILTIN_PRICES.get(name) or BUILTIN_PRICES.get(_SUFFIX.sub("", name))


def price_of(settings: Settings, endpoint: EndpointConfig | None, model: str) -> ModelPrice | None:
    """The price of `model` called through `endpoint`; None when nobody says."""
    if endpoint is not None:
        own = endpoint.prices.get(model) or endpoint.prices.get("*")
        if own is not None:
            return own
    return settings.llm_prices.get(model) or builtin_price(model)


def is_free(price: ModelPrice) -> bool:
    return price.prompt == 0 and price.completion == 0
