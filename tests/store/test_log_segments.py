"""The log in segments (schema/0022, docs/log-segments.md): appends cross segment boundaries,
event ids stay unique across the whole log, segments are made ahead of need, and the rules of
immutability hold on every segment."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from psycopg import errors
from psycopg_pool import ConnectionPool

from infrastructure.event_store import ANY, EventStore, NewEvent
from infrastructure.log_segments import ensure_segments, list_segments
from infrastructure.log_verify import verify_log
from tests.conftest import as_owner

from .segments import misplaced_events, ready_positions, use_small_segments

APPEND = ("SELECT * FROM append_event('any', %s, 'note', NULL, '{}'::jsonb, 'chronicle', %s,"
          " 'note.written', 1, '{\"text\": \"x\", \"n\": 0}'::jsonb)")


def _notes(n: int, tag: str) -> list[NewEvent]:
    return [NewEvent("note.written", {"text": f"{tag}-{i}", "n": i}) for i in range(n)]


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(batches=st.lists(st.tuples(st.integers(0, 3), st.integers(1, 6)), min_size=1, max_size=8))
def test_random_appends_across_segments_stay_in_order_and_verify(
        store: EventStore, fresh_pool: ConnectionPool, fresh_database_url: str, batches) -> None:
    """Appends of any size to a few streams land in the segment of their position; the log verifies."""
    with fresh_pool.connection() as conn:
        if conn.execute("SELECT segment_size FROM log_segment_plan").fetchone()["segment_size"] != 5:
            use_small_segments(fresh_database_url, size=5)
    for stream, n in batches:
        store.append(f"note-{stream}", ANY, _notes(n, "h"))
        with fresh_pool.connection() as conn:
            ensure_segments(conn)  # as the workers' tick does
    with fresh_pool.connection() as conn:
        assert misplaced_events(conn) == []
        assert ready_positions(conn) > 2 * 5
        counts = conn.execute("SELECT (SELECT count(*) FROM events) AS events,"
                              " (SELECT count(*) FROM log_event_ids) AS ids,"
                              " (SELECT count(DISTINCT tableoid) FROM events) AS used").fetchone()
        assert counts["events"] == counts["ids"]
        report = verify_log(conn)
    assert report.ok, report.mismatches
    assert counts["used"] >= counts["events"] // 5


def test_a_late_tick_refuses_the_append_and_the_next_tick_repairs(store: EventStore, fresh_pool: ConnectionPool,
                                                                   fresh_database_url: str) -> None:
    """Past the last segment an append fails and writes nothing; once segments are made it succeeds."""
    use_small_segments(fresh_database_url, size=3, ahead=1)
    with fresh_pool.connection() as conn:
        room = ready_positions(conn)
    store.append("note-a", ANY, _notes(room, "fill"))
    with pytest.raises(errors.CheckViolation, match="no partition"):
        store.append("note-a", ANY, _notes(1, "late"))
    with fresh_pool.connection() as conn:
        assert conn.execute("SELECT version FROM streams WHERE stream_id = 'note-a'").fetchone()["version"] == room
        assert ensure_segments(conn) >= 1
    assert store.append("note-a", ANY, _notes(1, "late")).version == room + 1


def test_an_event_id_is_unique_across_segments(store: EventStore, fresh_pool: ConnectionPool,
                                               fresh_database_url: str) -> None:
    """A retry in a later segment returns the original result; a raw second append of the id fails on
    the constraint the store's idempotent retry looks for."""
    use_small_segments(fresh_database_url, size=2)
    [event] = _notes(1, "once")
    first = store.append("note-a", ANY, [event])
    store.append("note-b", ANY, _notes(5, "later"))
    with fresh_pool.connection() as conn:
        ensure_segments(conn)
    again = store.append("note-a", ANY, [event])
    assert again.duplicate and again.positions == first.positions
    with fresh_pool.connection() as conn, pytest.raises(errors.UniqueViolation) as caught:
        conn.execute(APPEND, ("note-c", event.event_id))
    assert caught.value.diag.constraint_name == "events_event_id_key"
    with fresh_pool.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM events WHERE event_id = %s",
                            (event.event_id,)).fetchone()["n"] == 1


