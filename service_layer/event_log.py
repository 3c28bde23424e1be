"""The event log as auditors read it: filtered pages, one event, causation chains, a stream's events.

The API's audit routes and the console call these, so both answer the same query the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg_pool import ConnectionPool

from infrastructure.log_keys import events_by_id, of_stream
from infrastructure.log_segments import check_not_archived

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


# Filters whose index is keyed by hashtext(value) (schema/0023): the query matches the hash,
# which the index serves in position order, then the value itself.
HASHED = ("type", "metadata->>'session_id'")


def hashed_any_of(column: str, values: list[str], clauses: list[str], params: list[Any]) -> None:
    """As `any_of`, for a column whose index is keyed by hashtext(column) and then position.

    One value is `hashtext(column) = hashtext(%s)`, which that index serves in order; several
    match any of their hashes (computed once, in an init plan) and then any of the values.
    """
    values = list(dict.fromkeys(values))
    if len(values) == 1:
        clauses.append(f"hashtext({column}) = hashtext(%s) AND {column} = %s")
        params.extend([values[0], values[0]])
    elif values:
        clauses.append(f"hashtext({column}) = ANY(ARRAY(SELECT hashtext(v) FROM unnest(%s::text[]) v))"
                       f" AND {column} = ANY(%s)")
        params.extend([values, values])


def position_bounds(conn: Any, since: datetime | None, until: datetime | None) -> tuple[int, int]:
    """The positions a time window can hold: [first recorded at `since`, last before `until`].

    Each bound is a binary search over positions (log_position_at, schema/0020), widened by
    RECORDED_SKEW; the recorded_at filter then makes the window exact.
    """
    row = conn.execute(
        "SELECT CASE WHEN %(since)s::timestamptz IS NULL THEN 1 ELSE log_position_at(%(since)s - %(skew)s) END AS low,"
        " CASE WHEN %(until)s::timestamptz IS NULL THEN %(top)s"
        " ELSE log_position_at(%(until)s + %(skew)s) - 1 END AS high",
        {"since": since, "until": until, "skew": RECORDED_SKEW, "top": 2**63 - 1}).fetchone()
    return row["low"], row["high"]


def events_sql(after: int, upto: int, equal: dict[str, str | None], stream_types: list[str], types: list[str],
               since: datetime | None, until: datetime | None, size: int) -> tuple[str, list[Any]]:
    """The audit log query: events in (after, upto] matching every filter, in position order.

    Each filter is an equality an index on (filter, position) serves in order (type and
    session: on (hashtext(filter), position)); a correlation id's few events come from its hash
    index, and else a stream's from events_stream_idx.
    """
    found = _found_first(equal)
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in equal.items():
        if value is None or (found and column == found[0]):
            continue
        if column in HASHED:
            hashed_any_of(column, [value], clauses, params)
        else:
            clauses.append(f"{column} = %s")
            params.append(value)
    any_of("stream_type", stream_types, clauses, params)
    hashed_any_of("type", types, clauses, params)
    if since is not None:
        clauses.append("recorded_at >= %s")
        params.append(since)
    if until is not None:
        clauses.append("recorded_at < %s")
        params.append(until)
    if found and found[0] == "stream_id":
        return stream_page_sql(found[2][0], after, upto, clauses, params, size)
    where = " AND ".join(["position > %s", "position <= %s", *clauses])
    params = [after, upto, *params]
    if found:
        # A correlation id names a handful of events, found by its index alone, then filtered and
        # ordered: never a walk of the log in position order waiting for them to turn up, nor (in
        # a generic plan) a bitmap of every position in the range.
        _, match, values = found
        return (f"WITH found AS MATERIALIZED (SELECT * FROM events WHERE {match})"
                f" SELECT * FROM found WHERE {where} ORDER BY position LIMIT %s", [*values, *params, size])
    return f"SELECT * FROM events WHERE {where} ORDER BY position LIMIT %s", [*params, size]


# The first version of a stream recorded after a position: a binary search over the
# stream's versions by events_stream_idx (within a stream, version order is position order).
# Invariant: every version below lo is at or before `after`, every one from hi on is after it;
# each step reads the first version at or past the middle (versions of archived ranges are absent).
# Parameters: the stream id twice, the position twice, the stream id twice.
FIRST_VERSION_AFTER_SQL = f"""
WITH RECURSIVE bound(lo, hi) AS (
  SELECT 0::bigint, COALESCE((SELECT version FROM events WHERE {of_stream()}
                              ORDER BY version DESC LIMIT 1), 0) + 1
  UNION ALL
  SELECT CASE WHEN f.position IS NULL OR f.position > %s THEN b.lo ELSE f.version + 1 END,
         CASE WHEN f.position IS NULL OR f.position > %s THEN (b.lo + b.hi) / 2 ELSE b.hi END
  FROM bound b LEFT JOIN LATERAL (
    SELECT version, position FROM events WHERE {of_stream()} AND version >= (b.lo + b.hi) / 2
    ORDER BY version LIMIT 1) f ON true
  WHERE b.lo < b.hi)
