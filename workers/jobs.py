"""Rebuild and replay as worker jobs: request (API, CLI), run (actors), report (operator events).

The request is a `projection_job` row (projections.jobs) written with its operator event in one
transaction; a wake-up message then names only the projection. A worker claims the row under
the job lock and runs it; each worker's tick sends wake-ups for requested rows too, so a lost
message, or a CLI whose broker no worker reads (no Redis), only delays the job.
Each finished job gets a second operator event, in the transaction that marks it reported;
whoever finds a finished, unreported job (its worker, or any tick) appends it.
"""

from __future__ import annotations

from collections.abc import Callable

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from psycopg_pool import ConnectionPool

from infrastructure.db import session

from service_layer.operator_events import record_operator_action_on
from infrastructure.event_store import AppendResult, EventMetadata, EventStore
from projections import jobs
from projections.catalog import get_projector
from domain.ids import uuid7

logger = logging.getLogger(__name__)
_stores: dict[int, EventStore] = {}
# The completion event of a job, by kind and end state.
REPORTED = {("rebuild", "done"): "operator.projection_rebuilt",
            ("rebuild", "failed"): "operator.projection_rebuild_failed",
            ("replay", "done"): "operator.projection_replayed",
            ("replay", "failed"): "operator.projection_replay_failed"}


@dataclass(frozen=True)
class Requested:
    """A job as requested: the row and the position of its operator event."""

    job: jobs.ProjectionJob
    position: int


def request(store: EventStore, kind: jobs.Kind, projection: str, options: dict[str, Any], *,
            actor_id: str, actor_type: str = "user", correlation_id: str | None = None,
            session_id: str | None = None, details: dict[str, Any] | None = None) -> Requested:
    """Insert a requested job and its `operator.projection_*_requested` event in one transaction.

    Raises jobs.JobInProgress if one of this kind is already requested or running. Send the
    wake-up (`wake`) afterwards; the tick covers a lost one.
    """
    correlation_id = correlation_id or str(uuid.uuid4())
    event_id = uuid7()
    requested_by = {"actor_id": actor_id, "actor_type": actor_type, "correlation_id": correlation_id,
                    "session_id": session_id, "event_id": str(event_id)}
    metadata = EventMetadata(actor_id=actor_id, actor_type=actor_type, correlation_id=correlation_id,
                             session_id=session_id)
    with store.pool.connection() as conn, conn.transaction():
        job = jobs.open_job(conn, kind, projection, options, requested_by)
        result = record_operator_action_on(
            conn, store, f"operator.projection_{kind}_requested", f"projection:{projection}",
            {"job_id": job.id, **options, **(details or {})}, metadata, event_id=event_id)
    store.committed([result])
    return Requested(job, result.position)


def request_rebuild_after_erasure(store: EventStore, projection: str, *, actor_id: str, actor_type: str = "user",
                                  correlation_id: str | None = None) -> tuple[int | None, bool]:
    """Queue a rebuild of a projection whose source data was erased: (job id, whether it is new).

    A rebuild already requested starts after the erasure and serves as well: its id, not new.
    """
    try:
        return request(store, "rebuild", projection, {}, actor_id=actor_id, actor_type=actor_type,
                       correlation_id=correlation_id, details={"reason": "subject forgotten"}).job.id, True
    except jobs.JobInProgress as exc:
        return exc.job_id, False


def wake_requested(pool: ConnectionPool, wake: Callable[[str, str], None]) -> int:
    """The tick's part: mark crashed jobs failed, report finished ones, wake requested ones with `wake`."""
    with pool.connection() as conn:
        jobs.reap_crashed(conn)
        waiting = jobs.requested(conn)
    report_finished(store_for(pool))
    for kind, projection in waiting:
        wake(kind, projection)  # type: ignore[arg-type]
    return len(waiting)


