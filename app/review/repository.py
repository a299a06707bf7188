"""All SQL for the review queue, verdicts, history and agreement."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, case, exists, func, literal_column, not_, or_, select, text, union, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.orm.attributes import set_committed_value

from app.models import Completion, Prompt, Ranking, ReviewEvent, ReviewStatus, ReviewVerdict, Verdict

OPEN_STATUSES = (ReviewStatus.pending.value, ReviewStatus.needs_review.value)
UNDOABLE = ("add_completion", "edit", "set_status", "rank", "approve", "reject")


@dataclass
class QueueFilter:
    tags: list[str]
    source: str | None
    statuses: list[str]
    exclude: list[int]
    include_empty: bool


def _const(value: str):
    """A constant inlined in the SQL (not a bound parameter), so the planner can match the
    partial indexes' predicates (app.models.OPEN_PREDICATE / FLAGGED_PREDICATE)."""
    return literal_column(f"'{value}'")


NO_FLAGS = literal_column("'{}'::text[]")


def _flagged(table):
    """Flagged and not yet resolved: needs_review, or flags on a row still pending."""
    return or_(
        table.review_status == _const(ReviewStatus.needs_review.value),
        and_(table.flag_reasons != NO_FLAGS, table.review_status == _const(ReviewStatus.pending.value)),
    )


def _eligible(dataset_id: int, reviewer: str, overlap: int, f: QueueFilter):
    done = func.cardinality(Prompt.reviewed_by)
    conds = [Prompt.dataset_id == dataset_id, not_(Prompt.reviewed_by.any_() == reviewer)]
    if f.statuses:
        conds.append(Prompt.review_status.in_(f.statuses))
    if overlap == 1:
        conds.append(done == 0)
        if not f.statuses:
            conds.append(Prompt.review_status.in_([_const(s) for s in OPEN_STATUSES]))
    else:
        conds.append(done < overlap)
        if not f.statuses:
            # open items, and items others reviewed that still want more reviewers
            conds.append(or_(Prompt.review_status.in_([_const(s) for s in OPEN_STATUSES]), done > 0))
    if f.tags:
        conds.append(Prompt.tags.contains(f.tags))
    if f.source:
        conds.append(Prompt.source == f.source)
    if f.exclude:
        conds.append(Prompt.id.not_in(f.exclude))
    if not f.include_empty:
        conds.append(exists().where(Completion.prompt_id == Prompt.id))
    return and_(*conds)


async def claim_next(
    session: AsyncSession, dataset_id: int, reviewer: str, *, overlap: int, lease_seconds: int, f: QueueFilter
) -> Prompt | None:
    """Lease the next item to `reviewer`: the one they already hold, else the oldest flagged
    one, else the oldest.

    `FOR UPDATE SKIP LOCKED` makes concurrent claims pass over a row another transaction is
    claiming; the lease columns live on the row, so a claim that reaches a row just after another
    committed re-checks them (READ COMMITTED re-evaluates the WHERE on the new row version).
    """
    eligible = _eligible(dataset_id, reviewer, overlap, f)
    free = or_(Prompt.lease_expires_at.is_(None), Prompt.lease_expires_at <= func.now())
    held = and_(Prompt.lease_holder == reviewer, Prompt.lease_expires_at > func.now())
    # first the item held, else the oldest flagged: both from a small candidate set (indexed)
    held_or_flagged = union(
        select(Prompt.id).where(Prompt.dataset_id == dataset_id, Prompt.lease_holder == reviewer),
        select(Prompt.id).where(Prompt.dataset_id == dataset_id, _flagged(Prompt)),
        select(Ranking.prompt_id).where(Ranking.dataset_id == dataset_id, _flagged(Ranking)),
        select(Completion.prompt_id).where(Completion.dataset_id == dataset_id, _flagged(Completion)),
    )
    first = (
        select(Prompt)
        .where(eligible, or_(held, free), Prompt.id.in_(held_or_flagged))
        .order_by(held.desc().nulls_last(), Prompt.id)
    )
    oldest = select(Prompt).where(eligible, free).order_by(Prompt.id)
    for q in (first, oldest):
        q = q.limit(1).with_for_update(of=Prompt, skip_locked=True)
        prompt = (await session.execute(q)).scalar_one_or_none()
        if prompt is not None:
            await lease(session, prompt, reviewer, lease_seconds)
            return prompt
    await release_all(session, dataset_id, reviewer)
    return None


