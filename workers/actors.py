"""The dramatiq actors. This is the module `dramatiq` loads: it sets up the broker first.

A message is only a wake-up ("catch up projection P, partition k"); it never carries events.
"""

from __future__ import annotations

import logging
import threading
import time

import dramatiq
import redis

from infrastructure.broker import process_broker
from infrastructure.config import get_settings
from projections.catalog import PROJECTORS, get_projector
from projections.engine import catch_up, catch_up_all
from workers.observability import install as install_observability
from workers.jobs import run_rebuild, run_replay, wake_requested
from workers.runtime import worker_pool
from workers.tick import PromptPolling, Ticker
from workers.wakeups import clear_pending, take_pending

logger = logging.getLogger(__name__)
broker = process_broker()
broker.add_middleware(Ticker(lambda: wake_all(), lambda: wake_jobs(), seal=lambda: seal_now(),
                             prune=lambda: prune_versions(), segments=lambda: ensure_segments_now(),
                             boot=lambda: wake_at_boot()))
broker.add_middleware(PromptPolling())
install_observability(broker)
QUEUE = "chronicle-projections"
# How long a wake-up waits for its position to become safe (an append still committing below it).
TARGET_WAIT_SECONDS = 1.0
# Partitions a thread of this process is catching up, and those woken again meanwhile (with the
# highest position woken for, None if unknown).
_coalesce = threading.Lock()
_running: set[tuple[str, int]] = set()
_again: dict[tuple[str, int], int | None] = {}
# Wake-ups whose position was not yet safe, for the waiter thread:
# (projection, partition, partitions) -> (highest position, deadline)
_waiting: dict[tuple[str, int, int | None], tuple[int, float]] = {}
_waiting_changed = threading.Condition()
_waiter: threading.Thread | None = None


@dramatiq.actor(queue_name=QUEUE, max_retries=5, min_backoff=200, max_backoff=10_000, time_limit=600_000)
def catch_up_partition(projection: str, partition: int, position: int | None = None,
                       partitions: int | None = None) -> None:
    """Catch one partition of a projection up; `position` is the append that woke us, if any.

    `partitions` is the count the sender computed `partition` with; if the stored count differs,
    every partition is caught up instead. A wake-up for a partition another thread of this
    process is catching up only asks that thread for one more pass (no database round trip).
    """
    position = _with_pending(projection, partition, position, partitions)
    key = (projection, partition)
    with _coalesce:
        if key in _running:
            _again[key] = _highest(_again.get(key), position)
            return
        _running.add(key)
    try:
        while True:
            _catch_up_once(projection, partition, position, partitions)
            with _coalesce:
                if key not in _again:
                    _running.discard(key)  # under the lock: a later wake-up runs itself
                    return
                position = _again.pop(key)
    except BaseException:
        with _coalesce:
            _running.discard(key)
            _again.pop(key, None)
        raise


def _with_pending(projection: str, partition: int, position: int | None, partitions: int | None) -> int | None:
    """Take the partition's pending mark in Redis (appends after this send their own wake-up).

    Returns the highest position woken for: this message's, or a later append's it covered.
    """
    try:
        pending = take_pending(broker, projection, partition, partitions)
    except redis.RedisError as exc:  # the mark expires by itself; the tick covers what it held
        logger.warning("cannot take the pending wake-up of %s/%s: %s", projection, partition, exc)
        return position
    return _highest(position, pending)


