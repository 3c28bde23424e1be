"""Applying a batch of events with set-based SQL: one load and one write per table.

The handlers run in Python over the rows of the batch's streams; the rows they change are
written back with DELETE ... = ANY and INSERT ... FROM jsonb_populate_recordset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb

from projections.model import Event, Output, Projector, StreamState

_COLUMNS: dict[str, list[str]] = {}


class HandlerFailure(Exception):
    """A handler raised on `event`; the engine retries it, then parks its stream."""

    def __init__(self, event: Event, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.event = event
        self.error = error


EVENT_COLUMNS = (
    "position, event_id::text, stream_id, version, type, payload, metadata,"
    " to_json(recorded_at) #>> '{}' AS recorded_at"  # the text to_jsonb gives a timestamptz
)


def read_events(
    conn: psycopg.Connection, stream_types: Sequence[str], after: int, upto: int, limit: int,
    partition: int | None, partitions: int,
) -> list[Event]:
    """Events of these stream types in (after, upto], in position order, optionally one partition's."""
    where = "" if partition is None or partitions == 1 else " AND projection_partition(stream_id, %s) = %s"
    params: list[Any] = [after, upto, list(stream_types)]
    if where:
        params += [partitions, partition]
    query = (
        f"SELECT {EVENT_COLUMNS} FROM events"  # noqa: S608 - constant text
        f" WHERE position > %s AND position <= %s AND stream_type = ANY(%s){where}"
        " ORDER BY position LIMIT %s"
    )
    rows = conn.cursor(row_factory=tuple_row).execute(query, [*params, limit]).fetchall()
    return [Event(*row) for row in rows]


def _columns(cur: psycopg.Cursor, table: str) -> list[str]:
    cols = _COLUMNS.get(table)
    if cols is None:
        cols = [r[0] for r in cur.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
            " AND NOT attisdropped ORDER BY attnum", (table,)).fetchall()]
        _COLUMNS[table] = cols
    return cols


def load_states(
    cur: psycopg.Cursor, projector: Projector, events: Sequence[Event], names: Mapping[str, str]
) -> dict[str, StreamState]:
    """The current rows of every stream in the batch (streams created in it need no load)."""
    states: dict[str, StreamState] = {}
    to_load: list[str] = []
    for e in events:
        if e.stream_id not in states:
            states[e.stream_id] = StreamState(e.stream_id, {t.name: {} for t in projector.state_tables})
            if e.version > 1:
                to_load.append(e.stream_id)
    if to_load:
        for table in projector.state_tables:
            query = sql.SQL("SELECT {col}, to_jsonb(t) FROM {tbl} t WHERE {col} = ANY(%s)").format(
                col=sql.Identifier(table.stream_column), tbl=sql.Identifier(names[table.name]))
            for stream_id, row in cur.execute(query, (to_load,)).fetchall():
                key = row[table.key] if table.key else None
                states[stream_id].tables[table.name][key] = row
    return states


def write_states(
    cur: psycopg.Cursor, projector: Projector, states: Mapping[str, StreamState], out: Output,
    names: Mapping[str, str],
) -> None:
    """Write back the changed rows of state tables, and the batch's history rows."""
    for table in projector.state_tables:
        dirty = [s for s in states.values() if table.name in s.dirty]
        if not dirty:
            continue
        name = sql.Identifier(names[table.name])
        # Replace the stream's rows: delete them all, insert what the handlers left.
        cur.execute(sql.SQL("DELETE FROM {} WHERE {} = ANY(%s)").format(
            name, sql.Identifier(table.stream_column)), ([s.stream_id for s in dirty],))
        rows = [row for s in dirty for row in s.tables[table.name].values()]
        if rows:
            cur.execute(sql.SQL(
                "INSERT INTO {0} SELECT * FROM jsonb_populate_recordset(NULL::{0}, %s)").format(name),
                (Jsonb(rows),))
    for table in projector.log_tables:
        rows = list(out.rows.get(table.name, {}).values())
        if not rows:
            continue
        name = names[table.name]
        if table.overwrite:
            keep = [c for c in _columns(cur, name) if c not in table.conflict]
            action = sql.SQL("DO UPDATE SET ") + sql.SQL(", ").join(
                sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in keep)
        else:
            action = sql.SQL("DO NOTHING")
        # A replayed event overwrites the row it wrote before; bodies are stored once.
        cur.execute(sql.SQL(
            "INSERT INTO {0} SELECT * FROM jsonb_populate_recordset(NULL::{0}, %s) ON CONFLICT ({1}) {2}"
        ).format(sql.Identifier(name), sql.SQL(", ").join(map(sql.Identifier, table.conflict)), action),
            (Jsonb(rows),))


def apply_events(
    conn: psycopg.Connection, projector: Projector, events: Sequence[Event], names: Mapping[str, str]
) -> None:
    """Run the handlers over `events` and write the result, inside the caller's transaction."""
    if not events:
        return
    cur = conn.cursor(row_factory=tuple_row)
    states = load_states(cur, projector, events, names)
    out = Output()
    for e in events:
        handler = projector.handlers.get(e.type)
        if handler is None:
            continue
        try:
            handler(states[e.stream_id], e, out)
        except Exception as exc:  # noqa: BLE001 - any handler bug parks the stream, not the worker
            raise HandlerFailure(e, exc) from exc
    write_states(cur, projector, states, out, names)
