"""Verify a projection: rebuild it from the log into scratch tables and compare them with the live ones.

Operators run it after an incident to prove the read model exact, while commands keep arriving:
1. One REPEATABLE READ transaction reads each partition's checkpoint, the dead letters, and copies
   the live rows into scratch "live" tables. Rows and checkpoints commit together, so in one
   snapshot they agree: the comparison holds at one point of the log.
2. The expected rows are built into scratch "expected" tables from exactly the events of each
   partition up to that partition's checkpoint (its ceiling), by the engine's own `run` on a
   scratch job. Streams parked in that snapshot stop where the live run stopped them, skipped
   events are skipped. Nothing is written to `dead_letter` or the checkpoints.
3. One FULL OUTER JOIN per table, on the primary key, compares the md5 of each row's canonical
   jsonb text, in SQL. Rows of parked streams are left out.

Scratch tables are temporary: private to the session (two verifies and a rebuild never meet),
dropped at the end, also on failure, and gone with the session if the process dies.
No column is ignored: every column of the snapshot tables comes from the events (ids, versions,
positions, payload, metadata, recorded_at); none is stamped by the database clock.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool

from infrastructure.db import session

from projections.batch import _columns
from projections.catalog import PROJECTORS, get_projector
from projections.engine import DEFAULT_BATCH, Job, RetryPolicy, run
from projections.model import Event, Projector
from projections.partitioning import partition_of

logger = logging.getLogger(__name__)
# Columns that may differ between an incremental run and a rebuild, per table: none (see above).
IGNORED_COLUMNS: dict[str, tuple[str, ...]] = {}
LIVE = "verify_live__{}"
EXPECTED = "verify_expected__{}"
DEFAULT_LIMIT = 100


@dataclass(frozen=True)
class Difference:
    """One row that differs: its table, primary key, kind (missing|extra|changed) and changed columns.

    missing: the rebuild has it, the live table not; extra: the other way round.
    """

    table: str
    key: dict[str, Any]
    kind: str
    columns: list[str]
    stream_id: str | None


@dataclass(frozen=True)
class BuildFailure:
    """An event the expected build could not apply although the live run did not park it."""

    stream_id: str
    position: int
    error: str


@dataclass
class VerifyReport:
    """What a verify found: the checkpoints compared at, and the differing rows (the first `limit`)."""

    projection: str
    position: int  # the lowest partition checkpoint: every event up to it is in both
    checkpoints: list[int]
    differing_rows: int
    differences: list[Difference]
    tables: dict[str, int] = field(default_factory=dict)  # differing rows per table
    parked_streams: int = 0  # streams left out: parked in a dead letter
    build_failures: list[BuildFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the live tables are exactly what a rebuild at the same checkpoints gives."""
        return self.differing_rows == 0 and not self.build_failures

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready data."""
        return asdict(self)


@dataclass(frozen=True)
class _Snapshot:
    """The live side at one instant: partition count, checkpoints and dead letters."""

    partitions: int
    checkpoints: list[int]
    parked: dict[str, int]  # stream -> its first parked position
    skipped: frozenset[int]


def verify(pool: ConnectionPool, name: str, *, batch_size: int = DEFAULT_BATCH,
           limit: int = DEFAULT_LIMIT) -> VerifyReport:
    """Rebuild projection `name` into scratch tables and compare them row by row with the live tables.

    KeyError for an unknown projection. Safe while workers, appends, rebuilds and other verifies run.
    """
    projector = get_projector(name)
    live = {t: LIVE.format(t) for t in projector.tables}
    expected = {t: EXPECTED.format(t) for t in projector.tables}
    with session(pool) as conn:  # temporary tables live as long as a session: direct, past any pooler
        try:
            _drop(conn, [*live.values(), *expected.values()])
            snapshot = _copy_live(conn, projector, live)
            _create_expected(conn, projector, expected)
            failures = _build(conn, projector, snapshot, expected, batch_size)
            _forget_pruned(conn, live, expected)
            return _compare(conn, projector, snapshot, live, expected, failures, limit)
        finally:
            _drop(conn, [*live.values(), *expected.values()])


def verify_all(pool: ConnectionPool, *, batch_size: int = DEFAULT_BATCH,
               limit: int = DEFAULT_LIMIT) -> list[VerifyReport]:
    """Verify every projection, one after the other."""
    return [verify(pool, name, batch_size=batch_size, limit=limit) for name in PROJECTORS]


def _keys(projector: Projector, table: str) -> tuple[str, ...]:
    """A table's primary key as the projector writes it (the ON CONFLICT columns)."""
    for t in projector.state_tables:
        if t.name == table:
            return (t.stream_column,) if t.key is None else (t.stream_column, t.key)
    return next(t.conflict for t in projector.log_tables if t.name == table)