async def lock_item(session: AsyncSession, prompt_id: int) -> Prompt | None:
    q = select(Prompt).where(Prompt.id == prompt_id).with_for_update(of=Prompt)
    return (await session.execute(q.execution_options(populate_existing=True))).scalar_one_or_none()


async def lease(session: AsyncSession, prompt: Prompt, reviewer: str, lease_seconds: int) -> None:
    """Hold `prompt` for `reviewer`, releasing any other item they hold in the dataset (one
    item per reviewer at a time), in one statement."""
    target = Prompt.id == prompt.id
    rows = await session.execute(
        update(Prompt)
        .where(or_(target, and_(Prompt.dataset_id == prompt.dataset_id, Prompt.lease_holder == reviewer)))
        .values(
            lease_holder=case((target, reviewer), else_=None),
            lease_expires_at=case((target, func.now() + timedelta(seconds=lease_seconds)), else_=None),
        )
        .returning(Prompt.id, Prompt.lease_expires_at)
        .execution_options(synchronize_session=False)
    )
    expires = next(e for pid, e in rows if pid == prompt.id)
    set_committed_value(prompt, "lease_holder", reviewer)
    set_committed_value(prompt, "lease_expires_at", expires)


async def release_all(session: AsyncSession, dataset_id: int, reviewer: str) -> None:
    q = update(Prompt).where(Prompt.dataset_id == dataset_id, Prompt.lease_holder == reviewer)
    await session.execute(q.values(lease_holder=None, lease_expires_at=None).execution_options(synchronize_session=False))


async def completions_of(session: AsyncSession, prompt_id: int) -> list[Completion]:
    rows = await session.execute(select(Completion).where(Completion.prompt_id == prompt_id).order_by(Completion.id))
    return list(rows.scalars())


async def verdict(session: AsyncSession, prompt_id: int, reviewer: str) -> ReviewVerdict | None:
    q = select(ReviewVerdict).where(ReviewVerdict.prompt_id == prompt_id, ReviewVerdict.reviewer == reviewer)
    return (await session.execute(q)).scalar_one_or_none()


async def history(session: AsyncSession, prompt_id: int) -> list[ReviewEvent]:
    # events written outside review (e.g. PATCH /prompts/{id}) name the prompt as their target only
    about_item = or_(
        ReviewEvent.prompt_id == prompt_id, and_(ReviewEvent.target_type == "prompt", ReviewEvent.target_id == prompt_id)
    )
    q = select(ReviewEvent).where(about_item).order_by(ReviewEvent.id)
    return list((await session.execute(q)).scalars())


async def last_undoable(session: AsyncSession, prompt_id: int, actor: str) -> ReviewEvent | None:
    undone = aliased(ReviewEvent)
    q = (
        select(ReviewEvent)
        .where(
            ReviewEvent.prompt_id == prompt_id,
            ReviewEvent.actor == actor,
            ReviewEvent.action.in_(UNDOABLE),
            not_(exists().where(undone.undoes_event_id == ReviewEvent.id)),
        )
        .order_by(ReviewEvent.id.desc())
        .limit(1)
    )
    return (await session.execute(q)).scalar_one_or_none()


@dataclass
class VerdictPair:
    prompt_id: int
    reviewer: str
    judge_model: str | None
    template_version: str | None
    judge_ids: list[int] | None
    judge_ranks: list[int] | None
    human_ids: list[int] | None
    human_ranks: list[int] | None


