"""Access: roles hold at the API, revocation is immediate, and the log is immutable even to
direct SQL from the application's own database role (schema/0006_roles.sql)."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

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


# Each way the shipped login could once rewrite or forge history (issue 12, "What was seen").
HOSTILE = {
    "update": "UPDATE events SET payload = '{}'::jsonb",
    "delete": "DELETE FROM events",
    "truncate": "TRUNCATE events",
    "insert an event": "INSERT INTO events (event_id, stream_id, stream_type, version, type, payload, hash)"
                       " SELECT gen_random_uuid(), stream_id, stream_type, version + 5, type, payload, hash"
                       " FROM events LIMIT 1",
    "insert a stream": "INSERT INTO streams (stream_id, stream_type, version) VALUES ('forged', 'operator', 1)",
    "update streams": "UPDATE streams SET version = version + 1",
    "delete streams": "DELETE FROM streams",
    "setval": "SELECT setval('events_position_seq', 1)",
    "nextval on the log's sequence": "SELECT nextval('events_position_seq')",
    "alter table": "ALTER TABLE events ADD COLUMN forged text",
    "alter streams": "ALTER TABLE streams ALTER COLUMN version DROP NOT NULL",
    "disable trigger": "ALTER TABLE events DISABLE TRIGGER events_no_update_or_delete",
    "disable all triggers": "ALTER TABLE events DISABLE TRIGGER ALL",
    "drop trigger": "DROP TRIGGER events_no_truncate ON events",
    "replica mode": "SET session_replication_role = replica",
    "drop table": "DROP TABLE events",
    "update a seal": "UPDATE seals SET signature = signature",
    "delete a seal": "DELETE FROM seals",
    "disable the seals' trigger": "ALTER TABLE seals DISABLE TRIGGER ALL",
    "claim versions directly": "SELECT * FROM claim_versions('any', 'forged', 'operator', NULL, 1)",
    "burn a position": "SELECT hold_log_position()",
    # The log's segments (docs/log-segments.md): each is a table of its own.
    "update a segment": "UPDATE events_segment_1 SET payload = '{}'::jsonb",
    "delete from a segment": "DELETE FROM events_segment_1",
    "truncate a segment": "TRUNCATE events_segment_0",
    "insert into a segment": "INSERT INTO events_segment_2 (position, event_id, stream_id, stream_type, version,"
                             " type, payload, hash) VALUES (1000001, gen_random_uuid(), 'forged', 'operator', 1,"
                             " 'operator.key_created', '{}', '')",
    "disable a segment's triggers": "ALTER TABLE events_segment_1 DISABLE TRIGGER ALL",
    "detach a segment": "ALTER TABLE events DETACH PARTITION events_segment_1",
    "drop a segment": "DROP TABLE events_segment_2",
    "create a segment": "CREATE TABLE forged_segment PARTITION OF events FOR VALUES FROM (9000000001) TO (9000000002)",
    "attach a forged table": "CREATE TABLE forged_table (LIKE events);"
                             " ALTER TABLE events ATTACH PARTITION forged_table FOR VALUES FROM (9000000001) TO (9000000002)",
    "prepare a segment by hand": "SELECT prepare_log_segment('events_segment_3')",
    "free an event id": "DELETE FROM log_event_ids",
    "claim an event id": "INSERT INTO log_event_ids VALUES (gen_random_uuid(), 1)",
    "change the segment plan": "UPDATE log_segment_plan SET segment_size = 1",
    "forge an archive record": "UPDATE log_segment SET archived_at = now(), archive_name = 'x'",
}


def _log_state(conn: psycopg.Connection) -> dict:
    return conn.execute(
        "SELECT (SELECT count(*) FROM events) AS n,"
        " (SELECT md5(string_agg(payload::text || version || hash::text, ',' ORDER BY position)) FROM events) AS h,"
        " (SELECT md5(string_agg(stream_id || version, ',' ORDER BY stream_id)) FROM streams) AS s,"
        " (SELECT last_value FROM events_position_seq) AS seq"
    ).fetchone()


@pytest.mark.parametrize("what", list(HOSTILE))
def test_the_application_login_cannot_rewrite_or_forge_history(rel_database_url: str, what: str) -> None:
    """As the login the API, the workers and the CLI use, every rewrite is refused; appends work."""
    import service_layer.operator_events  # noqa: F401 - registers operator.* so we can append one

    pool = create_pool(rel_database_url, Settings(chronicle_pool_min_size=1, chronicle_pool_max_size=2),
                       name="app-role")
    try:
        # The application login can do its job: append (through the append function) and read.
        store = EventStore(pool)
        result = store.append(f"operator-access-{uuid.uuid4().hex[:6]}", ANY,
                              [NewEvent("operator.key_created", {"target": "t", "details": {}})],
                              {"actor_id": "access-test"}, stream_type="operator")
        assert result.position > 0
        with pool.connection() as conn:
            role = conn.execute("SELECT current_user AS u, rolsuper FROM pg_roles WHERE rolname = current_user")
            row = role.fetchone()
            assert row["u"] == "chronicle_test_login" and not row["rolsuper"]
            before = _log_state(conn)
            with pytest.raises((errors.InsufficientPrivilege, errors.DependentObjectsStillExist)) as caught:
                conn.execute(HOSTILE[what])
            assert caught.value.sqlstate in ("42501", "2BP01"), (what, caught.value)
            # GRANT by a non-owner only warns ("no privileges were granted"); the writes still fail.
            conn.execute("GRANT ALL ON events, streams TO CURRENT_USER")
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute("INSERT INTO streams (stream_id, stream_type, version) VALUES ('x', 'operator', 1)")
            assert _log_state(conn) == before
            # A function it creates runs with its own rights (no way around by SECURITY DEFINER).
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute("CREATE FUNCTION evil() RETURNS void LANGUAGE sql SECURITY DEFINER"
                             " AS 'DELETE FROM events'; SELECT evil()")
    finally:
        pool.close()
