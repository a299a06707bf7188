"""The audit trail: every human change to reviewable state is one review_event with who, when,
before and after, written by `Change`. Every domain that changes such rows (prompts,
completions, rankings, review) goes through here, so there is one list of audited fields and one
writer, and review's undo can put back whatever any of them changed.

An event's `before` / `after` hold the audited fields of its target (None: the row did not exist
before / does not exist after). An action that touches more rows than its target (approving an
item also approves its ranking and completions) keeps theirs under `related`, keyed
"<type>:<id>", so undo can put every row back.

A review item (a prompt with its completions and rankings) may be leased to one reviewer; a change
to it by anyone else is refused (`ensure_can_act`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, NotFound
from app.models import Base, Completion, Prompt, Ranking, ReviewEvent, ReviewVerdict
from app.schemas import ReviewStatusUpdate

# the rows a human may change, and the fields an event records (and undo restores)
AUDITED: dict[str, tuple[type[Base], tuple[str, ...]]] = {
    "prompt": (Prompt, ("text", "split", "tags", "meta", "review_status", "flag_reasons", "reviewed_by")),
    "completion": (Completion, ("text", "edited_text", "review_status", "flag_reasons")),
    "ranking": (Ranking, ("ranker_kind", "completion_ids", "ranks", "review_status", "flag_reasons")),
    "review_verdict": (ReviewVerdict, ("reviewer", "decision", "ranking_id", "judge_ranking_id", "reason")),
}
TYPE_OF = {cls: name for name, (cls, _) in AUDITED.items()}


def snapshot(obj: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """The JSON-able state of `fields` of an ORM row, for before/after."""
    out = {}
    for f in fields:
        v = getattr(obj, f)
        out[f] = v if isinstance(v, (str, int, float, bool, list, dict, type(None))) else str(v)
    return out


def state(row: Base) -> dict[str, Any]:
    return snapshot(row, AUDITED[TYPE_OF[type(row)]][1])


def key(row: Base) -> str:
    return f"{TYPE_OF[type(row)]}:{row.id}"


def item_of(row: Base) -> int:
    """The review item (prompt id) a row belongs to."""
    return row.id if isinstance(row, Prompt) else row.prompt_id


def lease_active(prompt: Prompt, now: datetime | None = None) -> bool:
    return (
        prompt.lease_holder is not None
        and prompt.lease_expires_at is not None
        and prompt.lease_expires_at > (now or datetime.now(UTC))
    )


def refuse_if_leased_to_other(prompt: Prompt, actor: str) -> None:
    if lease_active(prompt) and prompt.lease_holder != actor:
        raise Conflict(
            f"prompt {prompt.id} is being reviewed by {prompt.lease_holder!r} until "
            f"{prompt.lease_expires_at.isoformat()}",
            details={"lease_holder": prompt.lease_holder, "lease_expires_at": prompt.lease_expires_at.isoformat()},
        )


async def ensure_can_act(session: AsyncSession, prompt_id: int, actor: str) -> Prompt:
    """Refuse a change to an item someone else holds a live lease on."""
    prompt = await session.get(Prompt, prompt_id)
    if prompt is None:
        raise NotFound(f"prompt {prompt_id} does not exist")
    refuse_if_leased_to_other(prompt, actor)
    return prompt


class Change:
    """The rows one action touches: call `touch(row)` before changing a row, `add(row)` for a new
    one, then `record(...)` once to flush and write the event."""

    def __init__(self, session: AsyncSession, target: Base | None = None):
        self.session = session
        self.target = target
        self._rows: list[tuple[Base, dict[str, Any] | None]] = []
        if target is not None:
            self.touch(target)

    def touch(self, row: Base) -> Base:
        if not any(r is row for r, _ in self._rows):
            self._rows.append((row, state(row)))
        return row

    def add(self, row: Base) -> Base:
        self.session.add(row)
        self._rows.append((row, None))
        if self.target is None:
            self.target = row
        return row

    async def record(self, *, actor: str, action: str, comment: str | None = None, undoes: int | None = None) -> ReviewEvent:
        await self.session.flush()
        for row, _ in self._rows:
            # only what the event needs: server-side defaults of a new row not set in Python
            if inspect(row).unloaded & set(AUDITED[TYPE_OF[type(row)]][1]):
                await self.session.refresh(row)
        target = self.target
        (_, before), *others = [(r, b) for r, b in self._rows if r is target] + [(r, b) for r, b in self._rows if r is not target]
        after: dict[str, Any] | None = state(target)
        if others:
            before = dict(before or {}, related={key(r): b for r, b in others})
            after = dict(after, related={key(r): state(r) for r, _ in others})
        return await record_event(
            self.session, dataset_id=target.dataset_id, prompt_id=item_of(target), actor=actor, action=action,
            target_type=TYPE_OF[type(target)], target_id=target.id, before=before, after=after, comment=comment, undoes=undoes,
        )


async def record_event(
    session: AsyncSession,
    *,
    dataset_id: int,
    prompt_id: int,
    actor: str,
    action: str,
    target_type: str,
    target_id: int,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    comment: str | None = None,
    undoes: int | None = None,
) -> ReviewEvent:
    """Write one review_event. `Change.record` computes before/after; a comment has neither, an
    undo swaps those of the event it undoes."""
    event = ReviewEvent(
        dataset_id=dataset_id, prompt_id=prompt_id, actor=actor, action=action, target_type=target_type,
        target_id=target_id, before=before, after=after, comment=comment, undoes_event_id=undoes,
    )
    session.add(event)
    await session.flush()
    return event


async def set_review_status(session: AsyncSession, row: Completion | Ranking, data: ReviewStatusUpdate, *, actor: str) -> Completion | Ranking:
    await ensure_can_act(session, row.prompt_id, actor)
    change = Change(session, row)
    row.review_status = data.review_status.value
    if data.flag_reasons is not None:
        row.flag_reasons = [f.value for f in data.flag_reasons]
    await change.record(actor=actor, action="set_status", comment=data.comment)
    await session.refresh(row)
    return row
