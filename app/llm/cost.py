"""Cost of a call from the configured price table (USD per million tokens)."""

from __future__ import annotations

from decimal import Decimal

from app.config import ModelPrice

_MILLION = Decimal(1_000_000)
_MICRO = Decimal("0.000001")


def call_cost(prices: dict[str, ModelPrice], model: str, prompt_tokens: int, completion_tokens: int) -> Decimal:
    price = prices.get(model)
    if price is None:
        return Decimal(0)
    total = (price.prompt * prompt_tokens + price.completion * completion_tokens) / _MILLION
    return total.quantize(_MICRO)
