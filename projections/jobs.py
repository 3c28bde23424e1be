"""Rebuild and replay jobs: a `projection_job` row holds the request; a worker claims and runs it.

The API and the CLI only insert a 'requested' row (and send a wake-up); a worker claims the
row while holding the projection's job lock (the rebuild lock, or the replay lock), so only one
runs it, and marks it done or failed. A 'running' row whose lock no session holds belongs to a
worker that died: it reads as 'crashed' and is marked failed by the next reaper (the tick, a new
request, or the next claim). The rebuild's own shadow tables are dropped by the next rebuild.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg_pool import ConnectionPool

from projections.catalog import get_projector
from projections.partitioning import REBUILD_LOCK_PARTITION, REPLAY_LOCK_PARTITION, lock_key
from projections.status import lock_held

Kind = Literal["rebuild", "replay"]
KINDS: tuple[Kind, ...] = ("rebuild", "replay")
JOB_LOCK = {"rebuild": REBUILD_LOCK_PARTITION, "replay": REPLAY_LOCK_PARTITION}
CRASHED = "crashed: the worker running it ended before it finished"


class JobInProgress(RuntimeError):
    """A job of this kind is already requested or running for the projection."""

    def __init__(self, kind: str, projection: str, job_id: int | None) -> None:
        super().__init__(f"a {kind} of projection {projection!r} is already requested or running"
                         + (f" (job {job_id})" if job_id else ""))
        self.kind, self.projection, self.job_id = kind, projection, job_id


@dataclass(frozen=True)
class ProjectionJob:
    """One row of `projection_job`."""

    id: int
    kind: str
    projection: str
    options: dict[str, Any]
    state: str  # requested | running | done | failed (and "crashed" as read by job_view)
    requested_by: dict[str, Any]
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    worker: str | None
    rebuild_id: int | None
    events_done: int | None
    result: dict[str, Any] | None
    error: str | None
    reported_at: datetime | None

    @property
    def duration_seconds(self) -> float | None:
        """From the claim to the end, if both happened."""
        if self.started_at and self.finished_at:
            return round((self.finished_at - self.started_at).total_seconds(), 3)
        return None


def open_job(conn: psycopg.Connection, kind: Kind, projection: str, options: dict[str, Any],
             requested_by: dict[str, Any]) -> ProjectionJob:
    """Insert a requested job (in the caller's transaction); JobInProgress if one is open.

    A crashed job of the same kind is marked failed first, so a new request may follow a crash.
    """
    get_projector(projection)
    reap_crashed(conn, projection, kind)
    if kind == "rebuild" and lock_held(conn, projection, REBUILD_LOCK_PARTITION):
        raise JobInProgress(kind, projection, None)  # a rebuild run by hand (projections.rebuild)
    try:
        with conn.transaction():  # a savepoint: the unique index refuses a second open job
            row = conn.execute(
                "INSERT INTO projection_job (kind, projection, options, requested_by) VALUES (%s, %s, %s, %s)"
                " RETURNING *", (kind, projection, json.dumps(options), json.dumps(requested_by))).fetchone()
    except psycopg.errors.UniqueViolation:
        raise JobInProgress(kind, projection, _open_id(conn, kind, projection)) from None
    return ProjectionJob(**row)


def _open_id(conn: psycopg.Connection, kind: str, projection: str) -> int | None:
    row = conn.execute("SELECT id FROM projection_job WHERE projection = %s AND kind = %s"
                       " AND state IN ('requested', 'running')", (projection, kind)).fetchone()
    return row["id"] if row else None


def try_lock(conn: psycopg.Connection, kind: Kind, projection: str) -> bool:
    """Take the projection's lock for this kind of job (session level) if it is free."""
    return conn.execute("SELECT pg_try_advisory_lock(%s, %s) AS ok",
                        lock_key(projection, JOB_LOCK[kind])).fetchone()["ok"]


def unlock(conn: psycopg.Connection, kind: Kind, projection: str) -> None:
    """Release what try_lock took."""
    conn.execute("SELECT pg_advisory_unlock(%s, %s)", lock_key(projection, JOB_LOCK[kind]))


def claim(conn: psycopg.Connection, kind: Kind, projection: str) -> ProjectionJob | None:
    """Mark the oldest requested job running, on a connection holding the job lock; None if none.

    Running jobs of this kind left by a dead worker are marked failed first (we hold the lock,
    so none of them is alive).
    """
    with conn.transaction():
        _fail_running(conn, projection, kind)
        row = conn.execute(
            "UPDATE projection_job SET state = 'running', started_at = clock_timestamp(), worker = %s"
            " WHERE id = (SELECT id FROM projection_job WHERE projection = %s AND kind = %s"
            "             AND state = 'requested' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)"
            " RETURNING *", (f"{socket.gethostname()}:{os.getpid()}", projection, kind)).fetchone()
    return ProjectionJob(**row) if row else None


def finish(conn: psycopg.Connection, job_id: int, state: Literal["done", "failed"], *,
           events_done: int | None = None, result: dict[str, Any] | None = None, error: str | None = None) -> None:
    """Mark a running job done or failed."""
    conn.execute("UPDATE projection_job SET state = %s, finished_at = clock_timestamp(), events_done = %s,"
                 " result = %s, error = %s WHERE id = %s AND state = 'running'",
                 (state, events_done, json.dumps(result) if result is not None else None, error, job_id))


def _fail_running(conn: psycopg.Connection, projection: str, kind: str, ids: list[int] | None = None) -> list[int]:
    """Mark running jobs failed as crashed (only `ids`, if given), and the progress rows of crashed rebuilds.

    A job a worker marks running after the caller saw its lock free is not among `ids`.
    """
    rows = conn.execute(
        "UPDATE projection_job SET state = 'failed', error = %s, finished_at = clock_timestamp()"
        " WHERE projection = %s AND kind = %s AND state = 'running' AND (%s::bigint[] IS NULL OR id = ANY(%s))"
        " RETURNING id, rebuild_id", (CRASHED, projection, kind, ids, ids)).fetchall()
    rebuilds = [r["rebuild_id"] for r in rows if r["rebuild_id"] is not None]
    if rebuilds:
        # Its shadow tables stay until the next rebuild drops them; reads never used them.
        conn.execute("UPDATE projection_rebuild SET state = 'failed', finished_at = clock_timestamp(),"
                     " error = %s WHERE id = ANY(%s) AND state = 'running'", (CRASHED, rebuilds))
    return [r["id"] for r in rows]


def reap_crashed(conn: psycopg.Connection, projection: str | None = None, kind: str | None = None) -> list[int]:
    """Mark failed the running jobs whose worker is gone (no session holds their lock); their ids.

    A live worker takes the lock before it marks a job running and releases it after the job
    ends, so a running job with a free lock can only be a dead worker's.
    """
    running = conn.execute(
        "SELECT projection, kind, array_agg(id) AS ids FROM projection_job WHERE state = 'running'"
        " AND (%s::text IS NULL OR projection = %s) AND (%s::text IS NULL OR kind = %s) GROUP BY 1, 2",
        (projection, projection, kind, kind)).fetchall()
    reaped: list[int] = []
    for r in running:
        if not lock_held(conn, r["projection"], JOB_LOCK[r["kind"]]):
            with conn.transaction():
                reaped += _fail_running(conn, r["projection"], r["kind"], r["ids"])
    return reaped


def requested(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """(kind, projection) of every requested job, oldest first (for the tick's wake-ups)."""
    return [(r["kind"], r["projection"]) for r in conn.execute(
        "SELECT kind, projection FROM projection_job WHERE state = 'requested' ORDER BY id").fetchall()]


def get_job(conn: psycopg.Connection, job_id: int) -> ProjectionJob | None:
    """One job by id."""
    row = conn.execute("SELECT * FROM projection_job WHERE id = %s", (job_id,)).fetchone()
    return ProjectionJob(**row) if row else None


def job_view(pool: ConnectionPool, *, job_id: int | None = None, projection: str | None = None,
             kind: Kind = "rebuild") -> dict[str, Any] | None:
    """A job (by id, or the projection's latest of `kind`) with its rebuild's progress, as plain data.

    `state` is "crashed" for a running job whose worker is gone. Without any job, the latest
    rebuild run by hand (projections.rebuild) is shown, so GET .../rebuild shows every rebuild.
    """
    with pool.connection() as conn:
        seen = _job_and_progress(conn, job_id, projection, kind)
        while seen is not None:
            job, progress, name = seen
            if (job.state if job else progress["state"]) != "running" or lock_held(
                    conn, name, JOB_LOCK[job.kind if job else "rebuild"]):
                return _view(job, progress, False)
            # The lock is free: a worker gone, or one that ended the job (marked first) just now.
            again = _job_and_progress(conn, job_id, projection, kind)
            if again is not None and _identity(again) == _identity(seen) and \
                    (again[0].state if again[0] else again[1]["state"]) == "running":
                return _view(again[0], again[1], True)
            seen = again
    return None


def _job_and_progress(conn: psycopg.Connection, job_id: int | None, projection: str | None,
                      kind: Kind) -> tuple[ProjectionJob | None, dict[str, Any] | None, str] | None:
    """job_view's rows: the job, its rebuild's progress (or a later rebuild run by hand), the projection."""
    if job_id is not None:
        job = get_job(conn, job_id)
    else:
        row = conn.execute("SELECT * FROM projection_job WHERE projection = %s AND kind = %s"
                           " ORDER BY id DESC LIMIT 1", (projection, kind)).fetchone()
        job = ProjectionJob(**row) if row else None
    name = job.projection if job else projection
    progress = None
    if job is not None and job.rebuild_id is not None:
        progress = conn.execute("SELECT * FROM projection_rebuild WHERE id = %s", (job.rebuild_id,)).fetchone()
    if job_id is None and kind == "rebuild" and name is not None:
        latest = conn.execute("SELECT * FROM projection_rebuild WHERE projection = %s ORDER BY id DESC LIMIT 1",
                              (name,)).fetchone()
        if latest is not None and (job is None or (latest["id"] > job.rebuild_id if job.rebuild_id is not None
                                                   else latest["started_at"] > job.requested_at)):
            progress, job = latest, None  # a rebuild run by hand after the last job
    if job is None and progress is None:
        return None
    return job, progress, name


def _identity(seen: tuple[ProjectionJob | None, dict[str, Any] | None, str]) -> tuple[int | None, int | None]:
    return (seen[0].id if seen[0] else None, seen[1]["id"] if seen[1] else None)


def _view(job: ProjectionJob | None, progress: dict[str, Any] | None, crashed: bool) -> dict[str, Any]:
    """Progress fields (zero before a worker starts) and the job's fields in one dict."""
    view: dict[str, Any] = {"id": None, "projection": None, "state": None, "partitions": None, "head": 0,
                            "total": 0, "done": 0, "position": 0, "rate": None, "eta_seconds": None,
                            "error": None, "started_at": None, "updated_at": None, "finished_at": None, "job_id": None}
    if progress is not None:
        view.update(progress)
    view["job"] = None
    if job is not None:
        data = asdict(job)
        data["duration_seconds"] = job.duration_seconds
        view.update(projection=job.projection, state=job.state, error=job.error or view["error"],
                    finished_at=job.finished_at or view["finished_at"],
                    started_at=job.started_at or view["started_at"], job_id=job.id, job=data)
        if progress is None and job.events_done is not None:
            view["done"] = job.events_done
    if crashed:
        view["state"] = "crashed"
    return view
