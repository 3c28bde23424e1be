"""Reads from a streaming replica (DATABASE_READ_URL), with the primary to fall back on.

A replica replays the primary's WAL, so it holds everything the primary had committed at some
WAL position. Projection reads wait on the replica's own copy of the checkpoints; log reads,
whose safe position only the primary can compute (its append locks are not replicated), take
that position and the primary's WAL insert position together, and read on the replica once it
has replayed that far. A replica that cannot hand out a connection is left alone for a while
(RETRY_SECONDS) and its reads go to the primary, which the response says.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

logger = logging.getLogger(__name__)
# After a failed checkout, how long reads skip the replica before it is tried again.
RETRY_SECONDS = 5.0
# Response headers: where a read was served from, and why not from the replica.
SOURCE_HEADER = "X-Chronicle-Read-Source"
FALLBACK_HEADER = "X-Chronicle-Read-Fallback"
# Whether the replica has replayed (a server not in recovery is its own primary) the primary's WAL up to a position (an LSN as text).
REPLAYED_SQL = "SELECT NOT pg_is_in_recovery() OR pg_last_wal_replay_lsn() >= %s::pg_lsn AS done"


class ReadReplica:
    """The replica's pool beside the primary's, and whether the replica is answering."""

    def __init__(self, primary: ConnectionPool, replica: ConnectionPool, retry_seconds: float = RETRY_SECONDS) -> None:
        self.primary = primary
        self.pool = replica
        self.retry_seconds = retry_seconds
        self._down_until = 0.0
        self._lock = threading.Lock()

    def available(self) -> bool:
        """Whether reads should try the replica now (it did not fail within the last retry period)."""
        return time.monotonic() >= self._down_until

    def mark_down(self, error: BaseException) -> None:
        """The replica failed: send reads to the primary for the retry period, and log it once."""
        with self._lock:
            first = self.available()
            self._down_until = time.monotonic() + self.retry_seconds
        if first:
            logger.warning("read replica unavailable (%s): reads go to the primary for %.0f s",
                           error, self.retry_seconds)

    def replayed(self, lsn: str) -> bool:
        """Whether the replica has replayed the primary's WAL up to `lsn`."""
        with self.pool.connection() as conn:
            return conn.execute(REPLAYED_SQL, (lsn,)).fetchone()["done"]

    def close(self) -> None:
        """Close the replica's pool (the primary's belongs to its owner)."""
        self.pool.close()


def primary_lsn(conn: psycopg.Connection) -> str:
    """The primary's WAL insert position now: every transaction committed so far lies below it."""
    return conn.execute("SELECT pg_current_wal_insert_lsn()::text AS lsn").fetchone()["lsn"]


class RequestReads:
    """One request's reads: a pool-like `connection()` on the replica while it answers, else the primary.

    `source` says which served the request; `fallback` why it was not the replica (None: it was).
    """

    def __init__(self, replica: ReadReplica, headers: Any = None) -> None:
        self.replica = replica
        self.headers = headers  # the response's headers, told where the read came from
        self.fallback: str | None = None
        self.source = "replica"
        if not replica.available():
            self.use_primary("replica_unavailable")
        else:
            self._say()

    @property
    def on_replica(self) -> bool:
        return self.source == "replica"

    def use_primary(self, reason: str) -> None:
        """Serve the rest of this request from the primary, and say why in the response."""
        self.source, self.fallback = "primary", reason
        self._say()

    def _say(self) -> None:
        if self.headers is not None:
            self.headers[SOURCE_HEADER] = self.source
            if self.fallback:
                self.headers[FALLBACK_HEADER] = self.fallback

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[psycopg.Connection]:
        """A connection from the replica (falling back to the primary if it cannot give one)."""
        if self.on_replica:
            try:
                conn = self.replica.pool.getconn(timeout)
            except (PoolTimeout, psycopg.OperationalError) as exc:
                self.replica.mark_down(exc)
                self.use_primary("replica_unavailable")
            else:
                try:
                    yield conn
                except psycopg.OperationalError as exc:  # it went away mid-read: later reads skip it
                    self.replica.mark_down(exc)
                    raise
                finally:
                    self.replica.pool.putconn(conn)
                return
        with self.replica.primary.connection(timeout) as conn:
            yield conn

    def wait_replayed(self, lsn: str, deadline: float) -> bool:
        """Wait (until `deadline`, monotonic) for the replica to replay up to `lsn`; else read from the primary.

        True if the replica got there (or the read already goes to the primary).
        """
        delay = 0.002
        while self.on_replica:
            try:
                if self.replica.replayed(lsn):
                    return True
            except (PoolTimeout, psycopg.OperationalError) as exc:
                self.replica.mark_down(exc)
                self.use_primary("replica_unavailable")
                return True
            if time.monotonic() >= deadline:
                self.use_primary("replica_behind")
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        return True
