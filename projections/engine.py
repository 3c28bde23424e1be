"""The engine: catch a projection's partition up with the gap-free log, batch by batch.

Each batch's rows and the checkpoint commit in one transaction, under the partition's two-int
advisory lock, so every event takes effect exactly once whatever the broker does. A failing
event is retried with backoff, then parked in `dead_letter` with every later event of its stream.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg_pool import ConnectionPool

from projections.batch import HandlerFailure, apply_events, read_events
from projections.model import Event, Projector
from projections.partitioning import lock_key, partition_of

logger = logging.getLogger(__name__)
DEFAULT_BATCH = 2000
# The highest checkpoint this process has seen per (projection, partition): a wake-up for a
# position at or below it needs no database round trip.
_seen: dict[tuple[str, int], int] = {}


@dataclass(frozen=True)
class RetryPolicy:
    """How often a failing event is tried, and the backoff between tries."""

    attempts: int = 3
    first_delay: float = 0.05
    factor: float = 4.0

    def delay(self, attempt: int) -> float:
        return self.first_delay * self.factor ** (attempt - 1)


@dataclass
class CatchUpResult:
    """What one catch-up did: events applied, parked, and the checkpoint reached."""

    projection: str
    partition: int
    processed: int = 0
    parked: int = 0
    checkpoint: int = 0
    busy: bool = False


@dataclass
class Job:
    """Where a run reads from and writes to: the live tables of one partition, or a rebuild's shadows."""

    projector: Projector
    partitions: int
    partition: int | None  # None: every partition (a rebuild)
    names: Mapping[str, str]
    shadow: bool = False
    rebuild_id: int | None = None
    started: float = field(default_factory=time.monotonic)
    done: int = 0

    def checkpoint(self, conn: psycopg.Connection) -> int:
        if self.rebuild_id is not None:
            return conn.execute("SELECT position FROM projection_rebuild WHERE id = %s",
                                (self.rebuild_id,)).fetchone()["position"]
        return conn.execute(
            "SELECT position FROM projection_checkpoint WHERE projection = %s AND partition = %s",
            (self.projector.name, self.partition)).fetchone()["position"]

    def save(self, conn: psycopg.Connection, position: int, count: int) -> None:
        """Store the checkpoint (and, for a rebuild, its progress) in the batch's transaction."""
        self.done += count
        if self.rebuild_id is None:
            conn.execute(
                "UPDATE projection_checkpoint SET position = %s, updated_at = clock_timestamp()"
                " WHERE projection = %s AND partition = %s", (position, self.projector.name, self.partition))
            return
        rate = self.done / max(time.monotonic() - self.started, 1e-6)
        # ETA from the events still to do up to the head the rebuild started at.
        conn.execute(
            "UPDATE projection_rebuild SET position = %s, done = %s, rate = %s,"
            " eta_seconds = greatest(total - %s, 0) / nullif(%s, 0), updated_at = clock_timestamp()"
            " WHERE id = %s", (position, self.done, rate, self.done, rate, self.rebuild_id))


def live_names(projector: Projector) -> dict[str, str]:
    return {t: t for t in projector.tables}


