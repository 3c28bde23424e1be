"""Open subscriptions, visible to operators: one `subscription` row per open feed response.

The API process serving a feed writes its row when the feed opens, moves its position at each
heartbeat, and deletes it when the feed closes. A process that died leaves its row behind; it
is listed as stale once unseen for three heartbeats, and deleted after an hour.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

from psycopg_pool import ConnectionPool

from infrastructure.feed_reads import FeedFilter

STALE_AFTER_HEARTBEATS = 3
FORGET_AFTER_SECONDS = 3600


def open_subscription(pool: ConnectionPool, key_id: str, fmt: str, feed_filter: FeedFilter, after: int) -> str:
    """Record a feed that starts after `after`; its id names it in GET /v1/subscriptions."""
    subscription_id = str(uuid.uuid4())
    with pool.connection() as conn:
        # Rows of processes that died long ago are forgotten here, so the table stays small.
        conn.execute("DELETE FROM subscription WHERE seen_at < clock_timestamp() - make_interval(secs => %s)",
                     (FORGET_AFTER_SECONDS,))
        conn.execute(
            "INSERT INTO subscription (id, key_id, format, filters, started_after, position, server_pid)"
            " VALUES (%s, %s, %s, %s::jsonb, %s, %s, %s)",
            (subscription_id, key_id, fmt, json.dumps(feed_filter.public()), after, after, os.getpid()))
    return subscription_id


def touch_subscription(pool: ConnectionPool, subscription_id: str, position: int, events_sent: int) -> None:
    """Note how far a feed has got and that it is still open."""
    with pool.connection() as conn:
        conn.execute("UPDATE subscription SET position = %s, events_sent = %s, seen_at = clock_timestamp()"
                     " WHERE id = %s", (position, events_sent, subscription_id))


def close_subscription(pool: ConnectionPool, subscription_id: str) -> None:
    """Forget a feed that closed."""
    with pool.connection() as conn:
        conn.execute("DELETE FROM subscription WHERE id = %s", (subscription_id,))


def list_subscriptions(pool: ConnectionPool, heartbeat_seconds: float) -> list[dict[str, Any]]:
    """Every recorded feed, oldest first, with its lag behind the safe position and whether it is stale."""
    with pool.connection() as conn:
        safe = conn.execute("SELECT safe_position() AS safe").fetchone()["safe"]
        rows = conn.execute(
            "SELECT id::text, key_id, format, filters, started_after, position, events_sent, opened_at, seen_at,"
            " server_pid, seen_at < clock_timestamp() - make_interval(secs => %s) AS stale"
            " FROM subscription ORDER BY opened_at", (heartbeat_seconds * STALE_AFTER_HEARTBEATS,)).fetchall()
    return [{**row, "opened_at": row["opened_at"].isoformat(), "seen_at": row["seen_at"].isoformat(),
             "lag_positions": max(safe - row["position"], 0)} for row in rows]
