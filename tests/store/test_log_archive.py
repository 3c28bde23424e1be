"""Archiving a cold segment to files and restoring it (docs/log-segments.md, "Archive")."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from infrastructure.errors import EventIdReused
from infrastructure.event_store import ANY, EventStore, NewEvent
from infrastructure.log_archive import ArchiveError, export_segment, file_sha256, restore_segment
from infrastructure.log_segments import ArchivedRange, archived_segments, check_not_archived, list_segments
from infrastructure.log_verify import verify_log
from tests.conftest import as_owner

from .segments import fill_segments


def _fill(store: EventStore, url: str) -> list[dict]:
    """14 events across segments of 4 positions (fill_segments); the log's rows."""
    fill_segments(store, url)
    return _rows(url)


def _rows(url: str) -> list[dict]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute("SELECT *, tableoid::regclass::text AS segment FROM events ORDER BY position").fetchall()


def test_export_then_restore_gives_back_the_same_log(store: EventStore, fresh_database_url: str,
                                                     tmp_path: Path) -> None:
    before = _fill(store, fresh_database_url)
    owner = as_owner(fresh_database_url)
    manifest = export_segment(owner, "events_segment_2", tmp_path)
    assert manifest["first_position"] == 5 and manifest["last_position"] == 8 and manifest["event_count"] == 4
    data = tmp_path / manifest["data_file"]
    assert manifest["data_sha256"] == file_sha256(data)
    lines = [json.loads(line) for line in gzip.open(data, "rt")]
    assert [line["position"] for line in lines] == [5, 6, 7, 8]
    assert manifest["first_event"]["hash"] == lines[0]["hash"] and manifest["last_event"]["hash"] == lines[-1]["hash"]

    with psycopg.connect(fresh_database_url, row_factory=dict_row) as conn:  # the application's login
        assert conn.execute("SELECT to_regclass('events_segment_2') AS t").fetchone()["t"] is None
        assert [r["position"] for r in conn.execute("SELECT position FROM events ORDER BY position")] == \
            [p for p in range(1, 15) if not 5 <= p <= 8]
        with pytest.raises(ArchivedRange, match="positions 5..8 are archived in events_segment_2.manifest.json"):
            check_not_archived(conn, 4)
        assert check_not_archived(conn, 0) == 5  # a page from the start stops before the archive
        skipped = verify_log(conn)
        assert skipped.ok, skipped.mismatches
        assert [s["segment"] for s in skipped.skipped_archives] == ["events_segment_2"]
        from_files = verify_log(conn, archive_dir=tmp_path)
        assert from_files.ok and from_files.archives_read == ["events_segment_2"] and from_files.events == 14
    # An archived event's id stays taken.
    with pytest.raises(EventIdReused, match="archived segment"):
        store.append("note-9", ANY, [NewEvent("note.written", {"text": "x", "n": 0}, event_id=before[5]["event_id"])])

    restore_segment(owner, tmp_path / "events_segment_2.manifest.json")
    assert _rows(fresh_database_url) == before
    with psycopg.connect(owner, row_factory=dict_row) as conn:
        segment = [s for s in list_segments(conn) if s.table_name == "events_segment_2"][0]
        assert not segment.archived
        assert verify_log(conn).ok
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="events are immutable"):
            conn.execute("DELETE FROM events_segment_2")


