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
from typing import Any

import psycopg
import pytest
from psycopg import conninfo

from infrastructure.config import Settings
from infrastructure.database_roles import ensure_app_login, with_login
from infrastructure.db import create_pool
from infrastructure.migrations import migrate

LOCAL_URL = "postgresql://127.0.0.1:5432/postgres"
# Personal fields are encrypted under data keys this master key wraps; every process the tests
# start inherits it. A fixed test key, never a deployment's.
os.environ.setdefault("CHRONICLE_MASTER_KEY", "dGVzdC1tYXN0ZXIta2V5LW9mLTMyLWJ5dGVzLW9rISE=")
APP_ROLE = "chronicle_app"  # created by schema/0006_roles.sql
TEST_LOGIN = "chronicle_test_login"  # the tests' application login, a member of chronicle_app


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


# The cluster-wide roles a run may make: the migrations' (0006, 0016) and the tests' login.
RUN_ROLES = (TEST_LOGIN, "chronicle_writer", APP_ROLE)
# Runs on one server take this advisory lock (in the maintenance database) while they make
# their template and while they drop roles, so no run drops a role another run is setting up.
ROLES_LOCK = (0x4348524E, 16)


def as_owner(url: str) -> str:
    """The same database as the owner who migrated it (the server's admin login), not the app login."""
    params = conninfo.conninfo_to_dict(url)
    params.pop("user", None)
    admin_user = conninfo.conninfo_to_dict(_admin[0]).get("user")
    if admin_user:
        params["user"] = admin_user
    return conninfo.make_conninfo(**params)


_admin: list[str] = [LOCAL_URL]  # the run's admin URL, set by template_dbname


def as_app(url: str) -> str:
    """The same database as the tests' application login (a member of chronicle_app)."""
    return with_login(url, TEST_LOGIN)


def _drop_run_roles(admin_url: str) -> None:
    """Drop the cluster-wide roles once no test database of any run is left on the server.

    A role another database still grants to stays (DependentObjectsStillExist).
    """
    with psycopg.connect(admin_url, autocommit=True) as conn:
        others = conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'chronicle\\_test\\_%'").fetchone()[0]
        if others:
            return
        for role in RUN_ROLES:
            try:
                conn.execute(f"DROP ROLE IF EXISTS {role}")
            except psycopg.errors.DependentObjectsStillExist:
                pass  # a deployment on this server (or an older run) still grants to it


@contextmanager
def _roles_lock(admin_url: str) -> Iterator[None]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s, %s)", ROLES_LOCK)
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", ROLES_LOCK)


@pytest.fixture(scope="session")
def template_dbname(admin_url: str) -> Iterator[str]:
    """A database migrated as the owner, that fresh test databases are copied from.

    Migrations make the cluster-wide roles chronicle_app and chronicle_writer, and the run makes
    its login chronicle_test_login in chronicle_app. At the end, once no test database of any
    run is left on the server, the run drops them (under ROLES_LOCK, see _drop_run_roles).
    """
    _admin[0] = admin_url
    name = f"chronicle_test_{uuid.uuid4().hex[:10]}_template"
    with _roles_lock(admin_url):
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        owner = _with_dbname(admin_url, name)
        migrate(owner)
        ensure_app_login(owner, as_app(owner))
    try:
        yield name
    finally:
        with _roles_lock(admin_url):
            _drop(admin_url, name)
            _drop_run_roles(admin_url)


@contextmanager
def migrated_database(admin_url: str, template: str) -> Iterator[str]:
    """A new migrated database copied from the run's template; its URL as the application login
    (as_owner gives the owner's); dropped on exit."""
    name = f"chronicle_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield as_app(_with_dbname(admin_url, name))
    finally:
        _drop(admin_url, name)


def migrated_database_fixture(scope: str, doc: str) -> Any:
    """A fixture, at `scope`, giving a migrated database of its own (URL as the application login),
    dropped when the scope ends: how a suite gets an event log to itself. `doc` says whose it is."""

    def fixture(admin_url: str, template_dbname: str) -> Iterator[str]:
        with migrated_database(admin_url, template_dbname) as url:
            yield url

    fixture.__doc__ = doc
    return pytest.fixture(scope=scope)(fixture)


database_url = migrated_database_fixture("session", "One migrated database shared by the whole test run.")
fresh_database_url = migrated_database_fixture("function", "A migrated, empty database of this test's own.")


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
