"""Operators' view of parked events: list them, retry them after a fix, or skip one.

A retry applies a stream's parked events in order under its partition's lock, so the stream
resumes exactly where it stopped; a skipped event is never applied (nor by rebuilds).
A consumer group's parked events (projection 'group:<name>') are retried by delivering them
to the group again, in order (service_layer/group_delivery.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg_pool import ConnectionPool

from infrastructure.partition_reads import read_positions
from projections.batch import apply_events, event_error
from projections.catalog import get_projector
from projections.engine import live_names
from projections.partitioning import lock_key

# The `projection` of a consumer group's dead letters: 'group:<name>'.
GROUP_PREFIX = "group:"


@dataclass(frozen=True)
class DeadLetter:
    """A parked event: where it is, why, and how often it failed."""

    id: int
    projection: str
    partition: int
    position: int
    event_id: str
    stream_id: str
    type: str
    error: str
    attempts: int
    first_failure: datetime
    last_failure: datetime
    status: str


@dataclass(frozen=True)
class RetryOutcome:
    """Streams that resumed, and streams whose events still fail."""

    resumed: list[str]
    still_parked: list[str]


def list_dead_letters(pool: ConnectionPool, projection: str | None = None, *, status: str = "parked",
                      stream_id: str | None = None, limit: int = 100) -> list[DeadLetter]:
    """Dead letters in position order, filtered by projection, status and stream."""
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT id, projection, partition, position, event_id::text, stream_id, type, error, attempts,"
            " first_failure, last_failure, status FROM dead_letter WHERE NOT shadow"
            " AND (%(p)s::text IS NULL OR projection = %(p)s) AND (%(s)s::text IS NULL OR status = %(s)s)"
            " AND (%(st)s::text IS NULL OR stream_id = %(st)s) ORDER BY projection, position LIMIT %(n)s",
            {"p": projection, "s": status, "st": stream_id, "n": limit}).fetchall()
    return [DeadLetter(**row) for row in rows]


def _retry_stream(conn: psycopg.Connection, projection: str, stream_id: str) -> bool:
    """Apply one stream's parked events in order; True if they all went through."""
    projector = get_projector(projection)
    rows = conn.execute(
        "SELECT id, position FROM dead_letter WHERE projection = %s AND stream_id = %s"
        " AND status = 'parked' AND NOT shadow ORDER BY position", (projection, stream_id)).fetchall()
    if not rows:
        return True
    ids = [r["id"] for r in rows]
    events = read_positions(conn, [r["position"] for r in rows])
    try:
        with conn.transaction():
            apply_events(conn, projector, events, live_names(projector))
            conn.execute("UPDATE dead_letter SET status = 'retried', resolved_at = clock_timestamp()"
                         " WHERE id = ANY(%s)", (ids,))
        return True
    except Exception as exc:  # noqa: BLE001
        if not event_error(exc):
            raise
        conn.execute("UPDATE dead_letter SET attempts = attempts + 1, last_failure = clock_timestamp(),"
                     " error = %s WHERE id = %s", (f"{type(exc).__name__}: {exc}"[:4000], ids[0]))
        return False


def retry_dead_letters(pool: ConnectionPool, projection: str, *, stream_id: str | None = None) -> RetryOutcome:
    """Retry parked streams of a projection (or one stream), each under its partition's lock.

    Call after fixing the handler; streams that fail again stay parked with attempts counted.
    A group's streams are queued for delivery again (a retry that fails is parked by a new nack).
    """
    if projection.startswith(GROUP_PREFIX):
        return _requeue(pool, projection, stream_id)
    resumed, failed = [], []
    with pool.connection() as conn:
        streams = conn.execute(
            "SELECT stream_id, min(partition) AS partition FROM dead_letter WHERE projection = %s"
            " AND status = 'parked' AND NOT shadow AND (%s::text IS NULL OR stream_id = %s)"
            " GROUP BY stream_id ORDER BY min(position)", (projection, stream_id, stream_id)).fetchall()
        for row in streams:
            key = lock_key(projection, row["partition"])
            conn.execute("SELECT pg_advisory_lock(%s, %s)", key)
            try:
                ok = _retry_stream(conn, projection, row["stream_id"])
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", key)
            (resumed if ok else failed).append(row["stream_id"])
    return RetryOutcome(resumed, failed)


def _requeue(pool: ConnectionPool, owner: str, stream_id: str | None) -> RetryOutcome:
    """A group's parked streams (or one) queued for delivery again: retried, not yet acknowledged."""
    with pool.connection() as conn:
        rows = conn.execute(
            "UPDATE dead_letter SET status = 'retried', resolved_at = NULL WHERE projection = %s"
            " AND status = 'parked' AND NOT shadow AND (%s::text IS NULL OR stream_id = %s) RETURNING stream_id",
            (owner, stream_id, stream_id)).fetchall()
    return RetryOutcome(sorted({r["stream_id"] for r in rows}), [])


def skip_dead_letter(pool: ConnectionPool, dead_letter_id: int) -> RetryOutcome:
    """Mark one parked event skipped (never applied), then resume the rest of its stream."""
    with pool.connection() as conn:
        row = conn.execute(
            "UPDATE dead_letter SET status = 'skipped', resolved_at = clock_timestamp()"
            " WHERE id = %s AND status = 'parked' AND NOT shadow RETURNING projection, stream_id",
            (dead_letter_id,)).fetchone()
    if row is None:
        raise KeyError(f"no parked dead letter {dead_letter_id}")
    return retry_dead_letters(pool, row["projection"], stream_id=row["stream_id"])
