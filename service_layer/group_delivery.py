"""What a group member receives and acknowledges: events of its partitions, acks, nacks, parking.

Delivery is at least once. A fetch returns the events of the member's partitions after their
checkpoints, up to the safe position, each stream's in order, and notes how far it read
(`delivered`); an ack moves each partition's checkpoint up to the acked position, never past
what was delivered. Whatever is not acked is delivered again (to the next owner, after a
crash). A nack parks the event and its stream's later events as a dead letter of the group
('group:<name>'); an operator's retry queues them for delivery again, in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from infrastructure.feed_reads import FeedEvent, FeedFilter, read_page, read_positions_json
from infrastructure.log_keys import of_stream
from infrastructure.log_segments import check_feed_from
from infrastructure.partition_reads import NO_POSITION
from projections.partitioning import partition_of
from service_layer.groups import GroupError, assignment, dead_letter_owner, renew

# Parked behind a nacked event of its stream: the error its later events are parked with.
PARKED_BEHIND = "parked behind position {position} of its stream"
# A group's queued redeliveries: retried by an operator, not acked yet.
_PENDING = "projection = %s AND status = 'retried' AND resolved_at IS NULL"


@dataclass(frozen=True)
class Delivery:
    """A fetch's answer: events with their partitions, the partitions owned, and how far it read."""

    events: list[tuple[FeedEvent, int]]
    partitions: list[int]
    position: int


def fetch(pool: ConnectionPool, group: str, member_id: str, limit: int) -> Delivery:
    """Events for this member now (maybe none): queued redeliveries first, then the log after its checkpoints."""
    owner = dead_letter_owner(group)
    with pool.connection() as conn, conn.transaction():
        renew(conn, group, member_id)
        count, owned = assignment(conn, group)
        mine = owned.get(member_id, [])
        if not mine:
            return Delivery([], [], conn.execute("SELECT safe_position() AS s").fetchone()["s"])
        checkpoints = {r["partition"]: r["position"] for r in conn.execute(
            "SELECT partition, position FROM consumer_group_checkpoint WHERE group_name = %s AND partition = ANY(%s)",
            (group, mine)).fetchall()}
        redeliver = [r["position"] for r in conn.execute(
            f"SELECT position FROM dead_letter WHERE {_PENDING} AND partition = ANY(%s) ORDER BY position LIMIT %s",
            (owner, mine, limit)).fetchall()]
        parked = {r["stream_id"]: r["position"] for r in conn.execute(
            "SELECT stream_id, min(position) AS position FROM dead_letter WHERE projection = %s"
            " AND status = 'parked' AND partition = ANY(%s) GROUP BY stream_id", (owner, mine)).fetchall()}
    # Outside the transaction: the page reads the safe position in a statement of its own first.
    with pool.connection() as conn:
        check_feed_from(conn, min(checkpoints.values()))  # never steps over an archived range
        floors = [checkpoints.get(p, NO_POSITION) for p in range(count)]
        page = read_page(conn, min(checkpoints.values()), limit, FeedFilter(floors=floors))
        # Events parked before (whatever became of them since) go only through their dead letters.
        known = {r["position"] for r in conn.execute(
            "SELECT position FROM dead_letter WHERE projection = %s AND position = ANY(%s)",
            (owner, [e.position for e in page.events])).fetchall()}
        fresh = [e for e in page.events if e.position not in known]
        events = [(e, partition_of(e.stream_id, count)) for e in read_positions_json(conn, redeliver)]
        behind = [(e, partition_of(e.stream_id, count)) for e in fresh if e.stream_id in parked]
        events += [(e, partition_of(e.stream_id, count)) for e in fresh if e.stream_id not in parked]
        with conn.transaction():
            read = _mark_delivered(conn, group, member_id, checkpoints, {p for _, p in events}, page.upto)
            # A partition whose checkpoint moved since it was read (a seek) delivers nothing now.
            queued = set(redeliver)  # dead letters retried: delivered whatever the checkpoints
            events = [(e, p) for e, p in events if p in read or e.position in queued]
            _park(conn, owner, [(e, p, PARKED_BEHIND.format(position=parked[e.stream_id]))
                                for e, p in behind if p in read])
    return Delivery(events, mine, page.upto)


def _mark_delivered(conn: psycopg.Connection, group: str, member_id: str, checkpoints: dict[int, int],
                    busy: set[int], upto: int) -> set[int]:
    """Note each partition as read up to `upto`, only where its checkpoint is still the one read;
    those partitions. A seek between the fetch's read and this write must not be undone by it."""
    rows = conn.execute(
        # Each partition read: delivered up to the page's end; one with nothing to deliver is done to it.
        "UPDATE consumer_group_checkpoint c SET delivered = greatest(c.position, %(upto)s), delivered_to = %(m)s,"
        " position = CASE WHEN c.partition = ANY(%(busy)s) THEN c.position ELSE greatest(c.position, %(upto)s) END,"
        " updated_at = clock_timestamp() FROM unnest(%(parts)s::int[], %(seen)s::bigint[]) AS seen(partition, position)"
        # Compared again after waiting for a seek's lock: a moved checkpoint is left as the seek set it.
        " WHERE c.group_name = %(g)s AND c.partition = seen.partition AND c.position = seen.position"
        " RETURNING c.partition",
        {"upto": upto, "busy": sorted(busy), "g": group, "m": member_id,
         "parts": list(checkpoints), "seen": list(checkpoints.values())}).fetchall()
    return {r["partition"] for r in rows}


