"""The periodic tick: every worker process wakes every partition now and then.

It covers lost wake-ups (a killed worker, Redis down at append time); duplicates cost one check.
"""

from __future__ import annotations

import logging
import os
import threading

import dramatiq
from dramatiq.middleware import Middleware

logger = logging.getLogger(__name__)


def tick_seconds() -> float:
    """CHRONICLE_TICK_SECONDS (default 5; 0 turns the tick off)."""
    return float(os.environ.get("CHRONICLE_TICK_SECONDS", "5"))


def wake_all() -> int:
    """Send a wake-up to every partition of every projection; return how many were sent."""
    from infrastructure.config import get_settings
    from projections.catalog import PROJECTORS
    from workers.actors import catch_up_partition

    n = get_settings().chronicle_partitions
    for name in PROJECTORS:
        for k in range(n):
            catch_up_partition.send(name, k)
    return len(PROJECTORS) * n


class Ticker(Middleware):
    """Starts the tick thread when a worker boots, stops it at shutdown."""

    def __init__(self) -> None:
        self.stop = threading.Event()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        period = tick_seconds()
        if period > 0:
            threading.Thread(target=self._loop, args=(period,), name="chronicle-tick", daemon=True).start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.stop.set()

    def _loop(self, period: float) -> None:
        while not self.stop.wait(period):
            try:
                wake_all()
            except Exception as exc:  # noqa: BLE001 - Redis down: try again next tick
                logger.warning("tick could not send wake-ups: %s", exc)
