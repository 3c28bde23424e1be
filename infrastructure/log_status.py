"""How far readers are held back: the log's head, its safe position, and since when.

Read from log_status() (schema/0009_reader_lock_space.sql), the one measure that projection
lag, /readyz, /metrics, GET /v1/events and `chronicle status` share.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg.rows import tuple_row

# Response headers of reads bounded by the safe position (GET /v1/events).
HEAD_HEADER = "X-Chronicle-Log-Head"
SAFE_HEADER = "X-Chronicle-Safe-Position"
HELD_BACK_HEADER = "X-Chronicle-Log-Held-Back"


@dataclass(frozen=True)
class LogStatus:
    """The log's head (last committed position), safe position, open appends, held-back start."""

    head: int
    safe: int
    blockers: int
    # The start of the oldest open append below the head; None when readers see up to the head.
    held_back_since: datetime | None

    def held_back_seconds(self, now: datetime | None = None) -> float:
        """How long readers have been held below the head (0 when they are not)."""
        if self.held_back_since is None:
            return 0.0
        now = now or datetime.now(timezone.utc)
        return max((now - self.held_back_since).total_seconds(), 0.0)

    def headers(self) -> dict[str, str]:
        """Head and safe position, and when held back, since when (ISO 8601)."""
        headers = {HEAD_HEADER: str(self.head), SAFE_HEADER: str(self.safe)}
        if self.held_back_since is not None:
            headers[HELD_BACK_HEADER] = self.held_back_since.isoformat()
        return headers

    def public(self) -> dict[str, Any]:
        """As JSON: positions, blocker count, held-back start and duration."""
        return {
            "head": self.head, "safe_position": self.safe, "blockers": self.blockers,
            "held_back_since": self.held_back_since.isoformat() if self.held_back_since else None,
            "held_back_seconds": round(self.held_back_seconds(), 3),
        }


def read_log_status(conn: psycopg.Connection[Any]) -> LogStatus:
    """The log's status now, in one statement on `conn`.

    Run it as its own statement before a read bounded by `safe`, as with safe_position().
    """
    with conn.cursor(row_factory=tuple_row) as cur:
        head, safe, blockers, since = cur.execute(
            "SELECT head, coalesce(safe, 0), blockers, held_back_since FROM log_status()"
        ).fetchone()
    return LogStatus(head, safe, blockers, since)
