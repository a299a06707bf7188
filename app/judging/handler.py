"""Judge runs: a prompt's K completions ranked by an LLM judge (listwise by default; pairwise
with the swap, or a rubric), asked in several orders against position bias, aggregated by mean
rank, with the orders' Kendall-tau consistency stored and doubtful rankings flagged."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.errors import InvalidInput
from app.judging import repository as repo
from app.judging import templates as tpl
from app.judging.parsing import parse_listwise, parse_object
from app.judging.ranking import (
    InvalidJudgeReply,
    aggregate,
    competition_ranks,
    kendall_tau,
    mean_consistency,
    presentation_orders,
    review_flags,
    to_original,
)
from app.judging.schemas import JudgeRun
from app.llm import ChatRequest, ChatResult, Endpoint, LLMCallFailed, resolve_endpoint
from app.models import Dataset, FlagReason, RankerKind, ReviewStatus, Run, RunKind
from app.prompts import repository as prompts
from app.runs import repository as runs
from app.runs.protocol import Estimate, Item, ItemOutcome, approx_tokens


@dataclass
class _Ctx:
    run: Run
    spec: JudgeRun
    endpoint: Endpoint
    template: tpl.JudgeTemplate
    candidates: dict[int, list[tuple[int, str]]]
    orders: int
    max_attempts: int
    min_consistency: float
    aspects: list[str]


@dataclass
class _Reply:
    value: Any
    rationale: str
    result: ChatResult


class JudgeHandler:
    kind = RunKind.judge.value
    role = "judge"
    request = JudgeRun

    async def check(self, session, settings, dataset: Dataset, body: JudgeRun) -> None:
        tpl.dataset_template(body.mode, dataset.settings)  # a broken template fails now, not in the job
        if body.source_run_id is not None:
            source = await runs.get(session, body.source_run_id)
            if source is None or source.dataset_id != dataset.id or source.kind != RunKind.generate:
                raise InvalidInput(
                    f"source_run_id {body.source_run_id} is not a generate run of dataset {dataset.id}",
                    details={"field": "source_run_id"},
                )

    async def create_items(self, session, run: Run) -> None:
        # a judge run covers the prompts that have something to rank
        await runs.create_prompt_items(session, run, run.params.get("prompts") or {}, self._coverage(run.params))

    @staticmethod
    def _coverage(params: dict[str, Any]) -> tuple:
        """Prompts with something to rank; by default only those without a current judge ranking,
        never approved or rejected ones."""
        has = (repo.has_completions(params.get("source_run_id")),)
        if params.get("all"):
            return has
        return (*has, *runs.still_open(params.get("prompts") or {}), repo.not_judged())

    async def estimate(self, session, settings, dataset: Dataset, body: JudgeRun, endpoint: Endpoint) -> Estimate:
        params = body.model_dump(mode="json", exclude_none=True)
        chosen = await runs.selected_prompts(session, dataset.id, params.get("prompts") or {}, self._coverage(params))
        lengths = await repo.candidate_lengths(session, [p for p, _ in chosen], body.source_run_id)
        template = tpl.dataset_template(body.mode, dataset.settings)
        overhead = len(template.system) + len(template.user)
        orders = body.orders or settings.judge_orders
        estimate = Estimate(prompts=len(chosen))
        for prompt_id, chars in chosen:
            cands = lengths[prompt_id][: body.max_candidates]
            if len(cands) < 2:
                continue
            if body.mode == "pairwise":
                pairs = list(itertools.combinations(cands, 2))
                asks = [overhead + chars + a + b for a, b in pairs] * 2
            else:
                asks = [overhead + chars + sum(cands)] * orders
            estimate.requests += len(asks)
            estimate.prompt_tokens += sum(approx_tokens(n) for n in asks)
            estimate.completion_tokens += len(asks) * int(endpoint.params.get("max_tokens") or 0)
        return estimate

    async def write_rows(self, session, rows: list[dict[str, Any]]) -> None:
        pass  # a ranking is written by its item's own `write`

    async def prepare(self, rt, run: Run, dataset: Dataset, items: list[Item]) -> _Ctx:
        spec = JudgeRun.model_validate(run.params)
        async with rt.sessions() as session:
            candidates = await repo.completions_for_prompts(
                session, [i.prompt_id for i in items], spec.source_run_id, spec.max_candidates
            )
        return _Ctx(
            run=run, spec=spec,
            endpoint=resolve_endpoint(rt.settings, "judge", dataset.settings, run.params.get("llm")),
            template=tpl.dataset_template(spec.mode, dataset.settings),
            candidates=candidates,
            orders=spec.orders or rt.settings.judge_orders,
            max_attempts=rt.settings.judge_max_attempts,
            min_consistency=rt.settings.judge_min_consistency,
            aspects=spec.aspects or tpl.RUBRIC_ASPECTS,
        )

    async def process(self, rt, ctx: _Ctx, item: Item) -> ItemOutcome:
        outcome = ItemOutcome()
        cands = ctx.candidates.get(item.prompt_id, [])
        try:
            if len(cands) < 2:
                raise InvalidJudgeReply(f"{len(cands)} completion(s) to rank; at least 2 are needed")
            mode = {"listwise": self._listwise, "pairwise": self._pairwise, "rubric": self._rubric}[ctx.spec.mode]
            row = await mode(rt, ctx, item, cands, outcome)
        except (InvalidJudgeReply, LLMCallFailed) as exc:
            reason = f"judge: {getattr(exc, 'reason', None) or exc}"
            outcome.error = reason[:2000]

            async def flag(session) -> None:
                await prompts.flag_prompt(session, item.prompt_id, FlagReason.judge_invalid, reason[:1000])

            outcome.write = flag
            return outcome
        row.update(
            dataset_id=ctx.run.dataset_id, prompt_id=item.prompt_id, completion_ids=[c for c, _ in cands],
            ranker_kind=RankerKind.judge.value, judge_model=ctx.endpoint.model,
            template_version=ctx.template.version, run_id=ctx.run.id, prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens, cost=outcome.cost,
            review_status=ReviewStatus.needs_review.value if row["flags"] else ReviewStatus.pending.value,
        )
        row["details"]["endpoint"] = {"base_url": ctx.endpoint.base_url, "params": ctx.endpoint.params}
        flags = row.pop("flags")
        row["flag_reasons"], row["details"]["flag_details"] = list(flags), flags
        outcome.result = {"ranks": row["ranks"], "consistency": row["consistency"], "flags": row["flag_reasons"]}

        async def write(session) -> None:
            await repo.insert_ranking(session, row)

        outcome.write = write
        return outcome

    async def _ask(
        self, rt, ctx: _Ctx, variables: dict[str, Any], response_format: dict, parse: Callable[[str], tuple[Any, str]],
        outcome: ItemOutcome,
    ) -> _Reply:
        """One judgement, asked again (new seed) while the reply does not validate."""
        messages = ctx.template.render(**variables)
        problem = ""
        for attempt in range(ctx.max_attempts):
            req = ChatRequest(messages=messages, params={"response_format": response_format, "seed": attempt})
            res = await rt.llm.chat(ctx.endpoint, req)
            outcome.add(res, cacheable=False)  # only replies that validate are worth caching
            try:
                value, rationale = parse(res.text)
            except InvalidJudgeReply as exc:
                problem = str(exc)
                continue
            if not res.cached:
                outcome.cache_rows.append(res.cache_row())
            return _Reply(value, rationale, res)
        raise InvalidJudgeReply(f"no valid reply in {ctx.max_attempts} attempts; last: {problem}")

    def _common(self, ctx: _Ctx) -> dict[str, Any]:
        return {"allow_ties": ctx.spec.allow_ties, "aspects": ctx.aspects}

    async def _listwise(self, rt, ctx: _Ctx, item: Item, cands, outcome: ItemOutcome) -> dict[str, Any]:
        k = len(cands)
        orders = presentation_orders(k, ctx.orders, salt=item.prompt_id)

        async def one(order: list[int]) -> _Reply:
            shown = [(n, cands[i][1]) for n, i in enumerate(order, 1)]
            variables = {**self._common(ctx), "k": k, "data": tpl.data_block(item.prompt_text, shown)}
            return await self._ask(
                rt, ctx, variables, tpl.listwise_format(k),
                lambda text: parse_listwise(text, k, allow_ties=ctx.spec.allow_ties), outcome,
            )

        replies = await asyncio.gather(*(one(o) for o in orders))
        per_order = [to_original(o, r.value) for o, r in zip(orders, replies, strict=True)]
        return self._row(ctx, per_order, replies, orders, mode="listwise")

    async def _rubric(self, rt, ctx: _Ctx, item: Item, cands, outcome: ItemOutcome) -> dict[str, Any]:
        k, aspects = len(cands), ctx.aspects
        orders = presentation_orders(k, ctx.orders, salt=item.prompt_id)

        def parse(text: str) -> tuple[list[dict[str, float]], str]:
            obj = parse_object(text, ["scores"])
            by_id = {}
            for s in obj["scores"] if isinstance(obj["scores"], list) else []:
                try:
                    by_id[int(s["candidate"])] = {a: float(s[a]) for a in aspects}
                except (KeyError, TypeError, ValueError):
                    raise InvalidJudgeReply(f"a score entry lacks a number for candidate or {aspects}") from None
            if sorted(by_id) != list(range(1, k + 1)):
                raise InvalidJudgeReply(f"scores cover candidates {sorted(by_id)}, not 1..{k}")
            if any(not 1 <= v <= 5 for sc in by_id.values() for v in sc.values()):
                raise InvalidJudgeReply("a score falls outside 1..5")
            return [by_id[n] for n in range(1, k + 1)], str(obj.get("rationale", ""))[:2000]

        async def one(order: list[int]) -> _Reply:
            shown = [(n, cands[i][1]) for n, i in enumerate(order, 1)]
            variables = {**self._common(ctx), "k": k, "data": tpl.data_block(item.prompt_text, shown)}
            return await self._ask(rt, ctx, variables, tpl.rubric_format(k, aspects), parse, outcome)

        replies = await asyncio.gather(*(one(o) for o in orders))
        per_order, aspect_means = [], [dict.fromkeys(aspects, 0.0) for _ in range(k)]
        for order, reply in zip(orders, replies, strict=True):
            presented = competition_ranks([sum(s.values()) / len(s) for s in reply.value], higher_is_better=True)
            per_order.append(to_original(order, presented))
            for position, original in enumerate(order):
                for a in aspects:
                    aspect_means[original][a] += reply.value[position][a] / len(orders)
        row = self._row(ctx, per_order, replies, orders, mode="rubric")
        row["details"]["scores"] = aspect_means
        return row

    async def _pairwise(self, rt, ctx: _Ctx, item: Item, cands, outcome: ItemOutcome) -> dict[str, Any]:
        k = len(cands)
        pairs = list(itertools.combinations(range(k), 2))

        def parse(text: str) -> tuple[str, str]:
            obj = parse_object(text, ["winner"])
            winner = str(obj["winner"]).strip().strip("[]").upper()
            if winner not in ("A", "B", "TIE"):
                raise InvalidJudgeReply(f"winner {obj['winner']!r} is not A, B or tie")
            return winner, str(obj.get("rationale", ""))[:2000]

        async def one(a: int, b: int) -> _Reply:
            variables = {**self._common(ctx), "k": 2,
                         "data": tpl.data_block(item.prompt_text, [("A", cands[a][1]), ("B", cands[b][1])])}
            return await self._ask(rt, ctx, variables, tpl.pairwise_format(), parse, outcome)

        asked = [(i, j) for i, j in pairs] + [(j, i) for i, j in pairs]  # every pair, then swapped
        replies = await asyncio.gather(*(one(a, b) for a, b in asked))
        forward, swapped = [0.0] * k, [0.0] * k
        for n, ((a, b), reply) in enumerate(zip(asked, replies, strict=True)):
            wins = forward if n < len(pairs) else swapped
            if reply.value == "A":
                wins[a] += 1
            elif reply.value == "B":
                wins[b] += 1
            else:
                wins[a] += 0.5
                wins[b] += 0.5
        final = competition_ranks([f + s for f, s in zip(forward, swapped, strict=True)], higher_is_better=True)
        consistency = kendall_tau(forward, swapped)
        return {
            "ranks": final, "consistency": consistency, "rationale": replies[0].rationale,
            "flags": review_flags(final, consistency, ctx.min_consistency),
            "details": {
                "mode": "pairwise", "wins_forward": forward, "wins_swapped": swapped,
                "pairs": [{"a": a, "b": b, "winner": r.value, "cached": r.result.cached} for (a, b), r in zip(asked, replies, strict=True)],
            },
        }

    def _row(self, ctx: _Ctx, per_order: list[list[int]], replies: list[_Reply], orders, *, mode: str) -> dict[str, Any]:
        final, means = aggregate(per_order)
        consistency = mean_consistency(per_order)
        return {
            "ranks": final, "consistency": consistency, "rationale": replies[0].rationale,
            "flags": review_flags(final, consistency, ctx.min_consistency, means),
            "details": {
                "mode": mode, "mean_ranks": means,
                "orders": [
                    {"order": o, "ranks": r, "rationale": rep.rationale, "cached": rep.result.cached,
                     "latency_ms": rep.result.latency_ms}
                    for o, r, rep in zip(orders, per_order, replies, strict=True)
                ],
            },
        }
