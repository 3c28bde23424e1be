"""Apply schema/'s numbered SQL migrations, forward only, once each, under an advisory lock."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg

# Two-int advisory key (never the single-bigint form the append locks use): "CHRN", 1.
MIGRATION_LOCK = (0x4348524E, 1)
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    """The migrations shipped in the `schema` package, in order."""
    found = []
    for entry in resources.files("schema").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text()))
    found.sort(key=lambda m: m.number)
    numbers = [m.number for m in found]
    if len(set(numbers)) != len(numbers):
        raise RuntimeError(f"two migrations share a number: {[m.name for m in found]}")
    return found


def migrate(url: str) -> list[str]:
    """Apply every migration not yet applied; return the names applied now.

    Safe to run twice, or twice at once: the second waits for the lock, then finds nothing to do.
    Each run also makes the log's segments the plan asks for (docs/log-segments.md).
    """
    applied_now: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s, %s)", MIGRATION_LOCK)
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " number integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT number FROM schema_migrations")}
            for migration in available_migrations():
                if migration.number in done:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql)
                    conn.execute(
                        "INSERT INTO schema_migrations (number, name) VALUES (%s, %s)",
                        (migration.number, migration.name),
                    )
                applied_now.append(migration.name)
            if conn.execute("SELECT to_regproc('ensure_log_segments') IS NOT NULL").fetchone()[0]:
                conn.execute("SELECT ensure_log_segments()")  # the log's segments ahead of need (0022)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", MIGRATION_LOCK)
    return applied_now


def pending_migrations(url: str) -> list[str]:
    """Names of the migrations not yet applied (all of them on an empty database)."""
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]
        done = set()
        if exists:
            done = {row[0] for row in conn.execute("SELECT number FROM schema_migrations")}
    return [m.name for m in available_migrations() if m.number not in done]
