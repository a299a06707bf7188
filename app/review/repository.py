"""All SQL for the review queue, verdicts, history and agreement."""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NamedTuple

from sqlalchemy import and_, case, exists, func, not_, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.orm.attributes import set_committed_value

from app.db import driver_rows
from app.models import FLAGGED_PREDICATE, Completion, Prompt, Ranking, ReviewEvent, ReviewStatus, ReviewVerdict, Verdict

OPEN_STATUSES = (ReviewStatus.pending.value, ReviewStatus.needs_review.value)
UNDOABLE = ("add_completion", "edit", "set_status", "rank", "approve", "reject")


@dataclass
class QueueFilter:
    tags: list[str]
    source: str | None
    statuses: list[str]
    exclude: list[int]
    include_empty: bool


_OPEN = "('pending', 'needs_review')"  # inlined, so the planner matches ix_prompt_review_open
_FREE = "(p.lease_expires_at IS NULL OR p.lease_expires_at <= now())"


MAX_OVERLAP = 50  # the most reviewers a dataset's settings.review_overlap may ask for an item

# The overlap the claim works with: the dataset's settings.review_overlap when it is an integer
# literal, the service's default when the setting is absent, NULL otherwise. Out of 1..MAX_OVERLAP
# (or NULL) the claim changes nothing (no arm runs, nothing is released) and the service refuses
# the setting: the claim runs in a transaction of its own, which no rollback would undo.
_OVERLAP = """CASE WHEN d.settings IS NULL OR NOT (d.settings ? 'review_overlap') THEN CAST(:default_overlap AS int)
     WHEN jsonb_typeof(d.settings -> 'review_overlap') = 'number' AND (d.settings ->> 'review_overlap') ~ '^[0-9]{1,3}$'
     THEN CAST(d.settings ->> 'review_overlap' AS int) END"""


def _shape(one_reviewer: bool) -> str:
    """The one-time filter that runs a shape's arms only for its overlap."""
    return "(SELECT overlap FROM ds) = 1" if one_reviewer else "(SELECT overlap FROM ds) > 1"


def _eligible(one_reviewer: bool, statuses: bool, tags: bool, source: bool, exclude: bool, include_empty: bool) -> str:
    conds = ["p.dataset_id = :ds", "NOT (:reviewer = ANY (p.reviewed_by))"]
    if statuses:
        conds.append("p.review_status = ANY (CAST(:statuses AS text[]))")
    if one_reviewer:
        conds.append("cardinality(p.reviewed_by) = 0")
        if not statuses:
            conds.append(f"p.review_status IN {_OPEN}")
    else:
        conds.append("cardinality(p.reviewed_by) < (SELECT overlap FROM ds)")
        if not statuses:  # open items, and items others reviewed that still want more reviewers
            conds.append(f"(p.review_status IN {_OPEN} OR cardinality(p.reviewed_by) > 0)")
    if tags:
        conds.append("p.tags @> CAST(:tags AS text[])")
    if source:
        conds.append("p.source = :source")
    if exclude:
        conds.append("p.id <> ALL (CAST(:exclude AS bigint[]))")
    if not include_empty:
        conds.append("EXISTS (SELECT FROM completion c WHERE c.prompt_id = p.id)")
    # the shape runs only for its overlap: a one-time filter, so the other shape's arms cost nothing
    conds.append(_shape(one_reviewer))
    return " AND ".join(conds)


_FLAGGED_SOURCES = (("prompt", "id"), ("ranking", "prompt_id"), ("completion", "prompt_id"))


def _next_flagged(after: str) -> str:
    """The lowest prompt id flagged in any of the three tables (after `after`, when given): one
    probe of each partial flagged index, each a LIMIT 1 index scan."""
    probes = ", ".join(
        f"(SELECT min({col}) FROM {table} WHERE dataset_id = :ds AND ({FLAGGED_PREDICATE})"
        + (f" AND {col} > {after}" if after else "") + ")"
        for table, col in _FLAGGED_SOURCES
    )
    return f"least({probes})"


