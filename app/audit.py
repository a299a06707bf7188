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

import functools
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import JSON, TextClause, bindparam, inspect, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import driver_rows
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


def _jsonable(v: Any) -> Any:
    return v if isinstance(v, (str, int, float, bool, list, dict, type(None))) else str(v)


def snapshot(obj: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """The JSON-able state of `fields` of an ORM row, for before/after."""
    return {f: _jsonable(getattr(obj, f)) for f in fields}


def state_of(kind: str, columns: Mapping[str, Any]) -> dict[str, Any]:
    """`state` of a row read as a mapping of its columns (e.g. `to_jsonb(row)`)."""
    return {f: _jsonable(columns[f]) for f in AUDITED[kind][1]}


def event_states(target: tuple[str, dict | None, dict | None], others: list[tuple[str, dict | None, dict | None]]):
    """An event's (before, after): the target's audited fields, and every other row's under
    `related`, keyed "<type>:<id>" (the layout undo reads)."""
    _, before, after = target
    if others:
        before = dict(before or {}, related={k: b for k, b, _ in others})
        after = dict(after or {}, related={k: a for k, _, a in others})
    return before, after


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
        (_, first), *others = [(r, b) for r, b in self._rows if r is target] + [(r, b) for r, b in self._rows if r is not target]
        before, after = event_states((key(target), first, state(target)), [(key(r), b, state(r)) for r, b in others])
        return await record_event(
            self.session, dataset_id=target.dataset_id, prompt_id=item_of(target), actor=actor, action=action,
            target_type=TYPE_OF[type(target)], target_id=target.id, before=before, after=after, comment=comment, undoes=undoes,
        )


class SqlChange:
    """`Change` for an action on rows read as mappings (one round trip, e.g. the review item's
    `to_jsonb` load): `set(kind, row, **values)` for each row it changes, `add(kind, id, **values)`
    for a new one (its id taken from the sequence beforehand), then `record(...)` writes every
    update and insert and the event in ONE statement (data-modifying CTEs). The event has the
    same before / after layout as `Change` writes, so undo treats both alike."""

    def __init__(self, kind: str, target: Mapping[str, Any]):
        self.target = f"{kind}:{target['id']}"
        self.dataset_id, self.prompt_id = target["dataset_id"], item_of_row(kind, target)
        # key -> [kind, id, before (None: new), after, values to write, new?]
        self._rows: dict[str, list] = {}
        self.set(kind, target)

    def set(self, kind: str, row: Mapping[str, Any], **values: Any) -> None:
        """Change `values` (audited or not) of an existing row; the event records the audited ones."""
        k = f"{kind}:{row['id']}"
        if k not in self._rows:
            before = state_of(kind, row)
            self._rows[k] = [kind, row["id"], before, dict(before), {}, False]
        entry = self._rows[k]
        entry[4].update(values)
        entry[3].update({f: _jsonable(v) for f, v in values.items() if f in AUDITED[kind][1]})

    def add(self, kind: str, row_id: int, **values: Any) -> None:
        """A new row with this id; `values` must give every audited field."""
        self._rows[f"{kind}:{row_id}"] = [kind, row_id, None, state_of(kind, values), values, True]

    async def record(self, session: AsyncSession, *, actor: str, action: str, comment: str | None = None) -> dict[str, Any]:
        """Write the rows that change and the event in one statement; the event's columns."""
        shape, params = [], {}
        for n, (kind, row_id, before, after, values, new) in enumerate(self._rows.values()):
            if not new and before == after and not set(values) - set(AUDITED[kind][1]):
                continue  # nothing of this row changes (it is still in the event, as Change has it)
            shape.append((n, kind, new, tuple(values)))
            params[f"w{n}_id"] = row_id
            params.update({f"w{n}_{col}": v for col, v in values.items()})
        (kind, _, tb, ta, _, _), *others = [self._rows[self.target], *(e for k, e in self._rows.items() if k != self.target)]
        before, after = event_states((self.target, tb, ta), [(f"{e[0]}:{e[1]}", e[2], e[3]) for e in others])
        params.update(
            e_dataset_id=self.dataset_id, e_prompt_id=self.prompt_id, e_actor=actor, e_action=action, e_target_type=kind,
            e_target_id=self._rows[self.target][1], e_before=before, e_after=after, e_comment=comment,
        )
        stmt, json_params = _record_sql(tuple(shape))
        for name in json_params:  # what SQLAlchemy's JSONB type did: the driver takes dicts wrapped
            if params[name] is not None:
                params[name] = Jsonb(params[name])
        [[row]] = await driver_rows(session, (stmt, params))
        return row


_EVENT_COLUMNS = ("dataset_id", "prompt_id", "actor", "action", "target_type", "target_id", "before", "after", "comment")


@functools.lru_cache(maxsize=256)  # shapes: the number of completions an item has, mostly
def _record_sql(writes: tuple[tuple[int, str, bool, tuple[str, ...]], ...]) -> tuple[TextClause, tuple[str, ...]]:
    """`SqlChange.record`'s statement for one shape of change ((n, kind, new, columns) per row
    written), as text built once: building and compiling the Core expression per request cost
    about as much as running it. Parameters are typed as their columns (a cast each, as Core
    renders them), so they bind as Core's did; it runs on the driver directly (`db.driver_rows`:
    SQLAlchemy's execute cost more than the statement's round trip), so the JSON parameters,
    returned beside it, are the caller's to wrap."""
    ctes, binds = [], []
    for n, kind, new, cols in writes:
        table = AUDITED[kind][0].__table__
        binds += [bindparam(f"w{n}_{c}", type_=table.c[c].type) for c in cols]
        if new:
            names = ", ".join(["id", *cols])
            values = ", ".join([f":w{n}_id", *(f":w{n}_{c}" for c in cols)])
            ctes.append(f"w{n} AS (INSERT INTO {table.name} ({names}) VALUES ({values}) RETURNING id)")
        else:
            sets = ", ".join([*(f"{c} = :w{n}_{c}" for c in cols), "updated_at = now()"])
            ctes.append(f"w{n} AS (UPDATE {table.name} SET {sets} WHERE id = :w{n}_id RETURNING id)")
    event = ReviewEvent.__table__
    binds += [bindparam(f"e_{c}", type_=event.c[c].type) for c in _EVENT_COLUMNS]
    sql = (
        (f"WITH {', '.join(ctes)} " if ctes else "")
        + f"INSERT INTO review_event ({', '.join(_EVENT_COLUMNS)}) VALUES ({', '.join(f':e_{c}' for c in _EVENT_COLUMNS)}) "
        + f"RETURNING {', '.join(c.name for c in event.c)}"
    )
    return text(sql).bindparams(*binds), tuple(b.key for b in binds if isinstance(b.type, JSON))


def item_of_row(kind: str, row: Mapping[str, Any]) -> int:
    """`item_of` for a row read as a mapping."""
    return row["id"] if kind == "prompt" else row["prompt_id"]


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
