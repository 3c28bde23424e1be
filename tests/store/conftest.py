"""Fixtures for the event-store tests: a fresh database per test, a registry of note events."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, Field

from domain.event_types import EventTypeRegistry
from infrastructure.config import Settings
from infrastructure.db import create_pool
from infrastructure.event_store import EventStore


def note_registry() -> EventTypeRegistry:
    """A registry of its own (never the global one) with two small note event types."""
    registry = EventTypeRegistry()

    @registry.register("note.written")
    class NoteWritten(BaseModel):
        text: str
        n: int = 0

    @registry.register("note.tagged")
    class NoteTagged(BaseModel):
        tag: str = Field(min_length=1, max_length=50)

    return registry


def table_state(url: str) -> dict[str, Any]:
    """Everything in `events` and `streams`, to compare before and after a refused append."""
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return {
            "events": conn.execute("SELECT * FROM events ORDER BY position").fetchall(),
            "streams": conn.execute("SELECT * FROM streams ORDER BY stream_id").fetchall(),
        }


@pytest.fixture
def registry() -> EventTypeRegistry:
    return note_registry()


@pytest.fixture
def store_settings() -> Settings:
    """Enough pooled connections for 16 writers and a few readers at once."""
    return Settings(chronicle_pool_min_size=2, chronicle_pool_max_size=24)


@pytest.fixture
def fresh_pool(fresh_database_url: str, store_settings: Settings) -> Iterator[ConnectionPool]:
    pool = create_pool(fresh_database_url, store_settings, name="chronicle-store-tests")
    yield pool
    pool.close()


@pytest.fixture
def store(fresh_pool: ConnectionPool, registry: EventTypeRegistry, store_settings: Settings) -> EventStore:
    """An event store on an empty database of this test's own."""
    return EventStore(fresh_pool, registry, store_settings)