@functools.cache
def _claim_sql(statuses: bool, tags: bool, source: bool, exclude: bool, include_empty: bool):
    """The claim statement for one shape of filter (built once, parameters bound per call); the
    partial indexes' predicates are spelled as in app.models, so the planner matches them. It
    reads the dataset too (its settings, for the overlap), and returns the leased item as
    `load_item` reads it (its prompt columns from the UPDATE's RETURNING, so as leased), so the
    route needs no query of its own.

    Each arm walks an ordered stream of candidate ids and probes the prompt row of each (a
    LATERAL subquery that locks with SKIP LOCKED), so the work is the candidates passed over,
    whatever the planner thinks of the filters' selectivity:
    - flagged: `flagged`, a recursive CTE that yields the dataset's flagged prompt ids in order,
      each step the least of one probe per partial flagged index (prompt, ranking, completion).
      A join of the three flagged sets with `prompt` (the earlier form) let the planner drive
      the join from `prompt`'s primary key and rescan the whole flagged set for every prompt it
      passed (milliseconds per claim, quadratic in the items reviewed); a UNION ALL of the three
      cannot be merged in index order (its branches have WHERE clauses, so Postgres plans them
      as separate subqueries and sorts the lot).
    - oldest (overlap 1, no status filter): `ix_prompt_review_open` read in (dataset_id, id)
      order. The range on dataset_id instead of an equality keeps dataset_id in the sort order,
      so the primary key (which would fetch every reviewed row's heap tuple to filter it out) is
      no candidate for the ORDER BY.
    Each arm's shape filter sits on the arm itself, so an arm of the other overlap reads nothing."""
    lock = "FOR UPDATE OF p SKIP LOCKED"
    arms = []
    for one_reviewer in (True, False):  # overlap 1 (the partial indexes' shape), then overlap > 1
        eligible = _eligible(one_reviewer, statuses, tags, source, exclude, include_empty)
        shape = _shape(one_reviewer)
        if one_reviewer and not statuses:
            oldest = f"""SELECT id FROM (SELECT l.id FROM
                    (SELECT o.dataset_id, o.id FROM prompt o
                      WHERE o.dataset_id >= :ds AND o.dataset_id <= :ds AND o.review_status IN {_OPEN}) AS o
                    CROSS JOIN LATERAL (SELECT p.id FROM prompt p WHERE p.id = o.id AND {eligible} AND {_FREE} {lock}) AS l
                    WHERE {shape} ORDER BY o.dataset_id, o.id LIMIT 1) AS oldest"""
        else:
            oldest = f"""SELECT id FROM (SELECT p.id FROM prompt p WHERE {eligible} AND {_FREE} ORDER BY p.id LIMIT 1 {lock}) AS oldest"""
        arms += [
            f"""SELECT id FROM (SELECT p.id FROM prompt p
                    WHERE {eligible} AND p.lease_holder = :reviewer AND p.lease_expires_at > now()
                    ORDER BY p.id LIMIT 1 {lock}) AS held""",
            f"""SELECT id FROM (SELECT l.id FROM flagged AS f
                    CROSS JOIN LATERAL (SELECT p.id FROM prompt p WHERE p.id = f.id AND {eligible} AND {_FREE} {lock}) AS l
                    WHERE {shape} LIMIT 1) AS flagged_first""",
            oldest,
        ]
    candidates = "\n    UNION ALL\n    ".join(arms)
    return text(f"""
WITH RECURSIVE ds AS (SELECT d.id, d.settings, {_OVERLAP} AS overlap FROM dataset d WHERE d.id = :ds),
flagged(id) AS (
  SELECT {_next_flagged("")}
  UNION ALL
  SELECT {_next_flagged("flagged.id")} FROM flagged WHERE flagged.id IS NOT NULL
),
pick AS (
  SELECT id FROM (
    {candidates}
  ) AS candidates
  LIMIT 1
),
claimed AS (
  UPDATE prompt
  SET lease_holder = CASE WHEN id = (SELECT id FROM pick) THEN CAST(:reviewer AS varchar) END,
      lease_expires_at = CASE WHEN id = (SELECT id FROM pick) THEN now() + make_interval(secs => :lease_seconds) END,
      updated_at = now()
  WHERE (id = (SELECT id FROM pick) OR (dataset_id = :ds AND lease_holder = :reviewer))
    AND (SELECT overlap FROM ds) BETWEEN 1 AND {MAX_OVERLAP}
  RETURNING {_ITEM_COLUMNS}
)
SELECT ds.settings AS claim_settings, item.* FROM ds LEFT JOIN (
  {_ITEM.format(extra="", source="claimed", where="p.lease_holder IS NOT NULL")}
) AS item ON true
""")


class Claim(NamedTuple):
    dataset_settings: dict[str, Any] | None  # for the service to check the overlap setting
    prompt_id: int | None  # the item now leased; None: nothing left under the filter


