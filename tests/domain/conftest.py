"""Fixtures for the workspace-domain tests: the application service in memory and on PostgreSQL.

The PostgreSQL service runs on Chronicle's persistence module, in a migrated database of
this package's own (copied from the run's template), dropped at the end.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from service_layer.workspace import Workspace
from tests.conftest import migrated_database_fixture
from tests.support import workspace_on

# Small, so that laws and time travel cross several snapshots.
SNAPSHOT_INTERVAL = 3


domain_database_url = migrated_database_fixture(
    "session", "A migrated database for the domain tests, shared by them, dropped after the run.")


@pytest.fixture(scope="session")
def workspace(domain_database_url: str) -> Iterator[Workspace]:
    """The application service on Chronicle's PostgreSQL persistence module."""
    app = workspace_on(domain_database_url, SNAPSHOT_INTERVAL)
    yield app
    app.close()


@pytest.fixture
def memory_workspace() -> Iterator[Workspace]:
    """The application service on the library's in-memory persistence (no database)."""
    app = Workspace(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, snapshot_interval=SNAPSHOT_INTERVAL)
    yield app
    app.close()


@pytest.fixture(scope="session")
def db(domain_database_url: str) -> Iterator[psycopg.Connection]:
    """A plain connection to the domain tests' database, for looking at stored rows."""
    with psycopg.connect(domain_database_url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        yield conn


def new_id() -> str:
    """A fresh stream id."""
    return str(uuid.uuid4())


@pytest.fixture(scope="session", autouse=True)
def stored_payloads_fit_their_schemas(domain_database_url: str) -> Iterator[None]:
    """After the domain's tests: every payload they stored validates against the stored JSON Schema
    of its type and schema version (event_definitions, read back), with `jsonschema`."""
    from tests.contract import assert_payloads_fit_schemas

    yield
    assert_payloads_fit_schemas(domain_database_url)
