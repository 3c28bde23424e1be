"""Status per projection and partition: checkpoint, head, lag, state and dead letters."""

from __future__ import annotations

import json

from dataclasses import dataclass
from datetime import datetime

from psycopg import sql
from psycopg_pool import ConnectionPool

from projections.catalog import PROJECTORS, get_projector
from projections.partitioning import REBUILD_LOCK_PARTITION, lock_key


@dataclass(frozen=True)
class PartitionStatus:
    """Where one partition of a projection stands."""

    projection: str
    partition: int
    partitions: int
    checkpoint: int
    head: int
    lag_events: int
    lag_seconds: float
    state: str  # running | rebuilding | stalled | parked
    dead_letters: int
    updated_at: datetime
    # "running": a session is rebuilding it; "crashed": a rebuild left a running row and shadow
    # tables but no session holds its lock (the next rebuild cleans up); None: no rebuild.
    rebuild: str | None = None
    # Log positions between the checkpoint and the head: exact, from positions alone.
    lag_positions: int = 0
    # Whether lag_events is scaled from the first LAG_WINDOW positions rather than counted.
    lag_estimated: bool = False


# How many positions past its checkpoint status reads to count a partition's waiting events.
# Lag within it is exact; past it, it is scaled from what the window holds, so a status read
# costs the same with a backlog of a thousand events or of a hundred million.
LAG_WINDOW = 2500

# Per partition: the checkpoint, the head (the last committed position, not the safe position:
# a log held back by an open append shows as lag that grows), and the partition's events in its
# window (the LAG_WINDOW positions after its checkpoint, read through events_pkey) with the
# oldest one's time. No statement counts the log past the windows. Its values are written in as
# literals (status_statement): with no parameters, a connection plans it once and keeps the plan,
# where with parameters PostgreSQL's choice between a generic and a per-call plan (1 ms of
# planning) flipped with the log's size, and doubled a scrape from 100k to 1M events.
STATUS_SQL = """
SELECT c.partition, p.partitions, c.position AS checkpoint, h.head, c.updated_at,
       w.high, w.seen, w.oldest,
       (SELECT count(*) FROM dead_letter d WHERE d.projection = c.projection
          AND d.partition = c.partition AND d.status = 'parked' AND NOT d.shadow) AS dead_letters,
       extract(epoch FROM clock_timestamp() - c.updated_at) AS idle_seconds,
       extract(epoch FROM clock_timestamp()) AS now_epoch
FROM projection_checkpoint c
JOIN projection p ON p.name = c.projection
CROSS JOIN (SELECT log_head() AS head) h
CROSS JOIN LATERAL (
    SELECT least(h.head, c.position + {window}) AS high, count(e.position) AS seen,
           min(e.recorded_at) AS oldest
    FROM events e
    WHERE e.position > c.position AND e.position <= least(h.head, c.position + {window})
      AND e.stream_type = ANY({types}::text[])
      AND projection_partition(e.stream_id, p.partitions) = c.partition
) w
WHERE c.projection = {name}
ORDER BY c.partition
"""


def lag_of(row: dict) -> tuple[int, bool]:
    """A partition's waiting events from a STATUS_SQL row, and whether that is an estimate.

    Exact when its window reaches the head; past it, the window's density of the partition's
    events times the positions between the checkpoint and the head.
    """
    checkpoint, head, high = row["checkpoint"], row["head"], row["high"]
    if checkpoint >= head:
        return 0, False
    if high >= head:
        return row["seen"], False
    return round(row["seen"] * (head - checkpoint) / (high - checkpoint)), True


def status_statement(name: str, stream_types: tuple[str, ...] | list[str]) -> sql.Composed:
    """STATUS_SQL for one projection, its values as literals: a statement with no parameters."""
    return sql.SQL(STATUS_SQL).format(
        name=sql.Literal(name), types=sql.Literal(list(stream_types)), window=sql.Literal(LAG_WINDOW))


def partition_rows(conn, name: str, stream_types: tuple[str, ...] | list[str]) -> list[dict]:
    """The STATUS_SQL rows of one projection's partitions (see lag_of and lag_seconds)."""
    return conn.execute(status_statement(name, stream_types)).fetchall()


