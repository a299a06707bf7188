"""Completion rules. Services flush, never commit; every human change is a review_event."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import Change, ensure_can_act
from app.completions import duplicates
from app.completions import repository as repo
from app.completions.schemas import CompletionCreate
from app.errors import Conflict, NotFound
from app.models import Completion, CompletionSource, FlagReason, Prompt, ReviewStatus
from app.text import check_text


async def get_or_404(session: AsyncSession, completion_id: int) -> Completion:
    completion = await repo.get(session, completion_id)
    if completion is None:
        raise NotFound(f"completion {completion_id} does not exist", details={"field": "completion_id"})
    return completion


async def add_human(session: AsyncSession, prompt: Prompt, data: CompletionCreate, *, actor: str, max_chars: int) -> Completion:
    """A person's completion. The same text as one the prompt has is refused (409 naming it); a
    near-identical one is stored flagged `near_duplicate`."""
    check_text(data.text, max_chars)
    await ensure_can_act(session, prompt.id, actor)
    dup = duplicates.find(data.text, await repo.texts_for_prompt(session, prompt.id))
    if dup is not None and dup.exact:
        raise Conflict(
            f"prompt {prompt.id} already has this completion (completion {dup.of})",
            details={"field": "text", "duplicate_of": dup.of},
        )
    meta, flags = duplicates.flag(data.meta, [], dup) if dup is not None else (data.meta, [])
    completion = Completion(
        dataset_id=prompt.dataset_id,
        prompt_id=prompt.id,
        text=data.text,
        source=CompletionSource.human.value,
        author=actor,
        meta=meta,
        review_status=ReviewStatus.pending.value,
        flag_reasons=flags,
    )
    change = Change(session)
    change.add(completion)
    await change.record(actor=actor, action="add_completion")
    await session.refresh(completion)
    return completion


async def edit(session: AsyncSession, completion: Completion, edited_text: str | None, *, actor: str, max_chars: int) -> Completion:
    """Keep `text` as written; the edit goes to `edited_text` and flags the row `edited`."""
    if edited_text is not None:
        check_text(edited_text, max_chars, "edited_text")
    await ensure_can_act(session, completion.prompt_id, actor)
    change = Change(session, completion)
    completion.edited_text = edited_text
    flags = [f for f in completion.flag_reasons if f != FlagReason.edited]
    completion.flag_reasons = flags + [FlagReason.edited.value] if edited_text is not None else flags
    await change.record(actor=actor, action="edit")
    await session.refresh(completion)
    return completion