def _stream_column(projector: Projector, table: str, columns: Sequence[str]) -> str | None:
    """The column naming a row's stream: a state table's own, else a state table's stream column
    that this history table carries (document_body has none: bodies are shared)."""
    for t in projector.state_tables:
        if t.name == table:
            return t.stream_column
    return next((t.stream_column for t in projector.state_tables if t.stream_column in columns), None)


def _drop(conn: psycopg.Connection, names: Sequence[str]) -> None:
    """Drop scratch tables (only temporary ones: pg_temp is named explicitly)."""
    try:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(
            sql.SQL(", ").join(sql.Identifier("pg_temp", n) for n in names)))
    except psycopg.Error:  # a broken session takes its temporary tables with it; the first error matters more
        logger.warning("could not drop the verify's scratch tables", exc_info=True)


def _copy_live(conn: psycopg.Connection, projector: Projector, live: Mapping[str, str]) -> _Snapshot:
    """Copy the live rows, checkpoints and dead letters in one REPEATABLE READ snapshot."""
    name = projector.name
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        # Locked before the first query takes the snapshot: a rebuild's swap (which renames the
        # tables) waits for the copy, or the copy sees the swapped-in tables whole.
        conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(
            sql.SQL(", ").join(map(sql.Identifier, projector.tables))))
        row = conn.execute("SELECT partitions FROM projection WHERE name = %s", (name,)).fetchone()
        partitions = row["partitions"] if row else 1
        checkpoints = [0] * partitions
        for r in conn.execute("SELECT partition, position FROM projection_checkpoint WHERE projection = %s",
                              (name,)).fetchall():
            if r["partition"] < partitions:
                checkpoints[r["partition"]] = r["position"]
        # A parked stream stops at its first parked event; skipped events are never applied.
        parked = {r["stream_id"]: r["position"] for r in conn.execute(
            "SELECT stream_id, min(position) AS position FROM dead_letter WHERE projection = %s"
            " AND status = 'parked' AND NOT shadow GROUP BY stream_id", (name,)).fetchall()}
        skipped = frozenset(r["position"] for r in conn.execute(
            "SELECT position FROM dead_letter WHERE projection = %s AND status = 'skipped'", (name,)).fetchall())
        for table, copy in live.items():
            conn.execute(sql.SQL("CREATE TEMP TABLE {} AS SELECT * FROM {}").format(
                sql.Identifier(copy), sql.Identifier(table)))
    return _Snapshot(partitions, checkpoints, parked, skipped)


def _create_expected(conn: psycopg.Connection, projector: Projector, expected: Mapping[str, str]) -> None:
    """Empty scratch tables shaped like the live ones, keyed as the projector upserts them."""
    with conn.transaction():
        for table, scratch in expected.items():
            conn.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE {})").format(
                sql.Identifier(scratch), sql.Identifier(table)))
            conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
                sql.Identifier(scratch), sql.SQL(", ").join(map(sql.Identifier, _keys(projector, table)))))


@dataclass
class ScratchJob(Job):
    """A verify's build on the engine: each partition up to its live checkpoint, into scratch tables.

    Nothing is stored: no checkpoint, no dead letter. A stream the live run parked stops at its
    first parked event, skipped events are skipped, and an event that fails here stops its stream
    in memory and is reported (the engine narrows a failing batch down to it, as it does live).
    """

    snapshot: _Snapshot | None = None
    parked_at: dict[str, int] = field(default_factory=dict)  # stream -> where it stops
    failures: list[BuildFailure] = field(default_factory=list)

    def checkpoint(self, conn: psycopg.Connection, rows: list[dict] | None = None) -> tuple[int, int | None]:
        return 0, max(self.snapshot.checkpoints, default=0)

    def floors(self, upto: int) -> list[int] | None:
        return None

    def save(self, conn: psycopg.Connection, position: int, count: int) -> None:
        pass

    def held_back(self, conn: psycopg.Connection, events: Sequence[Event]) -> tuple[set[str], set[int]]:
        """No stream to park as a follower; every event the live run has not applied is skipped."""
        ceilings, n = self.snapshot.checkpoints, self.snapshot.partitions
        return set(), {e.position for e in events if e.position in self.snapshot.skipped
                       or e.position >= self.parked_at.get(e.stream_id, e.position + 1)
                       or e.position > ceilings[partition_of(e.stream_id, n)]}

    def park(self, conn: psycopg.Connection, event: Event, error: str, attempts: int,
             first_failure: float | None = None) -> None:
        self.parked_at[event.stream_id] = min(event.position, self.parked_at.get(event.stream_id, event.position))
        self.failures.append(BuildFailure(event.stream_id, event.position, error[:1000]))