def test_concurrent_appends_of_one_id_from_several_connections_write_once(
        fresh_database_url: str, store: EventStore) -> None:
    """Six connections append the same id to six streams at once (across segments): one is written."""
    use_small_segments(fresh_database_url, size=4, ahead=3)  # room for the positions the refused ones burn
    store.append("note-warm", ANY, _notes(3, "w"))
    event_id = uuid.uuid4()
    barrier, outcomes = threading.Barrier(6), []

    def append(i: int) -> None:
        with psycopg.connect(fresh_database_url) as conn:
            barrier.wait()
            try:
                conn.execute(APPEND, (f"note-race-{i}", event_id))
                conn.commit()
                outcomes.append("written")
            except errors.UniqueViolation as exc:
                outcomes.append(exc.diag.constraint_name)

    threads = [threading.Thread(target=append, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["events_event_id_key"] * 5 + ["written"]
    with psycopg.connect(fresh_database_url) as conn:
        assert conn.execute("SELECT count(*) FROM events WHERE event_id = %s", (event_id,)).fetchone()[0] == 1


def test_a_new_segment_has_only_the_logs_indexes(store: EventStore, fresh_database_url: str) -> None:
    """A segment made later carries its parts of the log's indexes and its statistics, and no key of
    its own: reads by id go through log_event_ids, a stream's through events_stream_idx (0025)."""
    use_small_segments(fresh_database_url, size=2)
    written = store.append("note-a", ANY, _notes(5, "x"))
    with psycopg.connect(as_owner(fresh_database_url)) as conn:
        segments = [s.table_name for s in list_segments(conn) if s.segment_number > 0]
        for table in segments:
            own = conn.execute("SELECT i.indexrelid::regclass::text FROM pg_index i WHERE i.indrelid = %s::regclass"
                               " AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid)",
                               (table,)).fetchall()
            assert own == [], table
            assert conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{table}_stream_idx",)).fetchone()[0]
            assert conn.execute("SELECT count(*) FROM pg_statistic_ext WHERE stxname = %s",
                                (f"{table}_stream_stats",)).fetchone()[0] == 1
    assert [e.position for e in store.read_stream("note-a")] == list(written.positions)


def test_every_segment_refuses_rewrites_even_to_the_owner(store: EventStore, fresh_database_url: str) -> None:
    """The immutability triggers hold on each segment, old and new, for the owner too."""
    use_small_segments(fresh_database_url, size=2)
    store.append("note-a", ANY, _notes(5, "x"))
    with psycopg.connect(as_owner(fresh_database_url), autocommit=True) as conn:
        segments = [s.table_name for s in list_segments(conn)]
        assert len(segments) >= 4
        for table in ["events", *segments]:
            with pytest.raises(errors.InsufficientPrivilege, match="events are immutable"):
                conn.execute(f"TRUNCATE {table}")
            if conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0:
                continue  # a row trigger has no row to refuse
            for sql in (f"UPDATE {table} SET payload = '{{}}'", f"DELETE FROM {table}"):
                with pytest.raises(errors.InsufficientPrivilege, match="events are immutable"):
                    conn.execute(sql)
        with pytest.raises(errors.InsufficientPrivilege, match="events are immutable"):
            conn.execute("DELETE FROM log_event_ids")


def test_the_workers_tick_keeps_segments_ahead_of_the_appends(store: EventStore, fresh_pool: ConnectionPool,
                                                              fresh_database_url: str) -> None:
    """With the tick running, appends well past the first segments never run out of segments."""
    from workers.tick import Ticker

    use_small_segments(fresh_database_url, size=3, ahead=2)

    def segments() -> int:
        with fresh_pool.connection() as conn:
            return ensure_segments(conn)

    ticker = Ticker(lambda: 0, lambda: 0, segments=segments)
    thread = threading.Thread(target=ticker._loop, args=(0.02,), daemon=True)
    thread.start()
    try:
        for i in range(12):  # 24 positions: eight segments of 3
            store.append("note-tick", ANY, _notes(2, f"t{i}"))
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                with fresh_pool.connection() as conn:
                    if ready_positions(conn) > 3:
                        break
                time.sleep(0.02)
    finally:
        ticker.stop.set()
        thread.join(timeout=5)
    with fresh_pool.connection() as conn:
        assert misplaced_events(conn) == [] and verify_log(conn).ok
        assert len(list_segments(conn)) >= 9
