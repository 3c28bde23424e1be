"""Rebuild a projection into shadow tables while reads go on, then swap atomically; replay.

Progress (done, total, rate, ETA) is kept in `projection_rebuild`, readable from any session.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from psycopg import sql
from psycopg_pool import ConnectionPool

from infrastructure.db import session

from infrastructure.config import get_settings

from projections.catalog import PROJECTORS, get_projector
from projections.engine import DEFAULT_BATCH, Job, RetryPolicy, ensure_projection, forget_checkpoints, run
from projections.model import Projector
from projections.partitioning import REBUILD_LOCK_PARTITION, lock_key

logger = logging.getLogger(__name__)
SHADOW = "{}__rebuild"


class RebuildInProgress(RuntimeError):
    """Another session is rebuilding this projection."""


@dataclass(frozen=True)
class RebuildProgress:
    """A rebuild's progress as stored in `projection_rebuild`."""

    id: int
    projection: str
    state: str
    partitions: int
    head: int
    total: int
    done: int
    position: int
    rate: float | None
    eta_seconds: float | None
    error: str | None
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None


def rebuild(pool: ConnectionPool, name: str, *, partitions: int | None = None,
            batch_size: int = DEFAULT_BATCH, retry: RetryPolicy = RetryPolicy()) -> RebuildProgress:
    """Rebuild one projection from the whole log into shadow tables, catch up, and swap.

    Reads keep using the live tables until the swap; `partitions` changes the partition count.
    Runs in the calling process; workers run requested rebuilds (projections.jobs) with `rebuild_on`.
    """
    get_projector(name)
    with session(pool) as conn:  # the rebuild lock is held across transactions: a session's, past any pooler
        rebuild_key = lock_key(name, REBUILD_LOCK_PARTITION)
        if not conn.execute("SELECT pg_try_advisory_lock(%s, %s) AS ok", rebuild_key).fetchone()["ok"]:
            raise RebuildInProgress(f"projection {name!r} is already being rebuilt")
        try:
            return rebuild_on(conn, name, partitions=partitions, batch_size=batch_size, retry=retry)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", rebuild_key)


def rebuild_on(conn, name: str, *, partitions: int | None = None, batch_size: int = DEFAULT_BATCH,
               retry: RetryPolicy = RetryPolicy(), job_id: int | None = None) -> RebuildProgress:
    """`rebuild` on a connection that holds the projection's rebuild lock.

    With `job_id`, the job (projection_job) is linked to the progress row and ends with it:
    done in the swap's transaction, failed with the rebuild's error.
    """
    projector = get_projector(name)
    current = ensure_projection(conn, projector, partitions or get_settings().chronicle_partitions)
    n = partitions or current
    names = {t: SHADOW.format(t) for t in projector.tables}
    rebuild_id = None
    try:
        with conn.transaction():
            # A rebuild whose session died left a running row (and shadows, dropped below).
            conn.execute("UPDATE projection_rebuild SET state = 'failed', finished_at = clock_timestamp(),"
                         " error = 'crashed: its session ended before the swap' WHERE projection = %s"
                         " AND state = 'running'", (name,))
            for table, shadow in names.items():
                conn.execute(f'DROP TABLE IF EXISTS "{shadow}"')
                conn.execute(f'CREATE TABLE "{shadow}" (LIKE "{table}" INCLUDING ALL)')
                # LIKE does not copy storage settings: keep the live table's fillfactor.
                options = conn.execute("SELECT array_to_string(reloptions, ', ') AS o FROM pg_class"
                                       " WHERE oid = %s::regclass", (table,)).fetchone()["o"]
                if options:
                    conn.execute(f'ALTER TABLE "{shadow}" SET ({options})')
            deferred = _defer_indexes(conn, projector, names)
            conn.execute("DELETE FROM dead_letter WHERE projection = %s AND shadow", (name,))
            head = conn.execute("SELECT safe_position() AS p").fetchone()["p"] or 0
            total = conn.execute("SELECT count(*) AS n FROM events WHERE position <= %s"
                                 " AND stream_type = ANY(%s)", (head, list(projector.stream_types))).fetchone()["n"]
            rebuild_id = conn.execute(
                "INSERT INTO projection_rebuild (projection, partitions, head, total) VALUES (%s, %s, %s, %s)"
                " RETURNING id", (name, n, head, total)).fetchone()["id"]
            if job_id is not None:
                conn.execute("UPDATE projection_job SET rebuild_id = %s WHERE id = %s", (rebuild_id, job_id))
        job = Job(projector, n, None, names, shadow=True, rebuild_id=rebuild_id)
        run(conn, job, batch_size=batch_size, retry=retry)
        with conn.transaction():
            for statement in deferred:
                conn.execute(statement)
        _swap(conn, job, current, batch_size, retry, job_id)
    except BaseException as exc:
        _abandon(conn, name, names, rebuild_id, exc, job_id)
        raise
    forget_checkpoints()
    return _progress(conn, rebuild_id)


