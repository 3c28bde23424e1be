"""Wake-ups after appends: the event store's after-append hook sends one per partition touched.

The partition count comes from the database (`projection.partitions`, which workers and
rebuilds use), read at most every few seconds; CHRONICLE_PARTITIONS only stands in for a
projection that has never run. Each message also names the count it was computed with, and a
worker that stores another count catches up every partition, so no wake-up goes astray.

Sending never fails an append: with Redis down the error is logged (at most every few
seconds) and the tick catches the projections up once Redis is back.

Wake-ups are coalesced twice:
- in the sending process, per (projection, partition) at most one message per window
  (CHRONICLE_WAKEUP_WINDOW_MS, default 10; 0 sends one per append). The first append of a quiet
  partition is sent at once; later ones in the window fold into one trailing message, sent when
  the window ends and naming the highest position, so the last append is always covered;
- in Redis, across processes: a message still waiting for a worker covers later appends to its
  partition. The sender marks the partition pending (keeping the highest position) and enqueues
  only if it was not marked; the worker takes the mark as it starts, so an append after that
  sends a new message. A mark whose message is lost expires (PENDING_TTL_MS); the tick covers it.
  A booting worker drops every mark and then catches every partition up (workers/tick.py), so
  messages a killed worker had prefetched delay nothing.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable

import dramatiq
import redis
from redis.commands.core import Script
from psycopg_pool import ConnectionPool

from infrastructure.broker import process_broker
from infrastructure.event_store import AppendResult, EventStore
from infrastructure.library_internals import actor_message
from projections.catalog import projectors_for
from projections.partitioning import partition_of
from infrastructure.config import get_settings

logger = logging.getLogger(__name__)
# send(projection, partition, position, partitions the partition was computed with)
Send = Callable[[str, int, int, int], None]
QUEUE = "chronicle-projections"
COUNTS_TTL_SECONDS = 2.0


def wakeup_window() -> float:
    """CHRONICLE_WAKEUP_WINDOW_MS in seconds: the shortest gap between two messages for a partition."""
    return get_settings().chronicle_wakeup_window_ms / 1000


# Marks a partition pending with the highest position woken for; 1 if it was not pending (send).
_MARK_PENDING = """
local current = redis.call('GET', KEYS[1])
if current then
    if tonumber(ARGV[1]) > tonumber(current) then
        redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
    end
    return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
# How long a pending mark outlives a message that never arrives (its enqueue failed after the mark).
PENDING_TTL_MS = 2000


@functools.lru_cache(maxsize=16)
def _mark_script(client: redis.Redis) -> Script:
    return client.register_script(_MARK_PENDING)


def _pending_key(broker: dramatiq.Broker, projection: str, partition: int, partitions: int) -> str:
    return f"{broker.namespace}:wakeup-pending:{projection}:{partition}:{partitions}"


def enqueue_wakeup(broker: dramatiq.Broker, projection: str, partition: int, position: int,
                   partitions: int) -> bool:
    """Enqueue "catch up `projection`, `partition`" unless a message for it already waits in Redis.

    Returns whether a message was enqueued. Brokers other than Redis always enqueue.
    """
    client = getattr(broker, "client", None)
    if client is not None:
        if not _mark_script(client)(keys=[_pending_key(broker, projection, partition, partitions)],
                    args=[position, PENDING_TTL_MS]):
            return False
    broker.enqueue(actor_message(QUEUE, "catch_up_partition", (projection, partition, position, partitions)))
    return True


def take_pending(broker: dramatiq.Broker, projection: str, partition: int, partitions: int | None) -> int | None:
    """Clear a partition's pending mark as a worker starts on it; the highest position it held.

    From here on, an append to the partition sends a message of its own.
    """
    client = getattr(broker, "client", None)
    if client is None or partitions is None:
        return None
    value = client.getdel(_pending_key(broker, projection, partition, partitions))
    return int(value) if value is not None else None


def clear_pending(broker: dramatiq.Broker) -> int:
    """Drop every pending mark of this broker's namespace, as a worker boots; how many there were.

    A SIGKILLed worker's prefetched messages wait in Redis until dramatiq deems it dead (a
    minute or more), and their marks would suppress the wake-ups of appends meanwhile.
    """
    client = getattr(broker, "client", None)
    if client is None:
        return 0
    keys = list(client.scan_iter(match=f"{broker.namespace}:wakeup-pending:*", count=1000))
    return client.delete(*keys) if keys else 0


def _default_send(projection: str, partition: int, position: int, partitions: int) -> None:
    enqueue_wakeup(process_broker(), projection, partition, position, partitions)


def redis_sender(broker: dramatiq.Broker) -> Send:
    """A Send that enqueues the catch-up message on `broker` (for processes without workers.actors)."""

    def send(projection: str, partition: int, position: int, partitions: int) -> None:
        enqueue_wakeup(broker, projection, partition, position, partitions)

    return send