def ack(pool: ConnectionPool, group: str, member_id: str, position: int) -> list[dict[str, int]]:
    """Acknowledge everything delivered to this member up to `position`; its partitions' checkpoints."""
    with pool.connection() as conn, conn.transaction():
        renew(conn, group, member_id)
        _, owned = assignment(conn, group)
        mine = owned.get(member_id, [])
        conn.execute(f"UPDATE dead_letter SET resolved_at = clock_timestamp() WHERE {_PENDING}"
                     " AND partition = ANY(%s) AND position <= %s", (dead_letter_owner(group), mine, position))
        conn.execute(
            "UPDATE consumer_group_checkpoint SET position = greatest(position, least(%s, delivered)),"
            " updated_at = clock_timestamp() WHERE group_name = %s AND partition = ANY(%s) AND delivered_to = %s",
            (position, group, mine, member_id))
        rows = conn.execute("SELECT partition, position FROM consumer_group_checkpoint WHERE group_name = %s"
                            " AND partition = ANY(%s) ORDER BY partition", (group, mine)).fetchall()
    return [{"partition": r["partition"], "position": r["position"]} for r in rows]


def nack(pool: ConnectionPool, group: str, member_id: str, position: int, error: str) -> list[dict[str, Any]]:
    """Park a delivered event and its stream's later delivered events; their dead letters."""
    owner = dead_letter_owner(group)
    with pool.connection() as conn, conn.transaction():
        renew(conn, group, member_id)
        count, owned = assignment(conn, group)
        event = conn.execute("SELECT stream_id FROM events WHERE position = %s", (position,)).fetchone()
        if event is None:
            raise GroupError(422, "event_not_found", f"no event at position {position}", "position")
        partition = partition_of(event["stream_id"], count)
        if partition not in owned.get(member_id, []):
            raise GroupError(409, "partition_not_owned", f"position {position} is in partition {partition},"
                             " which this member does not own (any more)", "position")
        checkpoint = conn.execute("SELECT position, CASE WHEN delivered_to = %s THEN delivered ELSE 0 END AS delivered"
                                  " FROM consumer_group_checkpoint WHERE group_name = %s AND partition = %s",
                                  (member_id, group, partition)).fetchone()
        pending = conn.execute(f"SELECT position FROM dead_letter WHERE {_PENDING} AND stream_id = %s"
                               " AND position >= %s", (owner, event["stream_id"], position)).fetchall()
        if not (checkpoint["position"] < position <= checkpoint["delivered"]) and not any(
                r["position"] == position for r in pending):
            raise GroupError(409, "not_delivered", f"position {position} is not delivered and unacknowledged",
                             "position")
        conn.execute(f"UPDATE dead_letter SET status = 'parked', attempts = attempts + 1, last_failure ="
                     f" clock_timestamp(), error = %s WHERE {_PENDING} AND stream_id = %s AND position >= %s",
                     (error, owner, event["stream_id"], position))
        later = read_positions_json(conn, [r["position"] for r in conn.execute(
            f"SELECT position FROM events WHERE {of_stream()} AND position > %s AND position <= %s",
            (event["stream_id"], event["stream_id"], max(position, checkpoint["position"]),
             checkpoint["delivered"])).fetchall()])
        first = read_positions_json(conn, [position]) if not pending else []
        _park(conn, owner, [(e, partition, error) for e in first]
              + [(e, partition, PARKED_BEHIND.format(position=position)) for e in later])
        rows = conn.execute("SELECT id, position, stream_id FROM dead_letter WHERE projection = %s"
                            " AND status = 'parked' AND stream_id = %s AND position >= %s ORDER BY position",
                            (owner, event["stream_id"], position)).fetchall()
    return [{"dead_letter_id": r["id"], "position": r["position"], "stream_id": r["stream_id"]} for r in rows]


def _park(conn: psycopg.Connection, owner: str, events: list[tuple[FeedEvent, int, str]]) -> None:
    """Dead letters for these events (an event already parked stays as it is)."""
    if events:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO dead_letter (projection, partition, position, event_id, stream_id, type, error, attempts)"
                " SELECT %s, %s, position, event_id, stream_id, type, %s, 1 FROM events WHERE position = %s"
                " ON CONFLICT (projection, shadow, position) WHERE status = 'parked' DO NOTHING",
                [(owner, partition, error[:4000], e.position) for e, partition, error in events])

