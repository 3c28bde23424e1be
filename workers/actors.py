"""The dramatiq actors. This is the module `dramatiq` loads: it sets up the broker first.

A message is only a wake-up ("catch up projection P, partition k"); it never carries events.
"""

from __future__ import annotations

import logging
import threading
import time

import dramatiq

from infrastructure.broker import setup_broker
from infrastructure.config import get_settings
from projections.catalog import get_projector
from projections.engine import catch_up, catch_up_all
from workers.observability import install as install_observability
from workers.runtime import worker_pool
from workers.tick import PromptPolling, Ticker

logger = logging.getLogger(__name__)
broker = setup_broker()
broker.add_middleware(Ticker())
broker.add_middleware(PromptPolling())
install_observability(broker)
QUEUE = "chronicle-projections"
# How long a wake-up waits for its position to become safe (an append still committing below it).
TARGET_WAIT_SECONDS = 1.0
# Partitions a thread of this process is catching up, and those woken again meanwhile.
_coalesce = threading.Lock()
_running: set[tuple[str, int]] = set()
_again: set[tuple[str, int]] = set()


@dramatiq.actor(queue_name=QUEUE, max_retries=5, min_backoff=200, max_backoff=10_000, time_limit=600_000)
def catch_up_partition(projection: str, partition: int, position: int | None = None,
                       partitions: int | None = None) -> None:
    """Catch one partition of a projection up; `position` is the append that woke us, if any.

    `partitions` is the count the sender computed `partition` with; if the stored count differs,
    every partition is caught up instead. A wake-up for a partition another thread of this
    process is catching up only asks that thread for one more pass (no database round trip).
    """
    key = (projection, partition)
    with _coalesce:
        if key in _running:
            _again.add(key)
            return
        _running.add(key)
    try:
        while True:
            _catch_up_once(projection, partition, position, partitions)
            with _coalesce:
                if key not in _again:
                    _running.discard(key)  # under the lock: a later wake-up runs itself
                    return
                _again.discard(key)
                position = None  # the next pass reaches the safe position, whatever woke it
    except BaseException:
        with _coalesce:
            _running.discard(key)
            _again.discard(key)
        raise


def _catch_up_once(projection: str, partition: int, position: int | None, partitions: int | None) -> None:
    """One catch-up, retried shortly while `position` is not yet safe (an append below it in flight)."""
    projector = get_projector(projection)
    seed = get_settings().chronicle_partitions  # only for a projection never run before
    deadline = time.monotonic() + TARGET_WAIT_SECONDS
    delay = 0.002
    while True:
        result = catch_up(worker_pool(), projector, partition, partitions=seed, target=position, assumed=partitions)
        if result.busy or position is None or result.checkpoint >= position or time.monotonic() > deadline:
            return
        time.sleep(delay)  # the log is held back below `position`: look again shortly
        delay = min(delay * 2, 0.05)


@dramatiq.actor(queue_name=QUEUE, max_retries=5, min_backoff=200, max_backoff=10_000, time_limit=3_600_000)
def catch_up_projection(projection: str) -> None:
    """Catch every free partition of a projection up in one pass over the log (the tick)."""
    catch_up_all(worker_pool(), get_projector(projection), partitions=get_settings().chronicle_partitions)


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
