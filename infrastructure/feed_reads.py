"""The feed's way into the log: bounded pages of events as JSON text, up to the safe position.

GET /v1/subscribe and consumer groups send events exactly as GET /v1/events lists them. The
database builds each event's JSON, so a page costs no Python per field; a payload stored
under an older schema version is decoded, upcast and encoded again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import psycopg
from psycopg.rows import tuple_row

from domain.event_types import EventTypeRegistry
from domain.event_types import registry as default_registry
from infrastructure.log_status import read_log_status

# At most this many positions are scanned by one page, so a filter that matches rarely costs
# bounded work per query; the feed then moves on from the end of the scanned range.
SCAN_WINDOW = 50_000

# One event in GET /v1/events' item shape (service_layer/event_log.py events_json), as JSON text.
EVENT_JSON = (
    "json_build_object('position', position, 'event_id', event_id, 'stream_id', stream_id,"
    " 'stream_type', stream_type, 'stream_version', version, 'type', type,"
    " 'schema_version', schema_version, 'payload', payload, 'metadata', metadata,"
    " 'recorded_at', to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"'))::text"
)


class FeedEvent(NamedTuple):
    """One event of a page: where it is, its stream and type, and its JSON."""

    position: int
    stream_id: str
    type: str
    json: str


@dataclass(frozen=True)
class FeedFilter:
    """Which events a reader wants: any of these event types, stream types, stream ids (empty: all)."""

    types: Sequence[str] = ()
    stream_types: Sequence[str] = ()
    stream_ids: Sequence[str] = ()
    # A consumer group's partitions: one floor per partition (by projection_partition of the
    # stream id); an event is read only above its partition's floor. None: every partition.
    floors: Sequence[int] | None = None

    def sql(self) -> tuple[str, list[Any]]:
        """The filter as ` AND ...` clauses and their parameters."""
        clauses, params = [], []
        for column, values in (("type", self.types), ("stream_type", self.stream_types),
                               ("stream_id", self.stream_ids)):
            if values:
                clauses.append(f" AND {column} = ANY(%s)")
                params.append(list(values))
        if self.floors is not None:
            clauses.append(" AND position > (%s::bigint[])[projection_partition(stream_id, %s) + 1]")
            params += [list(self.floors), len(self.floors)]
        return "".join(clauses), params

    def public(self) -> dict[str, list[str]]:
        """As JSON, for the subscriptions list."""
        return {"type": list(self.types), "stream_type": list(self.stream_types),
                "stream_id": list(self.stream_ids)}


@dataclass
class FeedPage:
    """Events in (after, upto], in position order; `upto` is where the next page starts."""

    events: list[FeedEvent] = field(default_factory=list)
    upto: int = 0
    safe: int = 0


def read_page(conn: psycopg.Connection, after: int, limit: int, feed_filter: FeedFilter,
              registry: EventTypeRegistry = default_registry) -> FeedPage:
    """Up to `limit` matching events after `after`, never past the safe position.

    The safe position is read in its own statement first, so the page's snapshot sees every
    append at or below it. A full page ends at its last event; otherwise at the scanned end.
    """
    safe = read_log_status(conn).safe
    end = min(safe, after + SCAN_WINDOW)
    if end <= after:
        return FeedPage([], after, safe)
    where, params = feed_filter.sql()
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            f"SELECT position, stream_id, type, schema_version, {EVENT_JSON} FROM events"
            f" WHERE position > %s AND position <= %s{where} ORDER BY position LIMIT %s",
            [after, end, *params, limit],
        ).fetchall()
    events = [_current(row, registry) for row in rows]
    upto = events[-1].position if len(events) == limit else end
    return FeedPage(events, upto, safe)


def read_positions_json(conn: psycopg.Connection, positions: Sequence[int],
                        registry: EventTypeRegistry = default_registry) -> list[FeedEvent]:
    """The events at these positions, in position order (a group's redeliveries)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            f"SELECT position, stream_id, type, schema_version, {EVENT_JSON} FROM events"
            " WHERE position = ANY(%s) ORDER BY position", [list(positions)]).fetchall()
    return [_current(row, registry) for row in rows]


def _current(row: tuple[Any, ...], registry: EventTypeRegistry) -> FeedEvent:
    """A row as a FeedEvent, its payload upcast to the type's current schema version."""
    position, stream_id, type_, schema_version, text = row
    known = registry.find(type_)
    if known is not None and known.schema_version != schema_version:
        item = json.loads(text)
        item["schema_version"], item["payload"] = registry.upcast(type_, schema_version, item["payload"])
        text = json.dumps(item, separators=(",", ":"))
    return FeedEvent(position, stream_id, type_, text)
