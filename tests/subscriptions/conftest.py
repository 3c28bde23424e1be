"""Fixtures for the feed and consumer-group tests: a real `chronicle up` on a database of its own.

Heartbeats come every second and leases are short, so the tests wait on behaviour, not clocks.
Events are appended in process through the event store (operator-typed events on streams of
the test's own), so no projection applies them and each example owns its streams.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from psycopg_pool import ConnectionPool

import service_layer.operator_events  # noqa: F401 - registers the operator.* event types the tests append
from infrastructure.config import Settings
from infrastructure.db import create_pool
from infrastructure.event_store import ANY, AppendResult, EventStore, NewEvent
from service_layer.keys import create_key
from tests.api.conftest import chronicle_env, free_port, running_chronicle
from tests.conftest import migrated_database_fixture

HEARTBEAT_SECONDS = 1


feed_database_url = migrated_database_fixture("package", "A migrated database for the feed and group tests.")


@pytest.fixture(scope="package")
def feed_server(feed_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a `chronicle up` process with one-second heartbeats."""
    env = chronicle_env(
        DATABASE_URL=feed_database_url,
        CHRONICLE_SUBSCRIBE_HEARTBEAT_SECONDS=str(HEARTBEAT_SECONDS),
        CHRONICLE_DATA_DIR=str(tmp_path_factory.mktemp("data")),
    )
    log: Path = tmp_path_factory.mktemp("server") / "server.log"
    with running_chronicle(env, log, free_port()) as base:
        yield base


@pytest.fixture(scope="package")
def feed_pool(feed_database_url: str) -> Iterator[ConnectionPool]:
    pool = create_pool(feed_database_url, Settings(chronicle_pool_min_size=2, chronicle_pool_max_size=16),
                       name="feed-tests")
    yield pool
    pool.close()


@pytest.fixture(scope="package")
def feed_store(feed_pool: ConnectionPool) -> EventStore:
    return EventStore(feed_pool)


@pytest.fixture(scope="package")
def feed_tokens(feed_pool: ConnectionPool) -> dict[str, str]:
    """A key per role the tests use, by role."""
    return {role: create_key(feed_pool, f"feed-{role}", role)[1]
            for role in ("subscriber", "reader", "operator", "auditor")}


@pytest.fixture
def subscriber(feed_server: str, feed_tokens: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=feed_server, headers={"Authorization": f"Bearer {feed_tokens['subscriber']}"},
                      timeout=30) as client:
        yield client


@pytest.fixture
def operator(feed_server: str, feed_tokens: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=feed_server, headers={"Authorization": f"Bearer {feed_tokens['operator']}"},
                      timeout=30) as client:
        yield client


KEY_CREATED = "operator.key_created"
KEY_REVOKED = "operator.key_revoked"


def new_event(kind: str = KEY_CREATED, n: int = 0) -> NewEvent:
    """An event of a registered type that no projection reads."""
    return NewEvent(kind, {"target": f"test:{n}", "details": {"n": n, "nonce": uuid4().hex}})


def append(store: EventStore, stream_id: str, kind: str = KEY_CREATED, n: int = 0) -> AppendResult:
    """One event appended to `stream_id` (a stream of type operator)."""
    return store.append(stream_id, ANY, [new_event(kind, n)], stream_type="operator")


def log_head(pool: ConnectionPool) -> int:
    with pool.connection() as conn:
        return conn.execute("SELECT log_head() AS h").fetchone()["h"]
