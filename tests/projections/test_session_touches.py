"""The session touches read model and the read tables' CHECKs, on real PostgreSQL."""

from __future__ import annotations

import re
import uuid

import psycopg
import pytest

from infrastructure.event_store import ANY, NO_STREAM, NewEvent
from projections.rebuild import rebuild
from projections.verify import verify
from tests.projections.conftest import dump_tables, project_all


def _meta(session: str | None) -> dict:
    return {"actor_id": "u1", "actor_type": "user", **({"session_id": session} if session else {})}


def _session_rows(pool, session: str) -> list[tuple[str, str]]:
    """The session read's query: (document, last touch), most recently touched first."""
    with pool.connection() as conn:
        return [(r["document_id"], r["touch"]) for r in conn.execute(
            "SELECT t.document_id, t.touch FROM session_touch t JOIN document d USING (document_id)"
            " WHERE t.session_id = %s AND t.last_position < %s ORDER BY t.last_position DESC",
            (session, 2**62)).fetchall()]


def test_touches_follow_each_sessions_last_event(store, proj_pool):
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    created = {"namespace": "ns", "document_type": "t", "title": "x", "content": "x", "body": None,
               "metadata": {}, "version": 1}
    store.append(a, NO_STREAM, [NewEvent("document.created", created)], _meta("s-one"))
    store.append(b, NO_STREAM, [NewEvent("document.created", created)], _meta("s-two"))
    store.append(a, ANY, [NewEvent("document.updated", {"content": "y", "change_description": "", "version": 2})],
                 _meta("s-two"))
    store.append(b, ANY, [NewEvent("document.tagged", {"tag": "p", "version": 1, "previous_version": None})],
                 _meta("s-two"))
    store.append(a, ANY, [NewEvent("document.updated", {"content": "z", "change_description": "", "version": 3})],
                 _meta(None))  # no session: touches nothing
    project_all(proj_pool, batch_size=2)
    assert _session_rows(proj_pool, "s-one") == [(a, "document.created")]
    assert _session_rows(proj_pool, "s-two") == [(b, "document.tagged"), (a, "document.updated")]
    store.append(b, ANY, [NewEvent("document.deleted", {"reason": "r"})], _meta("s-three"))
    project_all(proj_pool)
    assert _session_rows(proj_pool, "s-two") == [(a, "document.updated")]  # deleted: drops out
    store.append(b, ANY, [NewEvent("document.restored", {"reason": "r"})], _meta(None))
    project_all(proj_pool)
    assert _session_rows(proj_pool, "s-two") == [(b, "document.tagged"), (a, "document.updated")]  # back
    assert _session_rows(proj_pool, "s-three") == [(b, "document.deleted")]
    # Rebuild and verify cover the table: same rows from scratch, no difference.
    before = dump_tables(proj_pool)["session_touch"]
    assert len(before) == 4
    report = verify(proj_pool, "documents")
    assert report.differing_rows == 0 and report.tables["session_touch"] == 0
    with proj_pool.connection() as conn:
        conn.execute("UPDATE session_touch SET last_position = last_position + 1000 WHERE session_id = 's-one'")
    report = verify(proj_pool, "documents")
    assert [(d.table, d.kind) for d in report.differences] == [("session_touch", "changed")]
    rebuild(proj_pool, "documents", batch_size=3)
    assert dump_tables(proj_pool)["session_touch"] == before


def test_the_session_read_is_an_index_range_scan(proj_pool):
    with proj_pool.connection() as conn:
        conn.execute("SET enable_seqscan = off")  # an empty table: ask whether the index can serve it at all
        plan = "\n".join(r["QUERY PLAN"] for r in conn.execute(
            "EXPLAIN SELECT t.document_id FROM session_touch t JOIN document d USING (document_id)"
            " WHERE t.session_id = 's' AND t.last_position < 10 ORDER BY t.last_position DESC LIMIT 5").fetchall())
    assert "session_touch_session_idx" in plan and "Sort" not in plan


