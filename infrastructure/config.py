"""Chronicle's settings, read from the environment, each with a sane default."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting Chronicle reads. Names are the environment variables, upper-cased."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # Where the event store lives, as the application login (a member of chronicle_app).
    # Unset: `chronicle up` starts an embedded PostgreSQL.
    database_url: str | None = None
    # Reads and audit routes go here when set (a streaming replica); writes stay on DATABASE_URL.
    database_read_url: str | None = None
    # What needs a session of its own (LISTEN, migrations, rebuild and replay jobs, verify) connects
    # here, past any pooler. Unset: DATABASE_URL.
    database_direct_url: str | None = None
    # "transaction": DATABASE_URL (and DATABASE_READ_URL) go through a transaction-mode pooler such as
    # PgBouncer: no startup options, no prepared statements, timeouts set in each transaction.
    chronicle_pooler: str = Field(default="none", pattern="^(none|transaction)$")
    # The schema owner's login, for migrations only. Unset: migrations use DATABASE_URL.
    database_migration_url: str | None = None
    # The dramatiq broker. Unset: `chronicle up` runs workers in-process on a memory broker.
    redis_url: str | None = None
    # Where `chronicle up` keeps the embedded PostgreSQL's data.
    chronicle_data_dir: Path = Path(".chronicle")

    chronicle_pool_min_size: int = Field(default=2, ge=1)
    chronicle_pool_max_size: int = Field(default=10, ge=1)
    # How long a request waits for a pooled connection (PostgreSQL down: then 503, not a hang).
    chronicle_pool_timeout_seconds: float = Field(default=5.0, gt=0)
    # Writers' sessions are bounded so an abandoned transaction cannot stall readers forever.
    chronicle_statement_timeout_ms: int = Field(default=30_000, ge=0)
    chronicle_idle_in_transaction_timeout_ms: int = Field(default=60_000, ge=0)
    # /readyz answers 503 once readers have been held below the log's head this long.
    chronicle_log_held_back_limit_seconds: float = Field(default=30.0, gt=0)

    chronicle_partitions: int = Field(default=4, ge=1, le=1024)
    chronicle_snapshot_interval: int = Field(default=50, ge=1)
    chronicle_max_payload_bytes: int = Field(default=1_048_576, ge=1024)
    chronicle_max_events_per_append: int = Field(default=1_000, ge=1)
    # Most one-event appends of concurrent callers written in one statement (1: each alone).
    chronicle_append_group_max: int = Field(default=64, ge=1, le=1_000)
    # Groups a process writes at once: one is written while another waits for its commit.
    # Several API processes of `chronicle serve` share the default out (at least one each).
    chronicle_append_groups: int = Field(default=2, ge=1, le=64)
    # How long the API replays a stored Idempotency-Key response; older ones are pruned.
    chronicle_idempotency_retention_hours: float = Field(default=24.0, gt=0)
    # Workers: the Redis key prefix, the safety-net tick, dramatiq's idle poll cap, how long a
    # partition's wake-ups are coalesced, and whether projection commits wait for the disk.
    chronicle_broker_namespace: str = Field(default="chronicle", min_length=1, max_length=100)
    chronicle_tick_seconds: float = Field(default=5.0, ge=0)
    chronicle_poll_ms: int = Field(default=10, ge=1)
    chronicle_wakeup_window_ms: int = Field(default=10, ge=0)
    chronicle_projection_synchronous_commit: bool = False
    # Whether each session read (GET /v1/sessions/{id}/documents) appends a document.accessed event.
    chronicle_record_access: bool = True
    # Wraps every data subject's key (base64 of 32 bytes); personal fields need it to be stored or read.
    chronicle_master_key: str | None = Field(default=None, repr=False)
    # Feeds (GET /v1/subscribe): a heartbeat after this long without an event.
    chronicle_subscribe_heartbeat_seconds: float = Field(default=5.0, gt=0, le=300)
    # Consumer groups: partitions of a new group, and a member's lease unless it asks for another.
    chronicle_group_partitions: int = Field(default=16, ge=1, le=1024)
    chronicle_group_lease_seconds: int = Field(default=15, ge=1, le=3600)
    # The Ed25519 private key that signs the log's seals: a file (raw 32 bytes, base64 or PEM),
    # or the base64 of the raw key. Unset: no seals (`chronicle up` makes one in its data folder).
    chronicle_seal_key_file: Path | None = None
    chronicle_seal_key: str | None = None
    # Retention: document versions older than this many days lose their bodies in the read model
    # (tagged versions and each document's latest keep theirs; the log keeps everything). Unset: off.
    chronicle_version_retention_days: float | None = Field(default=None, gt=0)
    # auto: aligned text on a terminal, JSON lines otherwise (a file, a pipe, journald, a container).
    chronicle_log_format: str = Field(default="auto", pattern="^(auto|console|json)$")
    # Level of Chronicle's and libraries' logs (uvicorn's own loggers keep the CLI's --log-level).
    chronicle_log_level: str = Field(default="info", pattern="^(?i:debug|info|warning|error|critical)$")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()