def test_a_changed_archive_is_not_restored(store: EventStore, fresh_database_url: str, tmp_path: Path) -> None:
    _fill(store, fresh_database_url)
    owner = as_owner(fresh_database_url)
    manifest = export_segment(owner, "2", tmp_path)
    data = tmp_path / manifest["data_file"]
    lines = gzip.open(data, "rt").read().replace("t2", "T2")  # one payload's text
    assert "T2" in lines
    data.write_bytes(gzip.compress(lines.encode()))
    with pytest.raises(ArchiveError, match="sha256 is not the manifest's"):
        restore_segment(owner, tmp_path / "events_segment_2.manifest.json")
    # A manifest rewritten to match the changed file is not the archive the log recorded.
    manifest_file = tmp_path / "events_segment_2.manifest.json"
    manifest_file.write_text(json.dumps({**manifest, "data_sha256": file_sha256(data)}))
    with pytest.raises(ArchiveError, match="is not the archive the log recorded"):
        restore_segment(owner, manifest_file)
    # Even with the log's record forged to match, the event no longer hashes to its hash.
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute("UPDATE log_segment SET data_sha256 = %s WHERE table_name = 'events_segment_2'",
                     (file_sha256(data),))
    with pytest.raises(ArchiveError, match="does not hash to its stored hash"):
        restore_segment(owner, manifest_file)
    with psycopg.connect(owner) as conn:
        assert [s.archived for s in list_segments(conn) if s.table_name == "events_segment_2"] == [True]
        assert conn.execute("SELECT to_regclass('events_segment_2')").fetchone()[0] is None


def test_only_a_cold_segment_and_only_the_owner(store: EventStore, fresh_database_url: str, tmp_path: Path) -> None:
    _fill(store, fresh_database_url)
    with psycopg.connect(fresh_database_url) as conn:
        hot = [s.table_name for s in list_segments(conn) if s.first_position <= 14 < s.end_position][0]
    with pytest.raises(ArchiveError, match="past the safe position"):
        export_segment(as_owner(fresh_database_url), hot, tmp_path)
    with pytest.raises(ArchiveError, match="only the owner of the log"):
        export_segment(fresh_database_url, "events_segment_1", tmp_path / "app")  # the application's login
    assert not (tmp_path / "app").exists()
    with pytest.raises(ArchiveError, match="no segment 'events_segment_99'"):
        export_segment(as_owner(fresh_database_url), "events_segment_99", tmp_path)
    assert len(_rows(fresh_database_url)) == 14


def test_a_restore_leaves_no_archive_record_and_analyzes_the_segment(store: EventStore, fresh_database_url: str,
                                                                     tmp_path: Path) -> None:
    _fill(store, fresh_database_url)
    owner = as_owner(fresh_database_url)
    export_segment(owner, "events_segment_2", tmp_path)
    restore_segment(owner, tmp_path / "events_segment_2.manifest.json")
    with psycopg.connect(owner, row_factory=dict_row) as conn:
        row = conn.execute("SELECT * FROM log_segment WHERE table_name = 'events_segment_2'").fetchone()
        assert [row[c] for c in ("archived_at", "archive_name", "event_count", "data_sha256", "first_hash",
                                 "last_hash")] == [None] * 6
        assert conn.execute("SELECT count(*) AS n FROM pg_stats WHERE tablename = 'events_segment_2'"
                            " AND attname = 'stream_id'").fetchone()["n"] == 1  # ANALYZE ran


def test_a_second_export_of_a_segment_being_exported_fails_clearly(store: EventStore, fresh_database_url: str,
                                                                   tmp_path: Path) -> None:
    _fill(store, fresh_database_url)
    owner = as_owner(fresh_database_url)
    impatient = psycopg.conninfo.make_conninfo(owner, options="-c lock_timeout=2000")
    with psycopg.connect(owner) as first, first.transaction():  # the export under way holds its row
        first.execute("SELECT 1 FROM log_segment WHERE table_name = 'events_segment_2' FOR UPDATE")
        with pytest.raises(ArchiveError, match="another export or restore of events_segment_2 is running"):
            export_segment(impatient, "events_segment_2", tmp_path)
    with psycopg.connect(owner) as conn:
        assert [s.archived for s in list_segments(conn) if s.table_name == "events_segment_2"] == [False]
    assert len(_rows(fresh_database_url)) == 14