ROW = "'e7d3a8a0-0000-4000-8000-000000000001', 1, 1"


@pytest.mark.parametrize("statement", [
    f"INSERT INTO edge (chain_id, edge_id, source_id, target_id, last_event_id, last_version, last_position)"
    f" VALUES ('c', 'e', 'n1', 'n1', {ROW})",
    f"INSERT INTO document (document_id, namespace, document_type, version, last_event_id, last_version,"
    f" last_position) VALUES ('d', 'ns', 't', 0, {ROW})",
    f"INSERT INTO document_version (document_id, version, namespace, document_type, body_hash, last_event_id,"
    f" last_version, last_position) VALUES ('d', 0, 'ns', 't', 'h', {ROW})",
    f"INSERT INTO active_tag (tag, document_id, document_version, last_event_id, last_version, last_position)"
    f" VALUES ('p', 'd', 0, {ROW})",
    "INSERT INTO tag_event (event_id, tag, document_id, document_version, previous_version, operation,"
    " last_version, last_position) VALUES ('e7d3a8a0-0000-4000-8000-000000000001', 'p', 'd', 1, 0, 'moved', 1, 1)",
    f"INSERT INTO agent_execution (agent_id, execution_id, duration_ms, last_event_id, last_version, last_position)"
    f" VALUES ('a', 'x', -1, {ROW})",
    "INSERT INTO session_touch (session_id, document_id, touch, last_event_id, last_version, last_position)"
    " VALUES ('s', 'd', 'document.created', 'e7d3a8a0-0000-4000-8000-000000000001', 1, 0)",
])
def test_the_read_tables_refuse_what_the_domain_never_writes(proj_pool, statement):
    with proj_pool.connection() as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(statement)


def test_a_self_edge_inserted_straight_into_edge_is_refused(proj_pool):
    with proj_pool.connection() as conn:
        with pytest.raises(psycopg.errors.CheckViolation, match="edge_not_self"):
            conn.execute("INSERT INTO edge (chain_id, edge_id, source_id, target_id, last_event_id, last_version,"
                         f" last_position) VALUES ('c', 'e', 'n1', 'n1', {ROW})")
    with proj_pool.connection() as conn:  # an edge between two nodes is fine
        conn.execute("INSERT INTO edge (chain_id, edge_id, source_id, target_id, last_event_id, last_version,"
                     f" last_position) VALUES ('c', 'e', 'n1', 'n2', {ROW})")


@pytest.mark.parametrize(("query", "indexes"), [
    ("SELECT document_id FROM document d WHERE d.namespace = ANY(%s) AND d.document_type = ANY(%s)"
     " AND d.created_position < 10 ORDER BY d.created_position DESC LIMIT 5",
     ("document_ns_type_idx", "document_type_idx", "document_namespace_idx")),
    ("SELECT document_id FROM document d WHERE d.document_type = ANY(%s)"
     " ORDER BY d.created_position DESC LIMIT 5", ("document_type_idx",)),
    ("SELECT position FROM events WHERE type = ANY(%s) AND stream_type = ANY(%s) AND position > 0"
     " AND position <= 10 ORDER BY position LIMIT 5", ("events_type_idx", "events_pkey")),  # a short range: either
])
def test_repeated_filters_are_served_by_their_indexes(proj_pool, query, indexes):
    """Several values of a filter (`= ANY`) still go through a filter's index (no scan of the table)."""
    args = (["a", "b"], ["c", "d"]) if query.count("%s") == 2 else (["a", "b"],)
    with proj_pool.connection() as conn:
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET enable_bitmapscan = off")
        plan = "\n".join(r["QUERY PLAN"] for r in conn.execute("EXPLAIN " + query, args).fetchall())
    plan = re.sub(r"events_segment_\d+_", "events_", plan)  # a segment's part of a log index: that index
    assert any(f"Index Scan using {index}" in plan for index in indexes) and "Seq Scan" not in plan, plan