SELECT max(lo) FROM bound"""


def stream_page_sql(stream: str, after: int, upto: int, clauses: list[str], params: list[Any],
                    size: int) -> tuple[str, list[Any]]:
    """Audit ?stream=: a page of the stream's events in positions (after, upto] matching `clauses`.

    `after` becomes the first version after it, read from events_stream_idx in version order: a
    page reads about a page of rows however long the stream, never the stream from its start.
    (A second search for `upto` would leave a plan two unknown version bounds, which it takes
    for a few rows to sort rather than a range to read in order.)
    """
    where = "".join(f" AND {clause}" for clause in ["position <= %s", *clauses])
    query = f"SELECT * FROM events WHERE {of_stream()} AND version >= ({FIRST_VERSION_AFTER_SQL}){where}"
    return f"{query} ORDER BY version LIMIT %s", [stream, stream, stream, stream, after, after, stream, stream,
                                                  upto, *params, size]


def _found_first(equal: dict[str, str | None]) -> tuple[str, str, list[str]] | None:
    """The filter whose few events are found first (its column, match and parameters): a correlation
    id by events_correlation_idx, else a stream by events_stream_idx; None: neither is asked."""
    correlation, stream = equal.get("metadata->>'correlation_id'"), equal.get("stream_id")
    if correlation is not None:
        return "metadata->>'correlation_id'", "metadata->>'correlation_id' = %s", [correlation]
    if stream is not None:
        return "stream_id", of_stream(), [stream, stream]
    return None


def event_page(pool: ConnectionPool, log: LogStatus, filters: EventFilter, after: int,
               limit: int) -> tuple[list[dict[str, Any]], int | None]:
    """Up to `limit` + 1 events after position `after` and up to the safe position of `log`, and
    the position the read stopped at before an archived range (None: it did not stop at one).

    `log` is read before this read's snapshot (its own statement, on the primary), or an append
    committing in between would be passed over for good by a cursor. A time window is first
    narrowed to the positions it can hold, so it never reads the log row by row. Raises
    ArchivedRange when the first position to read is archived: no page steps over one.
    """
    equal = {"stream_id": filters.stream, "metadata->>'actor_id'": filters.actor,
             "metadata->>'session_id'": filters.session, "metadata->>'correlation_id'": filters.correlation_id}
    with pool.connection() as conn:
        low, high = position_bounds(conn, filters.since, filters.until)
        start, upto, stop = max(after, low - 1), min(log.safe, high), None
        if start < upto:
            below = check_not_archived(conn, start)
            if below is not None and below <= upto:
                stop = upto = below - 1
        sql, params = events_sql(start, upto, equal, filters.stream_types, filters.types, filters.since,
                                 filters.until, limit + 1)
        # A stream's page is planned for each call (prepare=False): a generic plan takes any stream
        # for an average one, a few rows to sort, and would read a long stream's whole tail.
        found = _found_first(equal)
        prepare = False if found and found[0] == "stream_id" else None
        return events_json(conn, conn.execute(sql, params, prepare=prepare).fetchall()), stop


def get_event(pool: ConnectionPool, event_id: UUID) -> dict[str, Any] | None:
    """One stored event by its id, as JSON, or None."""
    with pool.connection() as conn:
        row = conn.execute(events_by_id(), (event_id,)).fetchone()
        return None if row is None else events_json(conn, [row])[0]


def stream_row(pool: ConnectionPool, stream_id: str) -> dict[str, Any] | None:
    """A stream's id, type and current version, or None if it has no events."""
    with pool.connection() as conn:
        return conn.execute(
            "SELECT stream_id, stream_type, version FROM streams WHERE stream_id = %s", (stream_id,)
        ).fetchone()


