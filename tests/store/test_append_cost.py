"""The append's cost does not grow with the log: no step of it scans `events`."""

from __future__ import annotations

from infrastructure.config import Settings
from infrastructure.db import connect
from infrastructure.event_store import EventStore, NewEvent


def test_appends_never_scan_the_events_table(store: EventStore, fresh_database_url: str,
                                             store_settings: Settings) -> None:
    # One session, so its plans are made (and cached) while `events` is still tiny: a cached
    # seq scan there would read the whole log on every later append.
    with connect(fresh_database_url, store_settings, autocommit=False) as conn:
        for version in range(30):
            store.append_on(conn, "note-1", version, [NewEvent("note.written", {"text": f"n{version}"})])
        retried = store.append_on(conn, "note-2", 0, [NewEvent("note.written", {"text": "x"})])
        assert not retried.duplicate
        scans = conn.execute(
            "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'events'"
        ).fetchone()["seq_scan"]
        conn.rollback()
    assert scans == 0
