"""The engine: catch a projection's partition up with the gap-free log, batch by batch.

Each batch's rows and the checkpoint commit in one transaction that takes the partitions'
two-int advisory locks at its start (transaction-level, so they hold behind a transaction-mode
pooler too) and reads the checkpoints under them, so every event takes effect exactly once
whatever the broker does. A failing event is retried with backoff, then parked in `dead_letter`
with every later event of its stream.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg_pool import ConnectionPool

from infrastructure.logs import batch_context
from infrastructure.partition_reads import NO_POSITION, has_events, read_batch
from projections.batch import apply_events, event_error, narrower
from projections.model import Event, Projector
from projections.job import Job, PartitionsBusy, PartitionsChanged
from infrastructure.config import get_settings

logger = logging.getLogger(__name__)
# Bigger batches fold more of a stream's events into one row write: on a mixed log, 20,000
# events write about 0.43 rows per event per state table, 2,000 about 0.83.
DEFAULT_BATCH = 20_000
# Live batches commit without waiting for their WAL flush. Rows and checkpoint still commit
# together, and a server crash loses whole transactions only (never part of one), so the lost
# tail is applied again from the durable log: no loss, no double effect. Only the checkpoint may
# step back after a crash. CHRONICLE_PROJECTION_SYNCHRONOUS_COMMIT=on waits for the flush.
# The highest checkpoint this process has seen per (projection, partition): a wake-up for a
# position at or below it needs no database round trip.
_seen: dict[tuple[str, int], int] = {}
# Each projection's partition count as last read here; checked again under the locks every run.
_counts: dict[str, int] = {}


# The batches now running in this process, and whether the cyclic collector ran before the first.
# `allowed`: the process is a dedicated worker (keep_collector_on() says it also serves requests).
_paused = {"batches": 0, "collector_was_on": False, "allowed": True}
_pause_lock = threading.Lock()


def keep_collector_on() -> None:
    """This process also serves the API (`chronicle up`): batches leave the cyclic collector on.

    The pause is process-wide, so a catch-up would hold collections off in the request threads
    too, for as long as it runs; their garbage (cycles included) would pile up behind it.
    """
    _paused["allowed"] = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """Hold Python's cyclic garbage collector off while a batch is read, applied and written.

    A batch allocates a few objects per event while the run keeps up to MAX_KNOWN_STREAMS
    stream states alive, and every collection those allocations set off walked all of them: the
    catch-up slowed as it kept more states (at 1M events half its rate at 100k). Reference
    counting still frees the batch's garbage at once. A batch that allocated past the young
    generation's threshold (one that did work) ends by moving what it left alive out of the
    collector's walks (`_freeze_survivors`); an idle poll allocates too little to need it.
    Batches of several threads share the pause; in a process that also serves requests there
    is none (keep_collector_on).
    """
    if not _paused["allowed"]:
        yield
        return
    with _pause_lock:
        _paused["batches"] += 1
        if _paused["batches"] == 1:
            _paused["collector_was_on"] = gc.isenabled()
            gc.disable()
    try:
        yield
    finally:
        with _pause_lock:
            _paused["batches"] -= 1
            if _paused["batches"] == 0 and _paused["collector_was_on"]:
                gc.enable()
        if gc.get_count()[0] > gc.get_threshold()[0]:  # the collector would have run by now
            _freeze_survivors()


# Below this many frozen objects no full collection runs; above it, one runs each time the
# frozen set has doubled since the last one left it.
FULL_COLLECTION_FLOOR = 1_000_000
# `after_full`: the frozen objects the last full collection left; `estimate`: that plus the young
# objects each freeze has moved in since (an upper bound: deaths are not all subtracted).
_frozen = {"after_full": 0, "estimate": 0}


def _freeze_survivors() -> None:
    """Move the objects a batch left alive into the collector's permanent generation; run a
    full collection once that generation has doubled since the last one.

    A young collection after each batch walked everything the batch left alive (the rows of
    the streams it wrote, mostly) and, through their references, the large heap of states the
    run keeps: at 1M events 80 ms a batch, a tenth of the catch-up's Python time, against 3%
    at 100k. Frozen objects are still freed by reference counting when they die; only cyclic
    garbage waits in the permanent generation, for the full collection, whose cost the
    doubling spreads over the batches that grew it. The frozen set is counted only when the
    estimate says it may have doubled: counting walks it (27 ms for 3M objects, at 1M events a
    tenth of a batch's Python time when it ran after every batch).
    """
    # Objects allocated and not freed since the last freeze (or collection); freezing zeroes it.
    _frozen["estimate"] += gc.get_count()[0]
    gc.freeze()
    limit = max(2 * _frozen["after_full"], FULL_COLLECTION_FLOOR)
    if _frozen["estimate"] <= limit:
        return
    _frozen["estimate"] = gc.get_freeze_count()
    if _frozen["estimate"] > limit:
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        _frozen["after_full"] = _frozen["estimate"] = gc.get_freeze_count()


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


def apply_batch(conn: psycopg.Connection, job: Job, events: Sequence[Event]) -> int:
    """Apply events, sending those of parked streams to `dead_letter`; return how many parked."""
    parked, skipped = job.held_back(conn, events) if job.dead_letters else (set(), set())
    live = [e for e in events if e.position not in skipped and e.stream_id not in parked]
    job.applied = apply_events(conn, job.projector, live, job.names, job.known)
    followers = [e for e in events if e.stream_id in parked and e.position not in skipped]
    for e in followers:
        job.park(conn, e, "parked behind an earlier event of its stream", 0)
    return len(followers)


def _retry_or_park(conn: psycopg.Connection, job: Job, event: Event, error: BaseException,
                   retry: RetryPolicy) -> int:
    """Try a failing event again with backoff; park it if it keeps failing. Returns events parked.

    Either way the event's transaction saved the checkpoint at its position; the caller then
    moves the job on (`committed`).
    """
    first = time.time()
    attempts = 1
    while attempts < retry.attempts:
        time.sleep(retry.delay(attempts))
        try:
            with collector_paused(), conn.transaction():
                if job.locking and not job.relocked_for(conn, event):
                    return 0  # another worker holds its partition, or applied it meanwhile
                parked = apply_batch(conn, job, [event])
                job.save(conn, event.position, 1)
            return parked
        except Exception as exc:  # noqa: BLE001
            job.forget()
            if not event_error(exc):
                raise
            attempts, error = attempts + 1, exc
    logger.error("projection %s parks stream %s at position %s: %s",
                 job.projector.name, event.stream_id, event.position, error)
    with conn.transaction():
        if job.locking and not job.relocked_for(conn, event):
            return 0  # another worker holds its partition, or applied it meanwhile
        job.park(conn, event, f"{type(error).__name__}: {error}", attempts, first)
        job.save(conn, event.position, 1)
    return 1


def _log_batch(job: Job, events: Sequence[Event], position: int) -> None:
    """Log a committed batch with its events' correlation and causation ids.

    A rebuild's (or a verify's) batches log at debug: they are many, and their events were projected before.
    """
    level = logging.DEBUG if job.held is None else logging.INFO
    if events and logger.isEnabledFor(level):
        context = batch_context(job.projector.name, job.held, (e.metadata or {} for e in events))
        logger.log(level, "projected %d events of %s up to position %d", len(events), job.projector.name,
                   position, extra={**context, "events": len(events), "position": position})


def run(conn: psycopg.Connection, job: Job, *, batch_size: int = DEFAULT_BATCH,
        retry: RetryPolicy = RetryPolicy(), upto: int | None = None) -> tuple[int, int, int]:
    """Apply batches until the job reaches the safe position (or `upto`).

    A batch that fails for its events' sake (in a handler, a write or the commit) is read again
    in smaller pieces down to single events; an event that still fails is retried with backoff,
    then parked with the rest of its stream. Every other event is applied, and the checkpoints
    move only with what committed. Returns (events read, events parked, checkpoint). A locking
    job takes its partitions' locks in each batch's transaction (PartitionsBusy: none was free);
    any other job runs under a lock its caller holds.
    """
    position, safe = (0, None) if job.locking else job.checkpoint(conn)
    processed = parked = 0
    limit = batch_size
    while True:
        events: list[Event] | None = None
        try:
            # One pipeline: locks and checkpoints, the batch, then writes, checkpoint and COMMIT.
            with collector_paused(), conn.pipeline(), conn.transaction():
                if job.locking:
                    position, safe = job.lock(conn)
                batch = _next_batch(conn, job, position, safe, upto, limit)
                if batch is None:
                    return processed, parked, position
                events, reach = batch
                # A short batch means nothing else of ours lies at or below the safe position.
                full = len(events) == limit
                new_position = events[-1].position if full else reach
                if job.rebuild_id is None and not get_settings().chronicle_projection_synchronous_commit:
                    conn.execute("SET LOCAL synchronous_commit = off")
                parked_now = apply_batch(conn, job, events)
                job.save(conn, new_position, len(events))
        except PartitionsBusy:
            if not processed:
                raise
            return processed, parked, position  # the workers that hold them go on from here
        except Exception as exc:  # noqa: BLE001
            job.forget()
            if events is None or not event_error(exc):
                raise
            if len(events) > 1:
                limit = narrower(events, exc)  # read the batch again in a smaller piece
                continue
            bad = events[0]
            parked += _retry_or_park(conn, job, bad, exc, retry)
            job.committed(bad.position, 1)
            position, processed = bad.position, processed + 1
            continue
        job.committed(new_position, len(events))
        position, processed, parked = new_position, processed + len(events), parked + parked_now
        safe = None
        _log_batch(job, events, new_position)
        limit = min(batch_size, limit * 2)
        if not full:
            return processed, parked, position  # at the safe position: the caller re-checks


def _next_batch(conn: psycopg.Connection, job: Job, position: int, safe: int | None, upto: int | None,
                limit: int) -> tuple[list[Event], int] | None:
    """The events after `position` up to the safe position (or `upto`), and that bound; None: nothing is left.

    A batch shorter than `limit` brings the job to the bound.
    """
    if safe is None:
        safe = conn.execute("SELECT safe_position() AS p").fetchone()["p"] or 0
    if upto is not None:
        safe = min(safe, upto)
    if safe <= position:
        return None
    return read_batch(conn, position, safe, job.projector.stream_types, limit, job.floors(safe)), safe


def catch_up(pool: ConnectionPool, projector: Projector, partition: int, *, partitions: int = 4,
             target: int | None = None, batch_size: int = DEFAULT_BATCH, retry: RetryPolicy = RetryPolicy(),
             assumed: int | None = None) -> CatchUpResult:
    """Bring one partition of a projection up to the log's safe position.

    `partitions` only seeds a projection's first count; the stored count rules after that. A wake-up
    computed with another count (`assumed`) catches up every partition, so it cannot go astray.
    Returns at once (busy) if another worker holds the partition: that worker re-checks for
    new events after releasing its lock, so the wake-up is not lost.
    """
    seen = _seen.get((projector.name, partition), -1)
    if target is not None and seen >= target and assumed in (None, _counts.get(projector.name)):
        return CatchUpResult(projector.name, partition, checkpoint=seen)
    return _catch_up(pool, projector, [partition], partitions, batch_size, retry, assumed)


def catch_up_all(pool: ConnectionPool, projector: Projector, *, partitions: int = 4,
                 batch_size: int = DEFAULT_BATCH, retry: RetryPolicy = RetryPolicy()) -> CatchUpResult:
    """Bring every partition of a projection that no other worker holds up to the safe position.

    One pass over the log serves them all (the tick's catch-up, a worker starting on a backlog).
    `partition` in the result is -1; busy means every partition was held elsewhere.
    """
    return _catch_up(pool, projector, None, partitions, batch_size, retry)


def _catch_up(pool: ConnectionPool, projector: Projector, wanted: Sequence[int] | None, partitions: int,
              batch_size: int, retry: RetryPolicy, assumed: int | None = None) -> CatchUpResult:
    """Apply what we can lock of `wanted` (None: all partitions) up to safe, then re-check.

    The locks are transaction-level: each batch takes them, and its commit releases them.
    """
    result = CatchUpResult(projector.name, wanted[0] if wanted is not None and len(wanted) == 1 else -1)
    name = projector.name
    with pool.connection() as conn:
        for _ in range(5):
            stored = _counts.get(name) or ensure_projection(conn, projector, partitions)
            _counts[name] = stored
            everything = wanted is None or (assumed is not None and assumed != stored)
            candidates = tuple(k for k in (range(stored) if everything else wanted) if k < stored)
            if not candidates:
                return result
            job = Job(projector, stored, candidates, live_names(projector), locking=True)
            try:
                n, p, result.checkpoint = run(conn, job, batch_size=batch_size, retry=retry)
                result.processed += n
                result.parked += p
            except PartitionsBusy:
                result.busy = True
                break
            except PartitionsChanged:
                _counts.pop(name, None)  # read the new count, then lock again
                forget_checkpoints()
                continue
            for k, position in job.positions.items():
                _seen[(name, k)] = position
            # Look for events that arrived while our last batch held the locks, whose wake-ups
            # found them taken (a statement of its own: its snapshot follows that commit).
            floors = [job.positions.get(k, NO_POSITION) for k in range(stored)]
            more = has_events(conn, min(job.positions.values()), projector.stream_types, floors)
            if not more:
                break
    return result


def forget_checkpoints() -> None:
    """Drop this process's cached checkpoints and counts (after a replay or rebuild moved them)."""
    _seen.clear()
    _counts.clear()