@pytest.mark.parametrize(("change", "named"), [
    (lambda m, f: f.write_text("{not json"), "cannot be read as a manifest"),
    (lambda m, f: f.write_text(json.dumps({k: v for k, v in m.items() if k != "data_sha256"})),
     "field 'data_sha256' is missing or not a string"),
    (lambda m, f: f.write_text(json.dumps({**m, "event_count": "4"})), "field 'event_count' is missing or not an integer"),
    (lambda m, f: (f.parent / m["data_file"]).unlink(), "field 'data_file'"),
    (lambda m, f: f.write_text(json.dumps({**m, "data_file": "../elsewhere.ndjson.gz"})), "field 'data_file'"),
])
def test_a_bad_manifest_or_missing_data_file_is_named(store: EventStore, fresh_database_url: str, tmp_path: Path,
                                                      change, named: str) -> None:
    _fill(store, fresh_database_url)
    owner = as_owner(fresh_database_url)
    manifest = export_segment(owner, "events_segment_2", tmp_path)
    manifest_file = tmp_path / "events_segment_2.manifest.json"
    change(manifest, manifest_file)
    with pytest.raises(ArchiveError, match=named) as raised:
        restore_segment(owner, manifest_file)
    assert str(manifest_file) in str(raised.value)
    with psycopg.connect(owner) as conn:
        assert [s.archived for s in list_segments(conn) if s.table_name == "events_segment_2"] == [True]


def test_an_event_id_the_log_holds_elsewhere_is_not_restored(store: EventStore, fresh_database_url: str,
                                                             tmp_path: Path) -> None:
    _fill(store, fresh_database_url)
    owner = as_owner(fresh_database_url)
    export_segment(owner, "events_segment_2", tmp_path)
    with psycopg.connect(owner, autocommit=True) as conn, conn.transaction():
        conn.execute("ALTER TABLE log_event_ids DISABLE TRIGGER USER")
        conn.execute("UPDATE log_event_ids SET position = 99 WHERE position = 7")
        conn.execute("ALTER TABLE log_event_ids ENABLE TRIGGER USER")
    with pytest.raises(ArchiveError, match="is not the log's event at position 7"):
        restore_segment(owner, tmp_path / "events_segment_2.manifest.json")
    with psycopg.connect(owner) as conn:
        assert conn.execute("SELECT to_regclass('events_segment_2')").fetchone()[0] is None


def test_the_archived_ranges_are_read_in_one_round_trip(store: EventStore, fresh_database_url: str,
                                                         tmp_path: Path) -> None:
    _fill(store, fresh_database_url)
    export_segment(as_owner(fresh_database_url), "events_segment_2", tmp_path)
    trace = tmp_path / "libpq.trace"
    with psycopg.connect(fresh_database_url, autocommit=True) as conn, trace.open("w") as out:
        conn.pgconn.trace(out.fileno())
        conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        assert [s.table_name for s in archived_segments(conn)] == ["events_segment_2"]
        conn.pgconn.untrace()
    sent = [line.split("\t") for line in trace.read_text().splitlines()]
    assert sum(1 for line in sent if line[0] == "F" and line[2] in ("Sync", "Query")) == 1, trace.read_text()


def test_archives_restore_in_any_order_from_one_folder(store: EventStore, fresh_database_url: str,
                                                       tmp_path: Path) -> None:
    """A newer archive restored first chains its streams to the older archive beside it; without
    that file, the restore names what it misses and writes nothing."""
    before = _fill(store, fresh_database_url)
    owner = as_owner(fresh_database_url)
    export_segment(owner, "events_segment_2", tmp_path)
    export_segment(owner, "events_segment_3", tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("events_segment_3.manifest.json", "events_segment_3.ndjson.gz"):
        (elsewhere / name).write_bytes((tmp_path / name).read_bytes())
    with pytest.raises(ArchiveError, match=r"neither in the log nor in an older archive in .*elsewhere"
                                           r" \(not there: events_segment_2.manifest.json\)"):
        restore_segment(owner, elsewhere / "events_segment_3.manifest.json")
    with psycopg.connect(fresh_database_url, row_factory=dict_row) as conn:
        assert [s.table_name for s in archived_segments(conn)] == ["events_segment_2", "events_segment_3"]
    restore_segment(owner, tmp_path / "events_segment_3.manifest.json")
    restore_segment(owner, tmp_path / "events_segment_2.manifest.json")
    assert _rows(fresh_database_url) == before
    with psycopg.connect(fresh_database_url, row_factory=dict_row) as conn:
        assert archived_segments(conn) == [] and verify_log(conn).ok
