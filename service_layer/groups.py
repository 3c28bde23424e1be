"""Consumer groups: named groups of members that share the log by partition, with leases.

A group has a fixed number of partitions (`projection_partition` of the stream id, as the
projections use), so each stream's events reach one member, in order. Ownership is computed,
never stored: the live members (lease not expired) in join order, partition p to member
p mod n. A join or a leave moves partitions at once; a member that dies loses its partitions
when its lease expires, so partitions rebalance within one lease.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from projections.dead_letters import GROUP_PREFIX

FORGET_EXPIRED_SECONDS = 3600


class GroupError(Exception):
    """A group request that cannot be honoured: HTTP status, stable code, the field at fault."""

    def __init__(self, status: int, code: str, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.field = status, code, detail, field


@dataclass(frozen=True)
class Member:
    """A live member: its lease and the partitions it owns now."""

    member_id: str
    group: str
    name: str | None
    lease_seconds: int
    lease_expires_at: str
    partitions: list[int]

    def public(self) -> dict[str, Any]:
        """As the API answers it."""
        return {"member_id": self.member_id, "group": self.group, "name": self.name,
                "lease_seconds": self.lease_seconds, "lease_expires_at": self.lease_expires_at,
                "partitions": self.partitions}


def dead_letter_owner(group: str) -> str:
    """The `projection` value of a group's dead letters."""
    return GROUP_PREFIX + group


def assignment(conn: psycopg.Connection, group: str) -> tuple[int, dict[str, list[int]]]:
    """The group's partition count, and the partitions each live member owns now."""
    row = conn.execute("SELECT partitions FROM consumer_group WHERE name = %s", (group,)).fetchone()
    if row is None:
        raise GroupError(404, "group_not_found", f"no consumer group {group!r}", "group")
    live = [r["member_id"] for r in conn.execute(
        # consumer_group_member_group_idx: the group's members in join order.
        "SELECT member_id::text FROM consumer_group_member WHERE group_name = %s"
        " AND lease_expires_at > clock_timestamp() ORDER BY joined_at, member_id", (group,)).fetchall()]
    owned: dict[str, list[int]] = {member: [] for member in live}
    for partition in range(row["partitions"]) if live else ():
        owned[live[partition % len(live)]].append(partition)
    return row["partitions"], owned


