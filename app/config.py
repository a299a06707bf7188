"""One settings object, read once from the environment (prefix ``FORGE_``) and passed in."""

from __future__ import annotations

import re
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ModelPrice(BaseModel):
    prompt: Decimal = Field(default=Decimal(0), ge=0, description="USD per million prompt tokens.")
    completion: Decimal = Field(default=Decimal(0), ge=0, description="USD per million completion tokens.")


class EndpointConfig(BaseModel):
    """One named OpenAI-compatible endpoint (FORGE_LLM_ENDPOINTS): where it is, its key, its default
    model and parameters, what its models cost and its limits. Only the server's configuration
    names URLs and keys; datasets and runs choose an endpoint by name."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = Field(default=None, pattern=r"^https?://", description="None (the 'default' one only): llm_base_url.")
    api_key: SecretStr | None = Field(default=None, description="None (the 'default' one only): llm_api_key.")
    model: str | None = Field(default=None, min_length=1, max_length=200, description="None: llm_model (FORGE_LLM_MODEL).")
    params: dict[str, Any] = Field(default_factory=dict, description="Default sampling parameters.")
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description="model -> USD per million tokens; '*' for every model of this endpoint (a local server: zero).",
    )
    concurrency: int = Field(default=64, ge=1, description="Requests in flight per process to this endpoint.")
    rpm: int | None = Field(default=None, ge=1, description="Requests per minute, across all workers.")
    tpm: int | None = Field(default=None, ge=1, description="Tokens per minute, across all workers.")
    supports_n: bool = Field(
        default=False,
        description="The endpoint answers OpenAI's `n` with n choices (vLLM, OpenAI do; llama-server, Ollama do not): "
        "a generate run then asks for a prompt's samples that differ only by seed in one call.",
    )


class LLMRole(BaseModel):
    """One LLM role's endpoint (by name), model, default parameters and limits over the endpoint's."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str = Field(default="default", description="A name in FORGE_LLM_ENDPOINTS ('default': FORGE_LLM_BASE_URL).")
    model: str | None = Field(default=None, description="None: the endpoint's model.")
    params: dict[str, Any] = Field(default_factory=dict, description="Default sampling parameters.")
    concurrency: int | None = Field(default=None, ge=1, description="None: the endpoint's.")
    rpm: int | None = Field(default=None, ge=1, description="None: the endpoint's.")
    tpm: int | None = Field(default=None, ge=1, description="None: the endpoint's.")

    @model_validator(mode="before")
    @classmethod
    def _no_url_here(cls, data: Any) -> Any:
        if isinstance(data, dict) and ({"base_url", "api_key"} & data.keys()):
            raise ValueError(
                "a role names its endpoint: put base_url and api_key in FORGE_LLM_ENDPOINTS "
                '(e.g. {"judge-api": {"base_url": ..., "api_key": ...}}) and set "endpoint": "judge-api"'
            )
        return data


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
    db_pool_size: int = Field(
        default=10, ge=1, description="The API's database connections: up to 2 x this many, kept open once made (app.db.make_engine)."
    )
    db_echo: bool = False

    # --- API ------------------------------------------------------------------------------
    max_text_chars: int = Field(
        default=200_000, ge=1, description="Longest prompt or completion text accepted, in characters."
    )
    max_body_bytes: int = Field(
        default=1024**2, ge=1024, description="Largest request body in bytes, checked while it streams in (imports: the next)."
    )
    import_within_input_max_rows: int = Field(
        default=100_000, ge=0,
        description="An import compares its rows with each other for near-duplicates when it has at most this many "
        "(valid rows; a records import: new prompts) and always with the stored prompts; a bigger input is reported "
        "unchecked within itself (run `rlhf-forge dedup` after it) and is staged and inserted in chunks.",
    )
    max_import_bytes: int = Field(
        default=2 * 1024**3, ge=1024, description="Largest import upload in bytes, checked while it streams in."
    )
    rate_limit: str | None = Field(
        default="6000/minute",
        description="API requests per key (or client address without one), COUNT/second|minute|hour|day; None: off.",
    )
    page_size_max: int = 1000
    api_keys: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Admin API keys: key -> actor name, besides the keys made with `rlhf-forge keys create`. With no key at all "
            "the service serves only its own machine (loopback) and the actor comes from X-Actor."
        ),
    )
    environment: str = Field(default="local", description="local | production (production never runs without keys)")
    # --- API: the review page's session and the Host check (issue 10) -----------------------
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1", "[::1]"],
        description="Host header values served, comma-separated (*.example.com allowed); others get 400, "
        "which stops DNS rebinding. `serve` adds the address it binds to.",
    )
    session_secret: SecretStr | None = Field(
        default=None,
        description="Signs the review page's session cookie. Unset: a random one per process (sign-ins end with "
        "the process); set it when several API processes serve one site.",
    )
    session_max_age_s: int = Field(default=12 * 3600, ge=60, description="How long a review page sign-in lasts.")
    session_https_only: bool = Field(default=False, description="Mark the session cookie Secure (serve behind HTTPS).")

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
    # --- jobs: retries and outages (issue 10) ---------------------------------------------
    job_max_attempts: int = Field(
        default=5, ge=1, le=100, description="Tries of a job that fails; after the last, a run's items fail saying why."
    )
    job_retry_wait_s: float = Field(default=2.0, gt=0, description="First wait before a failed job is retried (doubles).")
    worker_restart_max_s: float = Field(
        default=30.0, gt=0, description="Longest wait between restarts of a worker whose database went away."
    )
    # 64: per-chunk statements (plan, cache lookup, job fetch and finish) spread over more
    # completions; at 0 ms latency 16 -> 64 took the service's CPU per completion 0.86 -> 0.76 ms
    # (n=1) and 0.42 -> 0.32 ms (n=K). Items of a chunk run concurrently, so it costs no parallelism.
    run_chunk_size: int = Field(default=64, ge=1, le=1000, description="Prompts per job of a run.")
    run_status_poll_s: float = Field(default=1.0, gt=0, description="How often a job checks for cancel.")

    # --- LLM pipeline (issue 3) ------------------------------------------------------------
    # LLM endpoints are named entries of the server's configuration (FORGE_LLM_ENDPOINTS, JSON);
    # llm_base_url / llm_api_key define the one named "default". Every role (generator, judge,
    # synthesizer) uses an endpoint by name, e.g. FORGE_LLM_JUDGE='{"endpoint": "openai", "model": "gpt-4o"}';
    # datasets and runs choose among these names, never a URL or a key.
    llm_base_url: str = Field(default="http://127.0.0.1:8080/v1", description="The 'default' endpoint's URL.")
    llm_api_key: SecretStr | None = None
    llm_model: str = Field(
        default="default", min_length=1, max_length=200,
        description="The model of every endpoint and role that names none of its own (FORGE_LLM_MODEL).",
    )
    llm_endpoints: dict[str, EndpointConfig] = Field(
        default_factory=dict, description="name -> endpoint; 'default' may omit base_url / api_key (llm_base_url / llm_api_key)."
    )
    log_format: Literal["text", "json"] = Field(default="text", description="json: one JSON object a line, with request and run ids.")
    worker_metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="A standalone worker serves its own /metrics here."
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
        default_factory=dict,
        description="model -> USD per million prompt / completion tokens, over the built-in table (app/llm/prices.py); "
        "a model priced nowhere costs unknown (null).",
    )
    run_max_prompts: int = Field(default=100_000, ge=1, description="Most prompts one run may cover (prompts.limit up to this).")
    judge_orders: int = Field(default=2, ge=1, le=8, description="Orders each ranking is asked in (position bias).")
    judge_max_attempts: int = Field(default=3, ge=1, le=10, description="Tries for a valid judge reply.")
    judge_min_consistency: float = Field(default=0.5, ge=-1, le=1, description="Kendall tau below this flags a ranking.")
    judge_injection_check: Literal["llm", "patterns", "off"] = Field(
        default="llm", description="Find candidates that address the judge by a structured model check, patterns only, or not at all."
    )
    synth_near_dup_threshold: float = Field(default=0.7, gt=0, le=1, description="MinHash Jaccard for near-duplicates.")

    # --- exports (issue 5) ----------------------------------------------------------------
    export_work_mem: str = Field(
        default="64MB",
        pattern=r"^[0-9]+(kB|MB|GB)$",
        description="Postgres work_mem for export queries, so choosing SFT targets sorts in memory.",
    )
    # streamed downloads (GET .../exports/{fmt}.jsonl) hold a connection while the client reads:
    # they get a small pool of their own so slow readers never starve the other routes
    export_stream_pool: int = Field(default=4, ge=1, le=100, description="Connections for streamed exports at once.")
    export_stream_wait_s: float = Field(default=5.0, gt=0, description="Wait for a streaming connection before 503.")
    export_stream_send_timeout_s: float = Field(
        default=60.0, gt=0, description="A streamed export whose client takes no data this long is dropped."
    )
    export_stream_statement_timeout_s: float = Field(
        default=3600.0, gt=0, description="Postgres statement_timeout of a streamed export's query."
    )

    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_dir_default_when_empty(cls, v):
        # FORGE_DATA_DIR= (empty) must not mean the current directory
        return default_data_dir() if v is None or (isinstance(v, str) and not v.strip()) else v

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, v):
        return [h.strip() for h in v.split(",") if h.strip()] if isinstance(v, str) else v

    @field_validator("database_url")
    @classmethod
    def _psycopg_driver(cls, v: str | None) -> str | None:
        return normalize_db_url(v) if v else v

    @model_validator(mode="after")
    def _safe_outside_local(self) -> Settings:
        if self.environment != "local":
            weak = [k for k in self.api_keys if len(k) < 16 or k.lower() in PLACEHOLDER_KEYS]
            if weak:
                raise ValueError("FORGE_API_KEYS holds a placeholder or short key (under 16 characters)")
        return self

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, v: str | None) -> str | None:
        if v:
            from app.http_limits import parse_rate

            parse_rate(v)  # ValueError with the reason
        return v or None

    @model_validator(mode="after")
    def _endpoints_named(self) -> Settings:
        for name, ep in self.llm_endpoints.items():
            if not ENDPOINT_NAME.fullmatch(name):
                raise ValueError(f"FORGE_LLM_ENDPOINTS: {name!r} is not a name (letters, digits, . _ -; up to 64)")
            if name != "default" and not ep.base_url:
                raise ValueError(f"FORGE_LLM_ENDPOINTS: endpoint {name!r} needs a base_url")
        known = {"default", *self.llm_endpoints}
        for role in ("generator", "judge", "synthesizer"):
            wanted = getattr(self, f"llm_{role}").endpoint
            if wanted not in known:
                raise ValueError(f"FORGE_LLM_{role.upper()}: no endpoint named {wanted!r}; known: {', '.join(sorted(known))}")
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
        # a URL may carry credentials (https://user:secret@host)
        data["llm_base_url"] = strip_userinfo(self.llm_base_url)
        for ep in data["llm_endpoints"].values():
            ep["base_url"] = strip_userinfo(ep["base_url"]) if ep["base_url"] else None
        return data


def strip_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


ENDPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
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
