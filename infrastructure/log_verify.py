"""`chronicle verify`: recompute every event hash, stream chain and seal of a range of the log.

One pass in position order. Each event's hash is recomputed from its stored content and the
stored hash of the previous event of its stream; versions must follow on; each seal inside the
range must hold the events its Merkle root says, chain to the previous seal, and carry a valid
signature (by a trusted key, when one is given). Every mismatch names a position.
An archived segment's range (docs/log-segments.md) is read from its archive's files when their
folder is given, else skipped and reported, with the seals and chain links that reach into it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from infrastructure.log_chain import earlier_event, row_hash
from infrastructure.log_hashes import ZERO_HASH, leaf_hash, merkle_root
from infrastructure.log_segments import Segment, archived_segments
from infrastructure.seals import SEAL_COLUMNS, Seal, seal_of, signature_holds

# Rows fetched per round trip of the pass over the log.
_BATCH = 5_000


@dataclass(frozen=True)
class Mismatch:
    """Where the log differs from what its hashes and seals say, and how."""

    position: int
    what: str


@dataclass
class VerifyReport:
    """What `verify` checked and what it found, mismatches in position order."""

    from_position: int
    to_position: int
    events: int = 0
    seals: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    skipped_archives: list[dict] = field(default_factory=list)  # archived ranges not verified
    archives_read: list[str] = field(default_factory=list)  # archived segments verified from files
    seals_skipped: int = 0  # seals reaching into a skipped range

    @property
    def ok(self) -> bool:
        return not self.mismatches


_EVENTS = (
    "SELECT position, event_id, stream_id, stream_type, version, type, schema_version, payload::text AS payload,"
    " metadata::text AS metadata, recorded_at, hash FROM events WHERE position > %s AND position <= %s"
    " ORDER BY position"
)


def log_head(conn: psycopg.Connection) -> int:
    """The last stored position (0 on an empty log)."""
    return conn.execute("SELECT coalesce(max(position), 0) AS head FROM events").fetchone()["head"]


def verify_log(
    conn: psycopg.Connection, from_position: int = 0, to_position: int | None = None, *,
    trusted_keys: frozenset[bytes] | None = None, progress: Callable[[int], None] | None = None,
    archive_dir: Path | None = None,
) -> VerifyReport:
    """Verify events in (from_position, to_position] and the seals wholly inside that range.

    trusted_keys: public keys a seal must be signed by (None: any key, signature still checked).
    progress: called with the position reached, every few thousand events.
    archive_dir: the folder of the archived segments' files, to verify their ranges too.
    """
    conn.row_factory = dict_row
    every_archive = archived_segments(conn)
    # The log's end, also when its last segments are archived.
    head = max([log_head(conn)] + [s.end_position - 1 for s in every_archive])
    to = head if to_position is None else min(to_position, head)
    report = VerifyReport(from_position, to)
    archived = [s for s in every_archive if s.end_position - 1 > from_position and s.first_position <= to]
    skipped = [] if archive_dir is not None else archived
    report.skipped_archives = [s.as_json() for s in skipped]
    unread = _Unread(every_archive, {s.table_name for s in skipped}, from_position)
    seals = [s for s in _seals_in(conn, from_position, to)
             if not any(s.from_position < k.end_position - 1 and s.to_position >= k.first_position for k in skipped)]
    report.seals_skipped = len(_seals_in(conn, from_position, to)) - len(seals)
    seal_index, leaves = 0, []
    heads: dict[str, tuple[int, bytes, int]] = {}  # stream -> (version, hash, position) of its last event seen
    for row in _rows_around(conn, from_position, to, archived, archive_dir, report):
        report.events += 1
        position = row["position"]
        while seal_index < len(seals) and seals[seal_index].to_position < position:
            _check_seal(conn, seals[seal_index], leaves, trusted_keys, report)
            seal_index, leaves = seal_index + 1, []
        stored = bytes(row["hash"])
        previous = _previous(conn, heads, row, unread, report)
        if previous is not None or row["version"] == 1:
            recomputed = row_hash(previous, row)
            if recomputed != stored:
                report.mismatches.append(Mismatch(position, (
                    f"event {row['event_id']} ({row['stream_id']} v{row['version']}): stored hash {stored.hex()[:16]}…"
                    f" but its content hashes to {recomputed.hex()[:16]}…: its content or chain was changed")))
        heads[row["stream_id"]] = (row["version"], stored, position)
        if seal_index < len(seals) and seals[seal_index].from_position < position:
            leaves.append(leaf_hash(stored))
        if progress and report.events % _BATCH == 0:
            progress(position)
    for seal in seals[seal_index:]:
        _check_seal(conn, seal, leaves, trusted_keys, report)
        leaves = []
    if to_position is None or to_position >= head:
        _check_stream_heads(conn, heads, report, unread, every_stream=from_position == 0 and not skipped)
    report.seals = len(seals)
    report.mismatches.sort(key=lambda m: m.position)
    if progress:
        progress(to)
    return report


def _rows_around(conn: psycopg.Connection, after: int, upto: int, archived: list[Segment], archive_dir: Path | None,
                 report: VerifyReport) -> Iterator[dict]:
    """The events in (after, upto] in position order: from the log, and an archived range from its
    files (checked against the log's record of them) or not at all."""
    for segment in archived:
        yield from _rows(conn, after, min(segment.first_position - 1, upto))
        if archive_dir is not None:
            from infrastructure.log_archive import read_events, verified_data_file

            data_file = verified_data_file(archive_dir, segment)
            yield from (e for e in read_events(data_file) if after < e["position"] <= upto)
            report.archives_read.append(segment.table_name)
        after = max(after, segment.end_position - 1)
    yield from _rows(conn, after, upto)


def _rows(conn: psycopg.Connection, after: int, upto: int) -> Iterator[dict]:
    """The events in (after, upto], in position order, fetched in batches."""
    while after < upto:
        rows = conn.execute(_EVENTS + " LIMIT %s", (after, upto, _BATCH)).fetchall()
        if not rows:
            return
        yield from rows
        after = rows[-1]["position"]


@dataclass(frozen=True)
class _Unread:
    """The archived positions this run does not read: every archived segment's positions at or below
    the range's start, and the skipped segments' positions inside it."""

    archived: list[Segment]
    skipped: set[str]
    from_position: int

    def between(self, low: int, high: int) -> Segment | None:
        """The archived segment holding unread positions strictly between `low` and `high`, if any:
        only there may a stream's missing versions lie unchecked."""
        for segment in self.archived:
            upper = min(high - 1, segment.end_position - 1)
            if segment.table_name not in self.skipped:
                upper = min(upper, self.from_position)  # read from its files above the start
            if max(low + 1, segment.first_position) <= upper:
                return segment
        return None


def _previous(conn: psycopg.Connection, heads: dict[str, tuple[int, bytes, int]], row: dict, unread: _Unread,
              report: VerifyReport) -> bytes | None:
    """The stored hash of the event before this one in its stream; None for version 1, or when it
    lies in an archived range this run does not read (that one link is not checked).

    Versions that do not follow on are a mismatch (an event is gone) unless an unread archived
    segment lies between the stream's two events.
    """
    version, stream, position = row["version"], row["stream_id"], row["position"]
    seen = heads.get(stream)
    if seen is None and version > 1:
        seen = earlier_event(conn, stream, version)  # before the range's start, or gone
        if seen is not None and seen[0] == version - 1:
            return seen[1]
    if seen is not None and seen[0] + 1 == version:
        return seen[1]
    if version == 1 and seen is None:
        return None
    last_version, last_position = (seen[0], seen[2]) if seen is not None else (0, 0)
    if unread.between(last_position, position) is None:
        report.mismatches.append(Mismatch(position, (
            f"stream {stream} goes from version {last_version} to {version}: an event is missing"
            if seen is not None else f"stream {stream} has no version {version - 1} before version {version}:"
            " an event is missing")))
    return None


def _seals_in(conn: psycopg.Connection, after: int, upto: int) -> list[Seal]:
    """The seals wholly inside (after, upto], in order."""
    rows = conn.execute(
        f"SELECT {SEAL_COLUMNS} FROM seals WHERE from_position >= %s AND to_position <= %s ORDER BY seal_number",
        (after, upto),
    ).fetchall()
    return [seal_of(row) for row in rows]


def _check_seal(conn: psycopg.Connection, seal: Seal, leaves: list[bytes], trusted_keys: frozenset[bytes] | None,
                report: VerifyReport) -> None:
    """Check one seal against the leaves of the events in its range, its chain and its signature."""
    def fail(what: str) -> None:
        report.mismatches.append(Mismatch(seal.to_position, f"seal {seal.seal_number} (positions"
                                          f" {seal.from_position + 1}-{seal.to_position}): {what}"))

    if len(leaves) != seal.event_count:
        fail(f"the log holds {len(leaves)} events in its range, the seal says {seal.event_count}:"
             " events were deleted or added")
    elif merkle_root(leaves) != seal.merkle_root:
        fail("the events' Merkle root differs from the sealed root: an event hash was changed")
    if seal.seal_number == 1:
        expected_previous, expected_from = ZERO_HASH, 0
    else:
        before = conn.execute(f"SELECT {SEAL_COLUMNS} FROM seals WHERE seal_number = %s",
                              (seal.seal_number - 1,)).fetchone()
        if before is None:
            fail(f"seal {seal.seal_number - 1} is missing")
            return
        expected_previous, expected_from = seal_of(before).seal_hash, seal_of(before).to_position
    if seal.previous_hash != expected_previous or seal.from_position != expected_from:
        fail("it does not chain to the previous seal")
    if hashlib.sha256(seal.message()).digest() != seal.seal_hash:
        fail("its seal hash does not match its content")
    if not signature_holds(seal):
        fail(f"its signature does not verify under key {seal.key_id}")
    elif trusted_keys is not None and seal.public_key not in trusted_keys:
        fail(f"it is signed by key {seal.key_id}, which is not a trusted seal key")


def _check_stream_heads(conn: psycopg.Connection, heads: dict[str, tuple[int, bytes, int]], report: VerifyReport,
                        unread: _Unread, every_stream: bool) -> None:
    """Each stream's version and head hash must be those of its last event (a deleted last event shows here),
    unless an archived segment this run does not read lies after the last one seen (its later events may be there).

    every_stream: the whole log was read, so a stream none of whose events was seen has lost them all.
    """
    rows = conn.execute("SELECT stream_id, version, head_hash FROM streams WHERE %s OR stream_id = ANY(%s)"
                        " ORDER BY stream_id", (every_stream, list(heads))).fetchall()
    for row in rows:
        version, last_hash, position = heads.get(row["stream_id"], (0, b"", 0))
        if row["version"] != version or (row["head_hash"] is not None and bytes(row["head_hash"]) != last_hash):
            if unread.between(position, report.to_position + 1) is not None:
                continue
            report.mismatches.append(Mismatch(report.to_position, (
                f"stream {row['stream_id']} is at version {row['version']} but its last stored event is"
                f" version {version}: an event is missing or the stream was changed")))