async def approved_verdicts(session: AsyncSession, dataset_id: int) -> list[VerdictPair]:
    """Every approval with the judge ranking shown and the ranking the reviewer endorsed."""
    judge, human = aliased(Ranking), aliased(Ranking)
    q = (
        select(
            ReviewVerdict.prompt_id, ReviewVerdict.reviewer, judge.judge_model, judge.template_version,
            judge.completion_ids, judge.ranks, human.completion_ids, human.ranks,
        )
        .outerjoin(judge, judge.id == ReviewVerdict.judge_ranking_id)
        .outerjoin(human, human.id == ReviewVerdict.ranking_id)
        .where(ReviewVerdict.dataset_id == dataset_id, ReviewVerdict.decision == Verdict.approved.value)
        .order_by(ReviewVerdict.prompt_id, ReviewVerdict.reviewer)
    )
    return [VerdictPair(*row) for row in await session.execute(q)]


_JUDGE_LENGTHS = text(
    """
    SELECT r.judge_model, r.template_version, r.ranks,
           ARRAY(SELECT length(coalesce(c.edited_text, c.text)) FROM unnest(r.completion_ids) WITH ORDINALITY AS u(id, n)
                 JOIN completion c ON c.id = u.id ORDER BY u.n) AS lengths
    FROM ranking r WHERE r.dataset_id = :dataset_id AND r.ranker_kind = 'judge'
    """
)


async def judge_rankings_with_lengths(session: AsyncSession, dataset_id: int) -> list[tuple[str | None, str | None, list[int], list[int]]]:
    """(judge model, template version, ranks, candidate lengths in characters) of every judge ranking of the dataset."""
    return [tuple(r) for r in await session.execute(_JUDGE_LENGTHS, {"dataset_id": dataset_id})]


async def verdict_totals(session: AsyncSession, dataset_id: int, overlap: int) -> tuple[int, int, int]:
    """(items with completions, verdicts those items want, verdicts given up to the overlap)."""
    done = func.least(func.cardinality(Prompt.reviewed_by), overlap)
    q = select(func.count(), func.coalesce(func.sum(done), 0)).where(
        Prompt.dataset_id == dataset_id, exists().where(Completion.prompt_id == Prompt.id)
    )
    items, given = (await session.execute(q)).one()
    return items, items * overlap, int(given)


async def rankings_by_kind(session: AsyncSession, dataset_id: int) -> dict[str, int]:
    q = select(Ranking.ranker_kind, func.count()).where(Ranking.dataset_id == dataset_id).group_by(Ranking.ranker_kind)
    return {kind: n for kind, n in await session.execute(q)}


async def reviewer_figures(session: AsyncSession, dataset_id: int) -> dict[str, dict[str, int]]:
    """Per reviewer: verdicts by decision, human rankings made, edits, completions added and comments."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(REVIEWER_FIGURES, 0))
    verdicts = select(ReviewVerdict.reviewer, ReviewVerdict.decision, func.count()).where(
        ReviewVerdict.dataset_id == dataset_id
    ).group_by(ReviewVerdict.reviewer, ReviewVerdict.decision)
    for reviewer, decision, n in await session.execute(verdicts):
        out[reviewer][decision] = n
    rankings = select(Ranking.reviewer, func.count()).where(
        Ranking.dataset_id == dataset_id, Ranking.ranker_kind == "human", Ranking.reviewer.is_not(None)
    ).group_by(Ranking.reviewer)
    for reviewer, n in await session.execute(rankings):
        out[reviewer]["rankings"] = n
    undone = aliased(ReviewEvent)
    events = select(ReviewEvent.actor, ReviewEvent.action, func.count()).where(
        ReviewEvent.dataset_id == dataset_id, ReviewEvent.action.in_(["edit", "add_completion", "comment"]),
        not_(exists().where(undone.undoes_event_id == ReviewEvent.id)),
    ).group_by(ReviewEvent.actor, ReviewEvent.action)
    names = {"edit": "edits", "add_completion": "completions_added", "comment": "comments"}
    for actor, action, n in await session.execute(events):
        out[actor][names[action]] = n
    return dict(sorted(out.items()))


REVIEWER_FIGURES = ("approved", "rejected", "rankings", "edits", "completions_added", "comments")
