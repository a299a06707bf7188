"""Generation runs: K completions per prompt from a sampling plan, each row with provenance."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from app.completions import duplicates
from app.generation import repository as repo
from app.generation.schemas import GenerateRun
from app.llm import ChatRequest, ChatResult, Endpoint, LLMCallFailed, resolve_endpoint
from app.models import CompletionSource, Dataset, FlagReason, Run, RunKind
from app.prompts import repository as prompts
from app.runs import repository as runs
from app.runs.protocol import Estimate, Item, ItemOutcome, approx_tokens

TEMPLATE_VERSION = "generate-v1"


@dataclass
class _Ctx:
    run: Run
    spec: GenerateRun
    endpoint: Endpoint
    existing: set[tuple[int, int]]
    # per prompt, its calls: (the sample indexes a call answers, in choice order; the request;
    # its stored answers when every one is stored). Built (and hashed for the cache) once, in prepare.
    calls: dict[int, list[tuple[list[int], ChatRequest, list[ChatResult] | None]]]


def sample_request(spec: GenerateRun, endpoint: Endpoint, prompt: str, index: int) -> ChatRequest:
    entry = spec.sampling_plan()[index % len(spec.sampling_plan())]
    messages = ([{"role": "system", "content": entry.system_prompt}] if entry.system_prompt else []) + [
        {"role": "user", "content": prompt}
    ]
    params: dict[str, Any] = {"seed": spec.seed + index}
    for name in ("temperature", "top_p", "max_tokens"):
        value = getattr(entry, name)
        if value is not None:
            params[name] = value
    return ChatRequest(messages=messages, params=params, model=entry.model or endpoint.model)


def plan_calls(spec: GenerateRun, endpoint: Endpoint, prompt: str, todo: list[int]) -> list[tuple[list[int], ChatRequest]]:
    """The calls that make samples `todo` of a prompt: one per sample; or, on an endpoint that
    supports `n`, one per set of samples whose requests differ only by seed, asked with the seed
    of its first sample and n = their number (choice i is the set's i-th sample). A set of one is
    the plain call, so its request (and cache key) is the one an endpoint without `n` gets."""
    calls: dict[Any, tuple[list[int], ChatRequest]] = {}
    for k in todo:
        req = sample_request(spec, endpoint, prompt, k)
        same = (k,) if not endpoint.supports_n else json.dumps(
            [req.model, req.messages, {p: v for p, v in req.params.items() if p != "seed"}], sort_keys=True
        )
        calls.setdefault(same, ([], req))[0].append(k)
    for ks, req in calls.values():
        if len(ks) > 1:
            req.params["n"] = len(ks)
    return list(calls.values())


async def _answers(rt, endpoint: Endpoint, req: ChatRequest, stored: list[ChatResult] | None) -> list[ChatResult | LLMCallFailed]:
    if stored is not None:
        return stored
    return await rt.llm.chat_choices(endpoint, req)


# a sample that repeats a completion of its prompt exactly: the id it repeats, set by _store_samples
REPEATS = "_repeats"
_NEW = 1 << 62  # ids of samples not stored yet: above every real id, in batch order (duplicates.find ties)


async def _store_samples(session, rows: list[dict[str, Any]]) -> None:
    """Store a batch's samples in one query and as few inserts as the duplicate references allow
    (one, unless a sample nearly repeats another sample of the same batch): a sample repeating
    a completion the prompt already has (or an earlier sample) is not stored but marked with
    REPEATS for its item's result; a near-identical one is stored flagged
    (app/completions/duplicates.py)."""
    for row in rows:  # a batch written again alone (finish_batch) decides afresh
        row.pop(REPEATS, None)
    if not rows:
        return
    existing = await repo.completion_texts_many(session, sorted({r["prompt_id"] for r in rows}))
    shingles = duplicates.remember({}, [t for texts in existing.values() for _, t in texts] + [r["text"] for r in rows])
    kept: list[tuple[int, dict[str, Any], duplicates.Duplicate | None]] = []  # (wave, row, near duplicate)
    wave_of: dict[int, int] = {}
    for n, row in enumerate(rows):
        texts = existing.setdefault(row["prompt_id"], [])
        dup = duplicates.find(row["text"], texts, shingles)
        if dup is not None and dup.exact:
            row[REPEATS] = dup.of
            continue
        wave = wave_of[dup.of] + 1 if dup is not None and dup.of >= _NEW else 0
        wave_of[_NEW + n] = wave
        kept.append((wave, row, dup))
        texts.append((_NEW + n, row["text"]))
    ids: dict[int, int] = {}  # placeholder -> id
    for wave in range(max((w for w, _, _ in kept), default=-1) + 1):
        batch = []
        for w, row, dup in kept:
            if w != wave:
                continue
            if dup is not None and dup.of >= _NEW:
                of = ids.get(dup.of)
                dup = dataclasses.replace(dup, of=of) if of is not None else None  # None: the other was never stored
            if dup is not None:
                row["meta"], row["flag_reasons"] = duplicates.flag(row.get("meta"), row.get("flag_reasons"), dup)
            batch.append(row)
        stored = await repo.insert_samples(session, batch)
        for n, row in enumerate(rows):
            got = stored.get((row["prompt_id"], row["sample_index"]))
            if got is not None:
                ids[_NEW + n] = got
    for row in rows:  # a repeat of a sample of this batch: the id that sample got
        if row.get(REPEATS, 0) >= _NEW:
            row[REPEATS] = ids.get(row[REPEATS])


def _count_repeats(rows: list[dict[str, Any]], outcome: ItemOutcome) -> None:
    """The item's result lists its samples that repeated a completion (and what they cost)."""
    repeated = [
        {"sample_index": row["sample_index"], "duplicate_of": row[REPEATS], "cost": str(row["cost"]),
         "prompt_tokens": row["prompt_tokens"], "completion_tokens": row["completion_tokens"]}
        for row in rows if REPEATS in row
    ]
    if repeated:
        outcome.result = {**outcome.result, "completions": outcome.result["completions"] - len(repeated), "duplicates": repeated}


class GenerateHandler:
    kind = RunKind.generate.value
    role = "generator"
    request = GenerateRun

    async def check(self, session, settings, dataset: Dataset, body: GenerateRun) -> None:
        pass  # the endpoint is checked by the engine; nothing else can fail late

    def models(self, body: GenerateRun) -> set[str]:
        """The models the sampling plan names besides the endpoint's (each needs a price for a budget)."""
        return {e.model for e in body.sampling_plan() if e.model}

    async def create_items(self, session, run: Run) -> None:
        await runs.create_prompt_items(session, run, run.params.get("prompts") or {}, self._coverage(run.dataset_id, run.params))

    @staticmethod
    def _coverage(dataset_id: int, params: dict[str, Any]) -> tuple:
        """By default only the prompts with fewer than K samples of this plan, never approved or rejected ones."""
        if params.get("all"):
            return ()
        return (*runs.still_open(params.get("prompts") or {}), repo.needs_samples(dataset_id, params))

    async def estimate(self, session, settings, dataset: Dataset, body: GenerateRun, endpoint: Endpoint) -> Estimate:
        params = body.model_dump(mode="json", exclude_none=True)
        chosen = await runs.selected_prompts(session, dataset.id, params.get("prompts") or {}, self._coverage(dataset.id, params))
        existing = set() if body.all else await repo.existing_samples(
            session, repo.same_plan_runs(dataset.id, params), [p for p, _ in chosen]
        )
        plan, estimate = body.sampling_plan(), Estimate(prompts=len(chosen))
        for prompt_id, chars in chosen:
            # the calls as plan_calls makes them (prompt text left out: the same for all of a prompt's)
            for ks, _ in plan_calls(body, endpoint, "", [k for k in range(body.k) if (prompt_id, k) not in existing]):
                entry = plan[ks[0] % len(plan)]
                estimate.requests += 1  # a call of n samples reads its prompt once
                estimate.prompt_tokens += approx_tokens(chars + len(entry.system_prompt or ""))
                estimate.completion_tokens += len(ks) * (entry.max_tokens or endpoint.params.get("max_tokens") or 0)
        return estimate

    async def write_rows(self, session, rows: list[dict[str, Any]]) -> None:
        await _store_samples(session, rows)

    async def prepare(self, rt, run: Run, dataset: Dataset, items: list[Item]) -> _Ctx:
        spec = GenerateRun.model_validate(run.params)
        endpoint = resolve_endpoint(rt.settings, "generator", dataset.settings, run.params.get("llm"))
        # a run that covers what still needs it makes only the samples this plan lacks
        made_by = run.id if spec.all else repo.same_plan_runs(run.dataset_id, run.params)
        async with rt.sessions() as session:
            existing = await repo.existing_samples(session, made_by, [i.prompt_id for i in items])
        planned = [
            (i.prompt_id, ks, req)
            for i in items
            for ks, req in plan_calls(spec, endpoint, i.prompt_text, [k for k in range(spec.k) if (i.prompt_id, k) not in existing])
        ]
        hits = await rt.llm.cached_many(endpoint, [req for _, _, req in planned])
        calls: dict[int, list] = {}
        for (prompt_id, ks, req), hit in zip(planned, hits, strict=True):
            calls.setdefault(prompt_id, []).append((ks, req, hit))
        return _Ctx(run, spec, endpoint, existing, calls)

    async def process(self, rt, ctx: _Ctx, item: Item) -> ItemOutcome:
        calls = ctx.calls.get(item.prompt_id, [])
        answers = await asyncio.gather(*(_answers(rt, ctx.endpoint, req, hit) for _, req, hit in calls), return_exceptions=True)
        outcome = ItemOutcome()
        rows, errors, todo = [], [], 0
        for (ks, req, _), got in zip(calls, answers, strict=True):
            todo += len(ks)
            if isinstance(got, LLMCallFailed):  # the call itself failed: each of its samples did
                errors += [(k, got.reason) for k in ks]
                outcome.charge(got)  # once, whatever the number of samples it was for
                continue
            if isinstance(got, BaseException):
                raise got
            for k, res in zip(ks, got, strict=True):
                if isinstance(res, LLMCallFailed):
                    errors.append((k, res.reason))
                    outcome.charge(res)
                    continue
                outcome.add(res)
                rows.append(self._row(ctx, item, k, req, res))
        rows.sort(key=lambda r: r["sample_index"])  # in sample order, however the calls grouped them
        outcome.result = {"completions": len(rows) + ctx.spec.k - todo}
        if errors:
            outcome.error = "; ".join(f"sample {k}: {reason}" for k, reason in sorted(errors))[:2000]

        outcome.rows = rows  # stored for the whole batch at once by write_rows

        async def write(session) -> None:
            _count_repeats(rows, outcome)
            if errors:
                await prompts.flag_prompt(
                    session, item.prompt_id, FlagReason.generation_failed,
                    f"{len(errors)} of {ctx.spec.k} samples failed: {outcome.error}"[:1000],
                )

        outcome.write = write
        return outcome

    @staticmethod
    def _row(ctx: _Ctx, item: Item, k: int, req: ChatRequest, res: ChatResult) -> dict[str, Any]:
        system = next((m["content"] for m in req.messages if m["role"] == "system"), None)
        return {
            "dataset_id": ctx.run.dataset_id, "prompt_id": item.prompt_id, "text": res.text,
            "source": CompletionSource.model.value, "model": res.model,
            # a sample asked with others in one call (`n`) records that call's seed and n, and its choice
            "params": {**res.params, "system_prompt": system, "endpoint": ctx.endpoint.name,
                       **({"choice": res.choice} if "n" in res.params else {})},
            "template_version": TEMPLATE_VERSION, "prompt_tokens": res.prompt_tokens,
            "completion_tokens": res.completion_tokens, "cost": res.cost, "latency_ms": res.latency_ms,
            "finish_reason": res.finish_reason, "run_id": ctx.run.id, "sample_index": k,
            "meta": {"cached": res.cached, "attempts": res.attempts}, "flag_reasons": [],
        }
