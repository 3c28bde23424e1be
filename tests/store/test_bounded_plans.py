"""The read queries' plans: each is served in order by the index named for it, never a scan of the log.

These tests are about our SQL and the indexes of schema/0020_bounded_reads.sql, so the rows are
written straight into the tables (50k events, 30k documents, 20k agents and chains) rather than
through the domain, then ANALYZEd, and each query the routes build is EXPLAINed.
"""

from __future__ import annotations

import re

from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from service_layer.event_log import CAUSES_SQL, EFFECTS_SQL, STREAM_EVENTS_SQL, events_sql, position_bounds
from service_layer.read_queries import documents_sql, snapshots_sql
from api.routes_reads import AGENT_COLUMNS, CHAIN_COLUMNS
from infrastructure.eventsourcing_recorders import ChronicleApplicationRecorder
from infrastructure.read_indexes import add_index, drop_index, list_indexes
from projections.status import LAG_WINDOW, lag_of, partition_rows, status_statement
from tests.conftest import as_owner, migrated_database

EVENTS = 50_000
DOCUMENTS = 30_000
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
STEP = timedelta(milliseconds=10)

SEED = f"""
INSERT INTO events (event_id, stream_id, stream_type, version, type, payload, metadata, recorded_at, hash)
SELECT md5('e' || g)::uuid, 's' || (g % 5000), 'document', g / 5000 + 1, 'document.updated', '{{}}',
       jsonb_build_object('actor_id', 'user-' || (g % 7), 'session_id', 'session-' || (g % 50),
                          'correlation_id', 'c' || (g / 3))
       || CASE WHEN g % 10 <> 1 THEN jsonb_build_object('causation_id', md5('e' || (g - 1))::uuid::text)
               ELSE '{{}}' END,
       timestamptz '2026-01-01T00:00:00+00' + g * interval '10 milliseconds',
       sha256(('e' || g)::bytea)  -- a hash for the column; these plans do not verify the chain
FROM generate_series(1, {EVENTS}) g;
INSERT INTO log_event_ids (event_id, position) SELECT event_id, position FROM events;
INSERT INTO document (document_id, namespace, document_type, title, metadata, version, session_id,
                      created_position, last_event_id, last_version, last_position)
SELECT 'd' || g, CASE WHEN g % 1000 = 0 THEN 'rare' ELSE 'ns' || (g % 3) END, (ARRAY['llm_interaction', 'prompt', 'note'])[g % 3 + 1], 'title',
       jsonb_build_object('agent_type', 'a' || (g % 4), 'model', 'm' || (g % 4)), 1, 'session-' || (g % 50),
       g, gen_random_uuid(), 1, g
FROM generate_series(1, {DOCUMENTS}) g;
INSERT INTO document_version (document_id, version, namespace, document_type, body_hash, last_event_id,
                              last_version, last_position)
SELECT document_id, 1, namespace, document_type, 'h' || created_position, last_event_id, 1, last_position
FROM document;
INSERT INTO document_body (body_hash, content) SELECT 'h' || g, 'body ' || g FROM generate_series(1, {DOCUMENTS}) g;
INSERT INTO active_tag (tag, document_id, document_version, last_event_id, last_version, last_position,
                        created_position)
SELECT t, 'd' || g, 1, gen_random_uuid(), 1, g, g
FROM generate_series(1, {DOCUMENTS}) g, unnest(ARRAY['production', 'staging']) t
WHERE (t = 'production' AND g % 2 = 0) OR (t = 'staging' AND g % 3 = 0);
INSERT INTO agent (agent_id, name, metadata, last_event_id, last_version, last_position)
SELECT 'ag' || g, 'agent ' || (g % 100), '{{}}', gen_random_uuid(), 1, g FROM generate_series(1, 20000) g;
INSERT INTO chain (chain_id, name, metadata, last_event_id, last_version, last_position)
SELECT 'ch' || g, 'chain ' || (g % 100), '{{}}', gen_random_uuid(), 1, g FROM generate_series(1, 20000) g;
ANALYZE;
"""


@pytest.fixture(scope="module")
def seeded(admin_url: str, template_dbname: str):
    """A migrated database with the seed rows, and a connection to it.

    As the owner: the seed writes straight into `events`, which the application login may not.
    """
    with migrated_database(admin_url, template_dbname) as url:
        with psycopg.connect(as_owner(url), autocommit=True, row_factory=dict_row) as conn:
            conn.execute(SEED)
            yield url, conn


