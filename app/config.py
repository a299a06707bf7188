"""One settings object, read once from the environment (prefix ``FORGE_``) and passed in."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class LLMRole(BaseModel):
    """One LLM role's endpoint, key, model, default parameters and limits."""

    base_url: str | None = Field(default=None, description="None: llm_base_url.")
    api_key: SecretStr | None = Field(default=None, description="None: llm_api_key.")
    model: str | None = Field(default=None, description="None: llm_model.")
    params: dict[str, Any] = Field(default_factory=dict, description="Default sampling parameters.")
    concurrency: int = Field(default=64, ge=1, description="Requests in flight per process to this endpoint.")
    rpm: int | None = Field(default=None, ge=1, description="Requests per minute, across all workers.")
    tpm: int | None = Field(default=None, ge=1, description="Tokens per minute, across all workers.")


class ModelPrice(BaseModel):
    prompt: Decimal = Field(default=Decimal(0), ge=0, description="USD per million prompt tokens.")
    completion: Decimal = Field(default=Decimal(0), ge=0, description="USD per million completion tokens.")


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("rlhf-forge", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FORGE_", env_file=".env", extra="ignore")

    # --- database -------------------------------------------------------------------------
    database_url: str | None = Field(
        default=None,
        validation_alias="DATABASE_URL",
        description="Postgres URL. Unset: an embedded Postgres is started in data_dir/pg.",
    )
    data_dir: Path = Field(default_factory=default_data_dir)
    db_pool_size: int = 10
    db_echo: bool = False

    # --- API ------------------------------------------------------------------------------
    max_text_chars: int = Field(
        default=200_000, ge=1, description="Longest prompt or completion text accepted, in characters."
    )
    max_import_bytes: int = Field(default=2 * 1024**3, description="Largest import upload, in bytes.")
    page_size_max: int = 1000
    api_keys: dict[str, str] = Field(
        default_factory=dict,
        description="API key -> actor name. Empty: no auth, the actor comes from X-Actor.",
    )
    environment: str = Field(default="local", description="local | production")

    # --- review (issue 4) ------------------------------------------------------------------
    review_lease_seconds: int = Field(
        default=900, ge=5, le=86_400, description="How long the review queue holds an item for one reviewer."
    )
    review_overlap: int = Field(
        default=1, ge=1, le=50,
        description="Reviewers per item; a dataset's settings.review_overlap overrides it (agreement studies).",
    )

    # --- jobs -----------------------------------------------------------------------------
    worker_in_process: bool = Field(default=True, description="`serve` also runs a job worker.")
    worker_concurrency: int = 16
    worker_queues: list[Literal["runs", "exports"]] = Field(
        default_factory=list, description='Queues this process\'s worker takes, e.g. ["exports"]; empty: all.'
    )
    # --- jobs: worker liveness (issue 3) ---------------------------------------------------
    worker_heartbeat_s: float = Field(default=10.0, gt=0, description="Worker heartbeat interval.")
    worker_stalled_after_s: float = Field(
        default=30.0, gt=0, description="A worker silent this long is dead; its running jobs are retried."
    )
    run_chunk_size: int = Field(default=16, ge=1, le=1000, description="Prompts per job of a run.")
    run_status_poll_s: float = Field(default=1.0, gt=0, description="How often a job checks for cancel.")

    # --- LLM pipeline (issue 3) ------------------------------------------------------------
    # Every role (generator, judge, synthesizer) talks to an OpenAI-compatible endpoint; a role
    # without its own base_url / api_key uses llm_base_url / llm_api_key. A role's fields can be
    # set with JSON, e.g. FORGE_LLM_JUDGE='{"model": "gpt-4o", "rpm": 500}'.
    llm_base_url: str = Field(default="http://127.0.0.1:8080/v1", description="Default OpenAI-compatible endpoint.")
    llm_api_key: SecretStr | None = None
    log_format: Literal["text", "json"] = Field(default="text", description="json: one JSON object a line, with request and run ids.")
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535, description="A standalone worker serves its own /metrics here.")
    llm_model: str = Field(
        default="default", min_length=1, description="Every role's model unless the role names its own (FORGE_LLM_MODEL)."
    )
    # each role's params go over its defaults (app.llm.endpoints.ROLE_DEFAULT_PARAMS)
    llm_generator: LLMRole = Field(default_factory=LLMRole)
    llm_judge: LLMRole = Field(default_factory=LLMRole)
    llm_synthesizer: LLMRole = Field(default_factory=LLMRole)
    llm_timeout_s: float = Field(default=120.0, gt=0, description="Per-request timeout.")
    llm_max_attempts: int = Field(default=5, ge=1, le=20, description="Attempts per call (429, 5xx, timeouts, drops).")
    llm_backoff_initial_s: float = Field(default=0.5, ge=0)
    llm_backoff_max_s: float = Field(default=30.0, ge=0, description="Longest wait between attempts, Retry-After included.")
    llm_request_spacing_ms: float = Field(
        default=1.0, ge=0, description="Least time between request starts per endpoint and process (no bursts)."
    )
    llm_cache: bool = Field(default=True, description="Reuse stored responses for identical calls.")
    llm_prices: dict[str, ModelPrice] = Field(
        default_factory=dict, description="model -> USD per million prompt / completion tokens; unknown models cost 0."
    )
    judge_orders: int = Field(default=2, ge=1, le=8, description="Orders each ranking is asked in (position bias).")
    judge_max_attempts: int = Field(default=3, ge=1, le=10, description="Tries for a valid judge reply.")
    judge_min_consistency: float = Field(default=0.5, ge=-1, le=1, description="Kendall tau below this flags a ranking.")
    synth_near_dup_threshold: float = Field(default=0.7, gt=0, le=1, description="MinHash Jaccard for near-duplicates.")

    # --- exports (issue 5) ----------------------------------------------------------------
    export_work_mem: str = Field(
        default="64MB",
        pattern=r"^[0-9]+(kB|MB|GB)$",
        description="Postgres work_mem for export queries, so choosing SFT targets sorts in memory.",
    )

    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_dir_default_when_empty(cls, v):
        # FORGE_DATA_DIR= (empty) must not mean the current directory
        return default_data_dir() if v is None or (isinstance(v, str) and not v.strip()) else v

    @field_validator("database_url")
    @classmethod
    def _psycopg_driver(cls, v: str | None) -> str | None:
        return normalize_db_url(v) if v else v

    @model_validator(mode="after")
    def _safe_outside_local(self) -> "Settings":
        if self.environment != "local":
            if not self.api_keys:
                raise ValueError(
                    f"FORGE_API_KEYS must be set when FORGE_ENVIRONMENT={self.environment}: "
                    'a JSON object of key -> actor name, e.g. {"<long random key>": "alice"}'
                )
            weak = [k for k in self.api_keys if len(k) < 16 or k.lower() in PLACEHOLDER_KEYS]
            if weak:
                raise ValueError("FORGE_API_KEYS holds a placeholder or short key (under 16 characters)")
        return self

    @property
    def pg_dir(self) -> Path:
        return self.data_dir / "pg"

    def public(self) -> dict:
        """Settings safe to show: secrets and keys never leave the process."""
        data = self.model_dump(mode="json", exclude={"api_keys"})
        for key, value in list(data.items()):
            if isinstance(getattr(self, key, None), SecretStr):
                data[key] = "**********" if value else None
        return data


PLACEHOLDER_KEYS = {"changeme", "changethis", "secret", "password", "test", "dev", "key"}


def normalize_db_url(url: str) -> str:
    """Accept postgres://, postgresql:// and postgresql+psycopg:// and use psycopg 3."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg2://", "postgresql+asyncpg://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@lru_cache
def get_settings() -> Settings:
    return Settings()
