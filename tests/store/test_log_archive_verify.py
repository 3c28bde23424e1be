"""`verify` beside archived segments: a version gap is excused only where an archived segment the
run does not read lies between a stream's two events; `--from` starts each stream's chain from
the event before it (docs/log-segments.md, "Reading an archived range")."""

from __future__ import annotations

from pathlib import Path

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from infrastructure.config import Settings
from infrastructure.db import create_pool
from infrastructure.event_store import ANY, EventStore, NewEvent
from infrastructure.log_archive import export_segment
from infrastructure.log_segments import ensure_segments, list_segments
from infrastructure.log_verify import VerifyReport, verify_log
from tests.conftest import as_owner, migrated_database

from .conftest import note_registry
from .segments import fill_segments, use_small_segments


def _delete(url: str, position: int) -> None:
    """Delete one event as the owner with the log's immutability triggers off, as an attacker would."""
    with psycopg.connect(as_owner(url), autocommit=True) as conn, conn.transaction():
        conn.execute("ALTER TABLE events DISABLE TRIGGER USER")
        conn.execute("DELETE FROM events WHERE position = %s", (position,))
        conn.execute("ALTER TABLE events ENABLE TRIGGER USER")


def _verify(url: str, from_position: int = 0, archive_dir: Path | None = None) -> VerifyReport:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        return verify_log(conn, from_position, archive_dir=archive_dir)


def test_a_deleted_event_is_named_though_another_segment_is_archived(
        store: EventStore, fresh_database_url: str, tmp_path: Path) -> None:
    fill_segments(store, fresh_database_url)  # segments of 4 positions; 5-8 are note-2 v1-2, note-0 v3-4
    export_segment(as_owner(fresh_database_url), "events_segment_2", tmp_path)
    _delete(fresh_database_url, 3)  # note-1 v1: no archived segment lies before its v2 at position 4
    for archive_dir in (None, tmp_path):
        report = _verify(fresh_database_url, archive_dir=archive_dir)
        assert [(m.position, m.what) for m in report.mismatches] == \
            [(4, "stream note-1 has no version 1 before version 2: an event is missing")]


def test_from_past_an_archived_range_reads_each_streams_previous_event(
        store: EventStore, fresh_database_url: str, tmp_path: Path) -> None:
    fill_segments(store, fresh_database_url)
    export_segment(as_owner(fresh_database_url), "events_segment_2", tmp_path)
    for start in (4, 6, 8, 9):
        report = _verify(fresh_database_url, start)
        assert report.ok, (start, report.mismatches)  # note-2 v3 at 11 follows v2, archived at 6
        assert _verify(fresh_database_url, start, tmp_path).ok
    _delete(fresh_database_url, 12)  # note-2 v4, its last: its v3 (11) is read, its v2 is archived
    assert [m.what for m in _verify(fresh_database_url, 10).mismatches] == \
        [("stream note-2 is at version 4 but its last stored event is version 3: an event is missing or the"
          " stream was changed")]


@st.composite
def _histories(draw: st.DrawFn) -> tuple[list[int], int]:
    """Which stream each append goes to (one event each), and the segments' size."""
    return draw(st.lists(st.integers(0, 3), min_size=6, max_size=18)), draw(st.integers(2, 4))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(history=_histories(), data=st.data())
def test_verify_names_a_deleted_attached_event_whatever_is_archived(
        admin_url: str, template_dbname: str, tmp_path_factory, history: tuple[list[int], int],
        data: st.DataObject) -> None:
    appends, size = history
    with migrated_database(admin_url, template_dbname) as url:
        pool = create_pool(url, Settings(chronicle_pool_min_size=1, chronicle_pool_max_size=2), name="verify-prop")
        try:
            store = EventStore(pool, note_registry())
            use_small_segments(url, size=size, ahead=2)
            for i, stream in enumerate(appends):
                store.append(f"s-{stream}", ANY, [NewEvent("note.written", {"text": f"t{i}", "n": i})])
                with psycopg.connect(url) as conn:
                    ensure_segments(conn)
        finally:
            pool.close()
        head = len(appends)
        with psycopg.connect(url) as conn:
            cold = [s for s in list_segments(conn) if s.end_position - 1 <= head and s.segment_number > 0]
        chosen = data.draw(st.lists(st.sampled_from(cold), unique=True, max_size=len(cold)) if cold else st.just([]))
        files = tmp_path_factory.mktemp("archive")
        for segment in chosen:
            export_segment(as_owner(url), segment.table_name, files)

        def archived(position: int) -> bool:
            return any(s.first_position <= position < s.end_position for s in chosen)

        start = data.draw(st.integers(0, head))
        assert _verify(url, start).ok and _verify(url, start, files).ok  # an untouched log verifies from anywhere

        # Delete an attached event whose stream's neighbours in the log have no archived segment between.
        streams = {p + 1: s for p, s in enumerate(appends)}
        candidates = []
        for position, stream in streams.items():
            later = [p for p, s in streams.items() if s == stream and p > position and not archived(p)]
            earlier = [p for p, s in streams.items() if s == stream and p < position and not archived(p)]
            low, high = max(earlier, default=0), min(later, default=None)
            if not archived(position) and high is not None and not any(low < p < high and archived(p)
                                                                       for p in range(1, head + 1)):
                candidates.append((position, stream))
        if not candidates:
            return
        position, stream = data.draw(st.sampled_from(candidates))
        _delete(url, position)
        start = data.draw(st.integers(0, position - 1))
        for archive_dir in (None, files):
            report = _verify(url, start, archive_dir)
            assert any(f"stream s-{stream} " in m.what and "an event is missing" in m.what
                       for m in report.mismatches), (position, start, report.mismatches)
