"""What the database itself guarantees: immutable events, and migrations applied once."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from infrastructure.event_store import NO_STREAM, EventStore, NewEvent
from infrastructure.migrations import available_migrations, migrate
from tests.conftest import _drop, _with_dbname
from tests.support import run_threads

from tests.conftest import as_owner

from .conftest import table_state


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET payload = '{}'::jsonb",
        "UPDATE events SET version = version + 10 WHERE stream_id = 'note-1'",
        "DELETE FROM events",
        "DELETE FROM events WHERE position = (SELECT min(position) FROM events)",
        "TRUNCATE events",
        "TRUNCATE events CASCADE",
    ],
)
def test_events_cannot_be_changed(store: EventStore, fresh_database_url: str, statement: str) -> None:
    store.append("note-1", NO_STREAM, [NewEvent("note.written", {"text": "kept"})])
    before = table_state(fresh_database_url)
    with psycopg.connect(as_owner(fresh_database_url), autocommit=True) as conn:  # even the owner
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="events are immutable"):
            conn.execute(statement)
    assert table_state(fresh_database_url) == before


def test_migrate_twice_is_a_no_op(fresh_database_url: str) -> None:
    with psycopg.connect(fresh_database_url) as conn:
        before = conn.execute("SELECT number, name, applied_at FROM schema_migrations ORDER BY number").fetchall()
    assert migrate(fresh_database_url) == []
    with psycopg.connect(fresh_database_url) as conn:
        after = conn.execute("SELECT number, name, applied_at FROM schema_migrations ORDER BY number").fetchall()
    assert after == before and len(after) == len(available_migrations())


@pytest.fixture
def empty_database_url(admin_url: str):
    """A brand-new database with nothing in it, dropped after the test."""
    name = f"chronicle_test_{uuid.uuid4().hex[:12]}_empty"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_dbname(admin_url, name)
    finally:
        _drop(admin_url, name)


def test_two_migrations_at_once_on_an_empty_database(empty_database_url: str) -> None:
    names = [m.name for m in available_migrations()]
    applied: list[list[str]] = []
    run_threads([lambda: applied.append(migrate(empty_database_url))] * 2)
    assert sorted(applied, key=len) == [[], names]
    assert migrate(empty_database_url) == []
    with psycopg.connect(empty_database_url) as conn:
        rows = conn.execute("SELECT name FROM schema_migrations ORDER BY number").fetchall()
        assert [r[0] for r in rows] == names
        assert conn.execute("SELECT to_regclass('events') IS NOT NULL").fetchone()[0]
