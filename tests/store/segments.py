"""Helpers for the segment tests: small segments on a fresh store, and where each event lives."""

from __future__ import annotations

import psycopg

from infrastructure.event_store import ANY, EventStore, NewEvent
from infrastructure.log_segments import ensure_segments
from tests.conftest import as_owner


def use_small_segments(url: str, size: int, ahead: int = 2) -> None:
    """As the owner: drop the store's empty segments past the next position and plan `size`-position
    segments instead, so that a test's few events cross several segment boundaries."""
    with psycopg.connect(as_owner(url), autocommit=True) as conn:
        next_position = conn.execute("SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END"
                                     " FROM events_position_seq").fetchone()[0]
        empty = conn.execute("SELECT segment_number, table_name FROM log_segment"
                             " WHERE first_position >= %s AND segment_number > 0 ORDER BY segment_number",
                             (next_position,)).fetchall()
        for number, table in empty:
            conn.execute(f'ALTER TABLE events DETACH PARTITION "{table}"')
            conn.execute(f'DROP TABLE "{table}"')
            conn.execute("DELETE FROM log_segment WHERE segment_number = %s", (number,))
        conn.execute("UPDATE log_segment_plan SET segment_size = %s, segments_ahead = %s", (size, ahead))
        conn.execute("SELECT ensure_log_segments()")


def misplaced_events(conn: psycopg.Connection) -> list[tuple[int, str]]:
    """Events stored in a segment whose recorded range does not hold their position (none, always)."""
    return conn.execute(
        "SELECT e.position, e.tableoid::regclass::text AS segment FROM events e JOIN log_segment s"
        " ON s.table_name = e.tableoid::regclass::text"
        " WHERE NOT (e.position >= s.first_position AND e.position < s.end_position)"
        "    OR s.archived_at IS NOT NULL"
    ).fetchall()


def ready_positions(conn: psycopg.Connection) -> int:  # a dict_row connection
    """How many positions past the next one the attached segments can take."""
    return conn.execute(
        "SELECT max(end_position) - (SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END"
        " FROM events_position_seq) AS room FROM log_segment WHERE archived_at IS NULL").fetchone()["room"]


def fill_segments(store: EventStore, url: str) -> None:
    """Segments of 4 positions, then 14 note events of three streams across them (positions 1-14),
    the segments made ahead after each append as the workers' tick does."""
    use_small_segments(url, size=4, ahead=2)
    for i in range(7):
        store.append(f"note-{i % 3}", ANY, [NewEvent("note.written", {"text": f"t{i}", "n": i}),
                                            NewEvent("note.tagged", {"tag": f"g{i}"})])
        with psycopg.connect(url) as conn:
            ensure_segments(conn)
