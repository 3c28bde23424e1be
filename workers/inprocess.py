"""`chronicle up` without REDIS_URL: the dramatiq workers in this process, on the stub broker.

The API's appends send wake-ups to the same in-memory broker, and the workers' periodic
tick covers anything missed, exactly as with Redis.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

logger = logging.getLogger("chronicle.workers")


def start_in_process_workers(threads: int = 4) -> Callable[[], None]:
    """Start a dramatiq Worker with `threads` threads on the in-memory broker; return its stopper.

    Needs DATABASE_URL in the environment (the workers' pool reads it).
    """
    import dramatiq

    from projections.engine import keep_collector_on
    from workers import actors  # sets up the broker (a StubBroker without REDIS_URL)
    from workers.runtime import close_pool

    keep_collector_on()  # the API's request threads share this process

    worker = dramatiq.Worker(actors.broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    try:
        from workers.actors import wake_all, wake_jobs

        wake_all()  # catch up whatever was appended while Chronicle was stopped
        wake_jobs()  # and run rebuilds or replays requested meanwhile
    except Exception:  # noqa: BLE001 - the tick will do it
        logger.exception("initial wake-up failed")

    def stop() -> None:
        worker.stop(timeout=5_000)
        close_pool()

    return stop