def ensure_projection(conn: psycopg.Connection, projector: Projector, partitions: int) -> int:
    """Create the projection's bookkeeping rows if missing; return its partition count."""
    conn.execute("INSERT INTO projection (name, partitions) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                 (projector.name, partitions))
    stored = conn.execute("SELECT partitions FROM projection WHERE name = %s",
                          (projector.name,)).fetchone()["partitions"]
    conn.execute(
        "INSERT INTO projection_checkpoint (projection, partition)"
        " SELECT %s, g FROM generate_series(0, %s - 1) g ON CONFLICT DO NOTHING",
        (projector.name, stored))
    return stored


def _held_back(conn: psycopg.Connection, job: Job, events: Sequence[Event]) -> tuple[set[str], set[int]]:
    """Streams parked in this job's dead letters, and positions operators skipped."""
    rows = conn.execute(
        "SELECT stream_id, position, status FROM dead_letter WHERE projection = %s"
        " AND stream_id = ANY(%s) AND ((status = 'parked' AND shadow = %s) OR status = 'skipped')",
        (job.projector.name, list({e.stream_id for e in events}), job.shadow)).fetchall()
    return {r["stream_id"] for r in rows if r["status"] == "parked"}, {
        r["position"] for r in rows if r["status"] == "skipped"}


def park(conn: psycopg.Connection, job: Job, event: Event, error: str, attempts: int,
         first_failure: float | None = None) -> None:
    """Put an event into `dead_letter` (its stream then waits there behind it)."""
    conn.execute(
        "INSERT INTO dead_letter (projection, partition, shadow, position, event_id, stream_id, type,"
        " error, attempts, first_failure) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s,"
        " coalesce(to_timestamp(%s), clock_timestamp())) ON CONFLICT DO NOTHING",
        (job.projector.name, partition_of(event.stream_id, job.partitions), job.shadow, event.position,
         event.event_id, event.stream_id, event.type, error[:4000], attempts, first_failure))


def apply_batch(conn: psycopg.Connection, job: Job, events: Sequence[Event]) -> int:
    """Apply events, sending those of parked streams to `dead_letter`; return how many parked."""
    parked, skipped = _held_back(conn, job, events)
    live = [e for e in events if e.position not in skipped and e.stream_id not in parked]
    apply_events(conn, job.projector, live, job.names)
    followers = [e for e in events if e.stream_id in parked and e.position not in skipped]
    for e in followers:
        park(conn, job, e, "parked behind an earlier event of its stream", 0)
    return len(followers)


def _event_error(exc: BaseException) -> bool:
    """Errors caused by the event (handler bug, bad data), not by the connection."""
    if isinstance(exc, HandlerFailure):
        return True
    return isinstance(exc, psycopg.DatabaseError) and not isinstance(exc, psycopg.OperationalError)


def _retry_or_park(conn: psycopg.Connection, job: Job, event: Event, error: BaseException,
                   retry: RetryPolicy) -> int:
    """Try a failing event again with backoff; park it if it keeps failing. Returns events parked."""
    first = time.time()
    attempts = 1
    while attempts < retry.attempts:
        time.sleep(retry.delay(attempts))
        try:
            with conn.transaction():
                parked = apply_batch(conn, job, [event])
                job.save(conn, event.position, 1)
            return parked
        except Exception as exc:  # noqa: BLE001
            if not _event_error(exc):
                raise
            attempts, error = attempts + 1, exc
    logger.error("projection %s parks stream %s at position %s: %s",
                 job.projector.name, event.stream_id, event.position, error)
    with conn.transaction():
        park(conn, job, event, f"{type(error).__name__}: {error}", attempts, first)
        job.save(conn, event.position, 1)
    return 1


def run(conn: psycopg.Connection, job: Job, *, batch_size: int = DEFAULT_BATCH,
        retry: RetryPolicy = RetryPolicy(), upto: int | None = None) -> tuple[int, int, int]:
    """Apply batches until the job reaches the safe position (or `upto`).

    Returns (events read, events parked, checkpoint). The caller holds the job's lock.
    """
    position = job.checkpoint(conn)
    processed = parked = 0
    limit = batch_size
    while True:
        safe = conn.execute("SELECT safe_position() AS p").fetchone()["p"] or 0
        if upto is not None:
            safe = min(safe, upto)
        if safe <= position:
            return processed, parked, position
        events = read_events(conn, job.projector.stream_types, position, safe, limit,
                             job.partition, job.partitions)
        # A short batch means nothing else of ours lies at or below `safe`.
        new_position = events[-1].position if len(events) == limit else safe
        try:
            with conn.transaction():
                parked += apply_batch(conn, job, events)
                job.save(conn, new_position, len(events))
            position, processed = new_position, processed + len(events)
            limit = min(batch_size, limit * 2)
        except Exception as exc:  # noqa: BLE001
            if not _event_error(exc):
                raise
            if isinstance(exc, HandlerFailure) or limit == 1:
                bad = exc.event if isinstance(exc, HandlerFailure) else events[0]
                before = [e for e in events if e.position < bad.position]
                if before:
                    with conn.transaction():
                        parked += apply_batch(conn, job, before)
                        job.save(conn, before[-1].position, len(before))
                parked += _retry_or_park(conn, job, bad, exc, retry)
                position, processed = bad.position, processed + len(before) + 1
            else:
                limit = max(1, len(events) // 2)  # a database error: narrow down to its event


def catch_up(pool: ConnectionPool, projector: Projector, partition: int, *, partitions: int = 4,
             target: int | None = None, batch_size: int = DEFAULT_BATCH,
             retry: RetryPolicy = RetryPolicy()) -> CatchUpResult:
    """Bring one partition of a projection up to the log's safe position.

    Returns at once (busy) if another worker holds the partition: that worker re-checks for
    new events after releasing its lock, so the wake-up is not lost.
    """
    result = CatchUpResult(projector.name, partition)
    seen = _seen.get((projector.name, partition), -1)
    if target is not None and seen >= target:
        result.checkpoint = seen
        return result
    key = lock_key(projector.name, partition)
    with pool.connection() as conn:
        stored = ensure_projection(conn, projector, partitions)
        if partition >= stored:
            return result
        job = Job(projector, stored, partition, live_names(projector))
        for _ in range(5):
            if not conn.execute("SELECT pg_try_advisory_lock(%s, %s) AS ok", key).fetchone()["ok"]:
                result.busy = True
                break
            try:
                n, p, result.checkpoint = run(conn, job, batch_size=batch_size, retry=retry)
                result.processed += n
                result.parked += p
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", key)
            _seen[(projector.name, partition)] = result.checkpoint
            # Events that arrived while we held the lock, whose wake-ups found it taken.
            more = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM events WHERE position > %s AND position <= safe_position()"
                " AND stream_type = ANY(%s) AND (%s = 1 OR projection_partition(stream_id, %s) = %s)) AS more",
                (result.checkpoint, list(projector.stream_types), stored, stored, partition)).fetchone()["more"]
            if not more:
                break
    return result


def forget_checkpoints() -> None:
    """Drop this process's cached checkpoints (after a replay or rebuild moved them)."""
    _seen.clear()
