"""Judge runs: a prompt's K completions ranked by an LLM judge (listwise by default; pairwise
with the swap, or a rubric), asked in several orders against position bias, aggregated by mean
rank, with the orders' Kendall-tau consistency stored and doubtful rankings flagged.

Around the judge (issue 16): candidates that address the judge are found first
(`injection.py`) and flagged, dropped or ranked last by the dataset's `judge_injection`;
several judges may rank and their rankings combine (`multi.py`); candidates may be compared at
one length, and a much longer winner flagged (`length.py`); known-answer canaries gate the run
(`canaries.py`)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.errors import InvalidInput
from app.judging import canaries, injection, length, multi
from app.judging import repository as repo
from app.judging import reward_model as rm
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
from app.judging.schemas import JudgeDatasetSettings, JudgeRun
from app.llm import ChatRequest, ChatResult, Endpoint, LLMCallFailed, resolve_endpoint
from app.models import Dataset, FlagReason, RankerKind, ReviewStatus, Run, RunKind
from app.prompts import repository as prompts
from app.runs import repository as runs
from app.runs.protocol import Estimate, Item, ItemOutcome, approx_tokens


@dataclass
class _Ctx:
    run: Run
    spec: JudgeRun
    judges: list[Endpoint]
    template: tpl.JudgeTemplate
    candidates: dict[int, list[tuple[int, str]]]
    orders: int
    max_attempts: int
    min_consistency: float
    min_agreement: float
    aspects: list[str]
    policy: JudgeDatasetSettings
    injection_check: str
    check_endpoint: Endpoint
    stopped: str | None = None  # why the run stopped before this chunk (canaries)
    carry: ItemOutcome | None = None  # the canaries' usage, counted with this chunk's first item


@dataclass
class _Reply:
    value: Any
    rationale: str
    result: ChatResult


def _policy(dataset_settings: dict[str, Any] | None) -> JudgeDatasetSettings:
    try:
        return JudgeDatasetSettings.model_validate(dataset_settings or {})
    except ValueError as exc:
        raise InvalidInput("invalid judge settings in the dataset settings", details=str(exc)) from None


def _judge_endpoints(settings, dataset_settings, spec: JudgeRun) -> list[Endpoint]:
    """The run's judges: each `judges` entry over the run's llm.judge (params merged), or llm.judge alone."""
    base = (spec.llm.judge.model_dump(exclude_none=True) if spec.llm and spec.llm.judge else {})
    entries = [e.model_dump(exclude_none=True) for e in spec.judges] if spec.judges else [{}]
    return [
        resolve_endpoint(settings, "judge", dataset_settings,
                         {"judge": {**base, **e, "params": {**base.get("params", {}), **e.get("params", {})}}})
        for e in entries
    ]


class JudgeHandler:
    kind = RunKind.judge.value
    role = "judge"
    request = JudgeRun

    async def check(self, session, settings, dataset: Dataset, body: JudgeRun) -> None:
        if body.mode == "reward_model":
            for endpoint in _judge_endpoints(settings, dataset.settings, body):
                await rm.check_model(endpoint, body.model, settings.llm_timeout_s)
        else:
            await tpl.dataset_template(body.mode, dataset.settings)  # a broken template fails now, not in the job
        _policy(dataset.settings)
        _judge_endpoints(settings, dataset.settings, body)  # unknown overrides fail now
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

    def endpoints(self, settings, dataset: Dataset, body: JudgeRun) -> list[Endpoint]:
        """The chat endpoints the run calls, each with its model (checked against its /v1/models):
        every judge, and the injection check's. A reward-model run calls /rewards (`check` asks it)."""
        if body.mode == "reward_model":
            return []
        called = _judge_endpoints(settings, dataset.settings, body)
        if body.injection_llm is not None and (body.injection_check or settings.judge_injection_check) == "llm":
            called.append(resolve_endpoint(settings, "judge", dataset.settings, {"judge": body.injection_llm.model_dump(exclude_none=True)}))
        return called

    async def estimate(self, session, settings, dataset: Dataset, body: JudgeRun, endpoint: Endpoint) -> Estimate:
        """The judges' calls: each judge asks every order (pairwise: every pair both ways); a reward
        model scores a prompt's candidates in one call that costs no tokens."""
        params = body.model_dump(mode="json", exclude_none=True)
        chosen = await runs.selected_prompts(session, dataset.id, params.get("prompts") or {}, self._coverage(params))
        lengths = await repo.candidate_lengths(session, [p for p, _ in chosen], body.source_run_id)
        judges = len(body.judges or [None])
        template = rm.TEMPLATE if body.mode == "reward_model" else await tpl.dataset_template(body.mode, dataset.settings)
        overhead = len(template.system) + len(template.user)
        orders = body.orders or settings.judge_orders
        estimate = Estimate(prompts=len(chosen))
        for prompt_id, chars in chosen:
            cands = lengths[prompt_id][: body.max_candidates]
            if len(cands) < 2:
                continue
            if body.mode == "reward_model":
                estimate.requests += judges
                continue
            if body.mode == "pairwise":
                pairs = list(itertools.combinations(cands, 2))
                asks = [overhead + chars + a + b for a, b in pairs] * 2
            else:
                asks = [overhead + chars + sum(cands)] * orders
            estimate.requests += len(asks) * judges
            estimate.prompt_tokens += sum(approx_tokens(n) for n in asks) * judges
            estimate.completion_tokens += len(asks) * judges * int(endpoint.params.get("max_tokens") or 0)
        return estimate

    async def write_rows(self, session, rows: list[dict[str, Any]]) -> None:
        pass  # a ranking is written by its item's own `write`

    async def report(self, session, run: Run) -> dict[str, Any]:
        """The run's length bias and flag counts, from the rankings it stored so far."""
        stored = await repo.run_rankings(session, run.id)
        flags: dict[str, int] = {}
        for _, reasons, _ in stored:
            for f in reasons:
                flags[f] = flags.get(f, 0) + 1
        return {
            "rankings": len(stored), "flags": flags,
            "length_bias": length.length_rank_spearman((ranks, lengths) for ranks, _, lengths in stored),
        }

    async def prepare(self, rt, run: Run, dataset: Dataset, items: list[Item]) -> _Ctx:
        spec = JudgeRun.model_validate(run.params)
        async with rt.sessions() as session:
            candidates = await repo.completions_for_prompts(
                session, [i.prompt_id for i in items], spec.source_run_id, spec.max_candidates
            )
        judges = _judge_endpoints(rt.settings, dataset.settings, spec)
        check_endpoint = judges[0]
        if spec.injection_llm is not None:
            check_endpoint = resolve_endpoint(rt.settings, "judge", dataset.settings, {"judge": spec.injection_llm.model_dump(exclude_none=True)})
        if spec.mode == "reward_model":  # rankings record the checkpoint as their judge model
            judges = [dataclasses.replace(ep, model=spec.model) for ep in judges]
        ctx = _Ctx(
            run=run, spec=spec, judges=judges,
            template=rm.TEMPLATE if spec.mode == "reward_model" else await tpl.dataset_template(spec.mode, dataset.settings),
            candidates=candidates,
            orders=spec.orders or rt.settings.judge_orders,
            max_attempts=rt.settings.judge_max_attempts,
            min_consistency=rt.settings.judge_min_consistency,
            min_agreement=spec.min_judge_agreement if spec.min_judge_agreement is not None else rt.settings.judge_min_consistency,
            aspects=spec.aspects or tpl.RUBRIC_ASPECTS,
            policy=_policy(dataset.settings),
            injection_check=spec.injection_check or rt.settings.judge_injection_check,
            check_endpoint=check_endpoint,
        )
        if spec.canaries is not None:
            ctx.stopped, ctx.carry = await canaries.gate(
                rt, run.id, spec.canaries, lambda item, cands, outcome: self._judge(rt, ctx, item, cands, outcome)
            )
        return ctx

    async def process(self, rt, ctx: _Ctx, item: Item) -> ItemOutcome:
        carry, ctx.carry = ctx.carry, None  # taken before any await: one item carries it
        outcome = await self._process(rt, ctx, item)
        if carry is not None:  # the run's counters add it; the item's ranking keeps its own cost
            outcome.prompt_tokens += carry.prompt_tokens
            outcome.completion_tokens += carry.completion_tokens
            outcome.cost += carry.cost
            outcome.result["canary_cost"] = str(carry.cost)
        return outcome

    async def _process(self, rt, ctx: _Ctx, item: Item) -> ItemOutcome:
        outcome = ItemOutcome()
        if ctx.stopped:
            outcome.error = ctx.stopped[:2000]
            return outcome
        cands = ctx.candidates.get(item.prompt_id, [])
        findings = await self._screen(rt, ctx, item, cands, outcome) if len(cands) >= 2 else {}

        async def flag_candidates(session) -> None:
            for cid, finding in findings.items():
                await repo.flag_completion(
                    session, cid, FlagReason.addresses_judge, finding.describe(), {**finding.public(), "run_id": ctx.run.id}
                )

        try:
            row = await self._rank(rt, ctx, item, cands, findings, outcome)
        except (InvalidJudgeReply, LLMCallFailed) as exc:
            if isinstance(exc, LLMCallFailed):
                outcome.charge(exc)
            reason = f"judge: {getattr(exc, 'reason', None) or exc}"
            outcome.error = reason[:2000]

            async def flag(session) -> None:
                await flag_candidates(session)
                await prompts.flag_prompt(session, item.prompt_id, FlagReason.judge_invalid, reason[:1000])

            outcome.write = flag
            return outcome
        row.update(
            dataset_id=ctx.run.dataset_id, prompt_id=item.prompt_id, ranker_kind=RankerKind.judge.value,
            template_version=ctx.template.version, run_id=ctx.run.id, prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens, cost=outcome.cost,
            review_status=ReviewStatus.needs_review.value if row["flags"] else ReviewStatus.pending.value,
        )
        flags = row.pop("flags")
        row["flag_reasons"], row["details"]["flag_details"] = list(flags), flags
        if "injection_unchecked" in outcome.result:
            row["details"]["injection_unchecked"] = outcome.result["injection_unchecked"]
        outcome.result = {**outcome.result, "ranks": row["ranks"], "consistency": row["consistency"], "flags": row["flag_reasons"]}

        async def write(session) -> None:
            await flag_candidates(session)
            await repo.insert_ranking(session, row)

        outcome.write = write
        return outcome

    async def _screen(self, rt, ctx: _Ctx, item: Item, cands, outcome: ItemOutcome) -> dict[int, injection.Finding]:
        """{completion id: finding} for the candidates that address the judge."""
        if ctx.injection_check == "off":
            return {}
        if ctx.injection_check == "patterns":
            return {cid: f for cid, text in cands if (f := injection.prefilter(text)) is not None}

        async def one(cid: int, text: str) -> tuple[int, injection.Finding | None]:
            messages = injection.check_messages(tpl.data_block(item.prompt_text, [(1, text)]))
            try:
                reply = await self._ask(
                    rt, ctx, ctx.check_endpoint, messages, injection.check_format(),
                    lambda t: (injection.parse_check(t), ""), outcome,
                )
                says = reply.value
            except (InvalidJudgeReply, LLMCallFailed):
                says = None  # no verdict from the model: the patterns decide
                unchecked.append(cid)
            return cid, injection.verdict(text, says)

        unchecked: list[int] = []
        found = await asyncio.gather(*(one(cid, text) for cid, text in cands))
        if unchecked:  # what the model could not check, for the ranking's details
            outcome.result["injection_unchecked"] = sorted(unchecked)
        return {cid: f for cid, f in found if f is not None}

    async def _rank(self, rt, ctx: _Ctx, item: Item, cands, findings, outcome: ItemOutcome) -> dict[str, Any]:
        """The ranking row over `cands` as the dataset's policy wants: candidates that address the
        judge judged with the rest and flagged, dropped, or kept out of judging and put last."""
        policy = ctx.policy.judge_injection
        aside = [c for c in cands if c[0] in findings] if policy in ("drop", "last") else []
        judged = [c for c in cands if c not in aside]
        if len(judged) >= 2:
            row = await self._judge(rt, ctx, item, judged, outcome)
        elif len(judged) == 1 and policy == "last" and aside:
            row = {"ranks": [1], "consistency": None, "rationale": "", "flags": {}, "judge_model": ctx.judges[0].model,
                   "details": {"mode": ctx.spec.mode, "note": "one candidate left to judge: no judge was asked"}}
        else:
            why = " once those that address the judge are set aside" if aside else ""
            raise InvalidJudgeReply(f"{len(judged)} completion(s) to rank{why}; at least 2 are needed")
        ids, ranks = [c for c, _ in judged], list(row["ranks"])
        if policy == "last":
            for n, (cid, _) in enumerate(aside):
                ids.append(cid)
                ranks.append(len(judged) + 1 + n)
        row["completion_ids"], row["ranks"] = ids, ranks
        flags, details, texts = row["flags"], row["details"], dict(cands)
        if findings:
            details["addresses_judge"] = {str(cid): f.public() for cid, f in findings.items()}
        inside = [cid for cid in ids if cid in findings]
        if inside:
            placed = ", ranked last" if policy == "last" else ""
            flags["addresses_judge"] = "; ".join(
                f"completion {cid} (candidate {ids.index(cid) + 1}{placed}) addresses the judge, {findings[cid].describe()}"
                for cid in inside
            )[:2000]
        if policy == "drop" and aside:
            details["dropped"] = [cid for cid, _ in aside]
        details["lengths"] = lengths = [len(texts[cid]) for cid in ids]
        if ctx.policy.judge_length == "flag" and (much := length.winner_much_longer(ranks, lengths, ctx.policy.judge_length_ratio)):
            flags["length_bias"] = much
        return row

    async def _judge(self, rt, ctx: _Ctx, item: Item, cands, outcome: ItemOutcome) -> dict[str, Any]:
        """Every judge of the run ranks `cands` (cut to one length if the dataset says so); one
        judge's row as it is, several judges' rows combined."""
        note = None
        if ctx.policy.judge_length == "match":
            texts, shortest, cut = length.matched([t for _, t in cands])
            cands = [(cid, t) for (cid, _), t in zip(cands, texts, strict=True)]
            note = length.matched_note(shortest) if cut else None
        mode = {"listwise": self._listwise, "pairwise": self._pairwise, "rubric": self._rubric,
                "reward_model": self._reward_model}[ctx.spec.mode]
        rows = await asyncio.gather(*(mode(rt, ctx, ep, item, cands, note, outcome) for ep in ctx.judges))
        row = rows[0] if len(rows) == 1 else self._combine(ctx, rows)
        if len(rows) == 1:
            row["judge_model"] = ctx.judges[0].model
            row["details"]["endpoint"] = {"name": ctx.judges[0].name, "params": ctx.judges[0].params}
        if note:
            row["details"]["matched_length"] = shortest
        return row

    def _combine(self, ctx: _Ctx, rows: list[dict[str, Any]]) -> dict[str, Any]:
        per_judge = [r["ranks"] for r in rows]
        final, scores = multi.combine(per_judge, ctx.spec.aggregate)
        agreement = multi.agreement(per_judge)
        flags = review_flags(final, None, ctx.min_consistency, scores if ctx.spec.aggregate == "mean" else None)
        models = [ep.model for ep in ctx.judges]
        inconsistent = [f"{ep.model}: {r['flags']['judge_inconsistent']}" for ep, r in zip(ctx.judges, rows, strict=True)
                        if "judge_inconsistent" in r["flags"]]
        if inconsistent:
            flags["judge_inconsistent"] = "; ".join(inconsistent)
        if agreement is not None and agreement < ctx.min_agreement:
            flags["judges_disagree"] = (
                f"{len(rows)} judges disagree: mean Kendall tau {agreement:.2f} < {ctx.min_agreement:.2f} "
                f"({', '.join(f'{m}: {r}' for m, r in zip(models, per_judge, strict=True))})"
            )
        return {
            "ranks": final, "consistency": agreement, "rationale": rows[0]["rationale"], "flags": flags,
            "judge_model": "+".join(models)[:200],
            "details": {
                "mode": ctx.spec.mode, "aggregate": ctx.spec.aggregate, "scores": scores, "judge_agreement": agreement,
                "judges": [
                    {"model": ep.model, "endpoint": {"name": ep.name, "params": ep.params}, "ranks": r["ranks"],
                     "consistency": r["consistency"], "flags": r["flags"], "rationale": r["rationale"], "details": r["details"]}
                    for ep, r in zip(ctx.judges, rows, strict=True)
                ],
            },
        }

    async def _ask(
        self, rt, ctx: _Ctx, endpoint: Endpoint, messages: list[dict[str, str]], response_format: dict,
        parse: Callable[[str], tuple[Any, str]], outcome: ItemOutcome,
    ) -> _Reply:
        """One judgement, asked again (new seed) while the reply does not validate."""
        problem = ""
        for attempt in range(ctx.max_attempts):
            req = ChatRequest(messages=messages, params={"response_format": response_format, "seed": attempt})
            res = await rt.llm.chat(endpoint, req)
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

    async def _reward_model(self, rt, ctx: _Ctx, ep: Endpoint, item: Item, cands, note, outcome: ItemOutcome) -> dict[str, Any]:
        """Scores from the reward server behind `ep` (its `/rewards` route), ranked by score."""
        return await rm.rank(
            ep, ctx.spec.model, item.prompt_text, [text for _, text in cands],
            epsilon=ctx.spec.epsilon, min_margin=ctx.spec.min_margin, timeout=rt.settings.llm_timeout_s,
        )

    def _common(self, ctx: _Ctx) -> dict[str, Any]:
        return {"allow_ties": ctx.spec.allow_ties, "aspects": ctx.aspects}

    async def _listwise(self, rt, ctx: _Ctx, ep: Endpoint, item: Item, cands, note, outcome: ItemOutcome) -> dict[str, Any]:
        k = len(cands)
        orders = presentation_orders(k, ctx.orders, salt=item.prompt_id)

        async def one(order: list[int]) -> _Reply:
            shown = [(n, cands[i][1]) for n, i in enumerate(order, 1)]
            variables = {**self._common(ctx), "k": k, "data": tpl.data_block(item.prompt_text, shown, note)}
            return await self._ask(
                rt, ctx, ep, await ctx.template.render(**variables), tpl.listwise_format(k, ctx.spec.allow_ties),
                lambda text: parse_listwise(text, k, allow_ties=ctx.spec.allow_ties), outcome,
            )

        replies = await asyncio.gather(*(one(o) for o in orders))
        per_order = [to_original(o, r.value) for o, r in zip(orders, replies, strict=True)]
        return self._row(ctx, per_order, replies, orders, mode="listwise")

    async def _rubric(self, rt, ctx: _Ctx, ep: Endpoint, item: Item, cands, note, outcome: ItemOutcome) -> dict[str, Any]:
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
            variables = {**self._common(ctx), "k": k, "data": tpl.data_block(item.prompt_text, shown, note)}
            return await self._ask(rt, ctx, ep, await ctx.template.render(**variables), tpl.rubric_format(k, aspects), parse, outcome)

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

    async def _pairwise(self, rt, ctx: _Ctx, ep: Endpoint, item: Item, cands, note, outcome: ItemOutcome) -> dict[str, Any]:
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
                         "data": tpl.data_block(item.prompt_text, [("A", cands[a][1]), ("B", cands[b][1])], note)}
            return await self._ask(rt, ctx, ep, await ctx.template.render(**variables), tpl.pairwise_format(), parse, outcome)

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
