"""The event log as auditors read it: filtered pages, one event, causation chains, a stream's events.

The API's audit routes and the console call these, so both answer the same query the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg_pool import ConnectionPool

from domain.event_types import registry
from infrastructure.log_status import LogStatus
from infrastructure.personal_data import reveal_payloads

MAX_VERSION = 2**63 - 1


def events_json(conn: psycopg.Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored events as JSON: payloads upcast, personal fields decrypted (erased when forgotten).

    Every event an auditor reads goes through here, so none shows a sealed or a forgotten value.
    """
    events = [_event_json(row) for row in rows]
    reveal_payloads(conn, registry, ((e["type"], e["payload"]) for e in events))
    return events


def _event_json(row: dict[str, Any]) -> dict[str, Any]:
    """One stored event as JSON, its payload upcast to the current schema version (still sealed)."""
    try:
        schema_version, payload = registry.upcast(row["type"], row["schema_version"], row["payload"])
    except Exception:  # noqa: BLE001 - an auditor still sees the stored payload
        schema_version, payload = row["schema_version"], row["payload"]
    return {
        "position": row["position"],
        "event_id": str(row["event_id"]),
        "stream_id": row["stream_id"],
        "stream_type": row["stream_type"],
        "stream_version": row["version"],
        "type": row["type"],
        "schema_version": schema_version,
        "payload": payload,
        "metadata": row["metadata"],
        "recorded_at": row["recorded_at"].isoformat(),
    }


@dataclass(frozen=True)
class EventFilter:
    """The filters of the event log: every one given must match (any of a repeated one's values)."""

    stream: str | None = None
    stream_types: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    actor: str | None = None
    session: str | None = None
    correlation_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def any_of(column: str, values: list[str], clauses: list[str], params: list[Any]) -> None:
    """A repeated filter: `column` equal to any of `values` (duplicates dropped; none: no clause).

    One value stays `= %s`, so an index on (column, sort key) still serves the order; several are
    `= ANY(%s)`, which the same index serves as one scan per value.
    """
    values = list(dict.fromkeys(values))
    if len(values) == 1:
        clauses.append(f"{column} = %s")
        params.append(values[0])
    elif values:
        clauses.append(f"{column} = ANY(%s)")
        params.append(values)


def event_page(pool: ConnectionPool, log: LogStatus, filters: EventFilter, after: int,
               limit: int) -> list[dict[str, Any]]:
    """Up to `limit` + 1 events after position `after` and up to the safe position of `log`.

    `log` is read before this read's snapshot (its own statement, on the primary), or an append
    committing in between would be passed over for good by a cursor.
    """
    clauses = ["position > %s", "position <= %s"]
    params: list[Any] = [after, log.safe]
    for column, value in (
        ("stream_id", filters.stream), ("metadata->>'actor_id'", filters.actor),
        ("metadata->>'session_id'", filters.session), ("metadata->>'correlation_id'", filters.correlation_id),
    ):
        if value is not None:
            clauses.append(f"{column} = %s")
            params.append(value)
    any_of("stream_type", filters.stream_types, clauses, params)
    any_of("type", filters.types, clauses, params)
    if filters.since is not None:
        clauses.append("recorded_at >= %s")
        params.append(filters.since)
    if filters.until is not None:
        clauses.append("recorded_at < %s")
        params.append(filters.until)
    params.append(limit + 1)
    with pool.connection() as conn:
        rows = conn.execute(
            f"SELECT * FROM events WHERE {' AND '.join(clauses)} ORDER BY position LIMIT %s", params
        ).fetchall()
        return events_json(conn, rows)


def get_event(pool: ConnectionPool, event_id: UUID) -> dict[str, Any] | None:
    """One stored event by its id, as JSON, or None."""
    with pool.connection() as conn:
        row = conn.execute("SELECT * FROM events WHERE event_id = %s", (event_id,)).fetchone()
        return None if row is None else events_json(conn, [row])[0]


def stream_row(pool: ConnectionPool, stream_id: str) -> dict[str, Any] | None:
    """A stream's id, type and current version, or None if it has no events."""
    with pool.connection() as conn:
        return conn.execute(
            "SELECT stream_id, stream_type, version FROM streams WHERE stream_id = %s", (stream_id,)
        ).fetchone()


def stream_events(pool: ConnectionPool, stream_id: str, after: int, to_version: int | None,
                  limit: int) -> list[dict[str, Any]]:
    """Up to `limit` + 1 of a stream's events (as JSON) after version `after`, up to `to_version`."""
    with pool.connection() as conn:
        return events_json(conn, conn.execute(
            # Both ends bound, so even a generic plan is an index range scan.
            "SELECT * FROM events WHERE stream_id = %s AND version > %s AND version <= %s"
            " ORDER BY version LIMIT %s",
            (stream_id, after, MAX_VERSION if to_version is None else to_version, limit + 1),
        ).fetchall())


# Causes follow metadata.causation_id back to the root (at most 100 steps).
_CAUSES_SQL = """
WITH RECURSIVE up(event_id, causation_id, depth) AS (
    SELECT e.event_id, e.metadata->>'causation_id', 0 FROM events e WHERE e.event_id = %s
    UNION ALL
    SELECT p.event_id, p.metadata->>'causation_id', up.depth + 1
    FROM up JOIN events p ON p.event_id::text = up.causation_id
    WHERE up.depth < 100
)
SELECT e.*, up.depth FROM up JOIN events e USING (event_id) WHERE up.depth > 0 ORDER BY up.depth
"""
# Effects: the events naming it as their cause, generation by generation (events_causation_idx).
_EFFECTS_SQL = """
WITH RECURSIVE down(event_id, depth) AS (
    SELECT e.event_id, 0 FROM events e WHERE e.event_id = %s
    UNION
    SELECT c.event_id, down.depth + 1
    FROM down JOIN events c ON c.metadata->>'causation_id' = down.event_id::text
    WHERE down.depth < %s
)
SELECT e.*, min(down.depth) AS depth FROM down JOIN events e USING (event_id)
WHERE down.depth > 0 GROUP BY e.position ORDER BY e.position LIMIT 1000
"""


def causation(pool: ConnectionPool, event_id: UUID, depth: int) -> dict[str, Any] | None:
    """The causation chain through an event: its causes back to the root, and its effects up to
    `depth` generations and 1000 events; None if there is no such event."""
    with pool.connection() as conn:
        row = conn.execute("SELECT * FROM events WHERE event_id = %s", (event_id,)).fetchone()
        if row is None:
            return None
        causes = conn.execute(_CAUSES_SQL, (event_id,)).fetchall()
        effects = conn.execute(_EFFECTS_SQL, (event_id, depth)).fetchall()
        found = events_json(conn, [row, *causes, *effects])
    return {
        "event": found[0],
        "caused_by": [{**e, "depth": r["depth"]} for e, r in zip(found[1:len(causes) + 1], causes)],
        "caused": [{**e, "depth": r["depth"]} for e, r in zip(found[len(causes) + 1:], effects)],
    }
