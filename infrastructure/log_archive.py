"""Archive a cold segment of the log to files, and restore it (docs/log-segments.md, "Archive").

A segment's archive is two files: `<segment>.ndjson.gz` (one event a line, every column as
stored and hashed) and `<segment>.manifest.json` (range, count, sha256 of the data file, first
and last hash). Both operations detach or attach a segment: they need the owner of `events`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from infrastructure.log_chain import earlier_event, row_hash
from infrastructure.log_keys import of_stream
from infrastructure.log_segments import Segment, archived_segments, list_segments

FORMAT = "chronicle-log-segment/1"
_COLUMNS = ("position", "event_id", "stream_id", "stream_type", "version", "type", "schema_version", "payload",
            "metadata", "log_name", "recorded_at", "hash")
_SELECT = ("SELECT position, event_id, stream_id, stream_type, version, type, schema_version,"
           " payload::text AS payload, metadata::text AS metadata, log_name, recorded_at, hash FROM events"
           " WHERE position >= %s AND position < %s ORDER BY position")


class ArchiveError(Exception):
    """An archive cannot be written or restored: the message says what is wrong."""


def event_line(row: dict[str, Any]) -> dict[str, Any]:
    """An event as one archive line: payload and metadata as the exact text that was hashed,
    so that the line alone recomputes the event's hash."""
    return {**row, "event_id": str(row["event_id"]), "recorded_at": row["recorded_at"].isoformat(),
            "hash": bytes(row["hash"]).hex()}


def event_of_line(line: dict[str, Any]) -> dict[str, Any]:
    """An archive line back as the row it was (the inverse of event_line), for checks, `verify`
    and the restore's COPY."""
    return {**line, "event_id": UUID(line["event_id"]), "recorded_at": datetime.fromisoformat(line["recorded_at"]),
            "hash": bytes.fromhex(line["hash"])}