# A stream's events in (after, to] by events_stream_idx: both ends bound, so even a generic plan
# is an index range scan (parameters: the stream id twice, after, to, limit).
STREAM_EVENTS_SQL = f"SELECT * FROM events WHERE {of_stream()} AND version > %s AND version <= %s ORDER BY version LIMIT %s"


def stream_events(pool: ConnectionPool, stream_id: str, after: int, to_version: int | None,
                  limit: int) -> list[dict[str, Any]]:
    """Up to `limit` + 1 of a stream's events (as JSON) after version `after`, up to `to_version`."""
    with pool.connection() as conn:
        return events_json(conn, conn.execute(
            STREAM_EVENTS_SQL,
            (stream_id, stream_id, after, MAX_VERSION if to_version is None else to_version, limit + 1),
        ).fetchall())


# How far recorded_at may run against position order (both are drawn as a row is inserted, so
# concurrent appends differ by microseconds): a time bound's position bound is widened by this.
RECORDED_SKEW = timedelta(seconds=1)
# A causation id names the causing event's id; as uuid it is looked up in log_event_ids by
# events_event_id_key (an id that is not a uuid names no event).
CAUSATION_UUID = ("CASE WHEN {0} ~* '^[0-9a-f]{{8}}-?[0-9a-f]{{4}}-?[0-9a-f]{{4}}-?[0-9a-f]{{4}}-?[0-9a-f]{{12}}$'"
                  " THEN ({0})::uuid END")

# The causes of an event, back to the root: each step looks the causing event up by its id (its
# position in log_event_ids, then its row; OFFSET 0 keeps the lookup per step: no hash over the log).
CAUSES_SQL = """
WITH RECURSIVE up(position, causation_id, depth) AS (
    SELECT e.position, {cause_e}, 0 FROM ({start}) e
    UNION ALL
    SELECT p.position, {cause_p}, up.depth + 1
    FROM up CROSS JOIN LATERAL ({step} OFFSET 0) p
    WHERE up.depth < 100
)
SELECT e.*, up.depth FROM up
CROSS JOIN LATERAL (SELECT * FROM events x WHERE x.position = up.position OFFSET 0) e
WHERE up.depth > 0 ORDER BY up.depth
""".format(cause_e=CAUSATION_UUID.format("e.metadata->>'causation_id'"),
           cause_p=CAUSATION_UUID.format("p.metadata->>'causation_id'"),
           start=events_by_id("e.position, e.metadata"),
           step=events_by_id("e.position, e.metadata", "= up.causation_id"))

# Its effects, generation by generation: events_causation_idx finds the events naming each one
# (a lookup per event, OFFSET 0: each segment's part of the index, never a hash over the log).
EFFECTS_SQL = """
WITH RECURSIVE down(event_id, position, depth) AS (
    SELECT i.event_id, i.position, 0 FROM log_event_ids i WHERE i.event_id = %s
    UNION
    SELECT c.event_id, c.position, down.depth + 1
    FROM down CROSS JOIN LATERAL (SELECT c.event_id, c.position FROM events c
                                  WHERE c.metadata->>'causation_id' = down.event_id::text OFFSET 0) c
    WHERE down.depth < %s
), found AS (
    SELECT position, min(depth) AS depth FROM down WHERE depth > 0
    GROUP BY position ORDER BY position LIMIT 1000
)
-- Each event by its position (OFFSET 0 keeps the lookup per row: no hash over the log).
SELECT e.*, f.depth FROM found f
CROSS JOIN LATERAL (SELECT * FROM events x WHERE x.position = f.position OFFSET 0) e
ORDER BY f.position
"""



def causation(pool: ConnectionPool, event_id: UUID, depth: int) -> dict[str, Any] | None:
    """The causation chain through an event: its causes back to the root, and its effects up to
    `depth` generations and 1000 events; None if there is no such event."""
    with pool.connection() as conn:
        row = conn.execute(events_by_id(), (event_id,)).fetchone()
        if row is None:
            return None
        causes = conn.execute(CAUSES_SQL, (event_id,)).fetchall()
        effects = conn.execute(EFFECTS_SQL, (event_id, depth)).fetchall()
        found = events_json(conn, [row, *causes, *effects])
    return {
        "event": found[0],
        "caused_by": [{**e, "depth": r["depth"]} for e, r in zip(found[1:len(causes) + 1], causes)],
        "caused": [{**e, "depth": r["depth"]} for e, r in zip(found[len(causes) + 1:], effects)],
    }
