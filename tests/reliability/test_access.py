"""Access: roles hold at the API, revocation is immediate, and the log is immutable even to
direct SQL from the application's own database role (schema/0006_roles.sql)."""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import conninfo, errors

from infrastructure.config import Settings
from infrastructure.db import create_pool
from infrastructure.event_store import ANY, EventStore, NewEvent
from tests.api.conftest import assert_problem
from tests.reliability.conftest import clients_for, count_events, create_keys, start_api


def test_roles_and_revocation_through_the_api(rel_database_url: str, tmp_path: Path) -> None:
    import httpx

    tokens = create_keys(rel_database_url)
    base, server = start_api(rel_database_url, tmp_path)
    clients = clients_for(base, tokens)
    try:
        body = {"namespace": "access", "type": "t", "title": "x", "content": "y"}
        doc = clients["writer"].post("/v1/documents", json=body).json()["stream_id"]
        before = count_events(rel_database_url)

        # A reader cannot append: no create, update, tag, undo.
        reader = clients["reader"]
        for response in (reader.post("/v1/documents", json=body),
                         reader.patch(f"/v1/documents/{doc}", json={"content": "z"}),
                         reader.put(f"/v1/documents/{doc}/tags/production", json={"version": 1}),
                         reader.post(f"/v1/documents/{doc}/undo")):
            assert_problem(response, 403, "forbidden")
        # An auditor cannot rebuild or replay, nor touch dead letters.
        auditor = clients["auditor"]
        assert_problem(auditor.post("/v1/projections/documents/rebuild"), 403, "forbidden")
        assert_problem(auditor.post("/v1/projections/documents/replay", json={"from_position": 0}), 403, "forbidden")
        assert_problem(auditor.post("/v1/dead-letters/1/skip"), 403, "forbidden")
        assert_problem(clients["operator"].get("/v1/projections/documents/rebuild"), 404)  # none was started
        assert count_events(rel_database_url) == before

        # A revoked key is refused at once: its very next request.
        created = clients["admin"].post("/v1/keys", json={"name": "short-lived", "role": "writer",
                                                          "actor_id": "svc-short"})
        assert created.status_code == 201, created.text
        token, key_id = created.json()["token"], created.json()["key_id"]
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10) as short:
            assert short.post("/v1/documents", json=body).status_code == 201
            assert clients["admin"].delete(f"/v1/keys/{key_id}").status_code == 200
            after = count_events(rel_database_url)
            assert_problem(short.post("/v1/documents", json=body), 401, "unauthorized")
            assert_problem(short.get("/v1/documents"), 401, "unauthorized")
            assert count_events(rel_database_url) == after
    finally:
        for client in clients.values():
            client.close()
        server.stop()


@pytest.fixture
def app_role_url(rel_database_url: str) -> str:
    """A LOGIN role made the way a deployment would (a member of chronicle_app), and its URL."""
    name = f"chronicle_app_test_{uuid.uuid4().hex[:8]}"
    password = secrets.token_hex(16)
    with psycopg.connect(rel_database_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'chronicle_app'").fetchone():
            pytest.skip("the migrating user could not create chronicle_app")
        conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}' IN ROLE chronicle_app")
    params = conninfo.conninfo_to_dict(rel_database_url)
    params.update(user=name, password=password)
    try:
        yield conninfo.make_conninfo(**params)
    finally:
        with psycopg.connect(rel_database_url, autocommit=True) as conn:
            conn.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{name}'")
            conn.execute(f"DROP ROLE IF EXISTS {name}")


def test_events_cannot_be_altered_with_sql_as_the_application_role(app_role_url: str) -> None:
    import service_layer.operator_events  # noqa: F401 - registers operator.* so we can append one

    pool = create_pool(app_role_url, Settings(chronicle_pool_min_size=1, chronicle_pool_max_size=2), name="app-role")
    try:
        # The application role can do its job: append and read.
        store = EventStore(pool)
        result = store.append(f"operator-access-{uuid.uuid4().hex[:6]}", ANY,
                              [NewEvent("operator.key_created", {"target": "t", "details": {}})],
                              {"actor_id": "access-test"}, stream_type="operator")
        assert result.position > 0
        with pool.connection() as conn:
            assert conn.execute("SELECT current_user AS u").fetchone()["u"].startswith("chronicle_app_test_")
            assert not conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()["rolsuper"]
            before = conn.execute("SELECT count(*) AS n, md5(string_agg(payload::text, ',' ORDER BY position)) AS h"
                                  " FROM events").fetchone()
            attempts = {
                "update": "UPDATE events SET payload = '{}'::jsonb",
                "delete": "DELETE FROM events",
                "truncate": "TRUNCATE events",
                "disable trigger": "ALTER TABLE events DISABLE TRIGGER events_no_update_or_delete",
                "disable all triggers": "ALTER TABLE events DISABLE TRIGGER ALL",
                "drop trigger": "DROP TRIGGER events_no_truncate ON events",
                "replica mode": "SET session_replication_role = replica",
                "drop table": "DROP TABLE events",
            }
            for what, sql in attempts.items():
                with pytest.raises((errors.InsufficientPrivilege, errors.DependentObjectsStillExist)) as caught:
                    conn.execute(sql)
                assert caught.value.sqlstate in ("42501", "2BP01"), (what, caught.value)
            # GRANT by a non-owner only warns ("no privileges were granted"); UPDATE still fails.
            conn.execute("GRANT UPDATE, DELETE, TRUNCATE ON events TO CURRENT_USER")
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute("UPDATE events SET payload = '{}'::jsonb")
            after = conn.execute("SELECT count(*) AS n, md5(string_agg(payload::text, ',' ORDER BY position)) AS h"
                                 " FROM events").fetchone()
            assert after == before
            # Even a function it might create runs with its own rights (no way around by SECURITY DEFINER).
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute("CREATE FUNCTION evil() RETURNS void LANGUAGE sql SECURITY DEFINER"
                             " AS 'DELETE FROM events'; SELECT evil()")
    finally:
        pool.close()