def _highest(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def _catch_up_once(projection: str, partition: int, position: int | None, partitions: int | None) -> None:
    """One catch-up; if `position` is not yet safe (an append below it in flight), the waiter takes over."""
    projector = get_projector(projection)
    seed = get_settings().chronicle_partitions  # only for a projection never run before
    result = catch_up(worker_pool(), projector, partition, partitions=seed, target=position, assumed=partitions)
    if not result.busy and position is not None and result.checkpoint < position:
        _wait_for(projection, partition, position, partitions)


def _wait_for(projection: str, partition: int, position: int, partitions: int | None) -> None:
    """Hand a wake-up whose position is not safe yet to this process's waiter thread.

    The worker thread moves on to other partitions instead of sleeping on this one.
    """
    global _waiter
    key = (projection, partition, partitions)
    with _waiting_changed:
        old = _waiting.get(key)
        deadline = old[1] if old else time.monotonic() + TARGET_WAIT_SECONDS
        _waiting[key] = (max(position, old[0]) if old else position, deadline)
        if _waiter is None or not _waiter.is_alive():
            _waiter = threading.Thread(target=_wait_loop, name="chronicle-safe-waiter", daemon=True)
            _waiter.start()
        _waiting_changed.notify()


def _wait_loop() -> None:
    """Poll the log's safe position (one cheap statement for all waiting wake-ups), catch up those reached.

    A wake-up still unsafe at its deadline is caught up as far as it goes; the tick covers the rest.
    """
    delay = 0.002
    while True:
        with _waiting_changed:
            while not _waiting:
                _waiting_changed.wait()
                delay = 0.002
        time.sleep(delay)
        try:
            with worker_pool().connection() as conn:
                safe = conn.execute("SELECT safe_position() AS p").fetchone()["p"] or 0
        except Exception as exc:  # noqa: BLE001 - the database is away: the tick catches up later
            logger.warning("waiting wake-ups cannot read the safe position: %s", exc)
            safe = None
        now = time.monotonic()
        with _waiting_changed:
            ready = [(key, position) for key, (position, deadline) in _waiting.items()
                     if (safe is not None and position <= safe) or now > deadline]
            for key, _ in ready:
                del _waiting[key]
        for (projection, partition, partitions), position in ready:
            try:
                catch_up(worker_pool(), get_projector(projection), partition,
                         partitions=get_settings().chronicle_partitions, target=position, assumed=partitions)
            except Exception as exc:  # noqa: BLE001 - the tick covers a wake-up that failed here
                logger.warning("waiting wake-up for %s/%s failed: %s", projection, partition, exc)
        delay = 0.002 if ready else min(delay * 1.5, 0.01)


@dramatiq.actor(queue_name=QUEUE, max_retries=5, min_backoff=200, max_backoff=10_000, time_limit=3_600_000)
def catch_up_projection(projection: str) -> None:
    """Catch every free partition of a projection up in one pass over the log (the tick)."""
    catch_up_all(worker_pool(), get_projector(projection), partitions=get_settings().chronicle_partitions)


@dramatiq.actor(queue_name=QUEUE, max_retries=0, time_limit=24 * 3600 * 1000)
def rebuild_projection(projection: str) -> None:
    """Run the projection's requested rebuild job (shadow tables, catch up, swap), if any.

    The message is a wake-up: the job, its options and its outcome are rows of projection_job.
    """

    if run_rebuild(worker_pool(), projection) is not None:
        # Appends during the swap found the partitions locked: catch them up now.
        catch_up_projection.send(projection)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def replay_projection(projection: str) -> None:
    """Run the projection's requested replay job (checkpoints back), then wake the moved partitions."""

    ran = run_replay(worker_pool(), projection)
    for partition in ran[1] if ran else ():
        catch_up_partition.send(projection, partition)


def wake_all() -> int:
    """Wake every projection: each message catches up all its free partitions. Returns how many."""
    for name in PROJECTORS:
        catch_up_projection.send(name)
    return len(PROJECTORS)


def wake_at_boot() -> int:
    """Drop the pending wake-up marks, then wake every projection: a restarted worker covers
    the appends whose wake-ups a killed worker had prefetched. Returns how many marks it dropped."""
    dropped = clear_pending(broker)
    wake_all()
    return dropped


def wake_projection(name: str | None = None) -> None:
    """Wake every partition of one projection (of all, given None), after an operator moved it."""
    for projection in [name] if name else list(PROJECTORS):
        catch_up_projection.send(projection)


def wake_job(kind: str, projection: str) -> None:
    """Send the wake-up for a requested rebuild or replay job to this process's broker."""
    (rebuild_projection if kind == "rebuild" else replay_projection).send(projection)


def prune_versions() -> object:
    """Retention's periodic run: old versions' bodies leave the read model (off unless configured)."""
    days = get_settings().chronicle_version_retention_days
    if days is None:
        return None
    from projections.retention import prune_versions as prune

    return prune(worker_pool(), days)


def wake_jobs() -> int:
    """Wake every requested rebuild or replay job (covers a lost message, or a CLI with no broker)."""
    return wake_requested(worker_pool(), wake_job)


def seal_now() -> int:
    """Seal the log's new events with the configured seal key (none configured: nothing). Returns how many seals."""
    from infrastructure.seals import load_seal_key, seal_log

    key = load_seal_key(get_settings())
    return len(seal_log(worker_pool(), key)) if key is not None else 0


def ensure_segments_now() -> int:
    """Make the log's segments ahead of need (docs/log-segments.md). Returns how many were made."""
    from infrastructure.log_segments import ensure_segments

    with worker_pool().connection() as conn:
        return ensure_segments(conn)
