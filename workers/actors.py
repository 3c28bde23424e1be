"""The dramatiq actors. This is the module `dramatiq` loads: it sets up the broker first.

A message is only a wake-up ("catch up projection P, partition k"); it never carries events.
"""

from __future__ import annotations

import logging
import time

import dramatiq

from infrastructure.broker import setup_broker
from infrastructure.config import get_settings
from projections.catalog import get_projector
from projections.engine import catch_up
from workers.runtime import worker_pool
from workers.tick import Ticker

logger = logging.getLogger(__name__)
broker = setup_broker()
broker.add_middleware(Ticker())
QUEUE = "chronicle-projections"
# How long a wake-up waits for its position to become safe (an append still committing below it).
TARGET_WAIT_SECONDS = 1.0


@dramatiq.actor(queue_name=QUEUE, max_retries=5, min_backoff=200, max_backoff=10_000, time_limit=600_000)
def catch_up_partition(projection: str, partition: int, position: int | None = None) -> None:
    """Catch one partition of a projection up; `position` is the append that woke us, if any."""
    projector = get_projector(projection)
    partitions = get_settings().chronicle_partitions
    deadline = time.monotonic() + TARGET_WAIT_SECONDS
    delay = 0.002
    while True:
        result = catch_up(worker_pool(), projector, partition, partitions=partitions, target=position)
        if result.busy or position is None or result.checkpoint >= position or time.monotonic() > deadline:
            return
        time.sleep(delay)  # the log is held back below `position`: look again shortly
        delay = min(delay * 2, 0.05)


@dramatiq.actor(queue_name=QUEUE, max_retries=0, time_limit=24 * 3600 * 1000)
def rebuild_projection(projection: str, partitions: int | None = None) -> None:
    """Rebuild one projection (shadow tables, catch up, swap)."""
    from projections.rebuild import rebuild

    rebuild(worker_pool(), projection, partitions=partitions)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def replay_projection(projection: str, from_position: int) -> None:
    """Move a projection's checkpoints back to a position, then wake its partitions."""
    from projections.rebuild import replay

    for partition in replay(worker_pool(), projection, from_position):
        catch_up_partition.send(projection, partition)
