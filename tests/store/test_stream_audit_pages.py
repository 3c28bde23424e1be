"""Audit ?stream= pages of a long stream: each page reads about a page of the stream's rows.

The rows are written straight into the log (a long stream interleaved with one-event streams),
then ANALYZEd, and the page query the audit route builds is EXPLAIN ANALYZEd and walked.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.rows import dict_row

from service_layer.event_log import events_sql
from tests.conftest import as_owner, migrated_database
from tests.store.test_bounded_plans import indexes, nodes, scans_of_rows

LONG = 4000  # the long stream's events, every other position of the log

SEED = f"""
INSERT INTO events (event_id, stream_id, stream_type, version, type, payload, metadata, recorded_at, hash)
SELECT md5('e' || g)::uuid, CASE WHEN g % 2 = 0 THEN 'long' ELSE 'other-' || g END, 'document',
       CASE WHEN g % 2 = 0 THEN g / 2 ELSE 1 END,
       CASE WHEN g % 6 = 0 THEN 'document.tagged' ELSE 'document.updated' END, '{{}}', '{{}}',
       timestamptz '2026-01-01T00:00:00+00' + g * interval '10 milliseconds',
       sha256(('e' || g)::bytea)  -- a hash for the column; these reads do not verify the chain
FROM generate_series(1, {2 * LONG}) g;
ANALYZE;
"""


@pytest.fixture(scope="module")
def long_stream(admin_url: str, template_dbname: str):
    """A connection to a migrated database holding the long stream (as the owner, who may write `events`)."""
    with (migrated_database(admin_url, template_dbname) as url,
          psycopg.connect(as_owner(url), autocommit=True, row_factory=dict_row) as conn):
        conn.execute(SEED)
        yield conn


def rows_read(node: dict) -> int:
    """The rows every scan of the plan read from the log (returned or filtered out), over all its loops."""
    return sum((n.get("Actual Rows", 0) + n.get("Rows Removed by Filter", 0)) * n.get("Actual Loops", 1)
               for n in nodes(node) if "Scan" in n["Node Type"])


@pytest.mark.parametrize("after", [0, 2 * 3000, 2 * 3000 + 1])
def test_a_stream_page_reads_about_a_page(long_stream, after):
    """Page 31 of 40 (or the first) reads a page and a binary search, not the stream up to it.
    (event_page plans it for each call, as here: a generic plan would sort the stream's tail.)"""
    query = events_sql(after, 2 * LONG, {"stream_id": "long"}, [], [], None, None, 101)
    analyzed = long_stream.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + query[0], query[1]).fetchone()
    p = analyzed["QUERY PLAN"][0]["Plan"]
    assert "events_stream_idx" in indexes(p) and not scans_of_rows(long_stream, p), p
    assert not [n for n in nodes(p) if n["Node Type"] in ("Sort", "Bitmap Heap Scan")], p
    assert rows_read(p) < 300, p


@pytest.mark.parametrize("types", [[], ["document.tagged"]])
def test_walking_the_pages_yields_the_stream_in_order(long_stream, types):
    """Pages of 7, each after the last one's final position, are the stream's events in order."""
    expected = [r["position"] for r in long_stream.execute(
        "SELECT position FROM events WHERE stream_id = 'long' AND (%s::text[] = '{}' OR type = ANY(%s))"
        " ORDER BY position", (types, types))]
    walked, after = [], 0
    while True:
        page = [r["position"] for r in long_stream.execute(
            *events_sql(after, 2 * LONG, {"stream_id": "long"}, [], types, None, None, 7)).fetchall()]
        walked += page
        if len(page) < 7:
            break
        after = page[-1]
    assert walked == expected and len(expected) in (LONG, LONG // 3)


def test_a_stream_page_keeps_to_its_bounds(long_stream):
    """A cursor between the stream's events, an upper bound and the page size are kept exactly."""
    rows = long_stream.execute(*events_sql(2 * 100 + 1, 2 * 105, {"stream_id": "long"}, [], [], None, None, 50))
    assert [(r["version"], r["position"]) for r in rows] == [(v, 2 * v) for v in range(101, 106)]
    assert long_stream.execute(*events_sql(2 * LONG, 3 * LONG, {"stream_id": "long"}, [], [], None, None, 5)
                               ).fetchall() == []
    # A time window, recorded at positions [1000, 1100): the stream's versions 500 to 549.
    start = datetime(2026, 1, 1, tzinfo=UTC)
    since, until = start + timedelta(seconds=10), start + timedelta(seconds=11)
    rows = long_stream.execute(*events_sql(0, 2 * LONG, {"stream_id": "long"}, [], [], since, until, 100))
    assert [r["version"] for r in rows] == list(range(500, 550))