class PartitionCounts:
    """Each projection's stored partition count, cached for a few seconds; a default if not stored."""

    def __init__(self, pool: ConnectionPool | None, default: int, ttl: float = COUNTS_TTL_SECONDS) -> None:
        self.pool = pool
        self.default = default
        self.ttl = ttl
        self._counts: dict[str, int] = {}
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def get(self, projection: str) -> int:
        """The count wake-ups for `projection` use now."""
        if self.pool is not None and time.monotonic() - self._read_at > self.ttl:
            with self._lock:
                if time.monotonic() - self._read_at > self.ttl:
                    self._read_at = time.monotonic()  # a failed read is retried after the TTL
                    with self.pool.connection() as conn:
                        rows = conn.execute("SELECT name, partitions FROM projection").fetchall()
                    self._counts = {r["name"]: r["partitions"] for r in rows}
        return self._counts.get(projection, self.default)


class WakeUps:
    """An after-append listener sending "catch up projection P, partition k" messages, coalesced."""

    def __init__(self, partitions: int | PartitionCounts, send: Send = _default_send,
                 window: float | None = None) -> None:
        self.counts = partitions if isinstance(partitions, PartitionCounts) else PartitionCounts(None, partitions)
        self.send = send
        self.window = wakeup_window() if window is None else window
        self.failures = 0
        self._last_log = 0.0
        self._lock = threading.Condition()
        # (projection, partition, count) -> when its last message went out
        self._sent_at: dict[tuple[str, int, int], float] = {}
        # (projection, partition, count) -> (when its trailing message is due, highest position)
        self._due: dict[tuple[str, int, int], tuple[float, int]] = {}
        self._flusher: threading.Thread | None = None

    def __call__(self, result: AppendResult) -> None:
        for projector in projectors_for(getattr(result, "stream_type", None)):
            try:
                n = self.counts.get(projector.name)
                self.wake(projector.name, partition_of(result.stream_id, n), result.position, n)
            except Exception as exc:  # noqa: BLE001 - the append has committed; the tick covers us
                self._failed(projector.name, exc)
                return

    def wake(self, projection: str, partition: int, position: int, partitions: int) -> None:
        """Send a wake-up now, or fold it into the partition's trailing one if a message just went out."""
        key = (projection, partition, partitions)
        if self.window > 0:
            now = time.monotonic()
            with self._lock:
                pending = self._due.get(key)
                last = self._sent_at.get(key)
                if pending is not None or (last is not None and now - last < self.window):
                    due = pending[0] if pending is not None else last + self.window
                    self._due[key] = (due, max(position, pending[1] if pending is not None else position))
                    self._start_flusher()
                    self._lock.notify()
                    return
                self._sent_at[key] = now
        self.send(projection, partition, position, partitions)

    def flush(self) -> None:
        """Send every trailing wake-up now (before a process exits)."""
        with self._lock:
            due, self._due = self._due, {}
        self._send_all([(key, position) for key, (_, position) in due.items()])

    def _start_flusher(self) -> None:
        """Start the thread that sends trailing wake-ups (again after a fork). Caller holds the lock."""
        if self._flusher is None or not self._flusher.is_alive():
            self._flusher = threading.Thread(target=self._flush_loop, name="chronicle-wakeups", daemon=True)
            self._flusher.start()

    def _flush_loop(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                ready = [key for key, (due, _) in self._due.items() if due <= now]
                if not ready:
                    self._lock.wait(min((due for due, _ in self._due.values()), default=now + 1) - now)
                    continue
                batch = [(key, self._due.pop(key)[1]) for key in ready]
                for key in ready:
                    self._sent_at[key] = now
            self._send_all(batch)

    def _send_all(self, batch: list[tuple[tuple[str, int, int], int]]) -> None:
        for (projection, partition, partitions), position in batch:
            try:
                self.send(projection, partition, position, partitions)
            except Exception as exc:  # noqa: BLE001 - the tick covers a lost wake-up
                self._failed(projection, exc)

    def _failed(self, projection: str, exc: Exception) -> None:
        self.failures += 1
        if time.monotonic() - self._last_log > 5:
            self._last_log = time.monotonic()
            logger.warning("wake-up for %s not sent (%d so far): %s", projection, self.failures, exc)


def install_wakeups(store: EventStore, partitions: int | None = None, send: Send | None = None,
                    window: float | None = None) -> WakeUps:
    """Hook wake-ups onto a store's appends; returns the listener (to remove it later).

    Counts are read from the store's database; `partitions` (default CHRONICLE_PARTITIONS) is
    used only for projections not stored yet. `window` (seconds) defaults to CHRONICLE_WAKEUP_WINDOW_MS.
    """
    counts = PartitionCounts(store.pool, partitions or store.settings.chronicle_partitions)
    listener = WakeUps(counts, send or _default_send, window)
    store.after_append.append(listener)
    return listener