# An item as a reviewer sees it, in one statement: the prompt and its dataset's settings, its
# completions, the latest judge ranking, the caller's latest ranking and verdict (json aggregation).
# `cost` goes out as text so it keeps its scale, as the ORM's Decimal does. `{source}` is the
# prompt table, or the claim's UPDATE ... RETURNING (the row as leased).
_ITEM = """
SELECT p.id, p.dataset_id, p.text, p.source, p.split, p.tags, p.meta, p.review_status, p.flag_reasons,
       p.reviewed_by, p.created_at, p.lease_holder, p.lease_expires_at, d.settings AS dataset_settings,
       (SELECT coalesce(jsonb_agg(to_jsonb(c) || jsonb_build_object('cost', c.cost::text) ORDER BY c.id), '[]'::jsonb)
          FROM completion c WHERE c.prompt_id = p.id) AS completions,
       (SELECT to_jsonb(r) || jsonb_build_object('cost', r.cost::text) FROM ranking r
          WHERE r.prompt_id = p.id AND r.ranker_kind = 'judge' ORDER BY r.id DESC LIMIT 1) AS judge_ranking,
       (SELECT to_jsonb(r) || jsonb_build_object('cost', r.cost::text) FROM ranking r
          WHERE r.prompt_id = p.id AND r.ranker_kind = 'human' AND r.reviewer = :actor ORDER BY r.id DESC LIMIT 1) AS my_ranking,
       (SELECT to_jsonb(v) FROM review_verdict v WHERE v.prompt_id = p.id AND v.reviewer = :actor) AS verdict{extra}
FROM {source} p JOIN dataset d ON d.id = p.dataset_id
WHERE {where}
"""
# the prompt columns the item shows (what the claim's UPDATE returns)
_ITEM_COLUMNS = (
    "id, dataset_id, text, source, split, tags, meta, review_status, flag_reasons, reviewed_by, created_at, "
    "lease_holder, lease_expires_at"
)
_ITEM_SQL = text(_ITEM.format(extra="", source="prompt", where="p.id = :prompt_id"))
# for an action: the row locked, and the id a verdict the actor does not have yet will take
_ITEM_LOCKED_SQL = text(
    _ITEM.format(
        extra=""",
       CASE WHEN NOT EXISTS (SELECT FROM review_verdict v WHERE v.prompt_id = p.id AND v.reviewer = :actor)
            THEN nextval(pg_get_serial_sequence('review_verdict', 'id')) END AS new_verdict_id""",
        source="prompt", where="p.id = :prompt_id",
    )
    + "FOR UPDATE OF p"
)


async def load_item(session: AsyncSession, prompt_id: int, actor: str, *, lock: bool = False) -> dict[str, Any] | None:
    """The item as a dict (completions, rankings and verdict as dicts of their columns), or None;
    with `lock`, the prompt row is locked for the transaction and `new_verdict_id` is the id for
    the actor's verdict when they have none yet (actions). One statement."""
    q = _ITEM_LOCKED_SQL if lock else _ITEM_SQL
    [rows] = await driver_rows(session, (q, {"prompt_id": prompt_id, "actor": actor}))
    return rows[0] if rows else None


async def claim_and_load(
    session: AsyncSession, dataset_id: int, reviewer: str, *, default_overlap: int, lease_seconds: int, f: QueueFilter
) -> tuple[Claim, dict[str, Any] | None] | None:
    """Lease the next item to `reviewer`: the one they already hold, else the oldest flagged one,
    else the oldest; releasing whatever else they held in the dataset. Returns the claim and the
    item it leased as `load_item` reads it (None: nothing left); None: no such dataset.

    One statement: a CTE picks the row with `FOR UPDATE SKIP LOCKED`, so concurrent claims pass
    over a row another transaction is claiming, and the UPDATE around it sets the lease and
    releases any other item the reviewer held in the dataset (one item per reviewer at a time).
    The lease columns live on the row, so a claim that reaches a row just after another committed
    re-checks them (READ COMMITTED re-evaluates the WHERE on the new row version). The candidate
    queries (held; flagged, walked in id order from the partial flagged indexes; oldest), for
    overlap 1 and then for more, are the arms of a UNION ALL under LIMIT 1: Postgres runs an arm
    only when those before it found nothing, and an arm of the other overlap not at all. The
    overlap is the dataset's setting (read in the same statement), else `default_overlap`. The
    same statement reads the leased item (its completions, rankings, the reviewer's verdict)
    from the UPDATE's RETURNING. The SQL is text built once per filter shape: building and
    compiling the expression per request cost more than running it.
    """
    q = _claim_sql(bool(f.statuses), bool(f.tags), bool(f.source), bool(f.exclude), f.include_empty)
    params = {
        "ds": dataset_id, "reviewer": reviewer, "actor": reviewer, "default_overlap": default_overlap,
        "lease_seconds": lease_seconds, "statuses": list(f.statuses), "tags": list(f.tags), "source": f.source,
        "exclude": list(f.exclude),
    }
    # the claim is all `next` writes, and changes nothing when the overlap setting is refused
    [rows] = await driver_rows(session, (q, params), alone=True)
    if not rows:
        return None
    item = rows[0]
    settings = item.pop("claim_settings")
    if item["id"] is None:
        return Claim(settings, None), None
    return Claim(settings, item["id"]), item


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