def _build(conn: psycopg.Connection, projector: Projector, snapshot: _Snapshot, names: Mapping[str, str],
           batch_size: int) -> list[BuildFailure]:
    """Apply each partition's events up to its checkpoint to the expected tables, with the engine."""
    job = ScratchJob(projector, snapshot.partitions, None, names, snapshot=snapshot, parked_at=dict(snapshot.parked))
    run(conn, job, batch_size=batch_size, retry=RetryPolicy(attempts=1), upto=max(snapshot.checkpoints, default=0))
    return job.failures


# Each row as canonical jsonb text (less ignored columns), keyed by primary key; rows whose md5
# differs or that one side lacks, outside parked streams; the first %(limit)s and the total.
COMPARE = """
WITH live AS (SELECT {keys}, {stream} AS stream_id, to_jsonb(t) - %(ignored)s::text[] AS j FROM {live} t),
     expected AS (SELECT {keys}, {stream} AS stream_id, to_jsonb(t) - %(ignored)s::text[] AS j FROM {expected} t),
     diff AS (SELECT jsonb_build_object({key_pairs}) AS key, coalesce(l.stream_id, x.stream_id) AS stream_id,
                     l.j AS live_row, x.j AS expected_row
              FROM live l FULL JOIN expected x USING ({keys})
              WHERE md5(l.j::text) IS DISTINCT FROM md5(x.j::text))
SELECT key, stream_id,
       CASE WHEN expected_row IS NULL THEN 'extra' WHEN live_row IS NULL THEN 'missing' ELSE 'changed' END AS kind,
       CASE WHEN live_row IS NULL OR expected_row IS NULL THEN '{{}}'::text[]
            ELSE ARRAY(SELECT c FROM jsonb_object_keys(live_row) c
                       WHERE live_row -> c IS DISTINCT FROM expected_row -> c ORDER BY c) END AS columns,
       count(*) OVER () AS total
FROM diff WHERE stream_id IS NULL OR stream_id <> ALL(%(parked)s::text[])
ORDER BY key LIMIT %(limit)s
"""


def _forget_pruned(conn: psycopg.Connection, live: Mapping[str, str], expected: Mapping[str, str]) -> None:
    """Bodies retention removed (projections/retention.py) are not missing: expect them no more."""
    if "document_body" in expected:
        conn.execute(sql.SQL(
            "DELETE FROM {x} x WHERE EXISTS (SELECT 1 FROM document_body_pruned p WHERE p.body_hash = x.body_hash)"
            " AND NOT EXISTS (SELECT 1 FROM {l} l WHERE l.body_hash = x.body_hash)").format(
            x=sql.Identifier("pg_temp", expected["document_body"]), l=sql.Identifier("pg_temp", live["document_body"])))


def _compare_sql(table: str, keys: Sequence[str], stream: str | None, live: str, expected: str) -> sql.Composed:
    """COMPARE for one table's live copy and expected rows (stream None: no row belongs to a stream)."""
    return sql.SQL(COMPARE).format(
        keys=sql.SQL(", ").join(map(sql.Identifier, keys)),
        stream=sql.Identifier(stream) if stream else sql.SQL("NULL::text"),
        key_pairs=sql.SQL(", ").join(sql.SQL("{}, {}").format(sql.Literal(k), sql.Identifier(k)) for k in keys),
        live=sql.Identifier(live), expected=sql.Identifier(expected))


def _compare(conn: psycopg.Connection, projector: Projector, snapshot: _Snapshot, live: Mapping[str, str],
             expected: Mapping[str, str], failures: list[BuildFailure], limit: int) -> VerifyReport:
    """Compare every table's live copy with its expected rows."""
    report = VerifyReport(projector.name, min(snapshot.checkpoints, default=0), snapshot.checkpoints, 0, [],
                          parked_streams=len(snapshot.parked), build_failures=failures[:limit])
    parked = list(snapshot.parked)
    for table in projector.tables:
        stream = _stream_column(projector, table, _columns(conn.cursor(row_factory=tuple_row), table))
        query = _compare_sql(table, _keys(projector, table), stream, live[table], expected[table])
        room = limit - len(report.differences)
        rows = conn.execute(query, {"ignored": list(IGNORED_COLUMNS.get(table, ())), "parked": parked,
                                    "limit": max(room, 1)}).fetchall()
        total = rows[0]["total"] if rows else 0
        report.tables[table] = total
        report.differing_rows += total
        report.differences += [Difference(table, r["key"], r["kind"], list(r["columns"]), r["stream_id"])
                               for r in rows[:room]]
    return report
