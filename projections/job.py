"""A projection run's job: which partitions it holds, its checkpoints, and its stream states.

A live job takes its partitions' transaction-level advisory locks at the start of each batch's
transaction and reads their checkpoints under them (`Job.lock`), so the locks hold behind a
transaction-mode pooler too; a rebuild's job writes to shadow tables under the rebuild lock.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice

import psycopg

from projections.model import Event, Projector, StreamRows
from projections.partitioning import partition_of, projection_key

# A run keeps the states it committed, so later batches need not load them again: the most
# recently used ones, up to this many.
MAX_KNOWN_STREAMS = 50_000


class PartitionsChanged(RuntimeError):
    """A rebuild changed the projection's partition count since this worker read it."""


class PartitionsBusy(RuntimeError):
    """Every partition the run wanted is locked by another worker's transaction."""


# The held partitions' checkpoints, the stored partition count, whether any dead letter waits,
# and the log's safe position: one round trip.
_CHECKPOINT_COLUMNS = (
    "SELECT c.partition, c.position, p.partitions, EXISTS (SELECT 1 FROM dead_letter d"
    "   WHERE d.projection = p.name AND d.status IN ('parked', 'skipped')) AS dead_letters,"
    " coalesce(safe_position(), 0) AS safe FROM projection p JOIN projection_checkpoint c ON c.projection = p.name"
)
CHECKPOINTS = _CHECKPOINT_COLUMNS + " WHERE p.name = %s AND c.partition = ANY(%s)"
# Try each wanted partition's transaction-level lock; `locked` lists those taken (empty: none was free).
LOCK_PARTITIONS = (
    "SELECT coalesce(array_agg(k ORDER BY k), '{}') AS locked"
    " FROM unnest(%(wanted)s::int[]) k WHERE pg_try_advisory_xact_lock(%(key)s, k)"
)


