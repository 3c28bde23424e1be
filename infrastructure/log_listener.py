"""One LISTEN per process for the log's commits: wakes every waiting feed and group fetch.

Each open subscription would otherwise hold a connection of its own. The listener thread
counts NOTIFYs on the store's channel (infrastructure/notifier.py sends one per burst of
commits); a waiter takes the count before it reads the log and waits for it to change, so a
commit between its read and its wait is never missed. A lost NOTIFY costs one wait's timeout,
never an event: readers always re-read the log up to its safe position.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from infrastructure.config import Settings
from infrastructure.db import connect
from infrastructure.store_types import NOTIFY_CHANNEL

logger = logging.getLogger(__name__)
RECONNECT_SECONDS = 1.0


class LogListener:
    """A background LISTEN on NOTIFY_CHANNEL; `generation` grows with every notification."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.settings = settings
        self.generation = 0
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start listening in a daemon thread (idempotent)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="chronicle-log-listener", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """Stop listening; waiters wake up at once."""
        self._stop.set()
        self._fire()

    async def wait(self, seen: int, timeout: float) -> bool:
        """Wait until `generation` differs from `seen` or `timeout` passes; True if it did.

        Take `seen` from `generation` before reading the log, then call this when the read
        found nothing new.
        """
        if self.generation != seen or self._stop.is_set():
            return True
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.add(waiter)
        try:
            if self.generation != seen:  # a NOTIFY between the check and the registration
                return True
            try:
                await asyncio.wait_for(waiter[1].wait(), timeout)
                return True
            except asyncio.TimeoutError:
                return False
        finally:
            with self._lock:
                self._waiters.discard(waiter)

    def _fire(self) -> None:
        with self._lock:
            self.generation += 1
            waiters = list(self._waiters)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop is closed: its waiter is gone
                pass

    def _run(self) -> None:
        """Listen until stopped; reconnect after a failure (and wake everyone, to re-read)."""
        while not self._stop.is_set():
            try:
                with connect(self.url, self.settings) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._fire()  # anything committed while we were not listening
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            self._fire()
            except Exception:  # noqa: BLE001 - the database is away: readers fall back to their timeouts
                logger.warning("log listener lost its connection; reconnecting", exc_info=True)
                self._stop.wait(RECONNECT_SECONDS)


def listener_of(state: Any) -> LogListener:
    """The process's listener kept on `state` (created and started on first use)."""
    listener = getattr(state, "log_listener", None)
    if listener is None:
        listener = LogListener(state.database_url, state.settings)
        state.log_listener = listener
    listener.start()
    return listener
