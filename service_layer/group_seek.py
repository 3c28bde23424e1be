"""Moving a consumer group's checkpoints: the operator's way past an archived range, or back to
deliver again (docs/log-segments.md, "Reading an archived range").

A group delivers every event once, so a fetch whose checkpoints lie below an archived range
answers 410 until the archive is restored. If the group's consumers do not need those events,
an operator moves the group's checkpoints to a position at or after the archive's last one.
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import ConnectionPool

from infrastructure.event_store import EventMetadata, EventStore
from infrastructure.log_segments import archived_segments
from service_layer.groups import GroupError
from service_layer.operator_events import record_operator_action_on


def seek_group(pool: ConnectionPool, store: EventStore, group: str, position: int, *, actor_id: str,
               actor_type: str, correlation_id: str | None = None) -> dict[str, Any]:
    """Set every partition's checkpoint of `group` to `position` and record `operator.group_moved`,
    in one transaction (no move without its audit record).

    Refused (GroupError 404/422, nothing written) for an unknown group, a position past the safe
    position, or one from which the group would have to read an archived range.
    """
    with pool.connection() as conn, conn.transaction():
        before = {str(r["partition"]): r["position"] for r in conn.execute(
            # The group's checkpoints, locked: acks and fetches' writes wait for the move (a fetch that
            # read them before finds them moved and delivers nothing from them).
            "SELECT partition, position FROM consumer_group_checkpoint WHERE group_name = %s"
            " ORDER BY partition FOR UPDATE", (group,)).fetchall()}
        if conn.execute("SELECT 1 FROM consumer_group WHERE name = %s", (group,)).fetchone() is None:
            raise GroupError(404, "group_not_found", f"no consumer group {group!r}", "group")
        _check_position(conn, position)
        # Nothing delivered and unacknowledged remains: the next fetch reads after `position`.
        conn.execute("UPDATE consumer_group_checkpoint SET position = %s, delivered = %s, delivered_to = NULL,"
                     " updated_at = clock_timestamp() WHERE group_name = %s", (position, position, group))
        # In the same transaction: the checkpoints move with their audit record or not at all.
        metadata = EventMetadata(actor_id=actor_id, actor_type=actor_type, correlation_id=correlation_id)
        recorded = record_operator_action_on(conn, store, "operator.group_moved", f"group:{group}",
                                             {"to_position": position, "from_checkpoints": before}, metadata)
    store.committed([recorded])
    return {"group": group, "position": position, "previous_checkpoints": before,
            "operator_event_position": recorded.position}


def _check_position(conn: Any, position: int) -> None:
    """A group may stand at `position` only at or below the safe position, and at or after the end
    of every archived range (a fetch would answer 410 below one)."""
    safe = conn.execute("SELECT safe_position() AS safe").fetchone()["safe"]
    if position > safe:
        raise GroupError(422, "position_not_reached", f"position {position} is past the log's safe position {safe}",
                         "position")
    for segment in archived_segments(conn):
        last = segment.end_position - 1
        if position < last:
            where = "inside" if position >= segment.first_position else "before"
            raise GroupError(422, "position_archived", (
                f"position {position} is {where} positions {segment.first_position}..{last}, archived in"
                f" {segment.archive_name}: a group there cannot be served until it is restored; move it to {last}"
                " or later"), "position")