def lag_seconds(row: dict) -> float:
    """The age of a partition's oldest waiting event (the first in its window)."""
    if row["oldest"] is None:
        return 0.0
    return max(float(row["now_epoch"]) - row["oldest"].timestamp(), 0.0)


def rebuild_state(conn, name: str) -> str | None:
    """ "running", "crashed" (a running row whose session is gone) or None for no rebuild."""
    if _rebuilding(conn, name):
        return "running"
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM projection_rebuild WHERE projection = %s"
                       " AND state = 'running') AS left", (name,)).fetchone()
    return "crashed" if row["left"] else None


def _rebuilding(conn, name: str) -> bool:
    """Whether a session holds the projection's rebuild lock (a crashed rebuild does not)."""
    return lock_held(conn, name, REBUILD_LOCK_PARTITION)


def lock_held(conn, name: str, partition: int) -> bool:
    """Whether any session holds the two-int advisory lock of a projection's partition (or job)."""
    key1, key2 = lock_key(name, partition)
    return conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2"
        " AND classid = %s::bigint::text::oid AND objid = %s::bigint::text::oid"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())) AS busy",
        (key1 & 0xFFFFFFFF, key2 & 0xFFFFFFFF)).fetchone()["busy"]


def status(pool: ConnectionPool, projection: str | None = None, *,
           stall_seconds: float = 30.0) -> list[PartitionStatus]:
    """Status of every partition of one projection, or of all projections.

    Stalled: events wait and the checkpoint has not moved for `stall_seconds`.
    """
    names = [projection] if projection else list(PROJECTORS)
    result = []
    with pool.connection() as conn:
        for name in names:
            projector = get_projector(name)
            rebuild = rebuild_state(conn, name)
            rebuilding = rebuild == "running"
            for r in partition_rows(conn, name, projector.stream_types):
                lag, estimated = lag_of(r)
                if rebuilding:
                    state = "rebuilding"
                elif r["dead_letters"]:
                    state = "parked"
                elif lag and float(r["idle_seconds"]) > stall_seconds:
                    state = "stalled"
                else:
                    state = "running"
                result.append(PartitionStatus(
                    name, r["partition"], r["partitions"], r["checkpoint"], r["head"], lag,
                    lag_seconds(r) if lag else 0.0, state, r["dead_letters"], r["updated_at"], rebuild,
                    max(r["head"] - r["checkpoint"], 0), estimated))
    return result


# How far, up to a wanted position N, the projections have got: a partition has reached N when
# its checkpoint is at N or no event of its projection's stream types lies between the two.
REACHED_SQL = """
SELECT safe_position() AS safe,
       count(c.*) AS partitions,
       coalesce(min(c.position), 0) AS lowest,
       coalesce(bool_and(
           c.position >= %(n)s OR NOT EXISTS (
               SELECT 1 FROM partition_events(c.position, %(n)s, t.types,
                   partition_floors(p.partitions, c.partition, c.position, %(n)s)))
       ), true) AS done
FROM projection p
JOIN projection_checkpoint c ON c.projection = p.name
LEFT JOIN (SELECT key AS name, array(SELECT jsonb_array_elements_text(value)) AS types
           FROM jsonb_each(%(types)s::jsonb)) t ON t.name = p.name
WHERE %(names)s::text[] IS NULL OR p.name = ANY(%(names)s::text[])
"""


def projected_position(pool: ConnectionPool, wanted: int, names: tuple[str, ...] | None = None) -> int:
    """How far (up to `wanted`) every projection, or those `names`, has applied the log.

    Returns `wanted` once all have; a read with ?min_position= waits for that.
    """
    stream_types = {name: list(p.stream_types) for name, p in PROJECTORS.items()}
    with pool.connection() as conn:
        row = conn.execute(REACHED_SQL, {"n": wanted, "types": json.dumps(stream_types),
                                         "names": list(names) if names else None}).fetchone()
    if row["safe"] < wanted:
        return min(row["safe"], row["lowest"]) if row["partitions"] else row["safe"]
    if row["partitions"] == 0:
        return row["lowest"]  # no projection has started: wait for the first
    return wanted if row["done"] else row["lowest"]