def _defer_indexes(conn, projector: Projector, names: dict[str, str]) -> list[str]:
    """Drop the shadows' indexes that only reads use; return the statements that build them again.

    A rebuild writes every row of the read model, mostly at random places of its indexes: one
    sorted build per index after the bulk of the run costs less, and less so the bigger the
    tables (the agents rebuild ran at 0.74 of its 100k rate at 1M events). Kept: the unique
    indexes (the writes' ON CONFLICT) and those leading with a state table's stream column
    (the batch's loads and deletes). The same definitions, names and comments come back.
    """
    streams = {names[t.name]: t.stream_column for t in projector.state_tables}
    rows = conn.execute(
        "SELECT c.relname AS name, t.relname AS tbl, pg_get_indexdef(i.indexrelid) AS definition,"
        " pg_get_indexdef(i.indexrelid, 1, true) AS first_column, obj_description(i.indexrelid, 'pg_class') AS note"
        " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid"
        " WHERE t.relname = ANY(%s) AND t.relnamespace = 'public'::regnamespace AND NOT i.indisunique"
        " ORDER BY c.relname", (list(names.values()),)).fetchall()
    statements = []
    for r in rows:
        if streams.get(r["tbl"]) == r["first_column"]:
            continue
        conn.execute(f'DROP INDEX "{r["name"]}"')
        statements.append(r["definition"])
        if r["note"] is not None:
            statements.append(f'COMMENT ON INDEX "{r["name"]}" IS {sql.Literal(r["note"]).as_string(conn)}')
    return statements


def _swap(conn, job: Job, old_partitions: int, batch_size: int, retry: RetryPolicy, job_id: int | None) -> None:
    """Stop the live workers, apply the last events to the shadows, and rename in one transaction."""
    name = job.projector.name
    with conn.transaction():
        for k in range(max(old_partitions, job.partitions)):
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", lock_key(name, k))
        _, _, position = run(conn, job, batch_size=batch_size, retry=retry)
        for table, shadow in job.names.items():
            builds, renames = _index_copies(conn, table, shadow)
            for statement in builds:
                conn.execute(statement)
            conn.execute(f'ALTER TABLE "{table}" RENAME TO "{table}__old"')
            conn.execute(f'ALTER TABLE "{shadow}" RENAME TO "{table}"')
            conn.execute(f'DROP TABLE "{table}__old"')
            for statement in renames:
                conn.execute(statement)
        conn.execute("UPDATE projection SET partitions = %s, updated_at = now() WHERE name = %s",
                     (job.partitions, name))
        conn.execute("DELETE FROM projection_checkpoint WHERE projection = %s", (name,))
        conn.execute("INSERT INTO projection_checkpoint (projection, partition, position)"
                     " SELECT %s, g, %s FROM generate_series(0, %s - 1) g", (name, position, job.partitions))
        # The rebuild's dead letters replace the live ones (resolved ones stay as history).
        conn.execute("DELETE FROM dead_letter WHERE projection = %s AND NOT shadow AND status = 'parked'", (name,))
        conn.execute("UPDATE dead_letter SET shadow = false WHERE projection = %s AND shadow", (name,))
        conn.execute("UPDATE projection_rebuild SET state = 'done', finished_at = clock_timestamp(),"
                     " eta_seconds = 0, updated_at = clock_timestamp() WHERE id = %s", (job.rebuild_id,))
        if job_id is not None:
            conn.execute("UPDATE projection_job SET state = 'done', finished_at = clock_timestamp(),"
                         " events_done = (SELECT done FROM projection_rebuild WHERE id = %s) WHERE id = %s",
                         (job.rebuild_id, job_id))


# Each index of a table as built, its own name and its table's left out, with its comment.
INDEX_COPIES = (
    "SELECT c.relname AS name, c.oid AS oid, i.indisunique AS is_unique, i.indisvalid AS is_valid,"
    " regexp_replace(pg_get_indexdef(i.indexrelid), '^CREATE (UNIQUE )?INDEX \\S+ ON (ONLY )?\\S+ ', '') AS definition,"
    " obj_description(i.indexrelid, 'pg_class') AS note"
    " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass ORDER BY c.relname"
)


