"""One bootstrap: build a process's pieces beside its pool and store, and take them down again.

It builds the read replica's pool beside the primary's (DATABASE_READ_URL), the application service (the Workspace on Chronicle's persistence module), writes the
event types' definitions, and, when workers run somewhere, installs the wake-ups that tell them
about appends. The HTTP API calls it at start; nothing else builds these pieces.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from infrastructure.config import Settings
from infrastructure.db import create_pool
from infrastructure.event_store import EventStore
from infrastructure.replica import ReadReplica
from service_layer.workspace import Workspace

logger = logging.getLogger("chronicle.bootstrap")


@dataclass
class Wired:
    """What bootstrap built: the service, and the wake-ups for workers (None: no worker listens)."""

    service: Workspace
    wake_projection: Callable[[str | None], None] | None = None  # wake one projection (None: all)
    wake_job: Callable[[str, str], None] | None = None  # wake a requested (kind, projection) job
    wakeups: list[Any] = field(default_factory=list)  # the after-append hooks, flushed at shutdown


def build_workspace(database_url: str, settings: Settings) -> Workspace:
    """A Workspace on Chronicle's persistence module and `database_url`; `close()` releases its pool."""
    return Workspace({
        "PERSISTENCE_MODULE": "infrastructure.persistence",
        "DATABASE_URL": database_url,
        "CHRONICLE_SNAPSHOT_INTERVAL": str(settings.chronicle_snapshot_interval),
        "CHRONICLE_POOL_MAX_SIZE": str(settings.chronicle_pool_max_size),
        "CHRONICLE_POOLER": settings.chronicle_pooler,
        **({"DATABASE_DIRECT_URL": settings.database_direct_url} if settings.database_direct_url else {}),
    })


def build_read_replica(primary: Any, settings: Settings) -> ReadReplica | None:
    """The read pool on DATABASE_READ_URL beside the primary's `pool`; None when no replica is set.

    Opened without waiting: a replica that is down at start only sends reads to the primary.
    """
    if not settings.database_read_url:
        return None
    pool = create_pool(settings.database_read_url, settings, name="chronicle-read", replica=True)
    return ReadReplica(primary, pool)


def write_event_definitions(store: EventStore) -> int:
    """Write every event type Chronicle registers, the domain's and the operators', to event_definitions.

    Importing the modules that define the types is what registers them, so they are imported here.
    """
    import domain.session  # noqa: F401 - registers document.accessed
    import service_layer.operator_events  # noqa: F401 - registers the operator.* event types

    return store.register_definitions()


def bootstrap(store: EventStore, database_url: str, settings: Settings, broker: str) -> Wired:
    """Build the service; with workers listening (`broker` "redis" or "in-process"), wake them after
    every append, the store's own and the service's."""
    wired = Wired(build_workspace(database_url, settings))
    if broker in ("redis", "in-process"):
        from workers.actors import wake_job, wake_projection
        from workers.wakeups import install_wakeups

        wired.wakeups = [install_wakeups(s, settings.chronicle_partitions)
                         for s in (store, wired.service.factory.datastore.store)]
        wired.wake_projection = wake_projection
        wired.wake_job = wake_job
    return wired


def shutdown(wired: Wired) -> None:
    """Send the wake-ups still coalescing, then close the service's pool."""
    for wakeups in wired.wakeups:
        wakeups.flush()
    try:
        wired.service.close()
    except Exception:  # noqa: BLE001 - a failing close must not hide the shutdown's other steps
        logger.exception("closing the application service failed")
