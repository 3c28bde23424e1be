"""0022 on a store that already has a log: the table becomes segment 0 as it is (same rows,
hashes, seals and indexes), and appends go on in the new segments."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg.rows import dict_row

from infrastructure.config import Settings
from infrastructure.db import create_pool
from infrastructure.log_keys import events_by_id
from infrastructure.log_verify import verify_log
from infrastructure.migrations import available_migrations, migrate
from infrastructure.seals import seal_log
from service_layer.event_log import STREAM_EVENTS_SQL
from tests.conftest import _drop, _with_dbname

APPEND = ("SELECT * FROM append_event('any', %s, 'note', NULL, '{\"actor_id\": \"m\"}'::jsonb, 'chronicle', %s,"
          " 'note.written', 1, jsonb_build_object('text', %s::text))")


@pytest.fixture
def store_before_segments(admin_url: str):
    """A database migrated up to 0020 (before segments), with 30 events of three streams, sealed."""
    name = f"chronicle_test_{uuid.uuid4().hex[:12]}_pre22"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_dbname(admin_url, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE schema_migrations (number integer PRIMARY KEY, name text NOT NULL,"
                         " applied_at timestamptz NOT NULL DEFAULT now())")
            for migration in available_migrations():
                if migration.number < 22:
                    with conn.transaction():
                        conn.execute(migration.sql)
                        conn.execute("INSERT INTO schema_migrations (number, name) VALUES (%s, %s)",
                                     (migration.number, migration.name))
            for i in range(30):
                conn.execute(APPEND, (f"note-{i % 3}", uuid.uuid4(), f"text {i}"))
        pool = create_pool(url, Settings(chronicle_pool_min_size=1, chronicle_pool_max_size=2), name="pre22")
        try:
            assert seal_log(pool, Ed25519PrivateKey.generate())
        finally:
            pool.close()
        yield url
    finally:
        _drop(admin_url, name)


def test_an_existing_log_becomes_segment_0(store_before_segments: str) -> None:
    url = store_before_segments
    with psycopg.connect(url, row_factory=dict_row) as conn:
        before = conn.execute("SELECT * FROM events ORDER BY position").fetchall()
        indexes = conn.execute("SELECT count(*) AS n FROM pg_index WHERE indrelid = 'events'::regclass").fetchone()["n"]
    assert migrate(url)[0] == "0022_log_segments.sql"  # then the later migrations
    with psycopg.connect(url, row_factory=dict_row, autocommit=True) as conn:
        assert conn.execute("SELECT * FROM events ORDER BY position").fetchall() == before
        assert {r["t"] for r in conn.execute("SELECT DISTINCT tableoid::regclass::text AS t FROM events")} == \
            {"events_segment_0"}
        assert conn.execute("SELECT pg_get_expr(relpartbound, oid) AS b FROM pg_class"
                            " WHERE relname = 'events_segment_0'").fetchone()["b"] == \
            "FOR VALUES FROM (MINVALUE) TO ('31')"
        # Its indexes are parts of the log's indexes; its own keys on event_id and (stream_id, version)
        # gave way to its part of events_stream_idx (0025).
        parts = conn.execute(
            "SELECT count(*) AS n, count(h.inhparent) AS attached FROM pg_index i"
            " LEFT JOIN pg_inherits h ON h.inhrelid = i.indexrelid"
            " WHERE i.indrelid = 'events_segment_0'::regclass").fetchone()
        assert parts["n"] == indexes - 1 and parts["attached"] == parts["n"]
        assert conn.execute("SELECT to_regclass('events_segment_0_stream_idx') IS NOT NULL AS made").fetchone()["made"]
        assert conn.execute("SELECT count(*) AS n FROM log_event_ids").fetchone()["n"] == 30
        report = verify_log(conn)
        assert report.ok and report.events == 30 and report.seals == 1, report.mismatches
        added = conn.execute(APPEND, ("note-1", uuid.uuid4(), "after")).fetchone()
        assert (added["position"], added["version"]) == (31, 11)
        assert conn.execute("SELECT tableoid::regclass::text AS t FROM events WHERE position = 31").fetchone()["t"] \
            == "events_segment_1"
        # The stream reads across both segments, in version order; its events are found by id.
        stream = conn.execute(STREAM_EVENTS_SQL, ("note-1", "note-1", 0, 2**63 - 1, 100)).fetchall()
        assert [(e["version"], e["position"]) for e in stream] == [(v, 3 * v - 1) for v in range(1, 11)] + [(11, 31)]
        assert sorted(e["position"] for e in conn.execute(events_by_id("e.position", "= ANY(%s)"),
                                                          ([before[4]["event_id"], stream[-1]["event_id"]],))) == [5, 31]
        assert len(conn.execute("SELECT * FROM partition_events(0, 31, ARRAY['note'])").fetchall()) == 31
        with pytest.raises(psycopg.errors.UniqueViolation, match="events_event_id_key"):
            conn.execute(APPEND, ("note-2", before[0]["event_id"], "again"))
        assert verify_log(conn).ok