@dataclass
class Job:
    """Where a run reads from and writes to: some partitions' live tables, or a rebuild's shadows."""

    projector: Projector
    partitions: int
    held: tuple[int, ...] | None  # the partitions whose locks we hold; None: a rebuild (all of them)
    names: Mapping[str, str]
    locking: bool = False  # True: each batch's transaction takes the `held` partitions' locks first
    shadow: bool = False
    rebuild_id: int | None = None
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    positions: dict[int, int] = field(default_factory=dict)  # each held partition's checkpoint
    dead_letters: bool = True  # False: the projection has no parked or skipped event to hold back
    # Stream states as this run's committed batches left them (we hold the locks: nobody else
    # writes these rows); `applied` is the open batch's, kept once it commits.
    known: dict[str, StreamRows] = field(default_factory=dict)
    applied: dict[str, StreamRows] = field(default_factory=dict)

    def committed(self, position: int, count: int) -> None:
        """The open batch committed up to `position`: move the checkpoints and keep its stream states.

        Only here, after the commit, does the run's idea of its checkpoints move: a batch that
        failed anywhere (handler, write or commit) leaves them where the database has them.
        """
        self.done += count
        if self.rebuild_id is None:
            self.positions = {k: max(p, position) for k, p in self.positions.items()}
        # The batch's streams move to the back; past the bound, the least recently used go.
        # (Dropping them all at the bound made the run load ever more rows as the log held more
        # streams: about a fifth of what a 100k-event slice of catch-up took more at 1M events.)
        for stream_id in self.applied:
            self.known.pop(stream_id, None)
        self.known.update(self.applied)
        for stream_id in list(islice(self.known, max(len(self.known) - MAX_KNOWN_STREAMS, 0))):
            del self.known[stream_id]
        self.applied = {}

    def forget(self) -> None:
        """A batch failed: states changed in memory may not match the rows; load them again."""
        self.known.clear()
        self.applied = {}

    def checkpoint(self, conn: psycopg.Connection) -> tuple[int, int | None]:
        """Load the checkpoints; return the lowest (where the next batch starts) and the safe position.

        Read under the partition locks: raises PartitionsChanged if a rebuild changed the count.
        """
        if self.rebuild_id is not None:
            return conn.execute("SELECT position FROM projection_rebuild WHERE id = %s",
                                (self.rebuild_id,)).fetchone()["position"], None
        rows = conn.execute(CHECKPOINTS, (self.projector.name, list(self.held or ()))).fetchall()
        if len(rows) != len(self.held or ()) or any(r["partitions"] != self.partitions for r in rows):
            raise PartitionsChanged(self.projector.name)
        self.positions = {r["partition"]: r["position"] for r in rows}
        self.dead_letters = rows[0]["dead_letters"]
        return min(self.positions.values()), rows[0]["safe"]

    def lock(self, conn: psycopg.Connection) -> tuple[int, int | None]:
        """In the open transaction, lock what is free of the held partitions and load their checkpoints.

        The run goes on with the partitions it got (PartitionsBusy: none). If another worker moved
        a checkpoint since this run's last batch, the stream states kept in memory are dropped.
        """
        locked = tuple(conn.execute(LOCK_PARTITIONS, {"wanted": list(self.held),
                                                      "key": projection_key(self.projector.name)}).fetchone()["locked"])
        if not locked:
            raise PartitionsBusy(self.projector.name)
        before = {k: p for k, p in self.positions.items() if k in locked}
        self.held = locked
        # The checkpoints in a statement of their own. Under READ COMMITTED a statement sees what
        # committed before it began, and the worker that held a lock commits its batch just before
        # the lock goes: read in the locking statement, a checkpoint could predate that commit, and
        # its batch would be applied a second time.
        position, safe = self.checkpoint(conn)
        if before and before != self.positions:
            self.forget()
        return position, safe

    def relocked_for(self, conn: psycopg.Connection, event: Event) -> bool:
        """Lock again (in the open transaction); whether this run still owns the event's partition."""
        self.lock(conn)
        k = partition_of(event.stream_id, self.partitions)
        return k in self.held and self.positions[k] < event.position

    def floors(self, upto: int) -> list[int] | None:
        """Per partition, the position at or below which a read skips its events; None: skip none."""
        if self.held is None or (len(self.positions) == self.partitions
                                 and len(set(self.positions.values())) == 1):
            return None
        return [self.positions.get(k, upto) for k in range(self.partitions)]

    def save(self, conn: psycopg.Connection, position: int, count: int) -> None:
        """Store the checkpoints (and, for a rebuild, its progress) in the batch's transaction.

        Nothing moves in memory until the transaction commits (`committed`).
        """
        if self.rebuild_id is None:
            # A partition already past `position` (its events were skipped) keeps its checkpoint.
            conn.execute(
                "UPDATE projection_checkpoint SET position = greatest(position, %s), updated_at = clock_timestamp()"
                " WHERE projection = %s AND partition = ANY(%s)", (position, self.projector.name, list(self.held)))
            return
        done = self.done + count
        rate = done / max(time.monotonic() - self.started, 1e-6)
        # ETA from the events still to do up to the head the rebuild started at.
        conn.execute(
            "UPDATE projection_rebuild SET position = %s, done = %s, rate = %s,"
            " eta_seconds = greatest(total - %s, 0) / nullif(%s, 0), updated_at = clock_timestamp()"
            " WHERE id = %s", (position, done, rate, done, rate, self.rebuild_id))

    def held_back(self, conn: psycopg.Connection, events: Sequence[Event]) -> tuple[set[str], set[int]]:
        """Streams of these events parked in this job's dead letters, and positions operators skipped."""
        rows = conn.execute(
            "SELECT stream_id, position, status FROM dead_letter WHERE projection = %s"
            " AND stream_id = ANY(%s) AND ((status = 'parked' AND shadow = %s) OR status = 'skipped')",
            (self.projector.name, list({e.stream_id for e in events}), self.shadow)).fetchall()
        return {r["stream_id"] for r in rows if r["status"] == "parked"}, {
            r["position"] for r in rows if r["status"] == "skipped"}

    def park(self, conn: psycopg.Connection, event: Event, error: str, attempts: int,
             first_failure: float | None = None) -> None:
        """Put an event into `dead_letter` (its stream then waits there behind it)."""
        self.dead_letters = True
        conn.execute(
            "INSERT INTO dead_letter (projection, partition, shadow, position, event_id, stream_id, type,"
            " error, attempts, first_failure) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " coalesce(to_timestamp(%s), clock_timestamp())) ON CONFLICT DO NOTHING",
            (self.projector.name, partition_of(event.stream_id, self.partitions), self.shadow, event.position,
             event.event_id, event.stream_id, event.type, error[:4000], attempts, first_failure))
