"""A synth run's request: new prompts, self-instruct or evol-instruct."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from app.runs.schemas import PromptFilter, RunRequest


class SynthRun(RunRequest):
    kind: Literal["synth"]
    mode: Literal["self_instruct", "evol"] = "self_instruct"
    num_prompts: int = Field(default=20, ge=1, le=100_000, description="Prompts to ask for (duplicates are dropped).")
    per_call: int = Field(default=5, ge=1, le=50)
    examples_per_call: int = Field(default=3, ge=0, le=20, description="Seed prompts shown in each call.")
    topics: list[Annotated[str, Field(min_length=1, max_length=500)]] = Field(default_factory=list, max_length=10_000)
    documents: list[Annotated[str, Field(min_length=1, max_length=200_000)]] = Field(default_factory=list, max_length=1000)
    evol_operations: list[Literal["add_constraints", "deepen", "concretize", "increase_reasoning", "breadth"]] = Field(
        default_factory=lambda: ["add_constraints", "deepen", "concretize"]
    )
    prompts: PromptFilter = Field(default_factory=PromptFilter, description="Evol mode: the prompts to rewrite.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
