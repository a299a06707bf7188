"""SQLAlchemy 2 tables. The schema itself comes from the Alembic migrations in migrations/;
these classes must match them (tests/app/test_migrations.py checks that they do)."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSONB, list[str]: ARRAY(Text)}


class ReviewStatus(enum.StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"
    needs_review = "needs_review"
    # a completion or ranking made for a prompt text that has since changed: kept and shown,
    # left out of exports until a reviewer approves it again (migration 0008)
    stale = "stale"


class PromptSource(enum.StrEnum):
    imported = "imported"
    human = "human"
    synthetic = "synthetic"


class CompletionSource(enum.StrEnum):
    model = "model"
    human = "human"
    imported = "imported"  # read from a file (migration 0009); its provenance says which


class RankerKind(enum.StrEnum):
    judge = "judge"
    human = "human"
    imported = "imported"  # read from a file (migration 0009); counts like a human ranking


class RunKind(enum.StrEnum):
    synth = "synth"
    generate = "generate"
    judge = "judge"
    export = "export"


class RunStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    budget_exhausted = "budget_exhausted"


def _in(column: str, values: type[enum.Enum]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


def _updated() -> Mapped[datetime]:
    return mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )


def _id() -> Mapped[int]:
    return mapped_column(BigInteger, Identity(always=False), primary_key=True)


class Dataset(Base):
    __tablename__ = "dataset"

    id: Mapped[int] = _id()
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, server_default="")
    # Per-dataset overrides: LLM roles, judge template, review overlap, ...
    settings: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class Prompt(Base):
    __tablename__ = "prompt"
    __table_args__ = (
        UniqueConstraint("dataset_id", "content_hash", name="uq_prompt_dataset_id_content_hash"),
        CheckConstraint(_in("source", PromptSource), name="source"),
        CheckConstraint(_in("review_status", ReviewStatus), name="review_status"),
        # keyset pagination and filtered lists walk (dataset_id, id)
        Index("ix_prompt_dataset_id_id", "dataset_id", "id"),
        Index("ix_prompt_dataset_id_review_status_id", "dataset_id", "review_status", "id"),
        Index("ix_prompt_tags", "tags", postgresql_using="gin"),
        Index("ix_prompt_lsh_keys", "lsh_keys", postgresql_using="gin"),
    )

    id: Mapped[int] = _id()
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(Text)
    # sha256 of the whitespace-normalised text: exact duplicates within a dataset are refused
    content_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    source: Mapped[str] = mapped_column(String(16), server_default=PromptSource.imported.value)
    split: Mapped[str | None] = mapped_column(String(32))
    review_status: Mapped[str] = mapped_column(String(16), server_default=ReviewStatus.pending.value)
    flag_reasons: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    meta: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    # for synthetic prompts: the run, model, template version and seeds that made it
    provenance: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    run_id: Mapped[int | None] = mapped_column(ForeignKey("run.id", ondelete="SET NULL"))
    # review queue (migration 0002): who holds the item now, until when, and who has reviewed it;
    # on the row itself so a `FOR UPDATE SKIP LOCKED` claim re-checks them after a concurrent commit
    lease_holder: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reviewed_by: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    # near-duplicate candidates (migration 0008, app/prompts/dedup.py): MinHash LSH band keys
    lsh_keys: Mapped[list[int] | None] = mapped_column(ARRAY(BigInteger))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class Completion(Base):
    __tablename__ = "completion"
    __table_args__ = (
        # a generation job can run twice without writing twice
        UniqueConstraint("run_id", "prompt_id", "sample_index", name="uq_completion_run_id_prompt_id_sample_index"),
        CheckConstraint(_in("source", CompletionSource), name="source"),
        CheckConstraint(_in("review_status", ReviewStatus), name="review_status"),
        Index("ix_completion_prompt_id_id", "prompt_id", "id"),
        Index("ix_completion_dataset_id_id", "dataset_id", "id"),
    )

    id: Mapped[int] = _id()
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"))
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompt.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(Text)
    # a reviewer's edit; `text` keeps what the model (or the first human) wrote
    edited_text: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))
    author: Mapped[str | None] = mapped_column(String(200))
    model: Mapped[str | None] = mapped_column(String(200))
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    template_version: Mapped[str | None] = mapped_column(String(64))
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    cost: Mapped[Decimal | None] = mapped_column(Numeric(14, 6))
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("run.id", ondelete="SET NULL"))
    sample_index: Mapped[int | None] = mapped_column(Integer)
    review_status: Mapped[str] = mapped_column(String(16), server_default=ReviewStatus.pending.value)
    flag_reasons: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    meta: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    # an imported completion's origin: {"import": {"file", "sha256", "format", "line"}} (migration 0009)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class Ranking(Base):
    __tablename__ = "ranking"
    __table_args__ = (
        UniqueConstraint("run_id", "prompt_id", name="uq_ranking_run_id_prompt_id"),
        CheckConstraint(_in("ranker_kind", RankerKind), name="ranker_kind"),
        CheckConstraint(_in("review_status", ReviewStatus), name="review_status"),
        CheckConstraint("cardinality(completion_ids) = cardinality(ranks)", name="ranks_match"),
        Index("ix_ranking_prompt_id_id", "prompt_id", "id"),
        Index("ix_ranking_dataset_id_id", "dataset_id", "id"),
    )

    id: Mapped[int] = _id()
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"))
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompt.id", ondelete="CASCADE"))
    # ranks[i] is the rank of completion_ids[i]; 1 = best; equal numbers are ties
    completion_ids: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))
    ranks: Mapped[list[int]] = mapped_column(ARRAY(Integer))
    ranker_kind: Mapped[str] = mapped_column(String(16))
    judge_model: Mapped[str | None] = mapped_column(String(200))
    template_version: Mapped[str | None] = mapped_column(String(64))
    reviewer: Mapped[str | None] = mapped_column(String(200))
    rationale: Mapped[str | None] = mapped_column(Text)
    # Kendall tau between the orders the judge was asked in (1 = fully consistent)
    consistency: Mapped[float | None] = mapped_column()
    # per-order raw judge results, rubric scores, ...
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    cost: Mapped[Decimal | None] = mapped_column(Numeric(14, 6))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("run.id", ondelete="SET NULL"))
    review_status: Mapped[str] = mapped_column(String(16), server_default=ReviewStatus.pending.value)
    flag_reasons: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class ReviewEvent(Base):
    """The audit trail: every human change, with who, when, before and after."""

    __tablename__ = "review_event"
    __table_args__ = (
        Index("ix_review_event_target", "target_type", "target_id", "id"),
        Index("ix_review_event_dataset_id_id", "dataset_id", "id"),
        Index("ix_review_event_prompt_id_id", "prompt_id", "id"),
    )

    id: Mapped[int] = _id()
    # no foreign key: a dataset's audit trail outlives it (migration 0006)
    dataset_id: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[int] = mapped_column(BigInteger)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    comment: Mapped[str | None] = mapped_column(Text)
    # the review item (prompt) the target belongs to, for one history per item (migration 0002)
    prompt_id: Mapped[int | None] = mapped_column(BigInteger)
    # set on an `undo` event: the event it reverted
    undoes_event_id: Mapped[int | None] = mapped_column(ForeignKey("review_event.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = _created()


class Run(Base):
    """A synth / generate / judge / export run: a status and counters that jobs advance."""

    __tablename__ = "run"
    __table_args__ = (
        CheckConstraint(_in("kind", RunKind), name="kind"),
        CheckConstraint(_in("status", RunStatus), name="status"),
        Index("ix_run_dataset_id_id", "dataset_id", "id"),
    )

    id: Mapped[int] = _id()
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(24), server_default=RunStatus.queued.value)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    total: Mapped[int] = mapped_column(Integer, server_default="0")
    done: Mapped[int] = mapped_column(Integer, server_default="0")
    failed: Mapped[int] = mapped_column(Integer, server_default="0")
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, server_default="0")
    completion_tokens: Mapped[int] = mapped_column(BigInteger, server_default="0")
    cost: Mapped[Decimal | None] = mapped_column(Numeric(14, 6), server_default="0")  # NULL: unknown (migration 0006)
    budget: Mapped[Decimal | None] = mapped_column(Numeric(14, 6))
    error: Mapped[str | None] = mapped_column(Text)
    # what a run found out besides its rows (a judge run: its canary report)
    result: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = _created()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ExportStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class Export(Base):
    """A frozen dataset version (its rows live in export_item) and the files written from it."""

    __tablename__ = "export"
    __table_args__ = (
        UniqueConstraint("dataset_id", "version", name="uq_export_dataset_id_version"),
        CheckConstraint(_in("status", ExportStatus), name="status"),
    )

    id: Mapped[int] = _id()
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(24), server_default="queued")
    filters: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    split: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    # formats, pairs mode, margin, archive: how the frozen rows are rendered
    options: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    manifest: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # split groups and the leakage check, worked out when the version was frozen (migration 0008)
    integrity: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    path: Mapped[str | None] = mapped_column(Text)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("run.id", ondelete="SET NULL"))
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = _created()
    frozen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ExportItem(Base):
    """One prompt of a frozen export version with everything its files need, resolved at freeze
    time (SFT target, RM ranking, split), so re-rendering version N later is byte-identical
    whatever happens to the live rows. No foreign key to prompt: a frozen version outlives edits
    and deletions. Nor to export (migration 0011): a version's million rows are checked by one
    lock on their export (`exports.repository.clear_items`), and deleting an export deletes its
    items by a statement trigger."""

    __tablename__ = "export_item"

    export_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    prompt_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    split: Mapped[str] = mapped_column(String(16))
    prompt: Mapped[str] = mapped_column(Text)
    sft_completion_id: Mapped[int | None] = mapped_column(BigInteger)
    sft_completion: Mapped[str | None] = mapped_column(Text)
    rm_completion_ids: Mapped[list[int] | None] = mapped_column(ARRAY(BigInteger))
    rm_completions: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    rm_ranks: Mapped[list[int] | None] = mapped_column(ARRAY(Integer))
    rm_ranker_kind: Mapped[str | None] = mapped_column(String(16))
    in_rl: Mapped[bool] = mapped_column(server_default="false")
    # the split group (its oldest prompt's id) the prompt's split came from; NULL: on its own
    split_group: Mapped[int | None] = mapped_column(BigInteger)


# --- review (issue 4, migration 0002) ------------------------------------------------------


class FlagReason(enum.StrEnum):
    """Why a row needs a human look. The judge and generator set the first five."""

    judge_inconsistent = "judge_inconsistent"  # different answers across presentation orders
    judge_invalid = "judge_invalid"  # the judge's reply could not be parsed
    addresses_judge = "addresses_judge"  # a candidate speaks to whoever ranks it (completion), or a ranking holds one
    length_bias = "length_bias"  # the winner is much longer than every other candidate
    judges_disagree = "judges_disagree"  # several judges ranked the candidates differently
    top_tie = "top_tie"  # the best place is shared
    low_margin = "low_margin"  # the judge barely preferred one answer
    generation_failed = "generation_failed"
    reported = "reported"  # a reviewer asked for another look
    edited = "edited"  # a reviewer changed the text
    near_duplicate = "near_duplicate"  # nearly the same as another row (meta.flag_details says which)
    text_changed = "text_changed"  # the prompt's text changed after it had completions or rankings


class Verdict(enum.StrEnum):
    approved = "approved"
    rejected = "rejected"


class ReviewVerdict(Base):
    """One reviewer's decision on one item (a prompt with its completions and rankings).

    `ranking_id` is the ranking the reviewer endorsed (their own re-rank, or the judge's they
    confirmed); `judge_ranking_id` the judge's ranking they were shown. Agreement figures are
    computed from these pairs.
    """

    __tablename__ = "review_verdict"
    __table_args__ = (
        UniqueConstraint("prompt_id", "reviewer", name="uq_review_verdict_prompt_id_reviewer"),
        CheckConstraint(_in("decision", Verdict), name="decision"),
        Index("ix_review_verdict_dataset_id_id", "dataset_id", "id"),
    )

    id: Mapped[int] = _id()
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"))
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompt.id", ondelete="CASCADE"))
    reviewer: Mapped[str] = mapped_column(String(200))
    decision: Mapped[str] = mapped_column(String(16))
    ranking_id: Mapped[int | None] = mapped_column(ForeignKey("ranking.id", ondelete="SET NULL"))
    judge_ranking_id: Mapped[int | None] = mapped_column(ForeignKey("ranking.id", ondelete="SET NULL"))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


# The review queue's indexes (migration 0002): open prompts by age, rows flagged and not yet
# resolved, and live leases. The queries in app/review/repository.py spell these predicates
# with constants so the planner can use the partial indexes.
OPEN_PREDICATE = "review_status IN ('pending', 'needs_review')"
FLAGGED_PREDICATE = "review_status = 'needs_review' OR (flag_reasons <> '{}'::text[] AND review_status = 'pending')"
Index("ix_prompt_review_open", Prompt.dataset_id, Prompt.id, postgresql_where=text(OPEN_PREDICATE))
Index("ix_prompt_review_flagged", Prompt.dataset_id, Prompt.id, postgresql_where=text(FLAGGED_PREDICATE))
Index("ix_ranking_review_flagged", Ranking.dataset_id, Ranking.prompt_id, postgresql_where=text(FLAGGED_PREDICATE))
Index("ix_completion_review_flagged", Completion.dataset_id, Completion.prompt_id, postgresql_where=text(FLAGGED_PREDICATE))
Index("ix_prompt_lease_holder", Prompt.lease_holder, postgresql_where=text("lease_holder IS NOT NULL"))


# --- LLM pipeline (issue 3) ------------------------------------------------------------------


class RunItemStatus(enum.StrEnum):
    pending = "pending"
    done = "done"
    failed = "failed"


class RunItem(Base):
    """One unit of a run's work (a prompt to answer or rank, a synthesis call). A job finishes
    an item at most once: the pending -> done|failed transition is what advances the counters."""

    __tablename__ = "run_item"
    __table_args__ = (CheckConstraint(_in("status", RunItemStatus), name="status"),)

    run_id: Mapped[int] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"), primary_key=True)
    item_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt_id: Mapped[int | None] = mapped_column(ForeignKey("prompt.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), server_default=RunItemStatus.pending.value)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    prompt_tokens: Mapped[int] = mapped_column(Integer, server_default="0")
    completion_tokens: Mapped[int] = mapped_column(Integer, server_default="0")
    cost: Mapped[Decimal | None] = mapped_column(Numeric(14, 6), server_default="0")  # NULL: unknown (migration 0006)
    result: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    updated_at: Mapped[datetime] = _updated()


class LLMCache(Base):
    """Responses keyed by sha256 of (endpoint, model, messages, parameters, seed)."""

    __tablename__ = "llm_cache"

    key: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    model: Mapped[str] = mapped_column(String(200))
    response: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _created()


class LLMRateLimit(Base):
    """Shared RPM / TPM state (GCRA): the theoretical arrival time per limit key."""

    __tablename__ = "llm_rate_limit"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    tat: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# --- keys and roles (issue 10, migration 0006) ----------------------------------------------


class Role(enum.StrEnum):
    admin = "admin"  # everything: keys, settings, endpoints, deletion, imports, runs, exports
    annotator = "annotator"  # read and review the granted datasets
    viewer = "viewer"  # read and export the granted datasets


class ApiKey(Base):
    """An API key. Only its sha256 is stored (app.auth.service says why that suffices); the key is
    shown once, at creation. Revoked and expired keys stay, for the record."""

    __tablename__ = "api_key"
    __table_args__ = (CheckConstraint(_in("role", Role), name="role"),)

    id: Mapped[int] = _id()
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = _created()
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_by: Mapped[str | None] = mapped_column(String(200))


class ApiKeyDataset(Base):
    """A dataset granted to an annotator or viewer key (admin keys see every dataset)."""

    __tablename__ = "api_key_dataset"

    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_key.id", ondelete="CASCADE"), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"), primary_key=True, index=True)


# --- idempotency keys (issue 14, migration 0010) ------------------------------------------


class IdempotencyKey(Base):
    """A POST's `Idempotency-Key`: the same key and body get the first response back, another
    body a 409. `status` is null while the first request is still being answered."""

    __tablename__ = "idempotency_key"

    actor: Mapped[str] = mapped_column(String(200), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    method: Mapped[str] = mapped_column(String(8))
    route: Mapped[str] = mapped_column(Text)
    body_sha256: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[int | None] = mapped_column(Integer)
    response: Mapped[bytes | None] = mapped_column(LargeBinary)
    content_type: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = _created()
