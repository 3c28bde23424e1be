"""dramatiq middleware that gives worker processes Chronicle's logs and dramatiq's Prometheus metrics.

In `chronicle worker` processes dramatiq's own Prometheus middleware runs as designed: each
process writes its metrics to files in `dramatiq_prom_db` (default $TMPDIR/dramatiq-prometheus),
and a forked exposition server sums them on `dramatiq_prom_port` (default 9191). With in-process
workers (`chronicle up` without REDIS_URL) the same metrics join the process's registry, so the
API's /metrics shows them. A process that only sends messages (the API on Redis) records nothing.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import dramatiq
import structlog
from dramatiq.middleware import Middleware
from dramatiq.middleware.prometheus import DB_PATH, Prometheus

from infrastructure.library_internals import repick_prometheus_value_class

logger = logging.getLogger(__name__)
_MULTIPROC_ENV = ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")
# The metric attributes dramatiq's middleware creates; shared by every in-process instance.
_METRICS = ("total_messages", "total_errored_messages", "total_retried_messages", "total_rejected_messages",
            "inprogress_messages", "inprogress_delayed_messages", "message_durations")
_in_process_metrics: dict[str, Any] = {}


class WorkerLogging(Middleware):
    """Chronicle's log format in dramatiq's worker processes, and each message's ids bound to its logs."""

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        """A `chronicle worker` process: replace dramatiq's plain log handler with Chronicle's."""
        from infrastructure.logs import configure_logging

        configure_logging(replace=True)

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        structlog.contextvars.bind_contextvars(actor=message.actor_name, message_id=message.message_id)

    def after_process_message(
        self, broker: dramatiq.Broker, message: dramatiq.Message, *, result: Any = None, exception: Any = None
    ) -> None:
        structlog.contextvars.unbind_contextvars("actor", "message_id")

    after_skip_message = after_process_message


class WorkerMetrics(Prometheus):
    """dramatiq's Prometheus middleware, safe in processes where dramatiq's CLI did not boot it."""

    def __init__(self) -> None:
        super().__init__()
        self.ready = False

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        """A `chronicle worker` process: metrics go to the shared files, whatever was imported first."""
        for name in _MULTIPROC_ENV:
            os.environ[name] = DB_PATH
        # prometheus_client picks its value class when first imported; Chronicle's modules may
        # have imported it before this hook set the directory, so pick again.
        repick_prometheus_value_class()
        super().after_process_boot(broker)
        self.ready = True

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """A worker started inside another process (`chronicle up`, tests): use its registry."""
        if not self.ready:
            self._boot_in_process(broker)

    def _boot_in_process(self, broker: dramatiq.Broker) -> None:
        if not _in_process_metrics:
            saved = {name: os.environ.get(name) for name in _MULTIPROC_ENV}
            try:
                super().after_process_boot(broker)  # creates the metrics; sets the env we restore
            finally:
                for name, value in saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value
            _in_process_metrics.update({name: getattr(self, name) for name in _METRICS})
            from infrastructure.metrics import multiprocess_dir

            if not multiprocess_dir():
                from prometheus_client import REGISTRY

                for metric in _in_process_metrics.values():
                    REGISTRY.register(metric)
        for name, metric in _in_process_metrics.items():
            setattr(self, name, metric)
        self.ready = True

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self.ready and not _in_process_metrics:
            super().after_worker_shutdown(broker, worker)

    def after_nack(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        if self.ready:
            super().after_nack(broker, message)

    def after_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message, delay: Any) -> None:
        if self.ready:
            super().after_enqueue(broker, message, delay)

    def before_delay_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        if self.ready:
            super().before_delay_message(broker, message)

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        if self.ready:
            super().before_process_message(broker, message)

    def after_process_message(
        self, broker: dramatiq.Broker, message: dramatiq.Message, *, result: Any = None, exception: Any = None
    ) -> None:
        if self.ready:
            super().after_process_message(broker, message, result=result, exception=exception)

    after_skip_message = after_process_message


def install(broker: dramatiq.Broker) -> None:
    """Add Chronicle's worker logging and dramatiq's Prometheus metrics to `broker`."""
    broker.add_middleware(WorkerLogging())
    broker.add_middleware(WorkerMetrics())


def clear_stale_metrics(directory: str = DB_PATH) -> int:
    """Delete metric files of processes that are gone (a killed worker's in-progress gauges).

    dramatiq means its directory to start empty on every run; files of live processes stay.
    """
    removed = 0
    for entry in os.scandir(directory):
        pid = entry.name.rsplit("_", 1)[-1].removesuffix(".db")
        if not entry.name.endswith(".db") or not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            os.unlink(entry.path)
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