def plan(conn: psycopg.Connection, sql: str, params: Any) -> dict:
    """The plan the server picks for `sql` with these parameters."""
    return conn.execute("EXPLAIN (FORMAT JSON) " + sql, params).fetchone()["QUERY PLAN"][0]["Plan"]


def nodes(node: dict) -> list[dict]:
    """Every node of a plan."""
    return [node, *(n for child in node.get("Plans", []) for n in nodes(child))]


def log_index(name: str) -> str:
    """An index by the name of the log's index it is part of: a segment's part of events_pkey
    (events_segment_3_pkey) is events_pkey (docs/log-segments.md)."""
    return re.sub(r"^events_segment_\d+_", "events_", name)


def scans_of_rows(conn: psycopg.Connection, node: dict) -> list[dict]:
    """The plan's sequential scans, but for those of segments that hold no event yet (made ahead of
    need, a scan of them reads nothing)."""
    empty = {r["table_name"] for r in conn.execute(
        "SELECT table_name FROM log_segment s WHERE archived_at IS NULL"
        " AND NOT EXISTS (SELECT 1 FROM events e WHERE e.position >= s.first_position AND e.position < s.end_position)",
        prepare=False)}  # never prepared: generic_plan deallocates every prepared statement
    return [n for n in nodes(node) if n["Node Type"] == "Seq Scan" and n.get("Relation Name") not in empty]


def indexes(node: dict) -> set[str]:
    return {log_index(n["Index Name"]) for n in nodes(node) if "Index Name" in n}


def assert_ordered_by(node: dict, index: str | set[str], conn: psycopg.Connection | None = None) -> None:
    """Served by `index` (or one of them), with no scan of a whole table and no sort of what it read
    (given `conn`, a scan of a segment that holds no event yet reads nothing, and may stay)."""
    assert indexes(node) & ({index} if isinstance(index, str) else index), node
    assert not [n for n in nodes(node) if n["Node Type"] in ("Sort", "Bitmap Heap Scan")], node
    scans = [n for n in nodes(node) if n["Node Type"] == "Seq Scan"] if conn is None else scans_of_rows(conn, node)
    assert not scans, node


def test_documents_by_namespace_read_in_order(seeded):
    _, conn = seeded
    # A common namespace may be read through the plain order, filtered; a rare one by its own index.
    common = {"document_namespace_idx", "document_position_idx"}
    assert_ordered_by(plan(conn, *documents_sql(["ns1"], [], [], None, [], None, 21)), common)
    assert_ordered_by(plan(conn, *documents_sql(["ns1"], [], [], None, [], 15000, 21)), common)
    # (30 rows: found by its index, then sorted)
    assert "document_namespace_idx" in indexes(plan(conn, *documents_sql(["rare"], [], [], None, [], 15000, 21)))
    assert_ordered_by(plan(conn, *documents_sql([], [], [], None, [], 15000, 21)), "document_position_idx")


def test_documents_by_tag_read_a_page_per_tag(seeded):
    """One tag, or several: each tag's page comes in order from active_tag_order_idx."""
    _, conn = seeded
    for tags in (["production"], ["production", "staging"]):
        for before in (None, 9000):
            p = plan(conn, *documents_sql([], [], tags, None, [], before, 21))
            assert "active_tag_order_idx" in indexes(p)
            assert not [n for n in nodes(p) if n["Node Type"] in ("Seq Scan", "Bitmap Heap Scan")], p
            # The merge sorts at most a page per tag.
            assert all(n["Plan Rows"] <= len(tags) * 21 for n in nodes(p) if n["Node Type"] == "Sort"), p


def test_documents_by_tag_answer_in_order_once_each(seeded):
    """The merged pages: newest first, each document once at the first given tag's version."""
    _, conn = seeded
    rows = conn.execute(*documents_sql([], [], ["staging", "production"], None, [], 9000, 10)).fetchall()
    expected = [p for p in range(8999, 0, -1) if p % 2 == 0 or p % 3 == 0][:10]
    assert [r["created_position"] for r in rows] == expected
    assert [r["tag"] for r in rows] == ["staging" if p % 3 == 0 else "production" for p in expected]


