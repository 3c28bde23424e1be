"""Applying a batch of events with set-based SQL: one load, and a delete and an upsert per table.

The handlers run in Python over the rows of the batch's streams; the rows they change are
written back with DELETE ... = ANY and INSERT ... FROM jsonb_populate_recordset. JSON goes
through pydantic-core's parser and serialiser, several times faster than the json module's.
The events themselves come from infrastructure.partition_reads, the projections' one way into the log.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from operator import itemgetter

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb
from pydantic_core import from_json, to_json

from projections.model import Event, Output, Projector, Row, StreamRows

_COLUMNS: dict[str, list[str]] = {}


class HandlerFailure(Exception):
    """A handler raised on `event`; the engine retries it, then parks its stream."""

    def __init__(self, event: Event, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.event = event
        self.error = error


def _columns(cur: psycopg.Cursor, table: str) -> list[str]:
    cols = _COLUMNS.get(table)
    if cols is None:
        cols = [r[0] for r in cur.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
            " AND NOT attisdropped ORDER BY attnum", (table,)).fetchall()]
        _COLUMNS[table] = cols
    return cols


def load_states(
    cur: psycopg.Cursor, projector: Projector, events: Sequence[Event], names: Mapping[str, str],
    known: Mapping[str, StreamRows] | None = None,
) -> dict[str, StreamRows]:
    """The current rows of every stream in the batch (streams created in it, or `known`, need no load).

    `known` holds states this run committed in earlier batches. One statement and one JSON
    decode for all the projector's state tables.
    """
    states: dict[str, StreamRows] = {}
    to_load: list[str] = []
    known = known or {}
    for e in events:
        if e.stream_id not in states:
            state = known.get(e.stream_id)
            if state is not None:
                state.dirty.clear()
                states[e.stream_id] = state
                continue
            states[e.stream_id] = StreamRows(e.stream_id, {t.name: {} for t in projector.state_tables})
            if e.version > 1:
                to_load.append(e.stream_id)
    if to_load:
        rows = cur.execute(_load_sql(_state_tables(projector, names)), {"ids": to_load}).fetchone()[0]
        for table, table_rows in zip(projector.state_tables, from_json(rows, cache_strings="keys")):
            for row in table_rows:
                state = states.get(row[table.stream_column])
                if state is not None:
                    state.tables[table.name][row[table.key] if table.key else None] = row
    return states


def write_states(
    cur: psycopg.Cursor, projector: Projector, states: Mapping[str, StreamRows], out: Output,
    names: Mapping[str, str],
) -> None:
    """Write back the changed rows of state tables, and the batch's history rows."""
    for table in projector.state_tables:
        dirty = [s for s in states.values() if table.name in s.dirty]
        if not dirty:
            continue
        rows = [row for s in dirty for row in s.tables[table.name].values()]
        # Drop the rows the handlers removed: a stream left without its row, or keys not kept.
        delete = _delete_sql(names[table.name], table.stream_column, table.key)
        if table.key is None:
            gone = [s.stream_id for s in dirty if not s.tables[table.name]]
            if gone:
                cur.execute(delete, (gone,))
        else:
            cur.execute(delete, {
                "streams": [s.stream_id for s in dirty], "s": [r[table.stream_column] for r in rows],
                "k": [r[table.key] for r in rows]})
        if rows:
            # Upsert the rest: an unchanged indexed column lets PostgreSQL update in place (HOT).
            conflict = (table.stream_column,) if table.key is None else (table.stream_column, table.key)
            _upsert(cur, names[table.name], conflict, rows)
    for table in projector.log_tables:
        rows = list(out.rows.get(table.name, {}).values())
        if rows:
            # A replayed event overwrites the row it wrote before; bodies are stored once.
            _upsert(cur, names[table.name], table.conflict, rows, overwrite=table.overwrite)


def _upsert(cur: psycopg.Cursor, table: str, conflict: Sequence[str], rows: list[Row],
            overwrite: bool = True) -> None:
    """INSERT rows (as one jsonb array) ON CONFLICT (keys) DO UPDATE every other column, or DO NOTHING."""
    keep = tuple(c for c in _columns(cur, table) if c not in conflict) if overwrite else None
    # In key order: the statement walks the key's index (and, keys being time-ordered ids, the
    # heap) from one end to the other, each page once, rather than at random.
    rows = sorted(rows, key=itemgetter(*conflict))
    cur.execute(_upsert_sql(table, tuple(conflict), keep), (Jsonb(rows, dumps=to_json),))