def run_rebuild(pool: ConnectionPool, projection: str) -> int | None:
    """Claim and run the projection's requested rebuild, if any; the job id it ran.

    Another worker holding the rebuild lock is running one: nothing to do here.
    """
    from projections.rebuild import rebuild_on

    get_projector(projection)
    job = None
    with session(pool) as conn:  # the job lock is a session's: direct, past any pooler
        if not jobs.try_lock(conn, "rebuild", projection):
            return None
        try:
            job = jobs.claim(conn, "rebuild", projection)
            if job is not None:
                logger.info("rebuild job %s of %s started", job.id, projection)
                try:
                    rebuild_on(conn, projection, partitions=job.options.get("partitions"), job_id=job.id)
                except Exception:  # noqa: BLE001 - rebuild_on marked the job failed with its error
                    logger.exception("rebuild job %s of %s failed", job.id, projection)
        finally:
            jobs.unlock(conn, "rebuild", projection)
    if job is not None:
        report_finished(store_for(pool))
    return job.id if job else None


def run_replay(pool: ConnectionPool, projection: str) -> tuple[int, list[int]] | None:
    """Claim and run the projection's requested replay; the job id and the partitions moved.

    Moving the checkpoints is quick; the caller wakes the moved partitions, whose catch-up
    re-applies the events.
    """
    from projections.rebuild import replay

    projector = get_projector(projection)
    job = None
    moved: list[int] = []
    with session(pool) as conn:  # as in run_rebuild
        if not jobs.try_lock(conn, "replay", projection):
            return None
        try:
            job = jobs.claim(conn, "replay", projection)
            if job is not None:
                start = int(job.options.get("from_position", 0))
                try:
                    moved = replay(pool, projection, start)
                    events = conn.execute(
                        "SELECT count(*) AS n FROM events WHERE position > %s AND position <= safe_position()"
                        " AND stream_type = ANY(%s)", (start, list(projector.stream_types))).fetchone()["n"]
                    jobs.finish(conn, job.id, "done", events_done=events, result={"partitions": moved})
                except Exception as exc:  # noqa: BLE001 - recorded on the job
                    logger.exception("replay job %s of %s failed", job.id, projection)
                    jobs.finish(conn, job.id, "failed", error=repr(exc)[:4000])
        finally:
            jobs.unlock(conn, "replay", projection)
    if job is None:
        return None
    report_finished(store_for(pool))
    return job.id, moved


def report_finished(store: EventStore, limit: int = 50) -> int:
    """Append the completion event of each finished, unreported job; how many were appended.

    The event and the job's `reported_at` commit together; rows another session is reporting
    are skipped, and the event id is fixed per job, so a job is reported once.
    """
    results: list[AppendResult] = []
    with store.pool.connection() as conn, conn.transaction():
        rows = conn.execute(
            "SELECT * FROM projection_job WHERE state IN ('done', 'failed') AND reported_at IS NULL"
            " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED", (limit,)).fetchall()
        for row in rows:
            job = jobs.ProjectionJob(**row)
            by = job.requested_by
            metadata = EventMetadata(actor_id=by.get("actor_id"), actor_type=by.get("actor_type"),
                                     correlation_id=by.get("correlation_id"), session_id=by.get("session_id"),
                                     causation_id=by.get("event_id"))
            details = {"job_id": job.id, "state": job.state, "events_done": job.events_done,
                       "duration_seconds": job.duration_seconds, "worker": job.worker, "options": job.options,
                       "requested_at": job.requested_at.isoformat(), "error": job.error, **(job.result or {})}
            results.append(record_operator_action_on(
                conn, store, REPORTED[(job.kind, job.state)], f"projection:{job.projection}", details, metadata,
                event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"chronicle:projection_job:{job.id}:finished")))
            conn.execute("UPDATE projection_job SET reported_at = clock_timestamp() WHERE id = %s", (job.id,))
    store.committed(results)
    return len(results)


def store_for(pool: ConnectionPool) -> EventStore:
    """One event store per pool (its NOTIFY thread is shared by every report)."""
    store = _stores.get(id(pool))
    if store is None or store.pool is not pool:
        store = _stores[id(pool)] = EventStore(pool)
    return store


def wait_for(pool: ConnectionPool, job_id: int, *, poll: float = 0.2, timeout: float | None = None) -> dict[str, Any]:
    """Poll a job until it is done, failed or crashed (or `timeout` passes); its last view."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        view = jobs.job_view(pool, job_id=job_id)
        if view is None or view["state"] in ("done", "failed", "crashed"):
            return view or {}
        if deadline is not None and time.monotonic() > deadline:
            return view
        time.sleep(poll)
