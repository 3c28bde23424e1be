"""The log's segments: the PostgreSQL partitions of `events` by position (docs/log-segments.md).

Segments are made ahead of need by ensure_log_segments() (schema/0022), which the workers' tick
and `chronicle migrate` call; archived segments live in files and are listed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row


@dataclass(frozen=True)
class Segment:
    """One segment of the log: positions [first_position, end_position), attached or archived."""

    segment_number: int
    table_name: str
    first_position: int
    end_position: int
    archived_at: Any = None
    archive_name: str | None = None
    event_count: int | None = None
    data_sha256: str | None = None
    first_hash: bytes | None = None
    last_hash: bytes | None = None

    @property
    def archived(self) -> bool:
        """Whether the segment lives only in its archive's files."""
        return self.archived_at is not None

    def as_json(self) -> dict[str, Any]:
        """The segment as the API and the CLI print it (hashes as hex)."""
        return {
            "segment": self.table_name,
            "first_position": self.first_position,
            "last_position": self.end_position - 1,
            "archived_at": self.archived_at.isoformat() if self.archived_at else None,
            "archive": self.archive_name,
            "event_count": self.event_count,
            "data_sha256": self.data_sha256,
            "first_hash": self.first_hash.hex() if self.first_hash else None,
            "last_hash": self.last_hash.hex() if self.last_hash else None,
        }


class ArchivedRange(Exception):
    """Positions asked for lie in a segment that was archived to files."""

    def __init__(self, segment: Segment) -> None:
        super().__init__(
            f"positions {segment.first_position}..{segment.end_position - 1} are archived in"
            f" {segment.archive_name} (segment {segment.table_name}); restore it with"
            f" `chronicle archive restore`, or read the archive's files"
        )
        self.segment = segment


_COLUMNS = ("segment_number, table_name, first_position, end_position, archived_at, archive_name,"
            " event_count, data_sha256, first_hash, last_hash")


def ensure_segments(conn: psycopg.Connection) -> int:
    """Make the segments the plan asks for past the next position; how many were made.

    Any login in chronicle_app may call it (a SECURITY DEFINER function of the schema owner).
    """
    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute("SELECT ensure_log_segments()").fetchone()[0]


def list_segments(conn: psycopg.Connection, archived_only: bool = False) -> list[Segment]:
    """Every segment, oldest first (or only the archived ones): the log's layout.

    What `chronicle archive list` prints and where archived ranges are looked up.
    """
    where = " WHERE archived_at IS NOT NULL" if archived_only else ""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(f"SELECT {_COLUMNS} FROM log_segment{where} ORDER BY segment_number").fetchall()
    return [Segment(**row) for row in rows]


def archived_segments(conn: psycopg.Connection) -> list[Segment]:
    """The archived segments, oldest first, in one round trip.

    Reads and `verify` consult it so that no archived range is passed over silently; each page of
    /v1/events and each consumer group's fetch pays it, so it is one indexless read of a small table.
    """
    return list_segments(conn, archived_only=True)


def archived_at(conn: psycopg.Connection, after: int) -> tuple[Segment | None, int | None]:
    """For a read of positions after `after`: the archived segment holding after + 1, if any, and
    the first position of the next archived range above it (a page must stop before it)."""
    here: Segment | None = None
    below: int | None = None
    for segment in archived_segments(conn):
        if segment.first_position <= after + 1 < segment.end_position:
            here = segment
        elif segment.first_position > after + 1 and below is None:
            below = segment.first_position
    return here, below


def check_feed_from(conn: psycopg.Connection, start: int) -> None:
    """Raise ArchivedRange when a feed from `start` would pass through an archived range: it cannot
    deliver those events, so it must not step over them (it may start after the range's end)."""
    for segment in archived_segments(conn):
        if segment.end_position - 1 > start:
            raise ArchivedRange(segment)


def check_not_archived(conn: psycopg.Connection, after: int) -> int | None:
    """Raise ArchivedRange when position after + 1 is archived; else the position a page of the
    log read from `after` must stay below (None: no archived range above)."""
    here, below = archived_at(conn, after)
    if here is not None:
        raise ArchivedRange(here)
    return below