def test_a_metadata_filter_uses_the_operators_index(seeded):
    """`chronicle indexes add --type llm_interaction --field agent_type`: the filter reads it in order."""
    url, conn = seeded
    query = documents_sql([], ["llm_interaction"], [], None, [("agent_type", "a3")], None, 21)
    assert "document_meta_llm_interaction_agent_type" not in indexes(plan(conn, *query))
    index = add_index(url, "llm_interaction", "agent_type")
    try:
        conn.execute("ANALYZE document")
        assert index.name == "document_meta_llm_interaction_agent_type" and index.valid
        assert [(i.document_type, i.field) for i in list_indexes(conn)] == [("llm_interaction", "agent_type")]
        assert_ordered_by(plan(conn, *query), index.name)
        # Prepared (a generic plan) it still reads the index: the type and field are literals.
        numbered = query[0]
        for n in range(1, 4):
            numbered = numbered.replace("%s", f"${n}", 1)
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute("PREPARE meta AS " + numbered)
        values = sql.SQL(", ").join(map(sql.Literal, query[1])).as_string(conn)
        generic = conn.execute(f"EXPLAIN (FORMAT JSON) EXECUTE meta({values})").fetchone()["QUERY PLAN"][0]["Plan"]
        conn.execute("DEALLOCATE meta")
        conn.execute("RESET plan_cache_mode")
        assert index.name in indexes(generic), generic
        rows = conn.execute(*query).fetchall()
        assert [r["created_position"] for r in rows] == [
            p for p in range(DOCUMENTS, 0, -1) if p % 3 == 0 and p % 4 == 3][:21]
    finally:
        assert drop_index(url, index.name)
    assert list_indexes(conn) == []
    assert not drop_index(url, "document_pkey")  # only the operator's indexes can be dropped


def test_agent_and_chain_lists_read_in_order(seeded):
    _, conn = seeded
    for table, columns in (("agent", AGENT_COLUMNS), ("chain", CHAIN_COLUMNS)):
        assert_ordered_by(plan(conn, *snapshots_sql(table, columns, None, [], None, 21)), f"{table}_position_idx")
        assert_ordered_by(plan(conn, *snapshots_sql(table, columns, None, [], 100, 21)), f"{table}_position_idx")
        named = plan(conn, *snapshots_sql(table, columns, f"{table} 7", [], None, 21))
        assert_ordered_by(named, f"{table}_name_idx")


def test_causes_are_found_by_event_id(seeded):
    """Each step of the causes looks an event up by its id (no cast hides events_event_id_key)."""
    _, conn = seeded
    event = conn.execute("SELECT md5('e' || 40005)::uuid AS id").fetchone()["id"]
    p = plan(conn, CAUSES_SQL, (event,))
    assert "events_event_id_key" in indexes(p)
    assert not scans_of_rows(conn, p), p
    causes = conn.execute(CAUSES_SQL, (event,)).fetchall()
    assert [c["position"] for c in causes] == [40004, 40003, 40002, 40001]
    effects = plan(conn, EFFECTS_SQL, (event, 10))
    assert "events_causation_idx" in indexes(effects)
    assert not scans_of_rows(conn, effects), effects


@pytest.mark.parametrize("since_at, until_at", [(20_000, None), (20_000, 20_500), (None, 30_000), (1, 2)])
def test_a_time_window_is_a_position_range(seeded, since_at, until_at):
    """since/until become position bounds, found by binary search; the answer is exactly the
    events recorded in the window, read through events_pkey."""
    _, conn = seeded
    since = START + since_at * STEP if since_at else None
    until = START + until_at * STEP if until_at else None
    low, high = position_bounds(conn, since, until)
    skew = int(timedelta(seconds=1) / STEP)
    assert low == (max(since_at - skew, 1) if since_at else 1)
    if until_at:
        assert high == min(until_at + skew, EVENTS + 1) - 1
    query = events_sql(max(0, low - 1), min(EVENTS, high), {"metadata->>'actor_id'": None}, [], [], since, until, 101)
    assert "events_pkey" in indexes(plan(conn, *query))
    got = [r["position"] for r in conn.execute(*query).fetchall()]
    first = since_at or 1
    last = (until_at - 1) if until_at else EVENTS
    assert got == list(range(first, min(last, first + 100) + 1))


