"""The periodic tick: every worker process wakes every projection (all its partitions) now and then.

A worker also wakes every projection once as it boots, tick or no tick, after dropping the
pending wake-up marks (workers/wakeups.py): a restart after a crash loses nothing.

It covers lost wake-ups (a killed worker, Redis down at append time); duplicates cost one check.
It also wakes requested rebuild and replay jobs, marks a dead worker's job failed, appends
any missing completion event (workers/jobs.py), seals the log up to the safe position
(infrastructure/seals.py) when a seal key is configured, and makes the log's segments ahead of
need (docs/log-segments.md).
"""

from __future__ import annotations

from collections.abc import Callable

import logging
import threading
import time

import dramatiq
from dramatiq.middleware import Middleware
from infrastructure.config import get_settings

logger = logging.getLogger(__name__)
# How often a worker runs retention (CHRONICLE_VERSION_RETENTION_DAYS), at most.
PRUNE_EVERY_SECONDS = 3600.0


def tick_seconds() -> float:
    """CHRONICLE_TICK_SECONDS (default 5; 0 turns the tick off)."""
    return get_settings().chronicle_tick_seconds


class Ticker(Middleware):
    """Starts the tick thread when a worker boots, stops it at shutdown.

    Each tick calls `wake_all` (wake every projection), `wake_jobs` (requested rebuilds and
    replays), `seal` (seal the log's new events) and `segments` (the log's segments ahead of
    need); every PRUNE_EVERY_SECONDS, `prune` (retention, when it is configured).
    """

    def __init__(self, wake_all: Callable[[], int], wake_jobs: Callable[[], int],
                 seal: Callable[[], int] | None = None, prune: Callable[[], object] | None = None,
                 segments: Callable[[], int] | None = None,
                 boot: Callable[[], object] | None = None) -> None:
        self.stop = threading.Event()
        self.wake_all, self.wake_jobs, self.seal, self.prune = wake_all, wake_jobs, seal, prune
        self.segments, self.boot = segments, boot
        self.pruned_at = 0.0

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self.boot is not None:
            try:
                self.boot()
            except Exception as exc:  # noqa: BLE001 - Redis down: the tick (or the next boot) covers it
                logger.warning("worker could not wake the projections at boot: %s", exc)
        period = tick_seconds()
        if period > 0:
            threading.Thread(target=self._loop, args=(period,), name="chronicle-tick", daemon=True).start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.stop.set()

    def _loop(self, period: float) -> None:
        while not self.stop.wait(period):
            try:
                self.wake_all()
            except Exception as exc:  # noqa: BLE001 - Redis down: try again next tick
                logger.warning("tick could not send wake-ups: %s", exc)
            try:
                self.wake_jobs()
            except Exception as exc:  # noqa: BLE001 - database or Redis down: try again next tick
                logger.warning("tick could not look for requested jobs: %s", exc)
            if self.seal is not None:
                try:
                    self.seal()
                except Exception as exc:  # noqa: BLE001 - database down or no key: try again next tick
                    logger.warning("tick could not seal the log: %s", exc)
            if self.segments is not None:
                try:
                    self.segments()
                except Exception as exc:  # noqa: BLE001 - database down: try again next tick
                    logger.warning("tick could not make the log's next segments: %s", exc)
            if self.prune is not None and time.monotonic() - self.pruned_at >= PRUNE_EVERY_SECONDS:
                self.pruned_at = time.monotonic()
                try:
                    self.prune()
                except Exception as exc:  # noqa: BLE001 - database down: try again at the next prune time
                    logger.warning("tick could not prune old versions: %s", exc)


class PromptPolling(Middleware):
    """Caps how long an idle (or fully prefetched) consumer sleeps before it polls Redis again.

    dramatiq backs off exponentially up to its worker timeout (1 s by default) whenever a fetch
    returns nothing, including when its prefetch is full: wake-ups then wait in Redis while
    threads fall idle. CHRONICLE_POLL_MS (default 10) is the cap; Redis costs one cheap call each.
    """

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        worker.worker_timeout = get_settings().chronicle_poll_ms
