"""The SQL generation runs need: completions already made, and the insert of new ones."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import ColumnElement, Select, cast, func, literal, null, select, text
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Completion, Prompt, Run, RunKind


def same_plan_runs(dataset_id: int, params: dict[str, Any]) -> Select:
    """The dataset's generate runs asked with this run's plan: the same sampling plan, seed and
    generator override (JSONB equality, so key order does not matter). Their completions are
    this plan's samples, whichever run made them."""

    def same(path: tuple[str, ...], value: Any) -> ColumnElement[bool]:
        stored = Run.params[path] if len(path) > 1 else Run.params[path[0]]
        return stored.is_not_distinct_from(null() if value is None else cast(literal(value, JSONB), JSONB))

    llm = params.get("llm") or {}
    return select(Run.id).where(
        Run.dataset_id == dataset_id, Run.kind == RunKind.generate.value,
        same(("plan",), params.get("plan")), same(("seed",), params.get("seed", 0)),
        same(("llm", "generator"), llm.get("generator")),
    )


def needs_samples(dataset_id: int, params: dict[str, Any]) -> ColumnElement[bool]:
    """A prompt still has fewer than K samples from this plan."""
    made = select(func.count(func.distinct(Completion.sample_index))).where(
        Completion.prompt_id == Prompt.id, Completion.run_id.in_(same_plan_runs(dataset_id, params))
    )
    return made.scalar_subquery() < params.get("k", 4)


async def existing_samples(session: AsyncSession, runs: Select | int, prompt_ids: list[int]) -> set[tuple[int, int]]:
    """(prompt, sample index) already made by the run, or by any of `runs`."""
    of_runs = Completion.run_id == runs if isinstance(runs, int) else Completion.run_id.in_(runs)
    rows = await session.execute(
        select(Completion.prompt_id, Completion.sample_index).where(of_runs, Completion.prompt_id.in_(prompt_ids))
    )
    return {(p, s) for p, s in rows}


# one statement text whatever the batch's size: its SQL is parsed (and prepared) once, where a
# multi-row VALUES would be rebuilt and re-parsed for every batch
_SAMPLE_COLUMNS = (
    ("dataset_id", "bigint"), ("prompt_id", "bigint"), ("text", "text"), ("source", "text"), ("model", "text"),
    ("params", "jsonb"), ("template_version", "text"), ("prompt_tokens", "integer"),
    ("completion_tokens", "integer"), ("cost", "numeric"), ("latency_ms", "integer"), ("finish_reason", "text"),
    ("run_id", "bigint"), ("sample_index", "integer"), ("meta", "jsonb"), ("flag_reasons", "jsonb"),
)
_INSERT_SAMPLES = text(
    f"""
    INSERT INTO completion ({", ".join(c for c, _ in _SAMPLE_COLUMNS)})
    SELECT {", ".join(f"ARRAY(SELECT jsonb_array_elements_text(v.{c}))" if c == "flag_reasons" else f"v.{c}" for c, _ in _SAMPLE_COLUMNS)}
    FROM unnest({", ".join(f"CAST(:{c} AS {t}[])" for c, t in _SAMPLE_COLUMNS)}) AS v({", ".join(c for c, _ in _SAMPLE_COLUMNS)})
    ON CONFLICT DO NOTHING
    RETURNING id, prompt_id, sample_index
    """
)
_JSON = {c for c, t in _SAMPLE_COLUMNS if t == "jsonb"}


async def insert_samples(session: AsyncSession, rows: list[dict[str, Any]]) -> dict[tuple[int, int], int]:
    """Insert a run's samples (rows with _SAMPLE_COLUMNS' keys) in one statement;
    {(prompt_id, sample_index): id} of those stored (a sample a run already wrote is left out)."""
    if not rows:
        return {}
    cols = {
        c: [json.dumps(r[c]) for r in rows] if c in _JSON else [r[c] for r in rows] for c, _ in _SAMPLE_COLUMNS
    }
    result = await session.execute(_INSERT_SAMPLES, cols)
    return {(p, s): i for i, p, s in result}


async def completion_texts_many(session: AsyncSession, prompt_ids: list[int]) -> dict[int, list[tuple[int, str]]]:
    """{prompt_id: [(id, text), ...]} of these prompts' completions that are not stale, oldest
    first (a stale one was made for an older text: a new sample may repeat it), in one query."""
    rows = await session.execute(
        select(Completion.prompt_id, Completion.id, Completion.text)
        .where(Completion.prompt_id.in_(prompt_ids), Completion.review_status != "stale")
        .order_by(Completion.prompt_id, Completion.id)
    )
    out: dict[int, list[tuple[int, str]]] = {}
    for p, i, t in rows:
        out.setdefault(p, []).append((int(i), t))
    return out
