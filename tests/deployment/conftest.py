"""Fixtures for the deployment tests: PgBouncer in transaction mode in front of the test server."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from psycopg import conninfo

from infrastructure.config import Settings
from tests.deployment.servers import PGBOUNCER, pgbouncer


def with_address(url: str, host: str, port: int) -> str:
    """`url` with another host and port (same database and user)."""
    params = conninfo.conninfo_to_dict(url)
    params.update(host=host, port=str(port))
    return conninfo.make_conninfo(**params)


@pytest.fixture(scope="package")
def bouncer_port(admin_url: str) -> Iterator[int]:
    """The port of a PgBouncer (transaction mode) in front of the test server."""
    if not os.path.exists(PGBOUNCER):
        pytest.skip("Debian's pgbouncer is not installed (.ci/run installs it)")
    params = conninfo.conninfo_to_dict(admin_url)
    with pgbouncer(params.get("host") or "127.0.0.1", int(params.get("port") or 5432)) as port:
        yield port


@pytest.fixture
def pooled_url(fresh_database_url: str, bouncer_port: int) -> str:
    """This test's fresh database, through PgBouncer."""
    return with_address(fresh_database_url, "127.0.0.1", bouncer_port)


def pooled_settings(direct_url: str, **extra: object) -> Settings:
    """Settings for DATABASE_URL behind the pooler, with the direct URL for session work."""
    return Settings(chronicle_pooler="transaction", database_direct_url=direct_url, **extra)
