"""One settings object, read once from the environment (prefix ``FORGE_``) and passed in."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import platformdirs
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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

    # --- exports (issue 5) ----------------------------------------------------------------
    export_work_mem: str = Field(
        default="64MB",
        pattern=r"^[0-9]+(kB|MB|GB)$",
        description="Postgres work_mem for export queries, so choosing SFT targets sorts in memory.",
    )

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
