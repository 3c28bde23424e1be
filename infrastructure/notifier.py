"""Coalesced NOTIFY after commit: wakes log readers without serialising the writers' commits.

A NOTIFY inside an append's transaction takes a database-wide lock that is held through the
commit's WAL flush, so every notifying commit waits for the one before it. Instead, appends
commit without NOTIFY and poke this notifier, which sends one NOTIFY per burst of commits
(at most one per COALESCE_SECONDS) from a background thread. Readers re-check the log on
every wake-up, so one is enough.
"""

from __future__ import annotations

import logging
import threading
import time

from psycopg_pool import ConnectionPool

logger = logging.getLogger(__name__)
CHANNEL = "chronicle_events"
IDLE_EXIT_SECONDS = 5.0
# After each NOTIFY, gather pokes this long: at most 20 NOTIFYs/s whatever the append rate.
# The first commit after a quiet spell is announced at once; under load a listener wakes at
# most every 50 ms and reads everything new. Each NOTIFY is a transaction: at 200/s they cost
# 8 writers about a tenth of their append rate (bench/append.py).
COALESCE_SECONDS = 0.05


class CommitNotifier:
    """Sends NOTIFY on CHANNEL for logs that had commits, at most one in flight at a time."""

    def __init__(self, pool: ConnectionPool, channel: str = CHANNEL) -> None:
        self.pool = pool
        self.channel = channel
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def poke(self, log_name: str) -> None:
        """Note a committed append to `log_name`; a NOTIFY for it follows shortly.

        Cheap and non-blocking: the append that calls it never waits for the NOTIFY.
        """
        # Already pending: the NOTIFY that takes it is sent after this commit, so it covers it.
        if log_name in self._pending:
            return
        with self._lock:
            self._pending.add(log_name)
            self._wake.set()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="chronicle-notifier", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        """Send NOTIFY for each burst of pokes; exit after a quiet spell (restarted by poke)."""
        while True:
            self._wake.wait(IDLE_EXIT_SECONDS)
            with self._lock:
                names, self._pending = self._pending, set()
                self._wake.clear()
                if not names:
                    self._thread = None
                    return
            try:
                with self.pool.connection() as conn:
                    for name in sorted(names):
                        # A wake-up need not be durable: committing it asynchronously spares
                        # a WAL flush (the appends it announces were flushed already).
                        conn.execute(
                            "SELECT set_config('synchronous_commit', 'off', true), pg_notify(%s, %s)",
                            (self.channel, name),
                        )
            except Exception:  # noqa: BLE001 - a lost wake-up is covered by readers' re-checks
                if self.pool.closed:  # the store is shutting down: nobody is left to wake
                    with self._lock:
                        self._thread = None
                    return
                logger.warning("NOTIFY after append failed; readers catch up on their next check", exc_info=True)
            time.sleep(COALESCE_SECONDS)