def join(pool: ConnectionPool, group: str, name: str | None, lease_seconds: int, key_id: str,
         partitions: int) -> Member:
    """Add a member (creating the group with `partitions` partitions on its first join)."""
    member_id = str(uuid.uuid4())
    with pool.connection() as conn, conn.transaction():
        conn.execute("INSERT INTO consumer_group (name, partitions) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                     (group, partitions))
        conn.execute(
            "INSERT INTO consumer_group_checkpoint (group_name, partition)"
            " SELECT g.name, p FROM consumer_group g, generate_series(0, g.partitions - 1) p WHERE g.name = %s"
            " ON CONFLICT DO NOTHING", (group,))
        # Members whose lease ran out long ago are forgotten (a late heartbeat is then 404).
        conn.execute("DELETE FROM consumer_group_member WHERE group_name = %s"
                     " AND lease_expires_at < clock_timestamp() - make_interval(secs => %s)",
                     (group, FORGET_EXPIRED_SECONDS))
        conn.execute(
            "INSERT INTO consumer_group_member (member_id, group_name, name, key_id, lease_seconds, lease_expires_at)"
            " VALUES (%s, %s, %s, %s, %s, clock_timestamp() + make_interval(secs => %s))",
            (member_id, group, name, key_id, lease_seconds, lease_seconds))
        return _view(conn, group, member_id)


def renew(conn: psycopg.Connection, group: str, member_id: str) -> Member:
    """Extend a live member's lease; 404 if there is no such member, 410 once its lease expired."""
    row = conn.execute(
        "UPDATE consumer_group_member SET seen_at = clock_timestamp(),"
        " lease_expires_at = clock_timestamp() + make_interval(secs => lease_seconds)"
        " WHERE member_id = %s AND group_name = %s AND lease_expires_at > clock_timestamp() RETURNING member_id",
        (member_id, group)).fetchone()
    if row is None:
        _missing(conn, group, member_id)
    return _view(conn, group, member_id)


def heartbeat(pool: ConnectionPool, group: str, member_id: str) -> Member:
    """Keep a member's lease; the answer names the partitions it owns now."""
    with pool.connection() as conn:
        return renew(conn, group, member_id)


def leave(pool: ConnectionPool, group: str, member_id: str) -> None:
    """Remove a member; its partitions go to the others at once."""
    with pool.connection() as conn:
        row = conn.execute("DELETE FROM consumer_group_member WHERE member_id = %s AND group_name = %s"
                           " RETURNING member_id", (member_id, group)).fetchone()
    if row is None:
        raise GroupError(404, "member_not_found", f"no member {member_id} in group {group!r}", "member_id")


def _missing(conn: psycopg.Connection, group: str, member_id: str) -> None:
    row = conn.execute("SELECT 1 FROM consumer_group_member WHERE member_id = %s AND group_name = %s",
                       (member_id, group)).fetchone()
    if row is None:
        raise GroupError(404, "member_not_found", f"no member {member_id} in group {group!r}", "member_id")
    raise GroupError(410, "member_expired", f"member {member_id}'s lease expired and its partitions moved on;"
                     " join again", "member_id")


def _view(conn: psycopg.Connection, group: str, member_id: str) -> Member:
    row = conn.execute(
        "SELECT name, lease_seconds, lease_expires_at FROM consumer_group_member WHERE member_id = %s",
        (member_id,)).fetchone()
    _, owned = assignment(conn, group)
    return Member(member_id, group, row["name"], row["lease_seconds"], row["lease_expires_at"].isoformat(),
                  owned.get(member_id, []))


def group_status(pool: ConnectionPool, group: str | None = None) -> tuple[int, list[dict[str, Any]]]:
    """The safe position, and every group (or one): members, partitions with owner, checkpoint and lag."""
    with pool.connection() as conn:
        safe = conn.execute("SELECT safe_position() AS safe").fetchone()["safe"]
        groups = group_rows(conn, group)
        if group is not None and not groups:
            raise GroupError(404, "group_not_found", f"no consumer group {group!r}", "group")
        return safe, [partition_status(conn, g, safe) for g in groups]


def group_rows(conn: psycopg.Connection, group: str | None = None) -> list[dict[str, Any]]:
    """Every consumer group's row (or one's), by name."""
    return conn.execute("SELECT name, partitions, created_at FROM consumer_group"
                        " WHERE %(g)s::text IS NULL OR name = %(g)s ORDER BY name", {"g": group}).fetchall()


def partition_status(conn: psycopg.Connection, group: dict[str, Any], safe: int) -> dict[str, Any]:
    """One group's status: members, and each partition's owner, checkpoint and lag behind `safe`."""
    name, count = group["name"], group["partitions"]
    _, owned = assignment(conn, name)
    owner = {p: m for m, parts in owned.items() for p in parts}
    members = conn.execute(
        "SELECT member_id::text, name, joined_at, seen_at, lease_expires_at,"
        " lease_expires_at > clock_timestamp() AS alive FROM consumer_group_member WHERE group_name = %s"
        " ORDER BY joined_at, member_id", (name,)).fetchall()
    checkpoints = conn.execute("SELECT partition, position, delivered FROM consumer_group_checkpoint"
                               " WHERE group_name = %s ORDER BY partition", (name,)).fetchall()
    floor = min((c["position"] for c in checkpoints), default=safe)
    # Events above each partition's checkpoint, up to the safe position: one range scan.
    lag = {r["p"]: r["n"] for r in conn.execute(
        "SELECT projection_partition(stream_id, %s) AS p, count(*) AS n FROM events"
        " WHERE position > %s AND position <= %s AND position > (%s::bigint[])[projection_partition(stream_id, %s) + 1]"
        " GROUP BY 1", (count, floor, safe, [c["position"] for c in checkpoints], count)).fetchall()}
    parked = conn.execute("SELECT count(*) AS n FROM dead_letter WHERE projection = %s AND status = 'parked'",
                          (dead_letter_owner(name),)).fetchone()["n"]
    return {
        "name": name, "partition_count": count, "created_at": group["created_at"].isoformat(),
        "lag_events": sum(lag.values()), "dead_letters": parked,
        "members": [{**m, "joined_at": m["joined_at"].isoformat(), "seen_at": m["seen_at"].isoformat(),
                     "lease_expires_at": m["lease_expires_at"].isoformat(), "partitions": owned.get(m["member_id"], [])}
                    for m in members],
        "partitions": [{"partition": c["partition"], "owner": owner.get(c["partition"]), "checkpoint": c["position"],
                        "delivered": c["delivered"], "lag_events": lag.get(c["partition"], 0)} for c in checkpoints],
    }
