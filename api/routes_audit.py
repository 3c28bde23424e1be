"""The auditors' routes: the event log with filters, a stream's events, causation chains."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import StringConstraints

from api.deps import Auditor, ChronicleState, chronicle, decode_cursor, etag, min_position_param, page_of, page_size
from api.problems import Problem
from api.read_support import any_of
from api.schemas import ExactRoute, CausationOut, EventOut, EventPage, StreamEventsOut
from domain.event_types import registry
from infrastructure.log_status import read_log_status

router = APIRouter(prefix="/v1", tags=["audit"], route_class=ExactRoute)
# How far recorded_at may run against position order (both are drawn as a row is inserted, so
# concurrent appends differ by microseconds): a time bound's position bound is widened by this.
RECORDED_SKEW = timedelta(seconds=1)
# A causation id names the causing event's id; as uuid it is looked up by events_event_id_key
# (an id that is not a uuid names no event).
CAUSATION_UUID = ("CASE WHEN {0} ~* '^[0-9a-f]{{8}}-?[0-9a-f]{{4}}-?[0-9a-f]{{4}}-?[0-9a-f]{{4}}-?[0-9a-f]{{12}}$'"
                  " THEN ({0})::uuid END")
_ID = r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,199}$"

# The causes of an event, back to the root: each step looks the causing event up by its id.
CAUSES_SQL = """
WITH RECURSIVE up(event_id, causation_id, depth) AS (
    SELECT e.event_id, {cause_e}, 0 FROM events e WHERE e.event_id = %s
    UNION ALL
    SELECT p.event_id, {cause_p}, up.depth + 1
    FROM up JOIN events p ON p.event_id = up.causation_id
    WHERE up.depth < 100
)
SELECT e.*, up.depth FROM up
CROSS JOIN LATERAL (SELECT * FROM events x WHERE x.event_id = up.event_id OFFSET 0) e
WHERE up.depth > 0 ORDER BY up.depth
""".format(cause_e=CAUSATION_UUID.format("e.metadata->>'causation_id'"),
           cause_p=CAUSATION_UUID.format("p.metadata->>'causation_id'"))

# Its effects, generation by generation: events_causation_idx finds the events naming each one.
EFFECTS_SQL = """
WITH RECURSIVE down(event_id, position, depth) AS (
    SELECT e.event_id, e.position, 0 FROM events e WHERE e.event_id = %s
    UNION
    SELECT c.event_id, c.position, down.depth + 1
    FROM down JOIN events c ON c.metadata->>'causation_id' = down.event_id::text
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


def event_json(row: dict[str, Any]) -> dict[str, Any]:
    """One stored event as JSON, its payload upcast to the current schema version."""
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

    Each filter is an equality an index on (filter, position) serves in order.
    """
    clauses = ["position > %s", "position <= %s"]
    params: list[Any] = [after, upto]
    for column, value in equal.items():
        if value is not None:
            clauses.append(f"{column} = %s")
            params.append(value)
    any_of("stream_type", stream_types, clauses, params)
    any_of("type", types, clauses, params)
    if since is not None:
        clauses.append("recorded_at >= %s")
        params.append(since)
    if until is not None:
        clauses.append("recorded_at < %s")
        params.append(until)
    where = " AND ".join(clauses)
    if equal.get("metadata->>'correlation_id'") is not None:
        # A correlation id names a handful of events, found by its hash index and then ordered:
        # never a walk of the log in position order waiting for them to turn up.
        return (f"WITH found AS MATERIALIZED (SELECT * FROM events WHERE {where})"
                " SELECT * FROM found ORDER BY position LIMIT %s", [*params, size])
    return f"SELECT * FROM events WHERE {where} ORDER BY position LIMIT %s", [*params, size]


@router.get("/events", summary="The event log, filtered, in log order")
def list_events(
    response: Response,
    state: ChronicleState = Depends(chronicle),
    _: Any = Auditor,
    stream: str | None = Query(None, pattern=_ID, description="stream id"),
    stream_type: list[Annotated[str, StringConstraints(max_length=100)]] | None = Query(
        None, max_length=50, description="stream type, repeatable (any of them)"),
    type: list[Annotated[str, StringConstraints(max_length=100)]] | None = Query(
        None, description="event type, repeatable (any of them)", max_length=50),
    actor: str | None = Query(None, max_length=200, description="actor id"),
    session: str | None = Query(None, max_length=200, description="session id"),
    correlation_id: str | None = Query(None, max_length=200),
    since: datetime | None = Query(None, description="recorded at or after (ISO 8601)"),
    until: datetime | None = Query(None, description="recorded before (ISO 8601)"),
    cursor: str | None = Query(None, max_length=200),
    limit: int = Depends(page_size),
    _wait: int | None = Depends(min_position_param),
) -> EventPage:
    """Events matching every filter given, oldest first, a page at a time.

    Only events below the safe position are listed, so a cursor never skips a late commit. The
    X-Chronicle-Log-Head and X-Chronicle-Safe-Position headers say how far that is, and
    X-Chronicle-Log-Held-Back, present only while an open append holds readers below the head,
    since when.
    """
    after = (decode_cursor(cursor, (int,)) or (0,))[0]
    with state.pool.connection() as conn:
        # Its own statement, before the read: the read's snapshot must be taken after the
        # safe position is, or an append committing in between would be passed over for good.
        log = read_log_status(conn)
        low, high = position_bounds(conn, since, until)
    response.headers.update(log.headers())
    sql, params = events_sql(max(after, low - 1), min(log.safe, high), {
        "stream_id": stream, "metadata->>'actor_id'": actor, "metadata->>'session_id'": session,
        "metadata->>'correlation_id'": correlation_id}, stream_type or [], type or [], since, until, limit + 1)
    with state.pool.connection() as conn:
        rows = conn.execute(sql, params).fetchall()
    rows, next_cursor = page_of(rows, limit, "position")
    return {"events": [event_json(row) for row in rows], "next_cursor": next_cursor}


@router.get("/streams/{stream_id:path}/events", summary="One stream's events, in version order")
def stream_events(
    response: Response,
    stream_id: str = Path(..., pattern=_ID),
    state: ChronicleState = Depends(chronicle),
    _: Any = Auditor,
    from_version: int = Query(1, ge=1),
    to_version: int | None = Query(None, ge=1),
    cursor: str | None = Query(None, max_length=200),
    limit: int = Depends(page_size),
    _wait: int | None = Depends(min_position_param),
) -> StreamEventsOut:
    """A stream's events from `from_version`, with its current version as the ETag.

    An unknown stream is 404.
    """
    after = (decode_cursor(cursor, (int,)) or (from_version - 1,))[0]
    with state.pool.connection() as conn:
        stream = conn.execute(
            "SELECT stream_id, stream_type, version FROM streams WHERE stream_id = %s", (stream_id,)
        ).fetchone()
        if stream is None:
            raise Problem(404, "stream_not_found", f"no stream {stream_id!r}", field="stream_id")
        rows = conn.execute(
            # Both ends bound, so even a generic plan is an index range scan.
            "SELECT * FROM events WHERE stream_id = %s AND version > %s AND version <= %s"
            " ORDER BY version LIMIT %s",
            (stream_id, after, 2**63 - 1 if to_version is None else to_version, limit + 1),
        ).fetchall()
    rows, next_cursor = page_of(rows, limit, "version")
    response.headers["ETag"] = etag(stream["version"])
    return {
        "stream_id": stream_id,
        "stream_type": stream["stream_type"],
        "stream_version": stream["version"],
        "events": [event_json(row) for row in rows],
        "next_cursor": next_cursor,
    }


@router.get("/events/{event_id}", summary="One event")
def get_event(event_id: UUID, state: ChronicleState = Depends(chronicle), _: Any = Auditor,
              _wait: int | None = Depends(min_position_param)) -> EventOut:
    """One event by its id; 404 if there is none."""
    with state.pool.connection() as conn:
        row = conn.execute("SELECT * FROM events WHERE event_id = %s", (event_id,)).fetchone()
    if row is None:
        raise Problem(404, "event_not_found", f"no event {event_id}", field="event_id")
    return event_json(row)


@router.get("/events/{event_id}/causation", summary="What caused an event, and what it caused")
def causation(
    event_id: UUID,
    state: ChronicleState = Depends(chronicle),
    _: Any = Auditor,
    depth: int = Query(10, ge=1, le=50, description="how many generations of effects to follow"),
    _wait: int | None = Depends(min_position_param),
) -> CausationOut:
    """The causation chain through an event: its causes back to the root, and its effects.

    Causes follow `metadata.causation_id`; effects are the events naming it, generation by
    generation, up to `depth` generations and 1000 events.
    """
    with state.pool.connection() as conn:
        row = conn.execute("SELECT * FROM events WHERE event_id = %s", (event_id,)).fetchone()
        if row is None:
            raise Problem(404, "event_not_found", f"no event {event_id}", field="event_id")
        causes = conn.execute(CAUSES_SQL, (event_id,)).fetchall()
        effects = conn.execute(EFFECTS_SQL, (event_id, depth)).fetchall()
    return {
        "event": event_json(row),
        "caused_by": [{**event_json(r), "depth": r["depth"]} for r in causes],
        "caused": [{**event_json(r), "depth": r["depth"]} for r in effects],
    }
