"""GET /metrics for Prometheus: this process's command and append metrics, and the store's state.

Counters and histograms are per process, unless PROMETHEUS_MULTIPROC_DIR is set for every API
process (then each scrape sums all of them). Projection lag, dead letters, rebuild progress and
the log's head are read from the database at scrape time, so every API process reports the same.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from psycopg_pool import ConnectionPool

from domain.errors import ConflictError, DomainError, NotFoundError
from infrastructure.log_status import read_log_status
from infrastructure.metrics import COMMAND_SECONDS, COMMANDS, multiprocess_dir

logger = logging.getLogger("chronicle.metrics")
router = APIRouter(tags=["system"])
# A scrape must answer within Prometheus's own timeout even when the database is slow or down.
SCRAPE_TIMEOUT_SECONDS = 5.0

PROGRESS_SQL = """
SELECT DISTINCT ON (projection) projection, state, total, done, eta_seconds
FROM projection_rebuild ORDER BY projection, id DESC
"""
DEAD_LETTERS_SQL = """
SELECT projection, status, count(*) AS n FROM dead_letter WHERE NOT shadow GROUP BY projection, status
"""


def instrument_service(service: Any) -> None:
    """Count and time every command the domain service handles, by command type and outcome.

    Wraps `service.handle` in place (once); costs a clock read and two metric updates.
    """
    if service is None or getattr(service, "_chronicle_metered", False):
        return
    handle: Callable[..., Any] = service.handle

    def metered(command: Any, context: Any = None) -> Any:
        name = type(command).__name__
        outcome = "failed"
        started = time.perf_counter()
        try:
            result = handle(command, context)
            outcome = "duplicate" if getattr(result, "duplicate", False) else "accepted"
            return result
        except ConflictError:
            outcome = "conflict"
            raise
        except NotFoundError:
            outcome = "not_found"
            raise
        except DomainError:
            outcome = "refused"
            raise
        finally:
            COMMANDS.labels(name, outcome).inc()
            COMMAND_SECONDS.labels(name).observe(time.perf_counter() - started)

    service.handle = metered
    service._chronicle_metered = True


_PARTITION = ("projection", "partition")
_REBUILD = ("projection",)
# The store's gauges, in the order a scrape lists them: (key, metric name, help, labels).
STORE_GAUGES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("head", "chronicle_log_head_position", "The last committed position in the log.", ()),
    ("safe", "chronicle_log_safe_position",
     "The position readers may read up to (no append still open below it).", ()),
    ("blockers", "chronicle_log_blockers",
     "Open transactions holding the safe position back (see `chronicle status`).", ()),
    ("held_back", "chronicle_log_held_back_seconds",
     "How long readers have been held below the head (0: they are not).", ()),
    ("checkpoint", "chronicle_projection_checkpoint_position", "The log position a partition has applied.", _PARTITION),
    ("lag_events", "chronicle_projection_lag_events",
     "Events of a partition not yet applied (counted within 2500 positions of its checkpoint, scaled past them).",
     _PARTITION),
    ("lag_positions", "chronicle_projection_lag_positions",
     "Log positions between a partition's checkpoint and the head.", _PARTITION),
    ("waiting", "chronicle_projection_lag_seconds", "Age of a partition's oldest unapplied event.", _PARTITION),
    ("parked", "chronicle_dead_letters_parked", "Events parked in a partition's dead letters.", _PARTITION),
    ("dead_letters", "chronicle_dead_letters", "Dead letters by status (parked, retried, skipped).",
     ("projection", "status")),
    ("rebuild_running", "chronicle_rebuild_running", "1 while the projection's latest rebuild is running.", _REBUILD),
    ("rebuild_done", "chronicle_rebuild_events_done", "Events the latest rebuild has applied.", _REBUILD),
    ("rebuild_total", "chronicle_rebuild_events_total", "Events the latest rebuild has to apply.", _REBUILD),
    ("rebuild_ratio", "chronicle_rebuild_progress_ratio", "Done over total of the latest rebuild (1 when done).",
     _REBUILD),
    ("rebuild_eta", "chronicle_rebuild_eta_seconds", "Estimated seconds left in a running rebuild.", _REBUILD),
)


class StoreCollector:
    """Gauges read from the database at each scrape: log, projections, dead letters, rebuilds."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        """The store's gauges; `chronicle_store_up` 0 (and nothing else) when it cannot be read."""
        up = GaugeMetricFamily("chronicle_store_up", "1 if the last scrape could read the event store.")
        try:
            families = self._read()
        except Exception as exc:  # noqa: BLE001 - a scrape reports the outage, it never fails
            logger.warning("metrics scrape could not read the store: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> list[Metric]:
        from projections.catalog import PROJECTORS
        from projections.status import lag_of, lag_seconds, partition_rows

        g = {key: GaugeMetricFamily(name, doc, labels=list(labels)) for key, name, doc, labels in STORE_GAUGES}
        with self.pool.connection(timeout=SCRAPE_TIMEOUT_SECONDS) as conn, conn.transaction():
            conn.execute(f"SET LOCAL statement_timeout = {int(SCRAPE_TIMEOUT_SECONDS * 1000)}")
            log = read_log_status(conn)
            g["head"].add_metric([], log.head)
            g["safe"].add_metric([], log.safe)
            g["blockers"].add_metric([], log.blockers)
            g["held_back"].add_metric([], log.held_back_seconds)
            for name, projector in PROJECTORS.items():
                for r in partition_rows(conn, name, projector.stream_types):
                    key = [name, str(r["partition"])]
                    lag = lag_of(r)[0]
                    g["checkpoint"].add_metric(key, r["checkpoint"])
                    g["lag_events"].add_metric(key, lag)
                    g["lag_positions"].add_metric(key, max(r["head"] - r["checkpoint"], 0))
                    g["waiting"].add_metric(key, lag_seconds(r) if lag else 0.0)
                    g["parked"].add_metric(key, r["dead_letters"])
            for r in conn.execute(DEAD_LETTERS_SQL).fetchall():
                g["dead_letters"].add_metric([r["projection"], r["status"]], r["n"])
            for r in conn.execute(PROGRESS_SQL).fetchall():
                key = [r["projection"]]
                running = r["state"] == "running"
                g["rebuild_running"].add_metric(key, 1 if running else 0)
                g["rebuild_done"].add_metric(key, r["done"])
                g["rebuild_total"].add_metric(key, r["total"])
                ratio = 1.0 if r["state"] == "done" else (r["done"] / r["total"] if r["total"] else 0.0)
                g["rebuild_ratio"].add_metric(key, min(ratio, 1.0))
                if running and r["eta_seconds"] is not None:
                    g["rebuild_eta"].add_metric(key, float(r["eta_seconds"]))
            follow = _following(conn, log.safe)
        return [*g.values(), *follow]


def _following(conn: Any, safe: int) -> list[Metric]:
    """Open feeds, and each consumer group's members, checkpoints and lag per partition."""
    from service_layer.groups import group_rows, partition_status

    feeds = GaugeMetricFamily("chronicle_subscriptions_open", "Open GET /v1/subscribe feeds (all API processes).")
    feeds.add_metric([], conn.execute("SELECT count(*) AS n FROM subscription").fetchone()["n"])
    labels = ["group", "partition"]
    members = GaugeMetricFamily("chronicle_group_members", "Members of a consumer group whose lease is live.",
                                labels=["group"])
    checkpoint = GaugeMetricFamily("chronicle_group_checkpoint_position",
                                   "The log position a group's partition has acknowledged.", labels=labels)
    lag = GaugeMetricFamily("chronicle_group_lag_events", "Events of a group's partition not yet acknowledged.",
                            labels=labels)
    parked = GaugeMetricFamily("chronicle_group_dead_letters_parked", "A consumer group's parked events.",
                               labels=["group"])
    for group in group_rows(conn):
        status = partition_status(conn, group, safe)
        members.add_metric([group["name"]], sum(1 for m in status["members"] if m["alive"]))
        parked.add_metric([group["name"]], status["dead_letters"])
        for p in status["partitions"]:
            checkpoint.add_metric([group["name"], str(p["partition"])], p["checkpoint"])
            lag.add_metric([group["name"], str(p["partition"])], p["lag_events"])
    return [feeds, members, checkpoint, lag, parked]


class _Delegate:
    """A registry's collectors, seen as one collector of another registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        return self.registry.collect()


def scrape(pool: ConnectionPool) -> bytes:
    """The text exposition: this process's (or all processes') metrics and the store's gauges."""
    registry = CollectorRegistry()
    directory = multiprocess_dir()
    if directory:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry, path=directory)
    else:
        registry.register(_Delegate(REGISTRY))
    registry.register(StoreCollector(pool))
    return generate_latest(registry)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus metrics (no API key: serve it only where Prometheus reaches it)."""
    return Response(scrape(request.app.state.chronicle.pool), media_type=CONTENT_TYPE_LATEST)