def read_events(data_file: Path) -> Iterator[dict[str, Any]]:
    """The events of an archive's data file, in the order written; streamed, so a segment of
    any size is read in constant memory."""
    number = 0
    try:
        with gzip.open(data_file, "rt", encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                yield event_of_line(json.loads(line))
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise ArchiveError(f"{data_file} is not a readable archive (line {number or 1}): {exc!r}") from None


def file_sha256(path: Path) -> str:
    """The sha256 of a file, hex: what a manifest and the log record of an archive's data file,
    so a changed file is found before it is read."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# A manifest's fields and their JSON types: what a restore and `verify --archives` read.
_MANIFEST_FIELDS = {"format": str, "segment": str, "first_position": int, "last_position": int, "event_count": int,
                    "data_file": str, "data_sha256": str}
_KINDS = {str: "a string", int: "an integer"}


def read_manifest(manifest_file: Path) -> tuple[dict[str, Any], Path]:
    """An archive's manifest and its data file, checked to be readable and whole; ArchiveError
    naming the file and the field otherwise (never a traceback for a bad file)."""
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ArchiveError(f"{manifest_file} cannot be read as a manifest: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveError(f"{manifest_file} is not a Chronicle segment manifest ({FORMAT})")
    for name, kind in _MANIFEST_FIELDS.items():
        if not isinstance(manifest.get(name), kind) or isinstance(manifest.get(name), bool):
            raise ArchiveError(f"{manifest_file}: field {name!r} is missing or not {_KINDS[kind]}")
    data_file = manifest_file.parent / manifest["data_file"]
    if Path(manifest["data_file"]).name != manifest["data_file"] or not data_file.is_file():
        raise ArchiveError(f"{manifest_file}: its data file {manifest['data_file']!r} (field 'data_file') is not"
                           f" in {manifest_file.parent}")
    return manifest, data_file


def verified_data_file(directory: Path, segment: Segment) -> Path:
    """An archived segment's data file in `directory`, once its sha256 is the one the log recorded
    when it was archived (and its manifest's)."""
    manifest_file = directory / (segment.archive_name or "")
    if not manifest_file.is_file():
        raise ArchiveError(f"{segment.table_name} is archived in {segment.archive_name}, which is not in {directory}")
    manifest, data_file = read_manifest(manifest_file)
    if {file_sha256(data_file), manifest["data_sha256"]} != {segment.data_sha256}:
        raise ArchiveError(f"{data_file} is not the file the log recorded for {segment.table_name}"
                           f" (sha256 {segment.data_sha256})")
    return data_file


def _check_owner(conn: psycopg.Connection) -> None:
    """Only the owner of `events` may detach or attach a segment: say so before anything is written."""
    if not conn.execute("SELECT pg_has_role(current_user, relowner, 'USAGE') AS owns FROM pg_class"
                        " WHERE oid = 'events'::regclass").fetchone()["owns"]:
        raise ArchiveError("only the owner of the log (events) may archive or restore a segment:"
                           " connect with the URL migrations use (DATABASE_MIGRATION_URL)")


def _locked(conn: psycopg.Connection, segment: Segment) -> Segment:
    """Lock the segment's row in log_segment for this transaction, and read it again under the lock:
    two exports (or an export and a restore) of one segment never run at once."""
    try:
        conn.execute("SELECT 1 FROM log_segment WHERE segment_number = %s FOR UPDATE NOWAIT", (segment.segment_number,))
    except psycopg.errors.LockNotAvailable:
        raise ArchiveError(f"another export or restore of {segment.table_name} is running; try again once it"
                           " has ended") from None
    return _segment(conn, segment.table_name)


def _segment(conn: psycopg.Connection, name: str) -> Segment:
    """The segment named by table name or number."""
    for segment in list_segments(conn):
        if name in (segment.table_name, str(segment.segment_number)):
            return segment
    raise ArchiveError(f"no segment {name!r}: `chronicle archive list` shows them")


def export_segment(owner_url: str, name: str, directory: Path) -> dict[str, Any]:
    """Write a cold segment to `directory`, check the files against the database, then detach and
    drop the segment and record its archive. Returns the manifest."""
    with psycopg.connect(owner_url, row_factory=dict_row) as conn:
        _check_owner(conn)
        segment = _locked(conn, _segment(conn, name))
        if segment.archived:
            raise ArchiveError(f"{segment.table_name} is already archived in {segment.archive_name}")
        safe = conn.execute("SELECT safe_position() AS safe").fetchone()["safe"]
        if segment.end_position - 1 > safe:
            raise ArchiveError(f"{segment.table_name} holds positions up to {segment.end_position - 1}, past the"
                               f" safe position {safe}: only a segment the log has moved past may be archived")
        directory.mkdir(parents=True, exist_ok=True)
        data_file = directory / f"{segment.table_name}.ndjson.gz"
        count, first, last = _write(conn, segment, data_file)
        manifest = {
            "format": FORMAT, "segment": segment.table_name, "segment_number": segment.segment_number,
            "first_position": segment.first_position, "last_position": segment.end_position - 1,
            "event_count": count, "first_event": first, "last_event": last,
            "data_file": data_file.name, "data_sha256": file_sha256(data_file),
            "exported_at": datetime.now(timezone.utc).isoformat(),
        }
        _check_written(conn, segment, data_file, count)
        manifest_file = directory / f"{segment.table_name}.manifest.json"
        manifest_file.write_text(json.dumps(manifest, indent=2) + "\n")
        conn.execute(f'ALTER TABLE events DETACH PARTITION "{segment.table_name}"')
        conn.execute(f'DROP TABLE "{segment.table_name}"')
        conn.execute(
            "UPDATE log_segment SET archived_at = clock_timestamp(), archive_name = %s, event_count = %s,"
            " data_sha256 = %s, first_hash = %s, last_hash = %s WHERE segment_number = %s",
            (manifest_file.name, count, manifest["data_sha256"], bytes.fromhex(first["hash"]) if first else None,
             bytes.fromhex(last["hash"]) if last else None, segment.segment_number))
    return manifest


def _write(conn: psycopg.Connection, segment: Segment, data_file: Path) -> tuple[int, dict | None, dict | None]:
    """Write the segment's events to the data file; (count, first event, last event) as position and hash."""
    count, first, last = 0, None, None
    with gzip.open(data_file, "wt", encoding="utf-8") as out, conn.cursor(name="archive", row_factory=dict_row) as cur:
        cur.itersize = 2000
        cur.execute(_SELECT, (segment.first_position, segment.end_position))
        for row in cur:
            line = event_line(row)
            out.write(json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n")
            count += 1
            last = {"position": line["position"], "hash": line["hash"]}
            first = first or last
    return count, first, last


def _check_written(conn: psycopg.Connection, segment: Segment, data_file: Path, count: int) -> None:
    """The file, read back, holds exactly the segment's events, as stored."""
    with conn.cursor(name="archive_check", row_factory=dict_row) as cur:
        cur.itersize = 2000
        cur.execute(_SELECT, (segment.first_position, segment.end_position))
        seen = 0
        for stored, written in zip(cur, read_events(data_file), strict=False):
            seen += 1
            if {k: stored[k] for k in _COLUMNS} != {k: written[k] for k in _COLUMNS}:
                raise ArchiveError(f"the archive's event at position {written['position']} differs from the log;"
                                   " the segment was not detached")
    stored_count = conn.execute("SELECT count(*) AS n FROM events WHERE position >= %s AND position < %s",
                                (segment.first_position, segment.end_position)).fetchone()["n"]
    if not count == seen == stored_count:
        raise ArchiveError(f"the archive holds {seen} events, the segment {stored_count}; it was not detached")


def restore_segment(owner_url: str, manifest_file: Path) -> dict[str, Any]:
    """Check an archive against its manifest, the log's record of it and the hash chain, then load
    it into a new table and attach it over its range. Returns the manifest."""
    manifest, data_file = read_manifest(manifest_file)
    if file_sha256(data_file) != manifest["data_sha256"]:
        raise ArchiveError(f"{data_file.name}'s sha256 is not the manifest's: the file was changed")
    with psycopg.connect(owner_url, row_factory=dict_row) as conn:
        _check_owner(conn)
        segment = _locked(conn, _segment(conn, manifest["segment"]))
        if not segment.archived:
            raise ArchiveError(f"{segment.table_name} is attached: there is nothing to restore")
        if segment.data_sha256 != manifest["data_sha256"] or segment.archive_name != manifest_file.name:
            raise ArchiveError(f"{manifest_file.name} is not the archive the log recorded for {segment.table_name}"
                               f" ({segment.archive_name}, sha256 {segment.data_sha256})")
        check_archive(conn, segment, data_file, _older_archive_heads(conn, segment, data_file))
        _load(conn, segment, data_file)
        _check_event_ids(conn, segment)
        _attach(conn, segment)
        # Attached again: the segment's row no longer describes an archive.
        conn.execute("UPDATE log_segment SET archived_at = NULL, archive_name = NULL, event_count = NULL,"
                     " data_sha256 = NULL, first_hash = NULL, last_hash = NULL WHERE segment_number = %s",
                     (segment.segment_number,))
    return manifest


def check_archive(conn: psycopg.Connection, segment: Segment, data_file: Path,
                  older: dict[str, tuple[int, bytes]] | None = None) -> int:
    """Each event of the file: inside the range, in order, its hash recomputed from its content and its
    stream's previous hash (from the file, the log, or `older`: archives of older segments); the count
    and first and last hashes as recorded; the streams' next events in the log chain to it. Returns the
    count. (The ids: _check_event_ids.)"""
    heads: dict[str, tuple[int, bytes]] = dict(older or {})
    count, first, last, previous_position = 0, None, None, segment.first_position - 1
    for event in read_events(data_file):
        position = event["position"]
        if not previous_position < position < segment.end_position:
            raise ArchiveError(f"position {position} is out of order or outside {segment.table_name}'s range")
        previous = _previous_hash(conn, heads, event)
        if row_hash(previous, event) != event["hash"]:
            raise ArchiveError(f"the event at position {position} does not hash to its stored hash")
        heads[event["stream_id"]] = (event["version"], event["hash"])
        count, last, previous_position = count + 1, event["hash"], position
        first = first or event["hash"]
    if count != segment.event_count or first != segment.first_hash or last != segment.last_hash:
        raise ArchiveError(f"the archive holds {count} events; the log recorded {segment.event_count} and other"
                           " first or last hashes")
    _check_next_events(conn, heads)
    return count


def _previous_hash(conn: psycopg.Connection, heads: dict[str, tuple[int, bytes]], event: dict) -> bytes | None:
    """The hash of the event before this one in its stream: from the file, else from the log."""
    version, stream = event["version"], event["stream_id"]
    if version == 1:
        return None
    if stream in heads:
        if heads[stream][0] != version - 1:
            raise ArchiveError(f"stream {stream} goes from version {heads[stream][0]} to {version} in the archive")
        return heads[stream][1]
    found = earlier_event(conn, stream, version)
    if found is None or found[0] != version - 1:  # an older archive beside this one would have held it
        raise ArchiveError(f"stream {stream} version {version - 1} is neither in the log nor in an older"
                           " archive beside this one")
    return found[1]


def _older_archive_heads(conn: psycopg.Connection, segment: Segment, data_file: Path) -> dict[str, tuple[int, bytes]]:
    """The events before this archive's that its streams chain to but the log no longer holds (their
    segments are archived too), read from those archives in the same folder: stream -> (version, hash).

    So archives restore in any order; an archive whose file is not there is named.
    """
    first: dict[str, int] = {}  # stream -> its first version in this archive
    for event in read_events(data_file):
        first.setdefault(event["stream_id"], event["version"])
    wanted: dict[str, int] = {}  # stream -> the version before its first here, not in the log
    for stream, version in first.items():
        found = earlier_event(conn, stream, version) if version > 1 else None
        if version > 1 and (found is None or found[0] != version - 1):
            wanted[stream] = version - 1
    heads: dict[str, tuple[int, bytes]] = {}
    absent: list[str] = []  # older archives whose files are not in the folder
    older = [s for s in archived_segments(conn) if s.end_position <= segment.first_position]
    for archived in reversed(older):  # newest first: a stream's event before this archive is most likely there
        if not wanted:
            break
        if not (data_file.parent / (archived.archive_name or "")).is_file():
            absent.append(archived.archive_name or archived.table_name)
            continue
        for event in read_events(verified_data_file(data_file.parent, archived)):
            if wanted.get(event["stream_id"]) == event["version"]:
                heads[event["stream_id"]] = (event["version"], event["hash"])
                del wanted[event["stream_id"]]
    if wanted:
        stream, version = next(iter(wanted.items()))
        raise ArchiveError(f"stream {stream} version {version} is neither in the log nor in an older archive"
                           f" in {data_file.parent}" + (f" (not there: {', '.join(absent)})" if absent else ""))
    return heads


def _check_next_events(conn: psycopg.Connection, heads: dict[str, tuple[int, bytes]]) -> None:
    """Each stream's next event in the log must hash with the archive's last hash of that stream."""
    for stream, (version, head) in heads.items():
        row = conn.execute("SELECT event_id, stream_id, stream_type, version, type, schema_version,"
                           " payload::text AS payload, metadata::text AS metadata, recorded_at, hash FROM events"
                           f" WHERE {of_stream()} AND version = %s", (stream, stream, version + 1)).fetchone()
        if row and row_hash(head, row) != bytes(row["hash"]):
            raise ArchiveError(f"stream {stream} version {version + 1} in the log does not chain to the archive")


def _load(conn: psycopg.Connection, segment: Segment, data_file: Path) -> None:
    """Load the file into a new table shaped as a segment (not yet attached)."""
    table = segment.table_name
    conn.execute(f'CREATE TABLE "{table}" (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)')
    conn.execute(f'ALTER TABLE "{table}" ALTER COLUMN "position" DROP DEFAULT')
    with conn.cursor().copy(f'COPY "{table}" ({", ".join(_COLUMNS)}) FROM STDIN') as copy:
        for event in read_events(data_file):
            copy.write_row([event[c] for c in _COLUMNS])
    conn.execute("SELECT prepare_log_segment(%s)", (table,))


def _check_event_ids(conn: psycopg.Connection, segment: Segment) -> None:
    """Every loaded event's id must be the one log_event_ids holds at its position: one set-based query."""
    wrong = conn.execute(
        f'SELECT r.event_id, r.position FROM "{segment.table_name}" r'
        " LEFT JOIN log_event_ids i ON i.event_id = r.event_id"  # by log_event_ids' key
        " WHERE i.position IS DISTINCT FROM r.position ORDER BY r.position LIMIT 1").fetchone()
    if wrong is not None:
        raise ArchiveError(f"event {wrong['event_id']} is not the log's event at position {wrong['position']}")


def _attach(conn: psycopg.Connection, segment: Segment) -> None:
    """Attach the loaded table over the segment's range (no scan: a CHECK proves the range first),
    and gather its planner statistics."""
    table = segment.table_name
    conn.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{table}_range"'
                 f' CHECK (position >= {segment.first_position} AND position < {segment.end_position})')
    bound = "MINVALUE" if segment.segment_number == 0 else str(segment.first_position)
    conn.execute(f'ALTER TABLE events ATTACH PARTITION "{table}" FOR VALUES FROM ({bound}) TO ({segment.end_position})')
    conn.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{table}_range"')
    conn.execute("SELECT name_log_segment_indexes(%s)", (table,))
    conn.execute(f'ANALYZE "{table}"')
