"""Ranking rules: a ranking covers exactly its prompt's completions, with ranks 1..K."""

from __future__ import annotations

from collections import Counter

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import Change, ensure_can_act
from app.completions import repository as completions
from app.errors import InvalidInput, NotFound
from app.models import Prompt, RankerKind, Ranking, ReviewStatus
from app.rankings import repository as repo
from app.rankings.schemas import RankingCreate
from trainer.formats import FormatError, validate_ranks


async def get_or_404(session: AsyncSession, ranking_id: int) -> Ranking:
    ranking = await repo.get(session, ranking_id)
    if ranking is None:
        raise NotFound(f"ranking {ranking_id} does not exist", details={"field": "ranking_id"})
    return ranking


def check_ranks(completion_ids: list[int], ranks: list[int], prompt_completion_ids: list[int], prompt_id: int) -> None:
    """Raise InvalidInput saying exactly what is wrong with a proposed ranking: the ids here, the ranks
    by trainer.formats' rule for every ranking (ties allowed)."""
    dupes = sorted(i for i, n in Counter(completion_ids).items() if n > 1)
    if dupes:
        raise InvalidInput(f"completion_ids: listed more than once: {dupes}", details={"field": "completion_ids", "duplicates": dupes})
    if len(ranks) != len(completion_ids):
        raise InvalidInput(
            f"ranks: has {len(ranks)} entries for {len(completion_ids)} completion_ids",
            details={"field": "ranks", "expected": len(completion_ids)},
        )
    foreign = sorted(set(completion_ids) - set(prompt_completion_ids))
    if foreign:
        raise InvalidInput(
            f"completion_ids: {foreign} are not completions of prompt {prompt_id}",
            details={"field": "completion_ids", "not_of_prompt": foreign},
        )
    missing = sorted(set(prompt_completion_ids) - set(completion_ids))
    if missing:
        raise InvalidInput(
            f"completion_ids: the ranking must cover every completion of prompt {prompt_id}; missing {missing}",
            details={"field": "completion_ids", "missing": missing},
        )
    try:
        validate_ranks(ranks, len(ranks))
    except FormatError as exc:
        bad = [r for r in ranks if not 1 <= r <= len(ranks)]
        raise InvalidInput(f"ranks: {exc.message}", details={"field": "ranks", "out_of_range": bad}) from None


async def create_human(session: AsyncSession, prompt: Prompt, data: RankingCreate, *, actor: str) -> Ranking:
    await ensure_can_act(session, prompt.id, actor)
    existing = [c.id for c in await completions.for_prompt(session, prompt.id)]
    check_ranks(data.completion_ids, data.ranks, existing, prompt.id)
    ranking = Ranking(
        dataset_id=prompt.dataset_id,
        prompt_id=prompt.id,
        completion_ids=data.completion_ids,
        ranks=data.ranks,
        ranker_kind=RankerKind.human.value,
        reviewer=actor,
        rationale=data.rationale,
        review_status=ReviewStatus.pending.value,
        flag_reasons=[],
    )
    change = Change(session)
    change.add(ranking)
    await change.record(actor=actor, action="rank")
    await session.refresh(ranking)
    return ranking

