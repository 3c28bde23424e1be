"""Where the API meets the other parts: the domain service, projections, workers and event types."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from fastapi import APIRouter

from api.deps import ChronicleState
from infrastructure.event_store import EventStore

logger = logging.getLogger("chronicle.api")


def domain_error_classes() -> list[type[Exception]]:
    """The error base classes mapped to problem+json by their `code`."""
    from domain.errors import DomainError
    from domain.event_types import EventTypeError

    return [DomainError, EventTypeError]


def routers() -> list[APIRouter]:
    """Every resource router: reads, commands, operations."""
    from api import (
        routes_commands, routes_document_commands, routes_operations, routes_reads, routes_sessions, routes_streams,
    )

    return [routes_reads.router, routes_sessions.router, routes_commands.router, routes_document_commands.router,
            routes_streams.router, routes_operations.router]


def write_event_definitions(store: EventStore) -> int:
    """Write every event type Chronicle registers, the domain's and the operators', to event_definitions.

    Importing the modules that define the types is what registers them, so import them first.
    """
    import api.operator_events  # noqa: F401 - registers the operator.* event types
    import domain.session  # noqa: F401 - registers document.accessed
    import service_layer.workspace  # noqa: F401 - imports every aggregate, registering its event types

    return store.register_definitions()


def wire(state: ChronicleState) -> None:
    """Attach the domain's application service and the read-your-writes check to `state`."""
    from workers.inprocess import wake_projection
    from api.services import build_service
    from workers.wakeups import install_wakeups

    state.extras["projected_position"] = projected_position_checker(state, projection_stream_types())
    state.service = build_service(state)
    if state.broker in ("redis", "in-process"):
        # Someone runs workers: wake them after each append (the API's own and the service's).
        state.extras["wakeups"] = [install_wakeups(store, state.settings.chronicle_partitions)
                                   for store in (state.store, state.service.factory.datastore.store)]
        state.extras["wake"] = wake_projection()
        from workers.actors import wake_job as wake

        state.extras["wake_job"] = wake


def unwire(state: ChronicleState) -> None:
    """Release what `wire` attached, sending the wake-ups still coalescing first."""
    for wakeups in state.extras.pop("wakeups", []):
        wakeups.flush()
    close = getattr(state.service, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # noqa: BLE001
            logger.exception("closing the application service failed")


def projection_stream_types() -> dict[str, tuple[str, ...]]:
    """Each projection's name and the stream types it reads."""
    from projections.catalog import PROJECTORS

    return {name: tuple(p.stream_types) for name, p in PROJECTORS.items()}


def projected_position_checker(
    state: ChronicleState, stream_types: dict[str, tuple[str, ...]]
) -> Callable[[int], int]:
    """A function: how far (up to a wanted position N) every projection has got.

    A partition has reached N when its checkpoint is at N or it has no event of its
    projection's stream types between its checkpoint and N. Returns N once all have.
    """

    def reached(wanted: int, names: tuple[str, ...] | None = None) -> int:
        with state.pool.connection() as conn:
            row = conn.execute(
                """
                SELECT safe_position() AS safe,
                       count(c.*) AS partitions,
                       coalesce(min(c.position), 0) AS lowest,
                       coalesce(bool_and(
                           c.position >= %(n)s OR NOT EXISTS (
                               SELECT 1 FROM partition_events(c.position, %(n)s, t.types,
                                   partition_floors(p.partitions, c.partition, c.position, %(n)s)))
                       ), true) AS done
                FROM projection p
                JOIN projection_checkpoint c ON c.projection = p.name
                LEFT JOIN (SELECT key AS name, array(SELECT jsonb_array_elements_text(value)) AS types
                           FROM jsonb_each(%(types)s::jsonb)) t ON t.name = p.name
                WHERE %(names)s::text[] IS NULL OR p.name = ANY(%(names)s::text[])
                """,
                {"n": wanted, "types": json.dumps(stream_types), "names": list(names) if names else None},
            ).fetchone()
        if row["safe"] < wanted:
            return min(row["safe"], row["lowest"]) if row["partitions"] else row["safe"]
        if row["partitions"] == 0:
            # No projection has started: nothing to wait for beyond the log itself.
            return wanted if not stream_types else row["lowest"]
        return wanted if row["done"] else row["lowest"]

    return reached


