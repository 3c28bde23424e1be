"""Test fixtures: a PostgreSQL database per test run (or per test), migrated, dropped after.

PostgreSQL is found through DATABASE_URL, else on 127.0.0.1:5432, else an embedded server.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import conninfo

from infrastructure.config import Settings
from infrastructure.db import create_pool
from infrastructure.migrations import migrate

LOCAL_URL = "postgresql://127.0.0.1:5432/postgres"
# Personal fields are encrypted under data keys this master key wraps; every process the tests
# start inherits it. A fixed test key, never a deployment's.
os.environ.setdefault("CHRONICLE_MASTER_KEY", "dGVzdC1tYXN0ZXIta2V5LW9mLTMyLWJ5dGVzLW9rISE=")
APP_ROLE = "chronicle_app"  # created by schema/0006_roles.sql


def _server_url(tmp_root: Path) -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    try:
        psycopg.connect(LOCAL_URL, connect_timeout=3).close()
        return LOCAL_URL
    except psycopg.OperationalError:
        from infrastructure.embedded import start_embedded_postgres

        return start_embedded_postgres(tmp_root / "pgdata")


def _with_dbname(url: str, dbname: str) -> str:
    params = conninfo.conninfo_to_dict(url)
    params["dbname"] = dbname
    return conninfo.make_conninfo(**params)


def _drop(admin_url: str, dbname: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


@pytest.fixture(scope="session")
def admin_url() -> Iterator[str]:
    """A URL to the server's maintenance database, for creating and dropping test databases."""
    with tempfile.TemporaryDirectory(prefix="chronicle-pg-") as tmp:
        yield _server_url(Path(tmp))


def _app_role_exists(admin_url: str) -> bool:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)).fetchone() is not None


def _drop_app_role(admin_url: str) -> None:
    """Drop the cluster-wide role migrations create, unless databases of another run still use it."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        try:
            conn.execute(f"DROP ROLE IF EXISTS {APP_ROLE}")
        except psycopg.errors.DependentObjectsStillExist:
            pass  # another test run (or a deployment on this server) still grants to it


@pytest.fixture(scope="session")
def template_dbname(admin_url: str) -> Iterator[str]:
    """A migrated database that fresh test databases are copied from.

    Migration 0006 creates the cluster-wide role chronicle_app; a run that created it drops it
    at the end, once every test database is gone, so the run leaves nothing behind.
    """
    role_was_there = _app_role_exists(admin_url)
    name = f"chronicle_test_{uuid.uuid4().hex[:10]}_template"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        migrate(_with_dbname(admin_url, name))
        yield name
    finally:
        _drop(admin_url, name)
        if not role_was_there:
            _drop_app_role(admin_url)


@contextmanager
def migrated_database(admin_url: str, template: str) -> Iterator[str]:
    """A new migrated database copied from the run's template; its URL; dropped on exit."""
    name = f"chronicle_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield _with_dbname(admin_url, name)
    finally:
        _drop(admin_url, name)


@pytest.fixture(scope="session")
def database_url(admin_url: str, template_dbname: str) -> Iterator[str]:
    """One migrated database shared by the whole test run, dropped at the end."""
    with migrated_database(admin_url, template_dbname) as url:
        yield url


@pytest.fixture
def fresh_database_url(admin_url: str, template_dbname: str) -> Iterator[str]:
    """A migrated, empty database of this test's own, dropped after it."""
    with migrated_database(admin_url, template_dbname) as url:
        yield url


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings(chronicle_pool_max_size=20)


@pytest.fixture(scope="session")
def pool(database_url: str, settings: Settings):
    pool = create_pool(database_url, settings, name="chronicle-tests")
    yield pool
    pool.close()


@pytest.fixture(autouse=True)
def _no_checkpoints_from_other_databases() -> Iterator[None]:
    """The engine caches checkpoints per process (one database in production); tests use many."""
    from projections.engine import forget_checkpoints

    forget_checkpoints()
    yield