def test_a_correlation_is_found_by_its_index_then_ordered(seeded):
    """The events of one correlation id come from its hash index, not from a walk of the log."""
    _, conn = seeded
    query = events_sql(0, EVENTS, {"metadata->>'correlation_id'": "c9000"}, [], [], None, None, 51)
    p = plan(conn, *query)
    assert "events_correlation_idx" in indexes(p)
    assert not scans_of_rows(conn, p), p
    assert "events_pkey" not in indexes(p), p
    assert [r["position"] for r in conn.execute(*query).fetchall()] == [27000, 27001, 27002]


def generic_plan(conn: psycopg.Connection, query: str, params: list[Any]) -> dict:
    """The plan a prepared statement gets once the server settles on a generic plan (as the
    API's connections prepare what they run often)."""
    numbered = query
    for i in range(1, len(params) + 1):
        numbered = numbered.replace("%s", f"${i}", 1)
    conn.execute("DEALLOCATE ALL")
    conn.execute(f"PREPARE generic AS {numbered}")
    conn.execute("SET plan_cache_mode = force_generic_plan")
    try:
        values = sql.SQL(", ").join(map(sql.Literal, params))
        explain = sql.SQL("EXPLAIN (FORMAT JSON) EXECUTE generic({})").format(values)
        return conn.execute(explain).fetchone()["QUERY PLAN"][0]["Plan"]
    finally:
        conn.execute("RESET plan_cache_mode")
        conn.execute("DEALLOCATE generic")


def test_a_correlation_never_reads_the_position_range(seeded):
    """Even a generic plan, which cannot see how wide (after, upto] is, finds a correlation's
    events by its hash index alone (no bitmap of every position in the range)."""
    _, conn = seeded
    query = events_sql(0, EVENTS, {"metadata->>'correlation_id'": "c9000", "metadata->>'actor_id'": None},
                       [], [], None, None, 51)
    p = generic_plan(conn, *query)
    assert "events_correlation_idx" in indexes(p)
    assert not scans_of_rows(conn, p) and "events_pkey" not in indexes(p), p
    narrowed = events_sql(27000, EVENTS, {"metadata->>'correlation_id'": "c9000"}, [], [], None, None, 51)
    assert [r["position"] for r in conn.execute(*narrowed).fetchall()] == [27001, 27002]


def test_a_stream_is_read_in_version_order_from_its_hashed_index(seeded):
    """GET /v1/streams/{id}/events and the aggregates' reads (time travel): events_stream_idx on
    (hashtext(stream_id), version) gives the order, merged across segments, never sorted.
    (A generic plan, which cannot see the version range, expects a row and may sort what the
    index finds, as it did with (stream_id, version); it never reads the log's rows.)"""
    _, conn = seeded
    assert_ordered_by(plan(conn, STREAM_EVENTS_SQL, ["s42", "s42", 2, 2**63 - 1, 4]), "events_stream_idx", conn)
    generic = generic_plan(conn, STREAM_EVENTS_SQL, ["s42", "s42", 2, 2**63 - 1, 4])
    assert "events_stream_idx" in indexes(generic) and not scans_of_rows(conn, generic), generic
    assert not [n for n in nodes(generic) if n["Node Type"] == "Bitmap Heap Scan"], generic
    rows = conn.execute(STREAM_EVENTS_SQL, ("s42", "s42", 2, 2**63 - 1, 4)).fetchall()
    assert [(r["stream_id"], r["version"], r["position"]) for r in rows] == [
        ("s42", 3, 10042), ("s42", 4, 15042), ("s42", 5, 20042), ("s42", 6, 25042)]
    aggregate = (ChronicleApplicationRecorder._STREAM_QUERY + " AND version > %(gt)s AND version <= %(lte)s"
                 " ORDER BY version DESC LIMIT %(limit)s")
    asked = {"log": "chronicle", "stream": "s42", "gt": -1, "lte": 2**63 - 1, "limit": 1}
    assert_ordered_by(plan(conn, aggregate, asked), "events_stream_idx", conn)


@pytest.mark.parametrize("make_plan", [plan, generic_plan])
def test_a_session_is_read_in_order_from_its_hashed_index(seeded, make_plan):
    """Audit ?session=: events_session_idx on (hashtext(session), position) gives the order."""
    _, conn = seeded
    query = events_sql(100, EVENTS, {"metadata->>'session_id'": "session-7"}, [], [], None, None, 5)
    assert_ordered_by(make_plan(conn, *query), "events_session_idx", conn)
    assert [r["position"] for r in conn.execute(*query).fetchall()] == [107, 157, 207, 257, 307]