# The statements are composed once per table and kept as text: psycopg caches the parsing of a
# text query, not of a Composed one, and rendering one costs more than running a small batch.

@functools.lru_cache(maxsize=1024)
def _load_sql(tables: tuple[tuple[str, str], ...]) -> str:
    """The rows of the streams `%(ids)s`, as `_states_sql`."""
    return (sql.SQL("SELECT ") + _states_sql(tables, sql.SQL("= ANY(%(ids)b)")) + sql.SQL("::text")).as_string()


def _states_sql(tables: tuple[tuple[str, str], ...], streams: sql.Composable) -> sql.Composable:
    """json_build_array((SELECT json_agg(t) FROM table t WHERE stream <streams>), ...), per state table."""
    return sql.SQL("json_build_array({})").format(sql.SQL(", ").join(
        sql.SQL("(SELECT coalesce(json_agg(t), '[]') FROM {tbl} t WHERE {col} {streams})").format(
            tbl=sql.Identifier(table), col=sql.Identifier(column), streams=streams)
        for table, column in tables))


def _state_tables(projector: Projector, names: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """(table name, stream column) of each of the projector's state tables, under `names`."""
    return tuple((names[t.name], t.stream_column) for t in projector.state_tables)


@functools.lru_cache(maxsize=1024)
def _delete_sql(table: str, stream_column: str, key: str | None) -> str:
    """Delete a state table's rows of some streams: all of them, or (keyed) those not in a kept list."""
    name, stream = sql.Identifier(table), sql.Identifier(stream_column)
    if key is None:
        return sql.SQL("DELETE FROM {} WHERE {} = ANY(%b)").format(name, stream).as_string()
    return sql.SQL(
        "DELETE FROM {t} WHERE {s} = ANY(%(streams)b)"
        " AND ({s}, {k}) NOT IN (SELECT * FROM unnest(%(s)b::text[], %(k)b::text[]))"
    ).format(t=name, s=stream, k=sql.Identifier(key)).as_string()


@functools.lru_cache(maxsize=1024)
def _upsert_sql(table: str, conflict: tuple[str, ...], keep: tuple[str, ...] | None) -> str:
    """INSERT ... ON CONFLICT (conflict) DO UPDATE the `keep` columns (None: DO NOTHING)."""
    if keep is not None:
        action = sql.SQL("DO UPDATE SET ") + sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in keep)
    else:
        action = sql.SQL("DO NOTHING")
    return sql.SQL(
        "INSERT INTO {0} SELECT * FROM jsonb_populate_recordset(NULL::{0}, %s) ON CONFLICT ({1}) {2}"
    ).format(sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, conflict)), action).as_string()


def apply_events(
    conn: psycopg.Connection, projector: Projector, events: Sequence[Event], names: Mapping[str, str],
    known: Mapping[str, StreamRows] | None = None,
) -> dict[str, StreamRows]:
    """Run the handlers over `events` and write the result, inside the caller's transaction.

    Returns the batch's stream states; `known` are states committed earlier (changed in place).
    """
    if not events:
        return {}
    cur = conn.cursor(row_factory=tuple_row)
    states = load_states(cur, projector, events, names, known)
    out = Output()
    for e in events:
        handler = projector.handlers.get(e.type)
        if handler is None:
            continue
        try:
            handler(states[e.stream_id], e, out)
        except Exception as exc:  # noqa: BLE001 - any handler bug parks the stream, not the worker
            raise HandlerFailure(e, exc) from exc
    write_states(cur, projector, states, out, names)  # the engine runs this in a pipeline
    return states


def event_error(exc: BaseException) -> bool:
    """Errors an event's data or a batch's size can cause (handler bug, bad value, timeout), not the connection's."""
    if isinstance(exc, (HandlerFailure, psycopg.errors.QueryCanceled)):
        return True
    return isinstance(exc, psycopg.DatabaseError) and not isinstance(exc, psycopg.OperationalError)


def narrower(events: Sequence[Event], exc: BaseException) -> int:
    """How many events the next try of a failed batch reads: those before a failing handler's
    event (1 if it is the first), else half the batch, to find the failing event."""
    if isinstance(exc, HandlerFailure):
        before = sum(1 for e in events if e.position < exc.event.position)
        return max(1, before)
    return max(1, len(events) // 2)
