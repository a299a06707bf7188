"""Cost of a call from its model's price (USD per million tokens); unknown when the price is."""

from __future__ import annotations

from decimal import Decimal

from app.config import ModelPrice

_MILLION = Decimal(1_000_000)
_MICRO = Decimal("0.000001")


def call_cost(price: ModelPrice | None, prompt_tokens: int, completion_tokens: int) -> Decimal | None:
    if price is None:
        return None
    total = (price.prompt * prompt_tokens + price.completion * completion_tokens) / _MILLION
    return total.quantize(_MICRO)


def add_costs(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    """A sum with an unknown part is unknown."""
    return None if a is None or b is None else a + b
