"""How far readers are held back: the log's head, its safe position, and since when.

Read from log_status() (schema/0009_reader_lock_space.sql), the one measure that projection
lag, /readyz, /metrics, GET /v1/events and `chronicle status` share.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
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
    # How long that is, by the database's clock (0 when readers are not held back).
    held_back_seconds: float

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
            "held_back_seconds": round(self.held_back_seconds, 3),
        }


def read_log_status(conn: psycopg.Connection[Any]) -> LogStatus:
    """The log's status now, in one statement on `conn`.

    Run it as its own statement before a read bounded by `safe`, as with safe_position().
    """
    with conn.cursor(row_factory=tuple_row) as cur:
        head, safe, blockers, since, seconds = cur.execute(
            "SELECT head, coalesce(safe, 0), blockers, held_back_since, held_back_seconds FROM log_status()"
        ).fetchone()
    return LogStatus(head, safe, blockers, since, seconds)
