"""Wake-ups after appends: the event store's after-append hook sends one per partition touched.

Sending never fails an append: with Redis down the error is logged (at most every few
seconds) and the tick catches the projections up once Redis is back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from infrastructure.event_store import AppendResult, EventStore
from projections.catalog import projectors_for
from projections.partitioning import partition_of

logger = logging.getLogger(__name__)
Send = Callable[[str, int, int], None]


def _default_send(projection: str, partition: int, position: int) -> None:
    from workers.actors import catch_up_partition

    catch_up_partition.send(projection, partition, position)


class WakeUps:
    """An after-append listener sending "catch up projection P, partition k" messages."""

    def __init__(self, partitions: int, send: Send = _default_send) -> None:
        self.partitions = partitions
        self.send = send
        self.failures = 0
        self._last_log = 0.0

    def __call__(self, result: AppendResult) -> None:
        partition = partition_of(result.stream_id, self.partitions)
        for projector in projectors_for(getattr(result, "stream_type", None)):
            try:
                self.send(projector.name, partition, result.position)
            except Exception as exc:  # noqa: BLE001 - the append has committed; the tick covers us
                self.failures += 1
                if time.monotonic() - self._last_log > 5:
                    self._last_log = time.monotonic()
                    logger.warning("wake-up for %s/%s not sent (%d so far): %s",
                                   projector.name, partition, self.failures, exc)
                return


def install_wakeups(store: EventStore, partitions: int | None = None, send: Send | None = None) -> WakeUps:
    """Hook wake-ups onto a store's appends; returns the listener (to remove it later)."""
    listener = WakeUps(partitions or store.settings.chronicle_partitions, send or _default_send)
    store.after_append.append(listener)
    return listener
