"""Wake-ups after appends: the event store's after-append hook sends one per partition touched.

The partition count comes from the database (`projection.partitions`, which workers and
rebuilds use), read at most every few seconds; CHRONICLE_PARTITIONS only stands in for a
projection that has never run. Each message also names the count it was computed with, and a
worker that stores another count catches up every partition, so no wake-up goes astray.

Sending never fails an append: with Redis down the error is logged (at most every few
seconds) and the tick catches the projections up once Redis is back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import dramatiq
from dramatiq import Message
from psycopg_pool import ConnectionPool

from infrastructure.event_store import AppendResult, EventStore
from projections.catalog import projectors_for
from projections.partitioning import partition_of

logger = logging.getLogger(__name__)
# send(projection, partition, position, partitions the partition was computed with)
Send = Callable[[str, int, int, int], None]
QUEUE = "chronicle-projections"
COUNTS_TTL_SECONDS = 2.0


def _default_send(projection: str, partition: int, position: int, partitions: int) -> None:
    from workers.actors import catch_up_partition

    catch_up_partition.send(projection, partition, position, partitions)


def redis_sender(broker: dramatiq.Broker) -> Send:
    """A Send that enqueues the catch-up message on `broker` (for processes without workers.actors)."""

    def send(projection: str, partition: int, position: int, partitions: int) -> None:
        broker.enqueue(Message(queue_name=QUEUE, actor_name="catch_up_partition",
                               args=(projection, partition, position, partitions), kwargs={}, options={}))

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
    """An after-append listener sending "catch up projection P, partition k" messages."""

    def __init__(self, partitions: int | PartitionCounts, send: Send = _default_send) -> None:
        self.counts = partitions if isinstance(partitions, PartitionCounts) else PartitionCounts(None, partitions)
        self.send = send
        self.failures = 0
        self._last_log = 0.0

    def __call__(self, result: AppendResult) -> None:
        for projector in projectors_for(getattr(result, "stream_type", None)):
            try:
                n = self.counts.get(projector.name)
                self.send(projector.name, partition_of(result.stream_id, n), result.position, n)
            except Exception as exc:  # noqa: BLE001 - the append has committed; the tick covers us
                self.failures += 1
                if time.monotonic() - self._last_log > 5:
                    self._last_log = time.monotonic()
                    logger.warning("wake-up for %s not sent (%d so far): %s", projector.name, self.failures, exc)
                return


def install_wakeups(store: EventStore, partitions: int | None = None, send: Send | None = None) -> WakeUps:
    """Hook wake-ups onto a store's appends; returns the listener (to remove it later).

    Counts are read from the store's database; `partitions` (default CHRONICLE_PARTITIONS) is
    used only for projections not stored yet.
    """
    counts = PartitionCounts(store.pool, partitions or store.settings.chronicle_partitions)
    listener = WakeUps(counts, send or _default_send)
    store.after_append.append(listener)
    return listener
