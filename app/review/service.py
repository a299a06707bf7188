"""Review rules: the queue and its leases, approve / reject / comment / undo, and what an
approval means. Services flush, never commit: the request owns the transaction."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import AUDITED, SqlChange, lease_active, record_event, refuse_if_leased_to_other, state
from app.completions import repository as completions_repo
from app.config import Settings
from app.datasets import repository as datasets_repo
from app.errors import Conflict, InvalidInput, NotFound
from app.models import Dataset, Prompt, ReviewEvent, ReviewStatus, Verdict
from app.prompts import service as prompts_service
from app.review import repository as repo

MAX_OVERLAP = repo.MAX_OVERLAP


def overlap_of(dataset: Dataset, settings: Settings) -> int:
    """Reviewers each item wants: the dataset's `review_overlap` setting, else the service's."""
    return _overlap(dataset.id, dataset.settings, settings)


def _overlap(dataset_id: int, dataset_settings: dict[str, Any] | None, settings: Settings) -> int:
    raw = (dataset_settings or {}).get("review_overlap", settings.review_overlap)
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_OVERLAP:
        raise InvalidInput(
            f"dataset {dataset_id}: settings.review_overlap must be an integer from 1 to {MAX_OVERLAP}, not {raw!r}",
            details={"field": "settings.review_overlap"},
        )
    return raw


async def load_item(session: AsyncSession, prompt_id: int) -> Prompt:
    return await prompts_service.get_or_404(session, prompt_id)


async def next_item(session: AsyncSession, dataset_id: int, reviewer: str, settings: Settings, f: repo.QueueFilter) -> dict[str, Any] | None:
    """The item now leased to `reviewer` as `item_view` shows it, or None when nothing is left;
    one statement (the claim, which reads the dataset and the leased item too).
    NotFound when the dataset does not exist; a bad review_overlap setting raises InvalidInput
    after the claim, which changed nothing (it runs as its own transaction: `db.driver_rows`'s
    `alone`; with such a setting it releases and leases nothing)."""
    got = await repo.claim_and_load(
        session, dataset_id, reviewer, default_overlap=settings.review_overlap, lease_seconds=settings.review_lease_seconds, f=f
    )
    if got is None:
        raise NotFound(f"dataset {dataset_id} does not exist")
    claim, item = got
    _overlap(dataset_id, claim.dataset_settings, settings)
    return None if item is None else _view(item, reviewer, settings)


async def _lock(session: AsyncSession, prompt_id: int, actor: str) -> Prompt:
    """The item, locked for this transaction, after checking nobody else holds it."""
    prompt = await repo.lock_item(session, prompt_id)
    if prompt is None:
        raise NotFound(f"prompt {prompt_id} does not exist", details={"field": "prompt_id"})
    refuse_if_leased_to_other(prompt, actor)
    return prompt


async def claim(session: AsyncSession, prompt_id: int, actor: str, settings: Settings) -> Prompt:
    prompt = await _lock(session, prompt_id, actor)
    await repo.lease(session, prompt, actor, settings.review_lease_seconds)
    return prompt


async def release(session: AsyncSession, prompt_id: int, actor: str) -> Prompt:
    prompt = await _lock(session, prompt_id, actor)
    prompt.lease_holder = prompt.lease_expires_at = None
    await session.flush()
    await session.refresh(prompt)
    return prompt


async def item_view(session: AsyncSession, prompt_id: int, actor: str, settings: Settings) -> dict[str, Any]:
    """What a reviewer sees: the prompt, its completions, the judge's ranking and their own, read
    in one round trip (`repo.load_item`)."""
    item = await repo.load_item(session, prompt_id, actor)
    if item is None:
        raise NotFound(f"prompt {prompt_id} does not exist", details={"field": "prompt_id"})
    return _view(item, actor, settings)


def _view(item: dict[str, Any], actor: str, settings: Settings) -> dict[str, Any]:
    held = _leased(item)
    return {
        "prompt": item,
        "completions": item["completions"],
        "judge_ranking": item["judge_ranking"],
        "my_ranking": item["my_ranking"],
        # a verdict exists only for those in reviewed_by (approve/reject add them, undo removes)
        "my_verdict": item["verdict"] if actor in item["reviewed_by"] else None,
        "lease": {"holder": held.lease_holder, "expires_at": held.lease_expires_at} if lease_active(held) else None,
        "overlap": _overlap(item["dataset_id"], item["dataset_settings"], settings),
    }


def _leased(item: dict[str, Any]) -> SimpleNamespace:
    """The lease columns of a loaded item, as `audit.lease_active` / `refuse_if_leased_to_other` read them."""
    return SimpleNamespace(id=item["id"], lease_holder=item["lease_holder"], lease_expires_at=item["lease_expires_at"])


async def _decide(session: AsyncSession, prompt_id: int, actor: str, decision: Verdict, reason: str | None) -> dict[str, Any]:
    """Two round trips: the item, locked, with its completions, rankings and the actor's verdict;
    then every row it changes and the audit event in one statement (`audit.SqlChange`)."""
    item = await repo.load_item(session, prompt_id, actor, lock=True)
    if item is None:
        raise NotFound(f"prompt {prompt_id} does not exist", details={"field": "prompt_id"})
    refuse_if_leased_to_other(_leased(item), actor)
    completions, judge = item["completions"], item["judge_ranking"]
    endorsed = item["my_ranking"] or judge
    change = SqlChange("prompt", item)
    reviewed_by = item["reviewed_by"] if actor in item["reviewed_by"] else [*item["reviewed_by"], actor]
    change.set("prompt", item, review_status=decision.value, reviewed_by=reviewed_by, lease_holder=None, lease_expires_at=None)
    if decision is Verdict.approved and endorsed is not None:
        uncovered = sorted({c["id"] for c in completions} - set(endorsed["completion_ids"]))
        if uncovered and len(completions) >= 2:
            raise Conflict(
                f"the ranking you would approve does not rank completions {uncovered}: re-rank prompt {item['id']} first",
                details={"unranked": uncovered, "ranking_id": endorsed["id"]},
            )
        change.set("ranking", endorsed, review_status=ReviewStatus.approved.value)
        for c in completions:  # stale ones (made for an older text) too: the reviewer saw them with this one
            if c["review_status"] in repo.OPEN_STATUSES or c["review_status"] == ReviewStatus.stale:
                change.set("completion", c, review_status=ReviewStatus.approved.value)
    verdict = {
        "decision": decision.value, "reason": reason, "ranking_id": endorsed["id"] if endorsed is not None else None,
        "judge_ranking_id": judge["id"] if judge is not None else None,
    }
    if item["verdict"] is None:
        change.add("review_verdict", item["new_verdict_id"], dataset_id=item["dataset_id"], prompt_id=item["id"], reviewer=actor, **verdict)
    else:
        change.set("review_verdict", item["verdict"], **verdict)
    return await change.record(session, actor=actor, action=_ACTION[decision], comment=reason)


_ACTION = {Verdict.approved: "approve", Verdict.rejected: "reject"}


async def approve(session: AsyncSession, prompt_id: int, actor: str, comment: str | None) -> dict[str, Any]:
    """Approve the item: the prompt, the ranking the reviewer endorses (their own re-rank, else the
    judge's) and the completions still open. Records the reviewer's verdict; releases the lease."""
    return await _decide(session, prompt_id, actor, Verdict.approved, comment)


async def reject(session: AsyncSession, prompt_id: int, actor: str, reason: str) -> dict[str, Any]:
    """Reject the item: nothing of it is exported."""
    return await _decide(session, prompt_id, actor, Verdict.rejected, reason)


async def comment(session: AsyncSession, prompt_id: int, actor: str, text: str, completion_id: int | None) -> ReviewEvent:
    prompt = await load_item(session, prompt_id)
    target_type, target_id = "prompt", prompt.id
    if completion_id is not None:
        completion = await completions_repo.get(session, completion_id)
        if completion is None or completion.prompt_id != prompt.id:
            raise InvalidInput(
                f"completion_id: {completion_id} is not a completion of prompt {prompt.id}", details={"field": "completion_id"}
            )
        target_type, target_id = "completion", completion.id
    return await record_event(
        session, dataset_id=prompt.dataset_id, prompt_id=prompt.id, actor=actor, action="comment",
        target_type=target_type, target_id=target_id, comment=text,
    )


def _entries(event: ReviewEvent) -> list[tuple[str, int, dict | None, dict | None]]:
    """(type, id, before, after) for the event's target and every related row."""
    before = dict(event.before) if event.before is not None else None
    after = dict(event.after) if event.after is not None else None
    related_before = (before or {}).pop("related", {})
    related_after = (after or {}).pop("related", {})
    out = [(event.target_type, event.target_id, before, after)]
    for key in related_after.keys() | related_before.keys():
        kind, _, row_id = key.partition(":")
        out.append((kind, int(row_id), related_before.get(key), related_after.get(key)))
    return out


async def undo(session: AsyncSession, prompt_id: int, actor: str) -> ReviewEvent:
    """Revert the actor's latest action on the item that is not yet undone, if nothing it changed
    has been changed again since."""
    prompt = await _lock(session, prompt_id, actor)
    event = await repo.last_undoable(session, prompt.id, actor)
    if event is None:
        raise Conflict(f"nothing of {actor!r} to undo on prompt {prompt.id}")
    plan = []
    for kind, row_id, before, after in _entries(event):
        row = await session.get(AUDITED[kind][0], row_id)
        current = state(row) if row is not None else None
        if current != after:
            raise Conflict(
                f"cannot undo {event.action} (event {event.id}): {kind} {row_id} has changed since",
                details={"event_id": event.id, "target": f"{kind}:{row_id}"},
            )
        if before is None and kind == "completion" and await completions_repo.in_any_ranking(session, row):
            raise Conflict(
                f"cannot undo adding completion {row_id}: a ranking includes it; undo or replace that ranking first",
                details={"event_id": event.id},
            )
        plan.append((row, before))
    for row, before in plan:
        if before is None:
            await session.delete(row)
        else:
            for field, value in before.items():
                setattr(row, field, value)
    await session.flush()
    return await record_event(
        session, dataset_id=event.dataset_id, prompt_id=event.prompt_id, actor=actor, action="undo",
        target_type=event.target_type, target_id=event.target_id, before=event.after, after=event.before,
        comment=f"undid {event.action} (event {event.id})", undoes=event.id,
    )


async def history(session: AsyncSession, prompt_id: int) -> list[ReviewEvent]:
    await load_item(session, prompt_id)
    return await repo.history(session, prompt_id)


async def progress(session: AsyncSession, dataset: Dataset, settings: Settings) -> dict[str, Any]:
    """Per dataset and per reviewer, counting verdicts, rankings and completions as well as prompts."""
    overlap = overlap_of(dataset, settings)
    items, wanted, given = await repo.verdict_totals(session, dataset.id, overlap)
    counts = (await datasets_repo.counts(session, [dataset.id]))[dataset.id]
    return {
        "dataset_id": dataset.id, "overlap": overlap, "items": items, "verdicts_wanted": wanted, "verdicts_given": given,
        **{k: counts[k] for k in ("prompts_by_status", "completions_by_status", "rankings_by_status", "flagged")},
        "rankings_by_kind": await repo.rankings_by_kind(session, dataset.id),
        "reviewers": [{"reviewer": r, **figures} for r, figures in (await repo.reviewer_figures(session, dataset.id)).items()],
    }