@pytest.mark.parametrize("make_plan", [plan, generic_plan])
def test_audit_of_a_stream_finds_its_events_by_the_stream_index(seeded, make_plan):
    """Audit ?stream=: the stream's events come from events_stream_idx (then in position order),
    never from a walk of the log in position order waiting for them to turn up."""
    _, conn = seeded
    query = events_sql(12000, EVENTS, {"stream_id": "s42"}, [], [], None, None, 3)
    p = make_plan(conn, *query)
    assert "events_stream_idx" in indexes(p) and not scans_of_rows(conn, p), p
    assert "events_pkey" not in indexes(p), p
    assert [r["position"] for r in conn.execute(*query).fetchall()] == [15042, 20042, 25042]


def test_a_type_is_read_in_order_from_its_hashed_index(seeded):
    """Audit ?type=: events_type_idx on (hashtext(type), position) gives the order; several
    types match any of their hashes, then the names."""
    _, conn = seeded
    query = events_sql(0, EVENTS, {}, [], ["document.tagged"], None, None, 5)
    p = plan(conn, *query)
    # A type with no events: the planner may sort what the index finds in each segment, which it
    # expects to be a row or two; it never reads the log's rows.
    assert "events_type_idx" in indexes(p) and not scans_of_rows(conn, p), p
    assert all(n["Plan Rows"] <= 5 for n in nodes(p) if n["Node Type"] == "Sort"), p
    assert conn.execute(*query).fetchall() == []
    both = events_sql(10, EVENTS, {}, [], ["document.tagged", "document.updated"], None, None, 3)
    assert [r["position"] for r in conn.execute(*both).fetchall()] == [11, 12, 13]


def test_log_position_at_past_the_ends(seeded):
    _, conn = seeded
    at = conn.execute("SELECT log_position_at(%s) AS a, log_position_at(%s) AS b",
                      (START - timedelta(days=1), START + timedelta(days=1))).fetchone()
    assert (at["a"], at["b"]) == (1, EVENTS + 1)


def test_status_reads_a_window_not_the_log(seeded):
    """Lag is exact within LAG_WINDOW positions of a checkpoint, scaled past it; the plan reads
    the windows through events_pkey, never the whole log."""
    _, conn = seeded
    conn.execute("INSERT INTO projection (name, partitions) VALUES ('documents', 2)")
    try:
        conn.execute("INSERT INTO projection_checkpoint (projection, partition, position)"
                     " VALUES ('documents', 0, %s), ('documents', 1, %s)", (EVENTS - 100, 10))
        rows = partition_rows(conn, "documents", ("document",))
        truth = {r["k"]: r["n"] for r in conn.execute(
            "SELECT projection_partition(stream_id, 2) AS k, count(*) AS n FROM events"
            " WHERE position > CASE WHEN projection_partition(stream_id, 2) = 0 THEN %s ELSE 10 END"
            " GROUP BY 1", (EVENTS - 100,)).fetchall()}
        near, far = (lag_of(r) for r in rows)
        assert near == (truth[0], False)
        assert far[1] and abs(far[0] - truth[1]) < truth[1] * 0.1, (far, truth)
        assert rows[1]["high"] == 10 + LAG_WINDOW
        p = plan(conn, status_statement("documents", ("document",)).as_string(conn), None)
        assert not [n for n in nodes(p) if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "events"], p
        # No parameters: once prepared, the connection keeps one plan, whatever the log's size
        # (a per-call plan costs a millisecond of planning, and the server's pick between the two
        # flipped between 100k and 1M events).
        for _ in range(12):
            again = partition_rows(conn, "documents", ("document",))
            assert [lag_of(r) for r in again] == [near, far]
        kept = conn.execute("SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                            " WHERE statement LIKE '%%least(h.head, c.position + 2500)%%'").fetchall()
        assert [(k["generic_plans"] > 0, k["custom_plans"]) for k in kept] == [(True, 0)]
    finally:
        conn.execute("DELETE FROM projection_checkpoint WHERE projection = 'documents'")
        conn.execute("DELETE FROM projection WHERE name = 'documents'")
