"""Schemas shared across domains."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """A list with keyset pagination: pass `next_cursor` back as `cursor` for the next page."""

    data: list[T]
    next_cursor: str | None = None


class ListOf(BaseModel, Generic[T]):
    data: list[T]
    count: int


class ORMModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)