def _index_copies(conn, table: str, shadow: str) -> tuple[list[str], list[str]]:
    """The statements that give the shadow every live index under its live name: the builds to run
    before the live table is dropped, and the renames to run after (a renamed unique index renames
    its constraint).

    LIKE and the deferred builds name the copies anew; the live names are what the read queries,
    the operator's `indexes list` and `drop` (by their prefix) and the plans know. Copies are
    matched by definition and comment, and pass through a name of their own first so that no two
    renames collide. A valid live index with no copy (an operator's `indexes add` while the
    rebuild ran) is built on the shadow; an invalid one (a failed CONCURRENTLY build) is left to
    `indexes add`, which builds it again.
    """
    copies: dict[tuple, list] = {}
    for r in conn.execute(INDEX_COPIES, (shadow,)).fetchall():
        copies.setdefault((r["is_unique"], r["definition"], r["note"]), []).append(r)
    builds, first, then = [], [], []
    for r in conn.execute(INDEX_COPIES, (table,)).fetchall():
        same = copies.get((r["is_unique"], r["definition"], r["note"]))
        if same:
            copy = same.pop(0)
            if copy["name"] != r["name"]:
                passing = f"{shadow}__{copy['oid']}"
                first.append(f'ALTER INDEX "{copy["name"]}" RENAME TO "{passing}"')
                then.append(f'ALTER INDEX "{passing}" RENAME TO "{r["name"]}"')
        elif r["is_valid"]:
            passing = f"{shadow}__{r['oid']}"
            builds.append(f'CREATE {"UNIQUE " if r["is_unique"] else ""}INDEX "{passing}" ON "{shadow}"'
                          f' {r["definition"]}')
            if r["note"] is not None:
                builds.append(f'COMMENT ON INDEX "{passing}" IS {sql.Literal(r["note"]).as_string(conn)}')
            then.append(f'ALTER INDEX "{passing}" RENAME TO "{r["name"]}"')
    return builds, first + then


def _abandon(conn, name: str, names: dict[str, str], rebuild_id: int | None, exc: BaseException,
             job_id: int | None = None) -> None:
    """Record why a rebuild failed, then drop its shadows (the record stands if the drop fails too)."""
    error = repr(exc)[:4000]
    try:
        with conn.transaction():
            if rebuild_id is not None:
                conn.execute("UPDATE projection_rebuild SET state = 'failed', error = %s,"
                             " finished_at = clock_timestamp() WHERE id = %s", (error, rebuild_id))
            if job_id is not None:
                conn.execute("UPDATE projection_job SET state = 'failed', error = %s, finished_at = clock_timestamp(),"
                             " events_done = (SELECT done FROM projection_rebuild WHERE id = %s)"
                             " WHERE id = %s AND state = 'running'", (error, rebuild_id, job_id))
    except Exception:  # noqa: BLE001 - the original error matters more
        logger.exception("could not record the failed rebuild of %s", name)
    try:
        with conn.transaction():
            for shadow in names.values():
                conn.execute(f'DROP TABLE IF EXISTS "{shadow}"')
            conn.execute("DELETE FROM dead_letter WHERE projection = %s AND shadow", (name,))
    except Exception:  # noqa: BLE001 - the next rebuild drops them; the original error matters more
        logger.exception("could not drop the shadow tables of the failed rebuild of %s", name)


def rebuild_all(pool: ConnectionPool, *, partitions: int | None = None,
                batch_size: int = DEFAULT_BATCH) -> list[RebuildProgress]:
    """Rebuild every projection, one after the other."""
    return [rebuild(pool, name, partitions=partitions, batch_size=batch_size) for name in PROJECTORS]


def _progress(conn, rebuild_id: int) -> RebuildProgress:
    return RebuildProgress(**conn.execute("SELECT * FROM projection_rebuild WHERE id = %s",
                                          (rebuild_id,)).fetchone())


def rebuild_progress(pool: ConnectionPool, name: str) -> RebuildProgress | None:
    """The latest rebuild of a projection (running, crashed, done or failed), or None.

    Crashed: the row says running but no session holds the rebuild lock.
    """
    from projections.status import rebuild_state

    with pool.connection() as conn:
        row = conn.execute("SELECT * FROM projection_rebuild WHERE projection = %s ORDER BY id DESC LIMIT 1",
                           (name,)).fetchone()
        if row and row["state"] == "running" and rebuild_state(conn, name) == "crashed":
            row["state"] = "crashed"
    return RebuildProgress(**row) if row else None


def replay(pool: ConnectionPool, name: str, from_position: int) -> list[int]:
    """Move every partition's checkpoint back to `from_position`; workers then re-apply from there.

    For a projector whose handler was fixed: handlers overwrite rows, so re-applied events land
    once. Returns the partitions moved; send wake-ups (or run catch_up) afterwards.
    """
    projector = get_projector(name)
    moved = []
    with pool.connection() as conn:
        n = ensure_projection(conn, projector, get_settings().chronicle_partitions)
        for k in range(n):
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", lock_key(name, k))
                row = conn.execute(
                    "UPDATE projection_checkpoint SET position = %s, updated_at = clock_timestamp()"
                    " WHERE projection = %s AND partition = %s AND position > %s RETURNING partition",
                    (from_position, name, k, from_position)).fetchone()
                if row:
                    moved.append(k)
    forget_checkpoints()
    return moved
