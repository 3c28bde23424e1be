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
from collections import deque
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
# How far the replica has replayed the primary's WAL (NULL: not in recovery, so its own primary).
REPLAYED_SQL = "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text END AS lsn"
# The primary's (WAL position, safe position) pairs kept to bound log reads on a lagging replica.
SAMPLES = 64


def lsn_number(lsn: str) -> int:
    """A WAL position ("16/B374D848") as a number, for comparing."""
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


class ReadReplica:
    """The replica's pool beside the primary's, and whether the replica is answering."""

    def __init__(self, primary: ConnectionPool, replica: ConnectionPool, retry_seconds: float = RETRY_SECONDS) -> None:
        self.primary = primary
        self.pool = replica
        self.retry_seconds = retry_seconds
        self._down_until = 0.0
        self._lock = threading.Lock()
        self._samples: deque[tuple[int, int]] = deque(maxlen=SAMPLES)

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

    def replayed_to(self) -> int | None:
        """How far the replica has replayed the primary's WAL (None: it is not a replica)."""
        with self.pool.connection() as conn:
            lsn = conn.execute(REPLAYED_SQL).fetchone()["lsn"]
        return None if lsn is None else lsn_number(lsn)

    def replayed(self, lsn: str) -> bool:
        """Whether the replica has replayed the primary's WAL up to `lsn`."""
        at = self.replayed_to()
        return at is None or at >= lsn_number(lsn)

    def safe_bound(self, safe: int, lsn: str) -> int | None:
        """Keep the primary's safe position `safe` taken at WAL position `lsn`; return the newest kept safe
        position the replica has replayed past (every event at or below it is there), or None."""
        with self._lock:
            if not self._samples or self._samples[-1][0] < lsn_number(lsn):
                self._samples.append((lsn_number(lsn), safe))
            samples = list(self._samples)
        at = self.replayed_to()
        if at is None:
            return safe
        return max((s for position, s in samples if position <= at), default=None)

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

    def header_values(self) -> dict[str, str]:
        """The response headers that say where this request's reads went, and why not the replica."""
        return {SOURCE_HEADER: self.source, **({FALLBACK_HEADER: self.fallback} if self.fallback else {})}

    def _say(self) -> None:
        if self.headers is not None:
            self.headers.update(self.header_values())

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
                except psycopg.OperationalError as exc:
                    if not isinstance(exc, psycopg.errors.QueryCanceled):  # it went away mid-read
                        self.replica.mark_down(exc)  # later reads skip it for a while
                    raise
                finally:
                    self.replica.pool.putconn(conn)
                return
        with self.replica.primary.connection(timeout) as conn:
            yield conn

    def log_bound(self, safe: int, lsn: str, deadline: float) -> int:
        """How far a log read may list: on the replica, the newest safe position it has replayed
        (waiting until `deadline` if it has none, then reading from the primary); on the primary, `safe`."""
        if self.on_replica:
            try:
                bound = self.replica.safe_bound(safe, lsn)
            except (PoolTimeout, psycopg.OperationalError) as exc:
                self.replica.mark_down(exc)
                self.use_primary("replica_unavailable")
                return safe
            if bound is not None:
                return bound
            self.wait_replayed(lsn, deadline)
        return safe

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
